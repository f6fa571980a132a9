"""Gaussian windows, SSIM (Wang et al. 2004) and MS-SSIM (Wang, Simoncelli & Bovik 2003).

Pure torch and differentiable; part of :mod:`nas.metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from nas.metrics.basic import (
    _check_data_range,
    _check_min_size,
    _check_pair,
    _check_window,
    _matlab_downsample2,
)

# --------------------------------------------------------------------------------------------
# Gaussian window filtering (depthwise, 'valid' region)
# --------------------------------------------------------------------------------------------


def _gaussian_1d(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Normalised 1-D Gaussian; its outer product is MATLAB's ``fspecial('gaussian', size, s)``."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(coords**2) / (2.0 * sigma**2))
    return (g / g.sum()).to(dtype=dtype, device=device)


def _sep_filter_valid(x: Tensor, g: Tensor) -> Tensor:
    """Depthwise separable 'valid' correlation of ``(N, C, H, W)`` with ``outer(g, g)``."""
    C, k = x.shape[1], g.numel()
    wh = g.reshape(1, 1, 1, k).repeat(C, 1, 1, 1)
    wv = g.reshape(1, 1, k, 1).repeat(C, 1, 1, 1)
    return F.conv2d(F.conv2d(x, wh, groups=C), wv, groups=C)


# --------------------------------------------------------------------------------------------
# SSIM / MS-SSIM (differentiable)
# --------------------------------------------------------------------------------------------

_SSIM_K1 = 0.01
_SSIM_K2 = 0.03


def _ssim_and_cs_maps(
    x: Tensor, y: Tensor, data_range: float, window_size: int, sigma: float
) -> tuple[Tensor, Tensor]:
    """Per-channel SSIM map and contrast-structure map, 'valid' region, differentiable."""
    C = x.shape[1]
    g = _gaussian_1d(window_size, sigma, x.dtype, x.device)
    c1 = (_SSIM_K1 * data_range) ** 2
    c2 = (_SSIM_K2 * data_range) ** 2
    stats = _sep_filter_valid(torch.cat([x, y, x * x, y * y, x * y], dim=1), g)
    mu_x, mu_y, e_xx, e_yy, e_xy = stats.split(C, dim=1)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    sigma_xx = e_xx - mu_xx
    sigma_yy = e_yy - mu_yy
    sigma_xy = e_xy - mu_xy
    cs = (2.0 * sigma_xy + c2) / (sigma_xx + sigma_yy + c2)
    lum = (2.0 * mu_xy + c1) / (mu_xx + mu_yy + c1)
    return lum * cs, cs


def ssim_map(
    fused: Tensor,
    reference: Tensor,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
) -> Tensor:
    """Local SSIM map (Wang et al. 2004) per channel, over the 'valid' region.

    Gaussian window ``window_size`` x ``window_size`` with std ``sigma`` (normalised to sum 1),
    K1 = 0.01, K2 = 0.03, population (not sample) covariances.

    Args:
        fused: ``(B, C, H, W)`` in ``[0, data_range]``, C = 1 or 3, H, W >= ``window_size``.
        reference: same shape as ``fused``.

    Returns:
        ``(B, C, H - window_size + 1, W - window_size + 1)`` map in ``[-1, 1]``, differentiable,
        dtype of ``fused``.
    """
    fused, reference = _check_pair(fused, "fused", reference, "reference")
    data_range = _check_data_range(data_range)
    _check_window(window_size, sigma)
    _check_min_size(fused, "fused", window_size, f"SSIM with a {window_size}x{window_size} window")
    return _ssim_and_cs_maps(fused, reference, data_range, window_size, sigma)[0]


def ssim(
    fused: Tensor,
    reference: Tensor,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
    reduction: Literal["none", "mean"] = "none",
) -> Tensor:
    """Structural similarity, Wang, Bovik, Sheikh & Simoncelli, IEEE TIP 13(4) 2004.

    11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, computed per channel over the
    'valid' region (no padding) and averaged over channels and pixels.  Matches
    ``skimage.metrics.structural_similarity(a, b, channel_axis=-1, data_range=1,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`` (checked in the tests to
    1e-3; in practice ~1e-6 in float32).  Pure torch and differentiable (use ``1 - ssim`` as a
    loss).  Range ``[-1, 1]``; **higher is better**; identical images give exactly 1.

    Args:
        fused: ``(B, C, H, W)`` in ``[0, data_range]``, C = 1 or 3, H, W >= ``window_size``.
        reference: same shape as ``fused``.
        data_range: dynamic range of the inputs (1.0 for [0, 1]).
        window_size: odd Gaussian window size.
        sigma: Gaussian standard deviation.
        reduction: ``"none"`` -> ``(B,)`` per-image values; ``"mean"`` -> scalar batch mean.

    Returns:
        ``(B,)`` (or scalar) tensor, dtype of ``fused``.
    """
    if reduction not in ("none", "mean"):
        raise ValueError(f"reduction must be 'none' or 'mean'; got {reduction!r}")
    per_image = ssim_map(fused, reference, data_range, window_size, sigma).mean(dim=(1, 2, 3))
    return per_image.mean() if reduction == "mean" else per_image


MS_SSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_MS_SSIM_CLAMP = 1e-6


def _num_scales(size: int, window_size: int, max_scales: int) -> int:
    """How many scales of ``_matlab_downsample2`` keep the smaller side >= ``window_size``."""
    n = 0
    while n < max_scales and size >= window_size:
        n += 1
        size = (size + 1) // 2
    return n


def ms_ssim(
    x: Tensor,
    y: Tensor,
    data_range: float = 1.0,
    weights: Sequence[float] = MS_SSIM_WEIGHTS,
    window_size: int = 11,
    sigma: float = 1.5,
    reduction: Literal["none", "mean"] = "none",
) -> Tensor:
    """Multi-scale SSIM, Wang, Simoncelli & Bovik, Asilomar 2003.

    ``MS-SSIM = prod_{j<M} cs_j^{w_j} * ssim_M^{w_M}`` where ``cs_j`` is the mean
    contrast-structure term at scale ``j`` and ``ssim_M`` the mean SSIM at the coarsest scale,
    computed per channel then averaged over channels.  Between scales the images are
    downsampled as in Wang's ``msssim.m``: 2x2 mean (``imfilter`` with ``ones(2)/4``,
    'symmetric') keeping every second sample, so a side of n pixels becomes ceil(n/2).

    **Fewer scales for small images:** the number of scales M is the largest ``<= len(weights)``
    for which the coarsest image is still at least ``window_size`` pixels on its smaller side
    (5 scales need min(H, W) >= 161 with the default 11x11 window; 96x128 gets 4); the first M
    weights are renormalised to sum to 1.  Images smaller than the window raise ``ValueError``.

    **Robust powers:** each ``cs_j`` / ``ssim_M`` is clamped to ``>= 1e-6`` before the
    fractional power, so negative values (anti-correlated content) give a tiny score instead of
    NaN, and gradients stay finite (``relu`` alone would give ``0 ** w`` with an infinite
    derivative).

    Range ``[0, 1]``; **higher is better**; identical images give 1.  Differentiable.

    Args:
        x: ``(B, C, H, W)`` in ``[0, data_range]``, C = 1 or 3.
        y: same shape as ``x``.
        data_range: dynamic range of the inputs.
        weights: per-scale exponents, finest first (default: Wang et al.'s five).
        window_size, sigma: Gaussian window as in :func:`ssim`.
        reduction: ``"none"`` -> ``(B,)``; ``"mean"`` -> scalar.

    Returns:
        ``(B,)`` (or scalar) tensor, dtype of ``x``.
    """
    x, y = _check_pair(x, "x", y, "y")
    data_range = _check_data_range(data_range)
    _check_window(window_size, sigma)
    if reduction not in ("none", "mean"):
        raise ValueError(f"reduction must be 'none' or 'mean'; got {reduction!r}")
    w_all = [float(w) for w in weights]
    if not w_all or any(not math.isfinite(w) or w < 0 for w in w_all) or sum(w_all) <= 0:
        raise ValueError(
            f"weights must be a non-empty sequence of non-negative numbers; got {w_all}"
        )
    n_scales = _num_scales(min(x.shape[-2:]), window_size, len(w_all))
    if n_scales == 0:
        raise ValueError(
            f"x must be at least {window_size}x{window_size} pixels for MS-SSIM; "
            f"got shape {tuple(x.shape)}"
        )
    w = torch.tensor(w_all[:n_scales], dtype=x.dtype, device=x.device)
    w = w / w.sum()

    values = []
    for j in range(n_scales):
        ssim_m, cs_m = _ssim_and_cs_maps(x, y, data_range, window_size, sigma)
        if j < n_scales - 1:
            values.append(cs_m.mean(dim=(2, 3)))
            x, y = _matlab_downsample2(x), _matlab_downsample2(y)
        else:
            values.append(ssim_m.mean(dim=(2, 3)))
    stacked = torch.stack(values, dim=0).clamp(min=_MS_SSIM_CLAMP)  # (M, B, C)
    per_image = torch.prod(stacked ** w.view(-1, 1, 1), dim=0).mean(dim=1)
    return per_image.mean() if reduction == "mean" else per_image
