"""The pyramid fusion head and the body's processing scale (``head: pyramid``, ``scale: s``).

With ``head: pyramid`` the CRMEF body (SRSM, optional DASM, DRM) no longer paints the fused
image itself. Its last features steer a classical, well-behaved fusion instead::

    under, over (B, 3, H, W) ──[Downsample 1/s]── SRSM ── (DASM) ── DRM features F (B, D, h, w)
         │                                                                │
         │   Mertens' log-weights  log W_k  (contrast x saturation, OpenCV's defaults)
         │   Gaussian pyramid of the normalised weights  G_l,k                 │
         │                                                                ▼
         │   per level l:  w_l = softmax_k( g_l * log G_l,k + resize(conv1x1(F))_l,k )
         └── Laplacian-pyramid blend  sum_k lap_l(x_k) * w_l,k, collapsed ──> fused

* the correction ``conv1x1`` (D -> K * levels) starts at zero and every gain ``g_l`` at 1,
  so an untrained (or freshly derived) net *is* OpenCV's ``createMergeMertens()`` with its
  default weights; training moves the weights of each band away from Mertens' where the
  objective says so;
* the output is always a per-band convex combination of the input exposures: colours and
  global contrast come from real pixels, which is what keeps pyramid fusion from the flat,
  washed-out look of a network that paints every pixel;
* the body may run at 1/2, 1/4 or 1/8 of the input size (``scale``): weight maps are smooth,
  and the blend that keeps full-resolution detail costs a few dozen milliseconds. The body's
  cost then shrinks with the square of the scale.

``head: fast`` (:class:`FastHead`) is the same blend made cheap, for the fast region of a
search: the whole Laplacian pyramid is built at the body's scale, and full resolution only
sees two bilinear upsamplings and a per-pixel blend (the two-band form of MEFNet's and
HDRNet's low-resolution-weights idea)::

    under_lo, over_lo (B, 3, H/s, W/s), their level weights w_l (as above, from F)
    low   = laplacian_blend(under_lo, over_lo; w_l)                 (B, 3, H/s, W/s)
    w0    = w_0[:, under]                                           (B, 1, H/s, W/s)
    fused = over + up(w0) * (under - over) + up(low - (over_lo + w0 * (under_lo - over_lo)))

The first two terms carry each exposure's full-resolution detail with the finest weights;
the upsampled residual puts back what the low-resolution pyramid blend adds to a plain
weighted mean (its coarse bands). At scale 1 it *is* the pyramid head; with zero correction
at scale 4 it scores as Mertens does and takes a fraction of its time.

All three modules are profiled :class:`~nas.ops.Unit`\\ s whose latency-table key carries the
full-resolution input size (their first argument) and the scale in the op name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas.ops.unit import Unit
from nas.pyramid import gaussian_pyramid, laplacian_blend, max_levels, mertens_log_weights

__all__ = ["CORRECTED_LEVELS", "Downsample", "FastHead", "PyramidHead"]

CORRECTED_LEVELS = 6
"""Pyramid levels with a correction map of their own (finest first); coarser levels share
the last one."""


class Downsample(Unit):
    """Area downsampling of a pair by ``scale``: two (B, 3, H, W) -> two (B, 3, ceil(H/s),
    ceil(W/s)) (a partial border window averages the pixels it holds)."""

    def __init__(self, scale: int) -> None:
        super().__init__(3, 3, stride=scale)
        self.scale = int(scale)
        self.op_name = f"fixed.downsample_x{self.scale}"

    def forward(self, under: Tensor, over: Tensor) -> tuple[Tensor, Tensor]:
        s = self.scale
        return tuple(F.avg_pool2d(x, s, s, ceil_mode=True) for x in (under, over))


class PyramidHead(Unit):
    """Mertens-initialised Laplacian-pyramid fusion steered by the body's features.

    ``forward(under, over, feat)``: under, over (B, 3, H, W) in [0, 1]; feat (B, D, h, w),
    any h x w (the body's processing size) -> fused (B, 3, H, W) in [0, 1].

    Args:
        D: channels of the body's features.
        scale: the body's processing scale (recorded in the unit's name for the latency
            table; the head itself adapts to any feature size).
        levels: pyramid levels with their own correction map (:data:`CORRECTED_LEVELS`).
    """

    exposures = 2

    def __init__(self, D: int, scale: int = 1, levels: int = CORRECTED_LEVELS) -> None:
        super().__init__(3, 3)
        self.op_name = "fixed.pyramid_head" + (f"_x{scale}" if scale != 1 else "")
        self.levels = int(levels)
        self.correction = nn.Conv2d(D, self.exposures * self.levels, 1)
        nn.init.zeros_(self.correction.weight)
        nn.init.zeros_(self.correction.bias)
        self.gain = nn.Parameter(torch.ones(self.levels))

    def level_weights(self, under: Tensor, over: Tensor, feat: Tensor) -> list[Tensor]:
        """The blend weights of every pyramid level: ``max_levels(H, W) + 1`` tensors
        (B, 2, h_l, w_l), each summing to 1 over the exposures."""
        H, W = under.shape[-2:]
        n = max_levels(H, W)
        prior = torch.softmax(mertens_log_weights([under, over]), dim=1)
        gauss = gaussian_pyramid(prior, n)
        corr = self.correction(feat)  # (B, 2 * levels, h, w)
        out = []
        for lvl, g in enumerate(gauss):
            i = min(lvl, self.levels - 1)
            c = corr[:, self.exposures * i : self.exposures * (i + 1)]
            if c.shape[-2:] != g.shape[-2:]:
                smaller = c.shape[-2] > g.shape[-2]
                c = F.interpolate(
                    c, size=g.shape[-2:], mode="bilinear", align_corners=False, antialias=smaller
                )
            logit = self.gain[i] * torch.log(g.clamp_min(1e-12)) + c
            out.append(torch.softmax(logit, dim=1))
        return out

    def forward(self, under: Tensor, over: Tensor, feat: Tensor) -> Tensor:
        weights = self.level_weights(under, over, feat)
        return laplacian_blend([under, over], weights, len(weights) - 1).clamp(0.0, 1.0)


class FastHead(PyramidHead):
    """Two-band Mertens-initialised fusion: the pyramid blend at the body's scale, detail at
    full resolution (see the module docstring).

    ``forward(under, over, feat, under_lo, over_lo)``: under, over (B, 3, H, W) in [0, 1];
    feat (B, D, h, w), the body's features at its processing size; under_lo, over_lo
    (B, 3, h', w'), the pair at the body's input size (what :class:`Downsample` gave it)
    -> fused (B, 3, H, W) in [0, 1].
    """

    def __init__(self, D: int, scale: int = 1, levels: int = CORRECTED_LEVELS) -> None:
        super().__init__(D, scale, levels)
        self.op_name = f"fixed.fast_head_x{int(scale)}"

    def forward(  # type: ignore[override]
        self, under: Tensor, over: Tensor, feat: Tensor, under_lo: Tensor, over_lo: Tensor
    ) -> Tensor:
        weights = self.level_weights(under_lo, over_lo, feat)
        low = laplacian_blend([under_lo, over_lo], weights, len(weights) - 1)
        w0 = weights[0][:, :1]
        residual = low - (over_lo + w0 * (under_lo - over_lo))
        size = under.shape[-2:]
        if size != under_lo.shape[-2:]:
            w0 = F.interpolate(w0, size=size, mode="bilinear", align_corners=False)
            residual = F.interpolate(residual, size=size, mode="bilinear", align_corners=False)
        return (over + w0 * (under - over) + residual).clamp(0.0, 1.0)
