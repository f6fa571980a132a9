"""Fixed parts of the CRMEF hyper-architecture, each a profiled :class:`~nas.ops.Unit`.

The searchable slots sit between these units. Every unit names itself ``fixed.<part>`` in the
latency table, so a prediction for a whole network covers the fixed computation too (stems,
pooling, upsampling, heads, relighting arithmetic), not only the candidate ops.

Shapes use C for the feature width and (H, W) for the input size; pooled features are at
(ceil(H/2), ceil(W/2)), pyramid levels at 1/2 and 1/4 (strided convolutions, rounded up).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas.ops.conv import NEG_SLOPE
from nas.ops.unit import Unit

EPS = 1e-3
"""Floor of an illumination map before division (maps come from a sigmoid, in (0, 1))."""


def _act() -> nn.LeakyReLU:
    return nn.LeakyReLU(NEG_SLOPE)


def _conv(C_in: int, C_out: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(C_in, C_out, k, stride, (k - 1) // 2)


def _resize_to(x: Tensor, ref: Tensor) -> Tensor:
    """Bilinear resize of ``x`` to the spatial size of ``ref`` (a no-op when equal)."""
    if x.shape[-2:] == ref.shape[-2:]:
        return x
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


def relight(image: Tensor, illum: Tensor, mode: str) -> Tensor:
    """Apply an illumination map: ``image * L`` or ``image / max(L, EPS)``.

    Args:
        image: (B, 3, H, W). illum: (B, 3, H, W) in (0, 1). mode: "multiply" or "divide".
    """
    if mode == "multiply":
        return image * illum
    return image / illum.clamp_min(EPS)


class SRSMStem(Unit):
    """Image to features: ``act(conv3x3(x))``, (B, 3, H, W) -> (B, C, H, W)."""

    op_name = "fixed.srsm_stem"

    def __init__(self, C: int) -> None:
        super().__init__(3, C)
        self.conv, self.act = _conv(3, C), _act()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv(x))


class SRSMPool(Unit):
    """Max- and average-pooling (3x3, stride 2) concatenated: (B, C, H, W) -> (B, 2C, H/2, W/2)."""

    op_name = "fixed.srsm_pool"

    def __init__(self, C: int) -> None:
        super().__init__(C, 2 * C, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat(
            [F.max_pool2d(x, 3, 2, 1), F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)], dim=1
        )


class SRSMHead(Unit):
    """Illumination map and relighting.

    ``L = sigmoid(conv3x3(up(f + r)))`` (3 channels, upsampled to the image size), output
    ``relight(image, L)``. Inputs f, r: (B, C, H/2, W/2), image: (B, 3, H, W); output
    (B, 3, H, W).
    """

    op_name = "fixed.srsm_head"

    def __init__(self, C: int, mode: str) -> None:
        super().__init__(C, 3)
        self.mode = mode
        if mode == "divide":  # a different computation: its own latency-table rows
            self.op_name = "fixed.srsm_head_divide"
        self.conv = _conv(C, 3)

    def forward(self, f: Tensor, r: Tensor, image: Tensor) -> Tensor:
        illum = torch.sigmoid(self.conv(_resize_to(f + r, image)))
        return relight(image, illum, self.mode)


class DRMStem(Unit):
    """Aggregate the relit pair: ``base = (u + o) / 2``, ``feat = act(conv3x3(base))``.

    Inputs u, o: (B, 3, H, W); outputs feat (B, C, H, W) and base (B, 3, H, W).
    """

    op_name = "fixed.drm_stem"

    def __init__(self, C: int) -> None:
        super().__init__(3, C)
        self.conv, self.act = _conv(3, C), _act()

    def forward(self, u: Tensor, o: Tensor) -> tuple[Tensor, Tensor]:
        base = 0.5 * (u + o)
        return self.act(self.conv(base)), base


class DRMHead(Unit):
    """Illumination restoration by pixel-wise division (the paper's Eq. 3).

    ``y = clamp(base / max(sigmoid(conv3x3(f + r)), EPS), 0, 1)``. Inputs f, r: (B, C, H, W),
    base: (B, 3, H, W); output (B, 3, H, W) in [0, 1].
    """

    op_name = "fixed.drm_head"

    def __init__(self, C: int) -> None:
        super().__init__(C, 3)
        self.conv = _conv(C, 3)

    def forward(self, f: Tensor, r: Tensor, base: Tensor) -> Tensor:
        illum = torch.sigmoid(self.conv(f + r))
        return (base / illum.clamp_min(EPS)).clamp(0.0, 1.0)


class DASMPyramid(Unit):
    """Pyramid features of one image: 1x1 conv, a residual block, two strided stages.

    (B, 3, H, W) -> [(B, C, H, W), (B, C, H/2, W/2), (B, C, H/4, W/4)].
    """

    op_name = "fixed.dasm_pyramid"

    def __init__(self, C: int, relu_block: bool = False) -> None:
        super().__init__(3, C)
        if relu_block:  # the authors' residual block has a ReLU between its convolutions
            self.op_name = "fixed.authors.dasm_pyramid"
        self.inp = nn.Sequential(_conv(3, C, 1), _act())
        self.res1, self.res2 = _conv(C, C), _conv(C, C)
        self.down1 = nn.Sequential(_conv(C, C, 3, 2), _act(), _conv(C, C), _act())
        self.down2 = nn.Sequential(_conv(C, C, 3, 2), _act(), _conv(C, C), _act())
        self.act = nn.ReLU() if relu_block else _act()

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.inp(x)
        f1 = x + self.res2(self.act(self.res1(x)))
        f2 = self.down1(f1)
        return [f1, f2, self.down2(f2)]


class DASMOffset(Unit):
    """Offset features for one alignment level (EDVR's PCD offset branch).

    ``o = act(conv(cat(nbr, ref)))``; when a coarser offset feature is given it is upsampled,
    doubled (offsets are in pixels) and merged: ``o = act(conv(cat(o, 2 up(coarse))))``; then
    ``act(conv(o))``. nbr, ref, coarse: (B, C, h, w) (coarse at h/2) -> (B, C, h, w).
    """

    op_name = "fixed.dasm_offset"

    def __init__(self, C: int, with_coarse: bool) -> None:
        super().__init__(2 * C, C)
        self.op_name = "fixed.dasm_offset" + ("_merge" if with_coarse else "")
        self.conv1 = _conv(2 * C, C)
        self.merge = _conv(2 * C, C) if with_coarse else None
        self.conv2 = _conv(C, C)
        self.act = _act()

    def forward(self, nbr: Tensor, ref: Tensor, coarse: Tensor | None = None) -> Tensor:
        o = self.act(self.conv1(torch.cat([nbr, ref], dim=1)))
        if self.merge is not None and coarse is not None:
            o = self.act(self.merge(torch.cat([o, 2.0 * _resize_to(coarse, o)], dim=1)))
        return self.act(self.conv2(o))


class DASMMerge(Unit):
    """Merge an aligned level with the upsampled coarser one: ``act(conv(cat(f, up(c))))``.

    f: (B, C, h, w), c: (B, C, h/2, w/2) -> (B, C, h, w). The authors' variants activate the
    coarse input first (``pre_act``: their level-3 deformable output is activated) or leave
    the output linear (``act=False``: their level-1 merge).
    """

    op_name = "fixed.dasm_merge"

    def __init__(self, C: int, pre_act: bool = False, act: bool = True) -> None:
        super().__init__(2 * C, C)
        self.pre_act, self.use_act = pre_act, act
        if pre_act or not act:
            self.op_name = "fixed.authors.dasm_merge" + ("_preact" if pre_act else "_linear")
        self.conv, self.act = _conv(2 * C, C), _act()

    def forward(self, f: Tensor, c: Tensor) -> Tensor:
        if self.pre_act:
            c = self.act(c)
        out = self.conv(torch.cat([f, _resize_to(c, f)], dim=1))
        return self.act(out) if self.use_act else out


class DRMStemAligned(Unit):
    """Entry of the detail module after alignment: ``F_A = aligned + ref`` (the paper's Eq. 2).

    Returns ``feat = act(conv3x3(F_A))`` (B, C, H, W) and an image-domain base
    ``sigmoid(conv3x3(F_A))`` (B, 3, H, W) that the detail head divides by its map.
    """

    op_name = "fixed.drm_stem_aligned"

    def __init__(self, C: int) -> None:
        super().__init__(C, C)
        self.conv, self.to_rgb, self.act = _conv(C, C), _conv(C, 3), _act()

    def forward(self, aligned: Tensor, ref: Tensor) -> tuple[Tensor, Tensor]:
        fa = aligned + ref
        return self.act(self.conv(fa)), torch.sigmoid(self.to_rgb(fa))
