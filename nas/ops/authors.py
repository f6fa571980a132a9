"""The candidate ops as the CRMEF authors' released code builds them (``style: authors``).

The same registry names as the lean ops (:mod:`nas.ops.conv`), a different computation:

    conv_k / dilconv_k        a bare k x k convolution (no activation: the module around the
                              slot applies PReLU, or BatchNorm + PReLU)
    resconv_k / resdilconv_k  ``conv3x3(PReLU(conv_k(x) + x))``: a residual k x k convolution
                              followed by a fixed 3x3 convolution (C_in -> C_out)
    deform_k                  a modulated deformable k x k convolution whose offsets and mask
                              come from a k x k convolution of the offset feature, mask
                              ``sigmoid(m)`` (0.5 at initialisation), no activation

Each op has its own latency-table name, ``authors.<registry name>``, so a table can hold both
styles. ``skip`` is the same identity in both styles.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from nas.ops.conv import ConvOp, same_conv
from nas.ops.deform_conv import deform_conv2d
from nas.ops.unit import Unit

TABLE_PREFIX = "authors."
"""Latency-table names of authors-style ops: ``authors.conv_3``, ``authors.resconv_5`` ..."""


class AuthorsConv(ConvOp):
    """``conv_k(x)``, dilation 1 or 2, with bias and no activation ("C"/"DC" in the paper):
    the lean :class:`~nas.ops.conv.ConvOp` with an identity in place of its LeakyReLU.

    (B, C_in, H, W) -> (B, C_out, ceil(H/stride), ceil(W/stride)).
    """

    def __init__(
        self, C_in: int, C_out: int, kernel: int, stride: int = 1, dilation: int = 1
    ) -> None:
        super().__init__(C_in, C_out, kernel, stride, dilation)
        self.op_name = TABLE_PREFIX + self.op_name
        self.act = nn.Identity()


class AuthorsResBlock(Unit):
    """``conv3x3(PReLU(conv_k(x) + x))`` ("RConv"/"RDConv" as the authors' code builds it).

    The k x k convolution keeps C_in channels (so the skip is an identity); the fixed 3x3
    convolution maps C_in -> C_out. (B, C_in, H, W) -> (B, C_out, H, W); stride 1 only.
    """

    def __init__(
        self, C_in: int, C_out: int, kernel: int, stride: int = 1, dilation: int = 1
    ) -> None:
        if stride != 1:
            raise ValueError(f"authors' residual ops have stride 1, got {stride}")
        super().__init__(C_in, C_out, stride)
        self.op_name = f"{TABLE_PREFIX}res{'dil' if dilation > 1 else ''}conv_{kernel}"
        self.conv = same_conv(C_in, C_in, kernel, 1, dilation)
        self.act = nn.PReLU()
        self.out = nn.Conv2d(C_in, C_out, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.act(self.conv(x) + x))


class AuthorsDeform(Unit):
    """Modulated deformable convolution, offsets and mask from a k x k conv (DCNv2 "sep").

    ``deform_conv_k(x, offset, sigmoid(m))`` with ``(offset, m) = conv_k(offset_feat or x)``;
    the offset convolution is zero-initialised (offsets 0, mask 0.5 at initialisation).
    x, offset_feat: (B, C_in, H, W) -> (B, C_out, H', W'). No activation.
    """

    takes_offset_feat = True

    def __init__(self, C_in: int, C_out: int, kernel: int, stride: int = 1) -> None:
        super().__init__(C_in, C_out, stride)
        self.op_name = f"{TABLE_PREFIX}deform_{kernel}"
        self.kernel = kernel
        self.padding = (kernel - 1) // 2
        self.offset_conv = nn.Conv2d(C_in, 3 * kernel * kernel, kernel, stride, self.padding)
        nn.init.zeros_(self.offset_conv.weight)
        nn.init.zeros_(self.offset_conv.bias)
        self.weight = nn.Parameter(torch.empty(C_out, C_in, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(C_out))
        bound = 1.0 / math.sqrt(C_in * kernel * kernel)  # DCNv2's reset_parameters
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: Tensor, offset_feat: Tensor | None = None) -> Tensor:
        om = self.offset_conv(x if offset_feat is None else offset_feat)
        taps = self.kernel * self.kernel
        offset, mask = om[:, : 2 * taps], torch.sigmoid(om[:, 2 * taps :])
        return deform_conv2d(
            x, offset, self.weight, self.bias, stride=self.stride, padding=self.padding, mask=mask
        )
