"""Convolutional candidate ops of the lean style (``style: lean``): plain, dilated, residual,
residual-dilated, skip.

Every op maps ``(B, C_in, H, W) -> (B, C_out, ceil(H/stride), ceil(W/stride))`` with "same"
padding, so any op can stand in any slot of the same width. Each weighted op ends in
LeakyReLU(0.1), like DARTS' ops carry their own nonlinearity, so the profiled op is exactly
the computation the network runs; a residual op is one convolution plus a skip,
``shortcut(x) + act(conv_k(x))``.

The authors' style (``style: authors``, the default of the shipped spaces) builds the same
names differently (:mod:`nas.ops.authors`: no activation inside the op, residual ops
``conv3x3(PReLU(conv_k(x) + x))`` with stride 1 only); ``skip`` is this module's in both.
"""

from __future__ import annotations

from torch import Tensor, nn

from nas.ops.unit import Unit

NEG_SLOPE = 0.1


def _same_padding(kernel: int, dilation: int) -> int:
    return (kernel - 1) // 2 * dilation


def same_conv(C_in: int, C_out: int, kernel: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    """A k x k convolution (with bias) padded to keep the size: H' = ceil(H / stride)."""
    return nn.Conv2d(
        C_in, C_out, kernel, stride, _same_padding(kernel, dilation), dilation=dilation
    )


class ConvOp(Unit):
    """``act(conv_k(x))``: a k x k convolution with dilation ``dilation`` ("C"/"DC" ops)."""

    def __init__(
        self, C_in: int, C_out: int, kernel: int, stride: int = 1, dilation: int = 1
    ) -> None:
        super().__init__(C_in, C_out, stride)
        self.op_name = f"{'dil' if dilation > 1 else ''}conv_{kernel}"
        self.conv = same_conv(C_in, C_out, kernel, stride, dilation)
        self.act = nn.LeakyReLU(NEG_SLOPE)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_out, H', W')."""
        return self.act(self.conv(x))


class Shortcut(nn.Module):
    """Identity when shapes allow it, else a strided 1x1 projection."""

    def __init__(self, C_in: int, C_out: int, stride: int = 1) -> None:
        super().__init__()
        self.proj = None if C_in == C_out and stride == 1 else nn.Conv2d(C_in, C_out, 1, stride)

    def forward(self, x: Tensor) -> Tensor:
        return x if self.proj is None else self.proj(x)


class ResConvOp(ConvOp):
    """``shortcut(x) + act(conv_k(x))`` ("RConv"/"RDConv": a convolution with an identity skip)."""

    def __init__(
        self, C_in: int, C_out: int, kernel: int, stride: int = 1, dilation: int = 1
    ) -> None:
        super().__init__(C_in, C_out, kernel, stride, dilation)
        self.op_name = f"res{self.op_name}"
        self.shortcut = Shortcut(C_in, C_out, stride)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_out, H', W')."""
        return self.shortcut(x) + super().forward(x)


class SkipOp(Unit):
    """Identity (a 1x1 projection when channels or stride change): the parameter-free op."""

    op_name = "skip"

    def __init__(self, C_in: int, C_out: int, stride: int = 1) -> None:
        super().__init__(C_in, C_out, stride)
        self.shortcut = Shortcut(C_in, C_out, stride)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_out, H', W')."""
        return self.shortcut(x)
