"""Differentiable colour conversions, and the colour paths that single-channel fusion nets share.

All functions take and return float tensors of shape ``(B, 3, H, W)`` (or ``(B, 1, H, W)`` for
single channels), work on any device and are differentiable. RGB is non-linear sRGB in [0, 1].

Conventions (the scale of every channel):

* **YCbCr** (:func:`rgb_to_ycbcr`): ITU-R BT.601 "studio swing", exactly the matrix FFMEF's code
  uses (``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` for R, G, B in [0, 1], i.e.
  ``0.256789 * 255 = 65.481``), **divided by 255** so that the network sees the same numbers as
  FFMEF's (they feed ``Y / 255``): Y in [16/255, 235/255], Cb and Cr in [16/255, 240/255], and
  neutral chroma (grey) is ``CHROMA_NEUTRAL = 128/255``. :func:`ycbcr_to_rgb` is the exact
  matrix inverse (computed in float64), so the round trip is exact to float32 rounding.
* **CIELAB** (:func:`rgb_to_lab`): D65 white, 2 degree observer, sRGB primaries; L in
  [0, 100], a and b roughly in [-128, 127]; grey has a = b = 0 (the white point is taken as the
  row sums of the RGB->XYZ matrix, so this holds to float rounding). Implemented here rather than
  wrapping kornia so that the gradient is finite at black (kornia's is checked to agree).
* **Grey** (:func:`rgb_to_gray`): BT.601 luma ``0.299 R + 0.587 G + 0.114 B``, full range [0, 1].

The colour paths :func:`fuse_in_ycbcr` (FFMEF, LCNDR) and :func:`fuse_in_lab` (HyperP_MB) wrap a
luminance-only fusion net into the toolkit's RGB-in, RGB-out model interface.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "CHROMA_NEUTRAL",
    "rgb_to_ycbcr",
    "ycbcr_to_rgb",
    "rgb_to_y",
    "rgb_to_lab",
    "lab_to_rgb",
    "rgb_to_gray",
    "fuse_chroma",
    "fuse_in_ycbcr",
    "fuse_in_lab",
]

CHROMA_NEUTRAL = 128.0 / 255.0
"""Cb / Cr value of a grey pixel in this module's YCbCr scale."""

# BT.601 studio-swing matrix on [0, 1] RGB, rows Y, Cb, Cr (FFMEF's RGB2YCbCr coefficients).
_YCBCR_M64 = torch.tensor(
    [
        [0.256789, 0.504129, 0.097906],
        [-0.148223, -0.290992, 0.439215],
        [0.439215, -0.367789, -0.071426],
    ],
    dtype=torch.float64,
)
_YCBCR_OFFSET64 = torch.tensor([16.0, 128.0, 128.0], dtype=torch.float64) / 255.0
_YCBCR_INV64 = torch.linalg.inv(_YCBCR_M64)

# sRGB (D65) linear RGB -> XYZ; the white point is its row sums, so grey maps to a = b = 0.
_XYZ_M64 = torch.tensor(
    [
        [0.412453, 0.357580, 0.180423],
        [0.212671, 0.715160, 0.072169],
        [0.019334, 0.119193, 0.950227],
    ],
    dtype=torch.float64,
)
_XYZ_INV64 = torch.linalg.inv(_XYZ_M64)
_WHITE64 = _XYZ_M64.sum(dim=1)
_DELTA = 6.0 / 29.0


def _check_rgb(x: Tensor, name: str = "image") -> None:
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"{name} must have shape (B, 3, H, W), got {tuple(x.shape)}")


def _matmul_channels(x: Tensor, m64: Tensor) -> Tensor:
    """Apply a 3x3 colour matrix to the channel axis of ``x`` (B, 3, H, W)."""
    m = m64.to(device=x.device, dtype=x.dtype)
    return torch.einsum("ij,bjhw->bihw", m, x)


def _offset(o64: Tensor, x: Tensor) -> Tensor:
    return o64.to(device=x.device, dtype=x.dtype).view(1, 3, 1, 1)


def rgb_to_ycbcr(rgb: Tensor) -> Tensor:
    """sRGB (B, 3, H, W) in [0, 1] -> BT.601 YCbCr (B, 3, H, W) divided by 255 (see module doc).

    Y in [16/255, 235/255]; Cb, Cr in [16/255, 240/255]; grey gives Cb = Cr = 128/255.
    """
    _check_rgb(rgb)
    return _matmul_channels(rgb, _YCBCR_M64) + _offset(_YCBCR_OFFSET64, rgb)


def ycbcr_to_rgb(ycbcr: Tensor) -> Tensor:
    """Exact inverse of :func:`rgb_to_ycbcr`; no clamping (out-of-gamut YCbCr leaves [0, 1])."""
    _check_rgb(ycbcr, "ycbcr")
    return _matmul_channels(ycbcr - _offset(_YCBCR_OFFSET64, ycbcr), _YCBCR_INV64)


def rgb_to_y(rgb: Tensor) -> Tensor:
    """The Y channel of :func:`rgb_to_ycbcr`, shape (B, 1, H, W), in [16/255, 235/255]."""
    return rgb_to_ycbcr(rgb)[:, :1]


def rgb_to_gray(rgb: Tensor) -> Tensor:
    """BT.601 full-range luma ``0.299 R + 0.587 G + 0.114 B``: (B, 3, H, W) -> (B, 1, H, W)."""
    _check_rgb(rgb)
    w = torch.tensor([0.299, 0.587, 0.114], device=rgb.device, dtype=rgb.dtype)
    return (rgb * w.view(1, 3, 1, 1)).sum(dim=1, keepdim=True)


def _srgb_to_linear(c: Tensor) -> Tensor:
    hi = ((c.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4
    return torch.where(c > 0.04045, hi, c / 12.92)


def _linear_to_srgb(c: Tensor) -> Tensor:
    hi = 1.055 * c.clamp(min=0.0031308) ** (1.0 / 2.4) - 0.055
    return torch.where(c > 0.0031308, hi, 12.92 * c)


def _lab_f(t: Tensor) -> Tensor:
    hi = t.clamp(min=_DELTA**3) ** (1.0 / 3.0)
    return torch.where(t > _DELTA**3, hi, t / (3 * _DELTA**2) + 4.0 / 29.0)


def _lab_finv(t: Tensor) -> Tensor:
    return torch.where(t > _DELTA, t**3, 3 * _DELTA**2 * (t - 4.0 / 29.0))


def rgb_to_lab(rgb: Tensor) -> Tensor:
    """sRGB (B, 3, H, W) in [0, 1] -> CIELAB (D65): L in [0, 100], a, b about [-128, 127]."""
    _check_rgb(rgb)
    xyz = _matmul_channels(_srgb_to_linear(rgb), _XYZ_M64) / _offset(_WHITE64, rgb)
    f = _lab_f(xyz)
    fx, fy, fz = f[:, 0:1], f[:, 1:2], f[:, 2:3]
    return torch.cat([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=1)


def lab_to_rgb(lab: Tensor, clip: bool = False) -> Tensor:
    """CIELAB (B, 3, H, W) -> sRGB, exact inverse of :func:`rgb_to_lab` for in-gamut colours.

    Args:
        lab: L in [0, 100], a, b in about [-128, 127].
        clip: clamp the result to [0, 1] (out-of-gamut Lab colours leave it otherwise).
    """
    _check_rgb(lab, "lab")
    fy = (lab[:, 0:1] + 16.0) / 116.0
    f = torch.cat([fy + lab[:, 1:2] / 500.0, fy, fy - lab[:, 2:3] / 200.0], dim=1)
    xyz = _lab_finv(f) * _offset(_WHITE64, lab)
    rgb = _linear_to_srgb(_matmul_channels(xyz, _XYZ_INV64))
    return rgb.clamp(0.0, 1.0) if clip else rgb


def fuse_chroma(c0: Tensor, c1: Tensor, neutral: float = CHROMA_NEUTRAL) -> Tensor:
    """FFMEF Eq. (1) (also LCNDR Eq. (10)): saturation-weighted chroma fusion.

    ``C_f = (C0 |C0 - n| + C1 |C1 - n|) / (|C0 - n| + |C1 - n|)``, and ``n`` where both are
    neutral (0/0). Inputs are Cb or Cr maps of any (equal) shape in this module's scale
    (``n = 128/255``). Fusing two neutral maps gives a neutral map exactly.
    """
    w0, w1 = (c0 - neutral).abs(), (c1 - neutral).abs()
    den = w0 + w1
    safe = torch.where(den > 0, den, torch.ones_like(den))
    return torch.where(den > 0, (c0 * w0 + c1 * w1) / safe, torch.full_like(den, neutral))


def fuse_in_ycbcr(
    under: Tensor, over: Tensor, fuse_y: Callable[[Tensor, Tensor], Tensor]
) -> Tensor:
    """YCbCr colour path: fuse Y with a network, Cb / Cr with :func:`fuse_chroma`.

    Args:
        under, over: sRGB (B, 3, H, W) in [0, 1].
        fuse_y: ``fuse_y(y_under, y_over) -> y_fused``, each (B, 1, H, W) in this module's
            Y scale (about [16/255, 235/255]).

    Returns:
        Fused sRGB (B, 3, H, W), clamped to [0, 1].
    """
    yu, yo = rgb_to_ycbcr(under), rgb_to_ycbcr(over)
    y = fuse_y(yu[:, :1], yo[:, :1])
    cbcr = fuse_chroma(yu[:, 1:], yo[:, 1:])
    return ycbcr_to_rgb(torch.cat([y, cbcr], dim=1)).clamp(0.0, 1.0)


def fuse_in_lab(under: Tensor, over: Tensor, fuse_l: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """CIELAB colour path (HyperP_MB): fuse L / 100 with a network, a and b by their mean.

    Args:
        under, over: sRGB (B, 3, H, W) in [0, 1].
        fuse_l: ``fuse_l(l_under, l_over) -> l_fused``, each (B, 1, H, W) of ``L / 100`` in
            [0, 1]; the result is clamped to [0, 1].

    Returns:
        Fused sRGB (B, 3, H, W), clamped to [0, 1].
    """
    lu, lo = rgb_to_lab(under), rgb_to_lab(over)
    lum = fuse_l(lu[:, :1] / 100.0, lo[:, :1] / 100.0).clamp(0.0, 1.0) * 100.0
    ab = 0.5 * (lu[:, 1:] + lo[:, 1:])
    return lab_to_rgb(torch.cat([lum, ab], dim=1), clip=True)
