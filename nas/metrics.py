"""Image-quality metrics for multi-exposure image fusion (MEF).

All metrics are plain functions on ``torch`` tensors of shape ``(B, C, H, W)`` with values in
``[0, data_range]`` (``data_range`` defaults to 1.0), ``C`` = 3 (RGB) or, where it makes sense,
``C`` = 1 (grey).  Each returns a ``(B,)`` tensor of per-image values on the input's device;
the caller averages.  Nothing hard-codes a device.

==========  =========================================  =========  ============  ===========
name        reference                                  direction  needs         autograd
==========  =========================================  =========  ============  ===========
psnr        (textbook)                                 higher     reference     yes
ssim        Wang et al. 2004, IEEE TIP 13(4)           higher     reference     yes
ms_ssim     Wang, Simoncelli & Bovik 2003, Asilomar    higher     reference     yes
fsim        Zhang et al. 2011, IEEE TIP 20(8) (FSIMc)  higher     reference     no
mef_ssim    Ma, Zeng & Wang 2015, IEEE TIP 24(11)      higher     sources       opt-in
qabf        Xydeas & Petrovic 2000, Electron. Lett.    higher     sources       no
lpips       Zhang et al. 2018, CVPR (AlexNet, v0.1)    lower      reference     yes
==========  =========================================  =========  ============  ===========

``ssim`` and ``ms_ssim`` are differentiable and keep the input dtype (training losses use
``1 - ssim(...)``).  ``fsim``, ``mef_ssim`` and ``qabf`` re-implement the authors' / MEFB's
MATLAB code, run in float64 under ``torch.no_grad()`` and return float64 (``mef_ssim(...,
differentiable=True)`` keeps the graph: it is the no-reference training objective).  ``psnr``
returns the input dtype.  :data:`METRICS` maps each name to ``(function, direction, needs)`` and
:func:`compute_all` evaluates every applicable metric on a batch.

Bad inputs raise :class:`ValueError` naming the argument and its shape.  :class:`MetricUnavailable`
(a :class:`RuntimeError`) is raised where a metric cannot be computed in this environment
(LPIPS without its weights file).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "METRICS",
    "MetricSpec",
    "MetricUnavailable",
    "QABF_MAX",
    "compute_all",
    "fsim",
    "lpips",
    "mef_ssim",
    "ms_ssim",
    "psnr",
    "qabf",
    "ssim",
    "ssim_map",
]

_EPS64 = float(torch.finfo(torch.float64).eps)  # MATLAB's ``eps`` (2.220446049250313e-16)


class MetricUnavailable(RuntimeError):
    """A metric cannot be computed here (e.g. it needs pretrained weights that are absent)."""


# --------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------


def _check_image(x: object, name: str, channels: tuple[int, ...] = (1, 3)) -> Tensor:
    """Validate one image batch: a floating 4-D tensor ``(B, C, H, W)`` with ``C in channels``."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (B, C, H, W); got {type(x)}")
    if x.ndim != 4:
        raise ValueError(
            f"{name} must be a 4-D tensor (B, C, H, W); got {x.ndim}-D shape {tuple(x.shape)}"
        )
    if x.shape[1] not in channels:
        allowed = " or ".join(str(c) for c in channels)
        raise ValueError(
            f"{name} must have {allowed} channel(s) in dim 1; got shape {tuple(x.shape)}"
        )
    if x.numel() == 0:
        raise ValueError(f"{name} is empty; got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(
            f"{name} must be a floating-point tensor in [0, data_range]; got dtype {x.dtype} "
            f"with shape {tuple(x.shape)}"
        )
    return x


def _check_pair(
    x: object, x_name: str, y: object, y_name: str, channels: tuple[int, ...] = (1, 3)
) -> tuple[Tensor, Tensor]:
    """Validate two image batches that must have identical shapes (and the same device)."""
    x = _check_image(x, x_name, channels)
    y = _check_image(y, y_name, channels)
    if x.shape != y.shape:
        raise ValueError(
            f"{x_name} and {y_name} must have the same shape; "
            f"got {x_name} {tuple(x.shape)} and {y_name} {tuple(y.shape)}"
        )
    if x.device != y.device:
        raise ValueError(
            f"{x_name} and {y_name} must be on the same device; got {x.device} and {y.device}"
        )
    return x, y


def _check_data_range(data_range: float) -> float:
    if not (isinstance(data_range, int | float) and math.isfinite(data_range) and data_range > 0):
        raise ValueError(f"data_range must be a positive finite number; got {data_range!r}")
    return float(data_range)


def _check_window(window_size: int, sigma: float) -> None:
    if not isinstance(window_size, int) or window_size < 1 or window_size % 2 == 0:
        raise ValueError(f"window_size must be a positive odd integer; got {window_size!r}")
    if not (sigma > 0):
        raise ValueError(f"sigma must be positive; got {sigma!r}")


def _check_min_size(x: Tensor, name: str, size: int, what: str) -> None:
    H, W = x.shape[-2:]
    if H < size or W < size:
        raise ValueError(
            f"{name} must be at least {size}x{size} pixels for {what}; got shape {tuple(x.shape)}"
        )


# --------------------------------------------------------------------------------------------
# Filtering helpers (depthwise, 'valid' region unless said otherwise)
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


def _matlab_downsample2(x: Tensor) -> Tensor:
    """``imfilter(x, ones(2)/4, 'symmetric', 'same')`` then ``x(1:2:end, 1:2:end)``.

    MATLAB's centre of an even 2x2 kernel is its (1, 1) element, so output pixel ``(i, j)`` is
    the mean of ``x[2i:2i+2, 2j:2j+2]`` where the row/column past the end (odd sizes) mirrors
    the last one ('symmetric' padding).  ``(N, C, H, W) -> (N, C, ceil(H/2), ceil(W/2))``.
    """
    H, W = x.shape[-2:]
    if H % 2 or W % 2:
        x = F.pad(x, (0, W % 2, 0, H % 2), mode="replicate")
    return F.avg_pool2d(x, 2)


def _round_half_away(x: Tensor) -> Tensor:
    """MATLAB ``round`` / ``uint8()`` rounding (half away from zero)."""
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


# --------------------------------------------------------------------------------------------
# PSNR
# --------------------------------------------------------------------------------------------


def psnr(fused: Tensor, reference: Tensor, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio in dB, ``10 log10(data_range^2 / MSE)``.

    The MSE is taken over all channels and pixels of each image.  Range ``(-inf, +inf]`` for
    inputs in ``[0, data_range]`` (in practice 10-50 dB); **higher is better**.  Identical images
    give ``+inf`` (MSE = 0; no epsilon is added so the value is never capped arbitrarily).

    Args:
        fused: ``(B, C, H, W)`` images in ``[0, data_range]``, C = 1 or 3.
        reference: same shape as ``fused``.
        data_range: the peak value (1.0 for images in [0, 1], 255 for 8-bit values).

    Returns:
        ``(B,)`` tensor of PSNR values in dB, dtype of ``fused``.
    """
    fused, reference = _check_pair(fused, "fused", reference, "reference")
    data_range = _check_data_range(data_range)
    diff = fused.double() - reference.double()
    mse = diff.pow(2).flatten(1).mean(dim=1)
    return (10.0 * torch.log10(data_range**2 / mse)).to(fused.dtype)


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


# --------------------------------------------------------------------------------------------
# FSIM / FSIMc (Zhang et al. 2011), port of the authors' FeatureSIM.m + phasecong2
# --------------------------------------------------------------------------------------------


def _pc_range(n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Kovesi's frequency range normalised to +/-0.5 (odd and even sizes as in phasecong2)."""
    idx = torch.arange(n, dtype=dtype, device=device)
    if n % 2:
        return (idx - (n - 1) / 2) / (n - 1)
    return (idx - n / 2) / n


def _phasecong2(im: Tensor) -> Tensor:
    """Phase congruency, the ``phasecong2`` bundled with FeatureSIM.m (Kovesi, PC_2 measure).

    ``(N, rows, cols)`` float64 -> ``(N, rows, cols)`` in ``[0, 1]``.  4 scales, 4 orientations,
    minWaveLength 6, mult 2, sigmaOnf 0.55, dThetaOnSigma 1.2, k 2, epsilon 1e-4, low-pass
    Butterworth (cutoff 0.45, order 15); noise threshold from the median of the squared
    smallest-scale response (MATLAB ``median``: mean of the two middle values for even counts),
    divided by the empirical 1.7 factor.
    """
    nscale, norient = 4, 4
    min_wavelength, mult, sigma_onf, d_theta_on_sigma = 6.0, 2.0, 0.55, 1.2
    k, epsilon = 2.0, 1e-4
    theta_sigma = math.pi / norient / d_theta_on_sigma
    _, rows, cols = im.shape
    dt, dev = im.dtype, im.device

    imagefft = torch.fft.fft2(im)
    yy, xx = torch.meshgrid(_pc_range(rows, dt, dev), _pc_range(cols, dt, dev), indexing="ij")
    radius = torch.fft.ifftshift(torch.sqrt(xx**2 + yy**2))
    theta = torch.fft.ifftshift(torch.atan2(-yy, xx))
    radius[0, 0] = 1.0
    sintheta, costheta = torch.sin(theta), torch.cos(theta)

    # lowpassfilter([rows, cols], .45, 15): same ranges, radius from the centre, ifftshift.
    lp_radius = torch.fft.ifftshift(torch.sqrt(xx**2 + yy**2))
    lp = 1.0 / (1.0 + (lp_radius / 0.45) ** (2 * 15))

    log_gabor = []
    for s in range(nscale):
        fo = 1.0 / (min_wavelength * mult**s)
        lg = torch.exp(-(torch.log(radius / fo) ** 2) / (2 * math.log(sigma_onf) ** 2)) * lp
        lg[0, 0] = 0.0
        log_gabor.append(lg)

    spread = []
    for o in range(norient):
        angl = o * math.pi / norient
        ds = sintheta * math.cos(angl) - costheta * math.sin(angl)
        dc = costheta * math.cos(angl) + sintheta * math.sin(angl)
        dtheta = torch.abs(torch.atan2(ds, dc))
        spread.append(torch.exp(-(dtheta**2) / (2 * theta_sigma**2)))

    energy_all = torch.zeros_like(im)
    an_all = torch.zeros_like(im)
    sqrt_n = math.sqrt(rows * cols)
    for o in range(norient):
        sum_e = torch.zeros_like(im)
        sum_o = torch.zeros_like(im)
        sum_an = torch.zeros_like(im)
        eo_list = []
        ifft_filters = []
        em_n = None
        for s in range(nscale):
            filt = log_gabor[s] * spread[o]
            ifft_filters.append(torch.fft.ifft2(filt).real * sqrt_n)
            eo = torch.fft.ifft2(imagefft * filt)
            eo_list.append(eo)
            sum_an = sum_an + eo.abs()
            sum_e = sum_e + eo.real
            sum_o = sum_o + eo.imag
            if s == 0:
                em_n = torch.sum(filt**2)
        x_energy = torch.sqrt(sum_e**2 + sum_o**2) + epsilon
        mean_e = sum_e / x_energy
        mean_o = sum_o / x_energy
        energy = torch.zeros_like(im)
        for eo in eo_list:
            e, od = eo.real, eo.imag
            energy = energy + e * mean_e + od * mean_o - torch.abs(e * mean_o - od * mean_e)

        # Noise compensation (per image): median of |EO(scale 1)|^2 -> Rayleigh noise model.
        median_e2n = torch.quantile((eo_list[0].abs() ** 2).flatten(1), 0.5, dim=1)  # (N,)
        mean_e2n = -median_e2n / math.log(0.5)
        noise_power = mean_e2n / em_n
        est_sum_an2 = sum(f**2 for f in ifft_filters)
        est_sum_aiaj = sum(
            ifft_filters[i] * ifft_filters[j]
            for i in range(nscale - 1)
            for j in range(i + 1, nscale)
        )
        est_noise_energy2 = (
            2 * noise_power * est_sum_an2.sum() + 4 * noise_power * est_sum_aiaj.sum()
        )
        tau = torch.sqrt(est_noise_energy2 / 2)
        est_noise_energy = tau * math.sqrt(math.pi / 2)
        est_noise_energy_sigma = torch.sqrt((2 - math.pi / 2) * tau**2)
        T = (est_noise_energy + k * est_noise_energy_sigma) / 1.7  # (N,)
        energy = torch.clamp(energy - T.view(-1, 1, 1), min=0.0)
        energy_all = energy_all + energy
        an_all = an_all + sum_an
    # MATLAB divides unguarded (0/0 = NaN); a response-free pixel has no congruency: 0.
    return torch.where(an_all > 0, energy_all / an_all.clamp_min(1e-300), torch.zeros_like(im))


def _conv2_same_zero(x: Tensor, kernel: Tensor) -> Tensor:
    """MATLAB ``conv2(x, kernel, 'same')`` (zero padding, true convolution) on ``(N, 1, H, W)``."""
    kh, kw = kernel.shape
    # 'same' keeps full-convolution indices floor(k/2) .. floor(k/2) + n - 1, i.e. a
    # correlation with the flipped kernel after padding k - 1 - floor(k/2) before, floor(k/2)
    # after (k = 2: out[j] = h[1] x[j] + h[0] x[j + 1]).
    xp = F.pad(x, (kw - 1 - kw // 2, kw // 2, kh - 1 - kh // 2, kh // 2))
    return F.conv2d(xp, torch.flip(kernel, dims=(0, 1)).reshape(1, 1, kh, kw))


@torch.no_grad()
def fsim(
    fused: Tensor, reference: Tensor, data_range: float = 1.0, chromatic: bool = True
) -> Tensor:
    """Feature similarity index, Zhang, Zhang, Mou & Zhang, IEEE TIP 20(8) 2011 (FSIM / FSIMc).

    A port of the authors' ``FeatureSIM.m`` (with its bundled ``phasecong2``):

    * inputs scaled to 0-255; for RGB, ``Y = .299R + .587G + .114B``,
      ``I = .596R - .274G - .322B``, ``Q = .211R - .523G + .312B`` (YIQ);
    * automatic downsampling: ``F = max(1, round(min(H, W) / 256))``, an FxF average filter
      (``conv2(.., 'same')``, zero padding) and every F-th sample of Y, I and Q;
    * phase congruency PC of Y by log-Gabor filters (4 scales, 4 orientations, minWaveLength 6,
      mult 2, sigmaOnf 0.55, dThetaOnSigma 1.2, k 2, Kovesi's noise compensation);
    * gradient magnitude of Y with the Scharr kernels ``[3 0 -3; 10 0 -10; 3 0 -3] / 16``;
    * ``S_PC = (2 PC1 PC2 + T1) / (PC1^2 + PC2^2 + T1)``, T1 = 0.85;
      ``S_G = (2 G1 G2 + T2) / (G1^2 + G2^2 + T2)``, T2 = 160;
      ``FSIM = sum(S_PC S_G PCm) / sum(PCm)`` with ``PCm = max(PC1, PC2)``;
    * FSIMc (RGB, ``chromatic=True``) multiplies by ``real((S_I S_Q)^lambda)``, lambda = 0.03,
      ``S_I = (2 I1 I2 + T3) / (I1^2 + I2^2 + T3)``, same for Q, T3 = T4 = 200.

    Range ``[0, 1]`` (FSIMc can dip marginally below 0 only for pathological chroma); **higher
    is better**; identical images give exactly 1, mild distortions typically 0.85-0.99.  Images
    without any phase congruency (e.g. both constant) give NaN, as the MATLAB code does (0/0).
    Details that are this port's reading: a pixel where the summed filter amplitude is exactly
    0 gets PC = 0 (MATLAB: 0/0); images must be at least 3x3 after downsampling.

    Args:
        fused: ``(B, C, H, W)`` in ``[0, data_range]``; C = 3 gives FSIMc (or FSIM with
            ``chromatic=False``), C = 1 gives FSIM.
        reference: same shape as ``fused``.
        data_range: dynamic range of the inputs (mapped to 0-255).
        chromatic: for RGB, return FSIMc (default) rather than luminance-only FSIM.

    Returns:
        ``(B,)`` float64 tensor.
    """
    fused, reference = _check_pair(fused, "fused", reference, "reference")
    data_range = _check_data_range(data_range)
    scale = 255.0 / data_range
    ref = reference.double() * scale  # "imageRef"
    dis = fused.double() * scale  # "imageDis"
    B, C, rows, cols = ref.shape
    color = C == 3

    def yiq(img: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        r, g, b = img[:, 0:1], img[:, 1:2], img[:, 2:3]
        return (
            0.299 * r + 0.587 * g + 0.114 * b,
            0.596 * r - 0.274 * g - 0.322 * b,
            0.211 * r - 0.523 * g + 0.312 * b,
        )

    if color:
        y1, i1, q1 = yiq(ref)
        y2, i2, q2 = yiq(dis)
    else:
        y1, y2 = ref, dis
        i1 = i2 = q1 = q2 = None

    f = max(1, math.floor(min(rows, cols) / 256 + 0.5))  # MATLAB round (half away from zero)

    def down(z: Tensor) -> Tensor:
        if f == 1:
            return z
        kernel = torch.full((f, f), 1.0 / (f * f), dtype=z.dtype, device=z.device)
        return _conv2_same_zero(z, kernel)[:, :, ::f, ::f]

    y1, y2 = down(y1), down(y2)
    h, w = y1.shape[-2:]
    if h < 3 or w < 3:
        raise ValueError(
            f"fused is too small for FSIM ({h}x{w} after the authors' downsampling by {f}); "
            f"got shape {tuple(fused.shape)}"
        )

    pc = _phasecong2(torch.cat([y1, y2], dim=0)[:, 0])
    pc1, pc2 = pc[:B], pc[B:]

    dx = torch.tensor([[3, 0, -3], [10, 0, -10], [3, 0, -3]], dtype=y1.dtype) / 16
    dy = torch.tensor([[3, 10, 3], [0, 0, 0], [-3, -10, -3]], dtype=y1.dtype) / 16
    dx, dy = dx.to(y1.device), dy.to(y1.device)
    ys = torch.cat([y1, y2], dim=0)
    grad = torch.sqrt(_conv2_same_zero(ys, dx) ** 2 + _conv2_same_zero(ys, dy) ** 2)[:, 0]
    g1, g2 = grad[:B], grad[B:]

    t1, t2, t3, t4, lam = 0.85, 160.0, 200.0, 200.0, 0.03
    s_pc = (2 * pc1 * pc2 + t1) / (pc1**2 + pc2**2 + t1)
    s_g = (2 * g1 * g2 + t2) / (g1**2 + g2**2 + t2)
    pcm = torch.maximum(pc1, pc2)
    sim = s_g * s_pc
    if color and chromatic:
        i1, i2, q1, q2 = (down(z)[:, 0] for z in (i1, i2, q1, q2))
        s_i = (2 * i1 * i2 + t3) / (i1**2 + i2**2 + t3)
        s_q = (2 * q1 * q2 + t4) / (q1**2 + q2**2 + t4)
        base = s_i * s_q
        # real(base .^ lambda) for a possibly negative base (principal branch).
        chroma = base.abs() ** lam * torch.where(
            base < 0, torch.full_like(base, math.cos(lam * math.pi)), torch.ones_like(base)
        )
        sim = sim * chroma
    return (sim * pcm).sum(dim=(1, 2)) / pcm.sum(dim=(1, 2))


# --------------------------------------------------------------------------------------------
# MEF-SSIM (Ma, Zeng & Wang 2015), port of mef_ssim.m / mef_ms_ssim.m as used by MEFB
# --------------------------------------------------------------------------------------------

# MATLAB rgb2gray: first row of inv([1 .956 .621; 1 -.272 -.647; 1 -1.106 1.703]),
# documented as 0.2989 R + 0.5870 G + 0.1140 B.
_RGB2GRAY = (0.298936021293775, 0.587043074451121, 0.114020904255103)
_MEF_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001)


def _to_gray255(x: Tensor, data_range: float, quantize: bool) -> Tensor:
    """``(B, C, H, W)`` -> ``(B, 1, H, W)`` float64 on the 0-255 scale (MATLAB ``rgb2gray``)."""
    x = x.double() * (255.0 / data_range)
    if quantize:  # an 8-bit image as ``imread`` returns it
        x = _round_half_away(x.clamp(0.0, 255.0))
    if x.shape[1] == 3:
        c = _RGB2GRAY
        x = c[0] * x[:, 0:1] + c[1] * x[:, 1:2] + c[2] * x[:, 2:3]
        if quantize:  # rgb2gray of a uint8 image returns uint8
            x = _round_half_away(x)
    return x


def _mef_ssim_scale(
    seq: Tensor, fused: Tensor, window_size: int = 11, k2: float = 0.03, guard: bool = True
) -> Tensor:
    """One scale of ``mef_ssim.m``: ``seq (B, K, H, W)``, ``fused (B, 1, H, W)`` -> ``(B,)``.

    Vectorised exactly: the per-pixel 11x11 patch loops of the MATLAB code are rewritten with
    box-filter (distance/consistency/weights) and Gaussian-filter (SSIM statistics) moments,
    using that the desired patch is an affine function of the source patches.

    ``guard=False`` drops the Cauchy-Schwarz clamp of the covariance (it only absorbs float
    rounding in flat patches, and its square root has no gradient at 0): the differentiable
    path of :func:`mef_ssim` uses it.
    """
    B, K, H, W = seq.shape
    n = window_size * window_size
    dt, dev = seq.dtype, seq.device
    # Shift-invariant statistics: centring on 128 only reduces cancellation in E[x^2] - E[x]^2.
    seq = seq - 128.0
    fused = fused - 128.0
    box = torch.full((window_size,), 1.0 / window_size, dtype=dt, device=dev)
    gauss = _gaussian_1d(window_size, 1.5, dt, dev)
    pairs = [(i, j) for i in range(K) for j in range(i, K)]
    pi_idx = torch.tensor([p[0] for p in pairs], device=dev)
    pj_idx = torch.tensor([p[1] for p in pairs], device=dev)
    prods = seq[:, pi_idx] * seq[:, pj_idx]  # (B, P, H, W)

    # ---- box ('sWindow') statistics: mu, ed, consistency R ----
    box_stats = _sep_filter_valid(torch.cat([seq, prods], dim=1), box)
    mu = box_stats[:, :K]
    cov_box = box_stats[:, K:] - mu[:, pi_idx] * mu[:, pj_idx]  # (B, P, h, w)
    cov_full = torch.zeros(B, K, K, *cov_box.shape[-2:], dtype=dt, device=dev)
    cov_full[:, pi_idx, pj_idx] = cov_box
    cov_full[:, pj_idx, pi_idx] = cov_box
    var_box = torch.diagonal(cov_full, dim1=1, dim2=2).permute(0, 3, 1, 2)  # (B, K, h, w)
    norm_k = torch.sqrt(torch.clamp(n * var_box, min=0.0))  # ||x_k - mu_k|| per patch
    ed = norm_k + 0.001
    numerator = torch.sqrt(torch.clamp(n * cov_full.sum(dim=(1, 2)), min=0.0))
    denominator = norm_k.sum(dim=1)
    R = (numerator + _EPS64) / (denominator + _EPS64)
    R = torch.where(R > 1, torch.full_like(R, 1 - _EPS64), R)
    R = torch.where(R < 0, torch.full_like(R, _EPS64), R)
    p = torch.tan(math.pi / 2 * R)
    p = torch.where(p > 10, torch.full_like(p, 10.0), p).unsqueeze(1)
    w_map = (ed / window_size) ** p + _EPS64
    w_map = w_map / w_map.sum(dim=1, keepdim=True)
    max_ed = ed.max(dim=1).values  # (B, h, w)
    c = w_map / ed  # rBlock = sum_k c_k (x_k - mu_k)

    c_pair = c.unsqueeze(2) * c.unsqueeze(1)  # (B, K, K, h, w)
    r_norm_sq = n * (c_pair * cov_full).sum(dim=(1, 2))
    # MATLAB: if norm(rBlock) > 0, rBlock = rBlock / norm(rBlock) * maxEd (else it stays 0).
    # The scale is a; tiny |r|^2 can only be rounding noise of an all-flat patch.
    a = torch.where(
        r_norm_sq > 0, max_ed / torch.sqrt(r_norm_sq.clamp_min(1e-300)), torch.zeros_like(max_ed)
    )

    # ---- Gaussian-window statistics of the desired patch r and the fused patch f ----
    f_prods = seq * fused  # (B, K, H, W)
    g_stats = _sep_filter_valid(
        torch.cat([seq, fused, prods, f_prods, fused * fused], dim=1), gauss
    )
    P = len(pairs)
    gm = g_stats[:, :K]
    gm_f = g_stats[:, K : K + 1]
    g_xx = g_stats[:, K + 1 : K + 1 + P]
    g_xf = g_stats[:, K + 1 + P : K + 1 + P + K]
    g_ff = g_stats[:, K + 1 + P + K :]
    gcov = g_xx - gm[:, pi_idx] * gm[:, pj_idx]
    gcov_full = torch.zeros(B, K, K, *gcov.shape[-2:], dtype=dt, device=dev)
    gcov_full[:, pi_idx, pj_idx] = gcov
    gcov_full[:, pj_idx, pi_idx] = gcov
    gcov_xf = g_xf - gm * gm_f  # (B, K, h, w)
    sigma2_sq = torch.clamp((g_ff - gm_f * gm_f)[:, 0], min=0.0)
    sigma1_sq = a**2 * (c_pair * gcov_full).sum(dim=(1, 2))
    # Exact bound: Gaussian variance of a patch of norm maxEd <= max(window) * maxEd^2.
    w_max = float(gauss.max()) ** 2
    sigma1_sq = torch.minimum(torch.clamp(sigma1_sq, min=0.0), w_max * max_ed**2)
    sigma12 = a * (c * gcov_xf).sum(dim=1)
    if guard:
        bound = torch.sqrt(sigma1_sq * sigma2_sq)
        sigma12 = torch.maximum(torch.minimum(sigma12, bound), -bound)

    cc = (k2 * 255.0) ** 2
    q_map = (2 * sigma12 + cc) / (sigma1_sq + sigma2_sq + cc)
    return q_map.mean(dim=(1, 2))


def _as_source_list(sources: object, name: str = "sources") -> list[Tensor]:
    if isinstance(sources, Tensor):
        if sources.ndim != 5:
            raise ValueError(
                f"{name} must be a sequence of (B, C, H, W) tensors or one (B, K, C, H, W) "
                f"tensor; got a tensor of shape {tuple(sources.shape)}"
            )
        return list(sources.unbind(dim=1))
    if not isinstance(sources, Sequence) or isinstance(sources, str):
        raise ValueError(f"{name} must be a sequence of (B, C, H, W) tensors; got {type(sources)}")
    return list(sources)


def mef_ssim(
    fused: Tensor,
    sources: Sequence[Tensor] | Tensor,
    scales: int = 3,
    data_range: float = 1.0,
    weights: Sequence[float] | None = None,
    quantize: bool = False,
    differentiable: bool = False,
) -> Tensor:
    """MEF-SSIM, Ma, Zeng & Wang, "Perceptual quality assessment for multi-exposure image
    fusion", IEEE TIP 24(11) 2015 -- as the authors' ``mef_ms_ssim.m`` / ``mef_ssim.m``
    compute it (the code MEFB ships; *not* MEF-Net's simplified variant).

    Following ``metricsMEF_SSIM.m`` (MEFB) and the authors' code line by line:

    1. each source and the fused image -> grey with MATLAB ``rgb2gray`` coefficients
       (0.2989, 0.5870, 0.1140; exactly the first row of inv(NTSC)) on 0-255 doubles
       (``quantize=True`` also rounds the RGB values and the grey result to integers, as for
       ``uint8`` images read from disk; default off);
    2. per scale (``mef_ssim.m``), with ``wSize = 11``, over the 'valid' region:
       ``mu_k`` = 11x11 box mean of source k; ``ed_k = sqrt(max(121 * boxvar_k, 0)) + 0.001``
       (the patch "strength" ||x_k - mu_k||, plus 0.001);
       consistency ``R = ||sum_k (x_k - mu_k)|| / sum_k ||x_k - mu_k||`` (``+eps`` on both; R >
       1 -> 1 - eps); ``p = tan(pi/2 R)`` capped at 10; ``w_k = (ed_k / 11)^p + eps``,
       normalised over k; desired patch ``r = sum_k w_k (x_k - mu_k) / ed_k``, rescaled to norm
       ``max_k ed_k`` (unless it is 0); then with the 11x11 Gaussian window (sigma 1.5) the
       weighted variances of r and of the fused patch f and their covariance give
       ``q = (2 s_rf + C) / (s_r^2 + s_f^2 + C)``, ``C = (0.03 * 255)^2`` (no luminance term);
       the scale score is the mean of the q map;
    3. multi-scale (``mef_ms_ssim.m``, level 3): between scales every image is 2x2-mean
       filtered (``imfilter(.., ones(2)/4, 'symmetric', 'same')``) and every second sample
       kept; ``score = prod_l Q_l ^ w_l`` with w = [0.0448 0.2856 0.3001] / sum.

    This implementation replaces the per-pixel patch loops by exact moment algebra (the desired
    patch is affine in the source patches), in float64; it matches a literal loop port of the
    MATLAB code to ~1e-10 (see the tests).  Readings/choices of this port: ``scales`` other than
    3 without explicit ``weights`` use the first ``scales`` of Wang's five MS-SSIM weights
    (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), renormalised (the MATLAB code requires the caller
    to pass them); like the MATLAB code, images whose smaller side divided by
    ``2^(scales-1)`` is below 11 are rejected (``ValueError``; MATLAB returns -Inf); numerical
    guards that never bind in exact arithmetic clamp the desired patch's variance to its
    analytic bound and the covariance by Cauchy-Schwarz (they only absorb float rounding in
    perfectly flat patches).

    ``differentiable=True`` (the training objective :class:`nas.losses.MEFSSIMLoss`) keeps the
    autograd graph to ``fused``: the same computation (still float64) without the rounding
    guard on the covariance, and with per-scale scores floored at 1e-6 before the weighted
    geometric mean (so the power stays real); it agrees with the metric to ~1e-12 wherever every
    scale score is positive (see the tests).  It cannot be combined with ``quantize``.

    Range: ``(0, 1]`` in practice, **higher is better**; fused = any source when all sources
    are identical gives 1 (to ~1e-9); a per-scale score is negative only for a fused image
    anti-correlated with the desired structure, where MATLAB's ``prod(Q.^w)`` turns complex --
    we then return its real part (so the value can be slightly negative).  Invariant to a
    constant added to the fused image (there is no luminance term).

    Args:
        fused: ``(B, C, H, W)`` in ``[0, data_range]``, C = 3 (RGB) or 1 (grey).
        sources: >= 2 exposures, each shaped like ``fused`` (a sequence, or one
            ``(B, K, C, H, W)`` tensor).
        scales: number of scales (1 = single-scale ``mef_ssim.m``).
        data_range: dynamic range of the inputs (mapped to 0-255).
        weights: per-scale exponents, finest first (normalised to sum 1).
        quantize: round to 8-bit values first (reproduces MEFB on images saved as 8-bit files).
        differentiable: keep gradients to ``fused`` (see above).

    Returns:
        ``(B,)`` float64 tensor.
    """
    if differentiable and quantize:
        raise ValueError("mef_ssim: quantize=True has no gradient; use differentiable=False")
    with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
        return _mef_ssim(fused, sources, scales, data_range, weights, quantize, differentiable)


def _mef_ssim(
    fused: Tensor,
    sources: Sequence[Tensor] | Tensor,
    scales: int,
    data_range: float,
    weights: Sequence[float] | None,
    quantize: bool,
    differentiable: bool,
) -> Tensor:
    fused = _check_image(fused, "fused")
    src = _as_source_list(sources)
    if len(src) < 2:
        raise ValueError(f"sources must contain at least 2 exposures; got {len(src)}")
    for i, s in enumerate(src):
        _check_pair(fused, "fused", s, f"sources[{i}]")
    data_range = _check_data_range(data_range)
    if not isinstance(scales, int) or scales < 1:
        raise ValueError(f"scales must be a positive integer; got {scales!r}")
    if weights is None:
        if scales > len(MS_SSIM_WEIGHTS):
            raise ValueError(f"scales > {len(MS_SSIM_WEIGHTS)} needs explicit weights")
        weights = _MEF_SSIM_WEIGHTS if scales == 3 else MS_SSIM_WEIGHTS[:scales]
    w = torch.tensor([float(v) for v in weights], dtype=torch.float64)
    if w.numel() != scales or bool((w < 0).any()) or float(w.sum()) <= 0:
        raise ValueError(
            f"weights must have one non-negative entry per scale ({scales}); got {list(weights)}"
        )
    w = (w / w.sum()).to(fused.device)
    H, W = fused.shape[-2:]
    if min(H, W) / 2 ** (scales - 1) < 11:
        raise ValueError(
            f"fused is too small for MEF-SSIM with {scales} scale(s): min(H, W) / 2^(scales-1) "
            f"must be >= 11; got shape {tuple(fused.shape)}"
        )

    with torch.no_grad():  # the sources never need a gradient
        seq = torch.cat([_to_gray255(s, data_range, quantize) for s in src], dim=1)  # (B,K,H,W)
    f = _to_gray255(fused, data_range, quantize)
    q = []
    for level in range(scales):
        q.append(_mef_ssim_scale(seq, f, guard=not differentiable))
        if level < scales - 1:
            seq, f = _matlab_downsample2(seq), _matlab_downsample2(f)
    qs = torch.stack(q, dim=0)  # (scales, B)
    if scales == 1:
        return qs[0]
    if differentiable:
        return torch.exp((w.view(-1, 1) * torch.log(qs.clamp_min(1e-6))).sum(dim=0))
    if bool((qs > 0).all()):
        return torch.prod(qs ** w.view(-1, 1), dim=0)
    return torch.prod(qs.to(torch.complex128) ** w.view(-1, 1), dim=0).real


# --------------------------------------------------------------------------------------------
# Q^AB/F (Xydeas & Petrovic 2000), as MEFB's metricsQabf.m computes it
# --------------------------------------------------------------------------------------------

_QABF_TG, _QABF_KG, _QABF_DG = 0.9994, -15.0, 0.5
_QABF_TA, _QABF_KA, _QABF_DA = 0.9879, -22.0, 0.8
#: Best attainable Q^AB/F in MEFB's implementation (fused == a == b with non-zero gradients):
#: Tg * Ta / (1 + exp(ka (1 - Da))) ~= 0.975332.  It is below 1 because the sigmoids' Gamma
#: constants (0.9994, 0.9879) are not normalised to 1.
QABF_MAX = _QABF_TG * _QABF_TA / (1.0 + math.exp(_QABF_KA * (1.0 - _QABF_DA)))


def _qabf_sobel(p: Tensor) -> tuple[Tensor, Tensor]:
    """Sobel magnitude and MEFB orientation (``atan(Sy/Sx)``, ``pi/2`` where ``Sx == 0``)."""
    h1 = torch.tensor([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], dtype=p.dtype, device=p.device)
    h3 = torch.tensor([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=p.dtype, device=p.device)
    sx = _conv2_same_zero(p, h3)
    sy = _conv2_same_zero(p, h1)
    g = torch.sqrt(sx**2 + sy**2)
    zero = sx == 0
    alpha = torch.where(
        zero, torch.full_like(sx, math.pi / 2), torch.atan(sy / torch.where(zero, 1.0, sx))
    )
    return g, alpha


def _qabf_preservation(g_x: Tensor, a_x: Tensor, g_f: Tensor, a_f: Tensor) -> Tensor:
    """Edge preservation ``Q^XF = Q_g * Q_a`` (MEFB's per-pixel loop, vectorised)."""
    # MEFB: if gX > gF: gF/gX; elseif gX == gF: gF (sic; with MEFB's 255x scale this saturates
    # Q_g to Tg for any non-zero edge); else gX/gF.
    G = torch.where(
        g_x > g_f,
        g_f / torch.where(g_x > g_f, g_x, 1.0),
        torch.where(g_x == g_f, g_f, g_x / torch.where(g_x == g_f, 1.0, g_f)),
    )
    A = 1.0 - torch.abs(a_x - a_f) / (math.pi / 2)
    q_g = _QABF_TG / (1.0 + torch.exp(_QABF_KG * (G - _QABF_DG)))
    q_a = _QABF_TA / (1.0 + torch.exp(_QABF_KA * (A - _QABF_DA)))
    return q_g * q_a


@torch.no_grad()
def qabf(
    fused: Tensor, a: Tensor, b: Tensor, data_range: float = 1.0, quantize: bool = False
) -> Tensor:
    """Edge-information preservation Q^AB/F, Xydeas & Petrovic, Electronics Letters 36(4) 2000,
    exactly as MEFB's ``metricsQabf.m`` computes it.

    Per RGB channel (then averaged over channels, as MEFB does): Sobel responses
    ``Sx = conv2(p, [-1 0 1; -2 0 2; -1 0 1], 'same')``, ``Sy = conv2(p, [1 2 1; 0 0 0; -1 -2
    -1], 'same')`` (zero padding), magnitude ``g = sqrt(Sx^2 + Sy^2)``, orientation ``alpha =
    atan(Sy / Sx)`` (``pi/2`` where ``Sx == 0``); relative strength ``G^AF = gF/gA`` or
    ``gA/gF`` (the smaller over the larger) and orientation ``A^AF = 1 - |aA - aF| / (pi/2)``;
    ``Q^AF = Tg / (1 + exp(kg (G - Dg))) * Ta / (1 + exp(ka (A - Da)))`` with Tg 0.9994, kg -15,
    Dg 0.5, Ta 0.9879, ka -22, Da 0.8; ``Q = sum(Q^AF gA + Q^BF gB) / sum(gA + gB)`` (L = 1).

    MEFB quirks reproduced: its ``255 * im2double(double(img))`` multiplies the 8-bit values by
    255 again, and where ``gA == gF`` it sets ``G = gF`` instead of 1; together these make
    Q_g = Tg exactly for any equal non-zero edge, so identical images score
    :data:`QABF_MAX` ~= 0.9753 (not 1).  Convention of this port for a channel in which both
    sources are flat (MATLAB: 0/0 = NaN): ``QABF_MAX`` if the fused channel is flat too,
    else 0 (all its edges are spurious).

    Range ``[0, QABF_MAX]`` (~[0, 0.975]); **higher is better**.

    Args:
        fused: ``(B, C, H, W)`` in ``[0, data_range]``, C = 1 or 3.
        a, b: the two source exposures, same shape as ``fused``.
        data_range: dynamic range of the inputs (mapped to 0-255).
        quantize: round to 8-bit values first (MEFB reads 8-bit files).

    Returns:
        ``(B,)`` float64 tensor.
    """
    fused, a = _check_pair(fused, "fused", a, "a")
    _, b = _check_pair(fused, "fused", b, "b")
    data_range = _check_data_range(data_range)
    B, C, H, W = fused.shape

    def prep(x: Tensor) -> Tensor:
        x = x.double() * (255.0 / data_range)
        if quantize:
            x = _round_half_away(x.clamp(0.0, 255.0))
        return (255.0 * x).reshape(B * C, 1, H, W)  # MEFB: 255 * im2double(double(uint8))

    g_a, al_a = _qabf_sobel(prep(a))
    g_b, al_b = _qabf_sobel(prep(b))
    g_f, al_f = _qabf_sobel(prep(fused))
    q_af = _qabf_preservation(g_a, al_a, g_f, al_f)
    q_bf = _qabf_preservation(g_b, al_b, g_f, al_f)
    num = (q_af * g_a + q_bf * g_b).sum(dim=(1, 2, 3))
    den = (g_a + g_b).sum(dim=(1, 2, 3))
    fused_flat = g_f.sum(dim=(1, 2, 3)) == 0
    flat_value = torch.where(fused_flat, torch.full_like(den, QABF_MAX), torch.zeros_like(den))
    per_channel = torch.where(den > 0, num / torch.where(den > 0, den, 1.0), flat_value)
    return per_channel.view(B, C).mean(dim=1)


# --------------------------------------------------------------------------------------------
# LPIPS (needs pretrained weights that cannot be shipped or downloaded here)
# --------------------------------------------------------------------------------------------


_LPIPS_SHIFT = (-0.030, -0.088, -0.188)  # LPIPS ScalingLayer (inputs in [-1, 1])
_LPIPS_SCALE = (0.458, 0.448, 0.450)
# torchvision AlexNet ``features`` convs: (index, stride, padding); ReLU after each; max-pools
# (3, stride 2) after convs 0 and 3.  LPIPS taps relu1..relu5 (after convs 0, 3, 6, 8, 10).
_ALEX_CONVS = ((0, 4, 2), (3, 1, 2), (6, 1, 1), (8, 1, 1), (10, 1, 1))
_LPIPS_CHANNELS = (64, 192, 384, 256, 256)


def _lpips_required_keys() -> list[str]:
    keys = [f"features.{i}.{p}" for i, _, _ in _ALEX_CONVS for p in ("weight", "bias")]
    return keys + [f"lin{i}.model.1.weight" for i in range(5)]


def _load_lpips_weights(weights_path: str | Path | Sequence[str | Path]) -> dict[str, Tensor]:
    """Merge the given state-dict file(s) into the key layout of :func:`_lpips_required_keys`."""
    paths = [weights_path] if isinstance(weights_path, str | Path) else list(weights_path)
    merged: dict[str, Tensor] = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise MetricUnavailable(f"LPIPS weights file not found: {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise MetricUnavailable(f"{path} does not hold a state dict (got {type(state)})")
        for key, val in state.items():
            if not isinstance(val, Tensor):
                continue
            m = re.fullmatch(r"(?:net\.slice\d\.|module\.features\.)(\d+)\.(weight|bias)", key)
            if m:  # a saved ``lpips.LPIPS`` module (net.sliceN.<i>) or a DataParallel AlexNet
                key = f"features.{m.group(1)}.{m.group(2)}"
            merged[key] = val
    missing = [k for k in _lpips_required_keys() if k not in merged]
    if missing:
        raise MetricUnavailable(
            f"LPIPS weights in {[str(p) for p in paths]} lack {missing}; expected torchvision "
            "AlexNet 'features.*' and LPIPS v0.1 'lin0..lin4.model.1.weight' tensors"
        )
    return {k: merged[k] for k in _lpips_required_keys()}


def lpips(
    fused: Tensor,
    reference: Tensor,
    weights_path: str | Path | Sequence[str | Path] | None = None,
) -> Tensor:
    """LPIPS, Zhang, Isola, Efros, Shechtman & Wang, CVPR 2018 -- AlexNet, v0.1.

    LPIPS needs ImageNet-pretrained AlexNet features plus the learned linear calibration
    layers; neither is shipped with this package nor can be downloaded here, so without
    ``weights_path`` this raises :class:`MetricUnavailable` (no number is ever made up).

    With ``weights_path`` (one file, or a sequence of files whose state dicts are merged) it
    runs the LPIPS forward pass: inputs ``[0, 1] -> [-1, 1]``, ScalingLayer
    ``(x - shift) / scale`` (shift -.030 -.088 -.188, scale .458 .448 .450), torchvision AlexNet
    ``features`` (keys ``features.{0,3,6,8,10}.{weight,bias}``; a saved ``lpips.LPIPS`` module's
    ``net.sliceN.<i>.*`` keys are accepted too), relu1..relu5 activations unit-normalised over
    channels (``x / (||x|| + 1e-10)``), squared differences weighted by the 1x1 linear layers
    (keys ``lin{0..4}.model.1.weight``, as in the official ``weights/v0.1/alex.pth``),
    averaged spatially and summed over the five layers.  This forward pass follows the
    reference ``lpips`` package's architecture, but it has **not** been checked against that
    package's numbers here (no weights are available in this environment).

    Range ``[0, inf)`` (typically 0-0.7); **lower is better**; identical images give 0.
    Differentiable.

    Args:
        fused: ``(B, 3, H, W)`` RGB in ``[0, 1]``, H, W >= 31.
        reference: same shape as ``fused``.
        weights_path: state-dict file(s) holding the AlexNet and LPIPS linear weights.

    Returns:
        ``(B,)`` tensor, dtype of ``fused``.

    Raises:
        MetricUnavailable: no ``weights_path``, a missing file, or missing keys.
        ValueError: malformed inputs (checked first).
    """
    fused, reference = _check_pair(fused, "fused", reference, "reference", channels=(3,))
    _check_min_size(fused, "fused", 31, "LPIPS (AlexNet)")
    if weights_path is None:
        raise MetricUnavailable(
            "LPIPS needs pretrained weights (ImageNet AlexNet backbone + LPIPS v0.1 linear "
            "layers) that cannot be downloaded here: pass weights_path=<file(s)>."
        )
    state = _load_lpips_weights(weights_path)
    dt, dev = fused.dtype, fused.device
    state = {k: v.to(device=dev, dtype=dt) for k, v in state.items()}
    shift = torch.tensor(_LPIPS_SHIFT, dtype=dt, device=dev).view(1, 3, 1, 1)
    scale = torch.tensor(_LPIPS_SCALE, dtype=dt, device=dev).view(1, 3, 1, 1)

    def features(x: Tensor) -> list[Tensor]:
        h = ((2.0 * x - 1.0) - shift) / scale
        taps = []
        for n, (idx, stride, pad) in enumerate(_ALEX_CONVS):
            if n in (1, 2):
                h = F.max_pool2d(h, kernel_size=3, stride=2)
            h = F.relu(
                F.conv2d(
                    h,
                    state[f"features.{idx}.weight"],
                    state[f"features.{idx}.bias"],
                    stride=stride,
                    padding=pad,
                )
            )
            taps.append(h)
        return taps

    total = torch.zeros(fused.shape[0], dtype=dt, device=dev)
    for n, (f0, f1) in enumerate(zip(features(fused), features(reference), strict=True)):
        n0 = f0 / (torch.sqrt(torch.sum(f0**2, dim=1, keepdim=True)) + 1e-10)
        n1 = f1 / (torch.sqrt(torch.sum(f1**2, dim=1, keepdim=True)) + 1e-10)
        lin = state[f"lin{n}.model.1.weight"]
        total = total + F.conv2d((n0 - n1) ** 2, lin).mean(dim=(1, 2, 3))
    return total


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


class MetricSpec(NamedTuple):
    """``(fn, direction, needs)``.

    Calling convention: ``needs == "reference"`` -> ``fn(fused, reference)``;
    ``needs == "sources"`` -> ``fn(fused, sources)`` with ``sources`` a sequence of >= 2
    exposures (``qabf`` is registered through an adapter that requires exactly 2).
    """

    fn: Callable[..., Tensor]
    direction: Literal["higher", "lower"]
    needs: Literal["reference", "sources"]


def _qabf_from_sources(fused: Tensor, sources: Sequence[Tensor] | Tensor) -> Tensor:
    """:func:`qabf` with the two exposures given as a sequence (registry calling convention)."""
    src = _as_source_list(sources)
    if len(src) != 2:
        raise ValueError(f"sources must contain exactly 2 exposures for qabf; got {len(src)}")
    return qabf(fused, src[0], src[1])


METRICS: dict[str, MetricSpec] = {
    "psnr": MetricSpec(psnr, "higher", "reference"),
    "ssim": MetricSpec(ssim, "higher", "reference"),
    "ms_ssim": MetricSpec(ms_ssim, "higher", "reference"),
    "fsim": MetricSpec(fsim, "higher", "reference"),
    "lpips": MetricSpec(lpips, "lower", "reference"),
    "mef_ssim": MetricSpec(mef_ssim, "higher", "sources"),
    "qabf": MetricSpec(_qabf_from_sources, "higher", "sources"),
}


def compute_all(
    fused: Tensor,
    under: Tensor,
    over: Tensor,
    reference: Tensor | None = None,
    *,
    include_lpips: bool = False,
    lpips_weights: str | Path | None = None,
) -> dict[str, float]:
    """Batch means of every applicable metric.

    Source-based metrics (``mef_ssim``, ``qabf``) are always computed from ``under`` and
    ``over``; reference-based ones (``psnr``, ``ssim``, ``ms_ssim``, ``fsim``) only when
    ``reference`` is given.  ``mef_ssim`` uses up to 3 scales, fewer (renormalised weights)
    when the images are too small for 3, and NaN below 11x11.  ``lpips`` is included only when
    ``include_lpips`` is true (and a reference is given): if it cannot be computed it is
    reported as ``float("nan")`` and a :class:`UserWarning` says why.

    Args:
        fused, under, over: ``(B, C, H, W)`` in ``[0, 1]``, identical shapes.
        reference: optional ground truth with the same shape.

    Returns:
        ``{name: batch mean}`` (Python floats; PSNR may be ``inf`` for perfect images).
    """
    fused, under = _check_pair(fused, "fused", under, "under")
    _, over = _check_pair(fused, "fused", over, "over")
    out: dict[str, float] = {}
    H, W = fused.shape[-2:]
    n_mef = 0
    while n_mef < 3 and min(H, W) / 2**n_mef >= 11:
        n_mef += 1
    if n_mef:
        out["mef_ssim"] = float(mef_ssim(fused, [under, over], scales=n_mef).mean())
    else:
        out["mef_ssim"] = float("nan")
    out["qabf"] = float(qabf(fused, under, over).mean())
    if reference is not None:
        _check_pair(fused, "fused", reference, "reference")
        with torch.no_grad():
            out["psnr"] = float(psnr(fused, reference).double().mean())
            out["ssim"] = float(ssim(fused, reference).double().mean())
            out["ms_ssim"] = float(ms_ssim(fused, reference).double().mean())
        out["fsim"] = float(fsim(fused, reference).mean())
        if include_lpips:
            try:
                with torch.no_grad():
                    out["lpips"] = float(lpips(fused, reference, lpips_weights).mean())
            except MetricUnavailable as err:
                warnings.warn(f"lpips reported as NaN: {err}", stacklevel=2)
                out["lpips"] = float("nan")
    return out
