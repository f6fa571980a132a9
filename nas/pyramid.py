"""Laplacian-pyramid fusion in torch: pyramids, Mertens' quality measures, the blend.

Everything here is differentiable, runs on any device and follows OpenCV's
``MergeMertens`` (``modules/photo/src/merge.cpp``) step by step, so that the pyramid head
(:class:`nas.heads.PyramidHead`) with zero learned correction *is* Mertens' exposure fusion:

* :func:`pyr_down` / :func:`pyr_up` are ``cv2.pyrDown`` / ``cv2.pyrUp``: the 5-tap binomial
  kernel ``[1 4 6 4 1] / 16`` (times 4 for the zero-inserted up-sampling), reflect-101
  borders (replicate where a level is too small to reflect);
* :func:`mertens_quality` gives the three per-pixel measures of Mertens et al. (Pacific
  Graphics 2007): contrast ``|Laplacian(grey)|`` (OpenCV's 3x3 4-neighbour kernel, grey with
  OpenCV's BGR2GRAY weights), saturation (standard deviation over R, G, B) and
  well-exposedness ``prod_c exp(-(x_c - 0.5)^2 / 0.08)``;
* :func:`laplacian_blend` blends K images with K weight maps: the weights are normalised,
  Gaussian pyramids of the weights multiply Laplacian pyramids of the images band by band,
  and the result pyramid is collapsed. ``weights`` may also be a list of per-level maps
  (one (B, K, h_l, w_l) tensor per level), which is how a network steers each band.

Shapes: images (B, 3, H, W) in [0, 1]; weights (B, K, H, W) >= 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "OPENCV_GRAY",
    "gaussian_pyramid",
    "laplacian_blend",
    "laplacian_pyramid",
    "collapse",
    "max_levels",
    "mertens_fuse",
    "mertens_log_weights",
    "mertens_quality",
    "mertens_target",
    "pyr_down",
    "pyr_up",
]

OPENCV_GRAY = (0.299, 0.587, 0.114)
"""R, G, B weights of OpenCV's ``COLOR_BGR2GRAY`` (what ``MergeMertens`` uses for contrast)."""


def _pad(x: Tensor, p: int) -> Tensor:
    h, w = x.shape[-2:]
    mode = "reflect" if min(h, w) > p else "replicate"
    return F.pad(x, (p, p, p, p), mode=mode)


def _taps(x: Tensor, dim: int, n: int) -> list[Tensor]:
    """The ``n - 4`` long windows of a padded axis at offsets 0..4 (5 shifted views)."""
    return [x.narrow(dim, i, n - 4) for i in range(5)]


def _blur1d(x: Tensor, dim: int) -> Tensor:
    """``[1 4 6 4 1] / 16`` along ``dim`` of an axis already padded by 2 on both sides.
    Shifted adds: on the CPU 4x faster than a depthwise ``conv2d`` of the same filter."""
    a, b, c, d, e = _taps(x, dim, x.shape[dim])
    return (a + e) * 0.0625 + (b + d) * 0.25 + c * 0.375


def _blur(x: Tensor) -> Tensor:
    """Separable 5x5 binomial filter of every channel, reflect-101 borders. (B, C, H, W)."""
    return _blur1d(_blur1d(_pad(x, 2), -1), -2)


def pyr_down(x: Tensor) -> Tensor:
    """``cv2.pyrDown``: blur, keep every second row and column.

    (B, C, H, W) -> (B, C, ceil(H / 2), ceil(W / 2)).
    """
    x = _pad(x, 2)
    x = _blur1d(x, -1)[..., ::2]
    return _blur1d(x, -2)[..., ::2, :]


def _up1d(x: Tensor, dim: int, n: int) -> Tensor:
    """Polyphase ``pyrUp`` along ``dim``: the zero-inserted signal blurred with 2x the
    kernel, without building it. Even outputs ``(x[i-1] + 6 x[i] + x[i+1]) / 8``, odd
    outputs ``(x[i] + x[i+1]) / 2``; borders reflect-101 on the zero-inserted signal
    (``x[-1] = x[1]``, ``x[m] = x[m-1]``). The result is cropped to length ``n``."""
    m = x.shape[dim]
    left = x.narrow(dim, 1, 1) if m > 1 else x.narrow(dim, 0, 1)
    xp = torch.cat([left, x, x.narrow(dim, m - 1, 1)], dim)
    prev, cur, nxt = (xp.narrow(dim, i, m) for i in range(3))
    even = (prev + nxt) * 0.125 + cur * 0.75
    odd = (cur + nxt) * 0.5
    # interleave: (..., m, 2, ...) -> (..., 2m, ...)
    shape = list(x.shape)
    d = dim % x.dim()
    shape[d] = 2 * m
    out = torch.stack([even, odd], d + 1).reshape(shape)
    if torch.compiler.is_exporting():
        # a view cropped to n is contiguous only when n == 2m: torch.export would guard on the
        # example's parity; a gathered copy has no such branch
        return out.index_select(d, torch.arange(n, device=out.device))
    return out.narrow(d, 0, n)


def pyr_up(x: Tensor, size: tuple[int, int]) -> Tensor:
    """``cv2.pyrUp`` to ``size``: up-sample by 2 with the binomial kernel, crop.

    (B, C, h, w) -> (B, C, *size), with ``size`` within one pixel of (2h, 2w).
    """
    return _up1d(_up1d(x, -1, size[1]), -2, size[0])


def max_levels(h: int, w: int) -> int:
    """OpenCV's ``maxlevel = int(log(min(w, h)) / log(2))``: the pyramid has that many
    levels below the full-size one.

    Computed exactly, as ``floor(log2(min(h, w)))`` by comparisons with powers of two (equal to
    the float formula for every side up to 2^17, checked in the tests), so that under
    ``torch.export`` with symbolic sizes it adds range guards (``2^n <= min(h, w) < 2^(n+1)``),
    not a guard on one exact size: an exported net then takes every size with the same depth.
    """
    side = torch.sym_min(h, w)
    n = 0
    while side >= 2 ** (n + 1):
        n += 1
    return n


def gaussian_pyramid(x: Tensor, levels: int) -> list[Tensor]:
    """``[x, down(x), down(down(x)), ...]``, ``levels + 1`` tensors (``cv2.buildPyramid``)."""
    pyr = [x]
    for _ in range(levels):
        pyr.append(pyr_down(pyr[-1]))
    return pyr


def laplacian_pyramid(x: Tensor, levels: int) -> list[Tensor]:
    """Band-pass levels ``g_l - up(g_{l+1})`` and the coarsest Gaussian level last."""
    g = gaussian_pyramid(x, levels)
    return [g[i] - pyr_up(g[i + 1], g[i].shape[-2:]) for i in range(levels)] + [g[-1]]


def collapse(pyr: Sequence[Tensor]) -> Tensor:
    """Inverse of :func:`laplacian_pyramid`: up-sample from the coarsest level and add."""
    out = pyr[-1]
    for band in reversed(pyr[:-1]):
        out = band + pyr_up(out, band.shape[-2:])
    return out


def mertens_quality(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Mertens' contrast, saturation and well-exposedness of an RGB batch, as OpenCV computes
    them (float32 on the [0, 1] scale).

    Args:
        x: (B, 3, H, W) in [0, 1].

    Returns:
        three (B, 1, H, W) maps, each >= 0.
    """
    g = OPENCV_GRAY
    grey = g[0] * x[:, 0:1] + g[1] * x[:, 1:2] + g[2] * x[:, 2:3]
    lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).to(x)
    contrast = F.conv2d(_pad(grey, 1), lap.view(1, 1, 3, 3)).abs()
    mean = x.mean(1, keepdim=True)
    saturation = ((x - mean) ** 2).mean(1, keepdim=True).sqrt()
    exposure = torch.exp(-((x - 0.5) ** 2) / 0.08).prod(1, keepdim=True)
    return contrast, saturation, exposure


def mertens_log_weights(
    frames: Sequence[Tensor],
    contrast: float = 1.0,
    saturation: float = 1.0,
    exposure: float = 0.0,
    eps: float = 1e-12,
) -> Tensor:
    """``log(C^c * S^s * E^e + eps)`` per frame: Mertens' weight in the log domain.

    The exponents default to OpenCV's ``createMergeMertens()`` defaults (1, 1, 0). The
    gradient is not taken through the quality measures (they are features of the inputs).

    Args:
        frames: K tensors (B, 3, H, W) in [0, 1].

    Returns:
        (B, K, H, W) log-weights; ``softmax`` over K gives Mertens' normalised weights.
    """
    out = []
    with torch.no_grad():
        for x in frames:
            c, s, e = mertens_quality(x)
            w = torch.ones_like(c)
            for m, p in ((c, contrast), (s, saturation), (e, exposure)):
                if p != 0.0:
                    w = w * m.pow(p)
            out.append(torch.log(w + eps))
    return torch.cat(out, dim=1)


def laplacian_blend(
    frames: Sequence[Tensor], weights: Tensor | Sequence[Tensor], levels: int | None = None
) -> Tensor:
    """Blend ``frames`` band by band: ``sum_k lap_l(frame_k) * weight_l,k``, collapsed.

    Args:
        frames: K tensors (B, 3, H, W).
        weights: (B, K, H, W) weights (normalised over K here; a Gaussian pyramid of them
            weights the bands, as OpenCV does), or a list of ``levels + 1`` per-level weight
            maps (B, K, h_l, w_l), each already normalised over K (e.g. a softmax).
        levels: pyramid depth below full size; default OpenCV's :func:`max_levels`.

    Returns:
        (B, 3, H, W), not clipped (a Laplacian blend may overshoot [0, 1] slightly).
    """
    H, W = frames[0].shape[-2:]
    levels = max_levels(H, W) if levels is None else levels
    if isinstance(weights, Tensor):
        w = weights / weights.sum(1, keepdim=True).clamp_min(1e-30)
        wpyr = gaussian_pyramid(w, levels)
    else:
        wpyr = list(weights)
        if len(wpyr) != levels + 1:
            raise ValueError(f"laplacian_blend: {len(wpyr)} weight levels for {levels + 1} bands")
    # one Laplacian pyramid of all frames at once: (B*K, 3, H, W)
    K = len(frames)
    stacked = torch.stack(list(frames), 1)  # (B, K, 3, H, W)
    B = stacked.shape[0]
    lap = laplacian_pyramid(stacked.flatten(0, 1), levels)
    bands = []
    for band, wl in zip(lap, wpyr):
        band = band.view(B, K, 3, *band.shape[-2:])
        bands.append((band * wl.unsqueeze(2)).sum(1))
    return collapse(bands)


def mertens_fuse(
    frames: Sequence[Tensor],
    contrast: float = 1.0,
    saturation: float = 1.0,
    exposure: float = 0.0,
) -> Tensor:
    """Mertens' exposure fusion in torch (OpenCV's algorithm; defaults as OpenCV's).

    (B, 3, H, W) frames in [0, 1] -> (B, 3, H, W) clipped to [0, 1].
    """
    logw = mertens_log_weights(frames, contrast, saturation, exposure)
    return laplacian_blend(frames, torch.softmax(logw, dim=1)).clamp(0.0, 1.0)


def mertens_target(frames: Sequence[Tensor], dtype: torch.dtype) -> Tensor:
    """:func:`mertens_fuse` as a fixed training target of ``dtype``: computed in float32
    without gradients (the teacher warm-up and mef-ssim's ``mean_target: mertens``)."""
    with torch.no_grad():
        return mertens_fuse([f.float() for f in frames]).to(dtype)
