"""MEF-SSIM (Ma, Zeng & Wang 2015): a port of ``mef_ssim.m`` / ``mef_ms_ssim.m`` as MEFB
uses them, with an opt-in differentiable path; part of :mod:`nas.metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from nas.metrics.basic import (
    _EPS64,
    _check_data_range,
    _check_image,
    _check_pair,
    _matlab_downsample2,
    _round_half_away,
)
from nas.metrics.structural import MS_SSIM_WEIGHTS, _gaussian_1d, _sep_filter_valid

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
