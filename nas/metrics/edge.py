"""Edge-information preservation Q^AB/F (Xydeas & Petrovic 2000), as MEFB's ``metricsQabf.m``
computes it; part of :mod:`nas.metrics`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from nas.metrics.basic import (
    _check_data_range,
    _check_pair,
    _conv2_same_zero,
    _round_half_away,
)

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
