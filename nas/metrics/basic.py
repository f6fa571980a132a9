"""Shared pieces of :mod:`nas.metrics` -- :class:`MetricUnavailable`, input validation,
MATLAB-style pixel helpers -- and PSNR.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

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


def _conv2_same_zero(x: Tensor, kernel: Tensor) -> Tensor:
    """MATLAB ``conv2(x, kernel, 'same')`` (zero padding, true convolution) on ``(N, 1, H, W)``."""
    kh, kw = kernel.shape
    # 'same' keeps full-convolution indices floor(k/2) .. floor(k/2) + n - 1, i.e. a
    # correlation with the flipped kernel after padding k - 1 - floor(k/2) before, floor(k/2)
    # after (k = 2: out[j] = h[1] x[j] + h[0] x[j + 1]).
    xp = F.pad(x, (kw - 1 - kw // 2, kw // 2, kh - 1 - kh // 2, kh // 2))
    return F.conv2d(xp, torch.flip(kernel, dims=(0, 1)).reshape(1, 1, kh, kw))


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
