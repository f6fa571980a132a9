"""The metric registry :data:`METRICS` and :func:`compute_all`; part of :mod:`nas.metrics`."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from nas.metrics.basic import MetricUnavailable, _check_pair, psnr
from nas.metrics.edge import qabf
from nas.metrics.feature_similarity import fsim
from nas.metrics.mef import _as_source_list, mef_ssim
from nas.metrics.perceptual import lpips
from nas.metrics.structural import ms_ssim, ssim

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
