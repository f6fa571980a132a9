"""Deformable convolution op (DCNv2-style, modulated), built on :func:`deform_conv2d`.

Offsets and modulation masks are predicted by a 3x3 convolution, either from the op's own
input or, in the alignment module, from a separate "offset feature" (the concatenation of
neighbour and reference features after a few convolutions, as in EDVR's PCD alignment).
The offset convolution is zero-initialised and the mask is ``2 * sigmoid(m)``, so at
initialisation offsets are 0 and the mask is 1: the op starts as a plain convolution.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas.ops.conv import NEG_SLOPE
from nas.ops.deform_conv import deform_conv2d
from nas.ops.unit import Unit


class DeformConvOp(Unit):
    """``act(deform_conv_k(x, offsets(offset_feat or x), mask))``.

    Args:
        C_in, C_out: channels.
        kernel: kernel size k (k x k taps).
        stride: spatial stride.
        offset_groups: deformable groups (input channels share offsets within a group).
    """

    takes_offset_feat = True

    def __init__(
        self, C_in: int, C_out: int, kernel: int, stride: int = 1, offset_groups: int = 1
    ) -> None:
        super().__init__(C_in, C_out, stride)
        if C_in % offset_groups:
            raise ValueError(f"C_in={C_in} is not divisible by offset_groups={offset_groups}")
        self.op_name = f"deform_{kernel}"
        self.kernel = kernel
        self.padding = (kernel - 1) // 2
        self.offset_groups = offset_groups
        taps = offset_groups * kernel * kernel
        self.offset_conv = nn.Conv2d(C_in, 3 * taps, 3, stride, 1)
        nn.init.zeros_(self.offset_conv.weight)
        nn.init.zeros_(self.offset_conv.bias)
        self.weight = nn.Parameter(torch.empty(C_out, C_in, kernel, kernel))
        self.bias = nn.Parameter(torch.empty(C_out))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Conv2d's default init
        bound = 1.0 / math.sqrt(C_in * kernel * kernel)
        nn.init.uniform_(self.bias, -bound, bound)
        self.act = nn.LeakyReLU(NEG_SLOPE)

    def forward(self, x: Tensor, offset_feat: Tensor | None = None) -> Tensor:
        """x: (B, C_in, H, W); offset_feat: (B, C_in, H, W) or None -> (B, C_out, H', W')."""
        om = self.offset_conv(x if offset_feat is None else offset_feat)
        taps = self.offset_groups * self.kernel * self.kernel
        offset, mask = om[:, : 2 * taps], 2.0 * torch.sigmoid(om[:, 2 * taps :])
        out = deform_conv2d(
            x, offset, self.weight, self.bias, stride=self.stride, padding=self.padding, mask=mask
        )
        return self.act(out)

    def as_conv(self, x: Tensor) -> Tensor:
        """The plain convolution this op equals at zero offsets and unit mask (for tests)."""
        return F.leaky_relu(
            F.conv2d(x, self.weight, self.bias, self.stride, self.padding), NEG_SLOPE
        )
