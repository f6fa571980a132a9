"""The no-reference objective for real sequences (``mef-ssim``): MEF-SSIM + mean, colour terms."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from nas.color import CHROMA_NEUTRAL, rgb_to_ycbcr
from nas.losses.base import Batch, FusionLoss, _per_image_mean
from nas.metrics import mef_ssim
from nas.pyramid import mertens_target

MEAN_TARGETS = ("spd", "mertens")

__all__ = ["MEFSSIMLoss", "fusion_sources", "saturation_weighted_chroma", "well_exposed_means"]

# --------------------------------------------------------------------------------------------
# No-reference objective for real exposure sequences: MEF-SSIM + a mean-intensity target
# --------------------------------------------------------------------------------------------


def well_exposed_means(
    sources: Sequence[Tensor], window: int = 16, sigma_g: float = 0.2, sigma_l: float = 0.5
) -> Tensor:
    """Desired local mean colour of a fusion of ``sources`` (SPD-MEF's mean-intensity rule).

    Ma et al., "Robust multi-exposure image fusion: a structural patch decomposition
    approach", IEEE TIP 26(5) 2017, Eq. (14)-(15): the fused patch's mean is the average of
    the sources' patch means weighted by ``exp(-(mu_k - 0.5)^2 / (2 sigma_g^2) - (l_k - 0.5)^2
    / (2 sigma_l^2))``, where ``mu_k`` is source k's global mean luminance and ``l_k`` the
    patch's mean luminance (so well-exposed images and patches count most). Here the patches
    are ``window`` x ``window`` with stride ``window // 2`` (average pooling), luminance is
    MATLAB's ``rgb2gray`` (what MEF-SSIM uses), and the rule is applied to each RGB channel's
    patch mean, which sets the colour as well as the brightness.

    Args:
        sources: K >= 2 tensors (B, 3, H, W) in [0, 1], H and W >= ``window``.

    Returns:
        (B, 3, h, w) patch means, ``h = (H - window) // (window // 2) + 1``.
    """
    stride = max(window // 2, 1)
    means, weights = [], []
    for x in sources:
        m = F.avg_pool2d(x, window, stride)  # (B, 3, h, w)
        lum = (m * _GRAY.to(m).view(1, 3, 1, 1)).sum(1, keepdim=True)
        mu = (x * _GRAY.to(x).view(1, 3, 1, 1)).sum(1).flatten(1).mean(1).view(-1, 1, 1, 1)
        weights.append(
            torch.exp(-((mu - 0.5) ** 2) / (2 * sigma_g**2) - (lum - 0.5) ** 2 / (2 * sigma_l**2))
        )
        means.append(m)
    w = torch.stack(weights)  # (K, B, 1, h, w)
    return (w * torch.stack(means)).sum(0) / w.sum(0).clamp_min(1e-12)


_GRAY = torch.tensor([0.298936021293775, 0.587043074451121, 0.114020904255103])


def saturation_weighted_chroma(sources: Sequence[Tensor], eps: float = 1e-4) -> Tensor:
    """Desired per-pixel chroma of a fusion of ``sources`` (DeepFuse's colour rule).

    Prabhakar, Srikar & Babu, "DeepFuse", ICCV 2017, Sec. 3.3: each of Cb and Cr is fused as
    ``sum_k C_k |C_k - tau| / sum_k |C_k - tau|`` with ``tau`` the neutral value, so the more
    saturated source decides the colour at every pixel; where every source is grey (the
    denominator below ``eps``) the result is grey.

    Args:
        sources: K >= 2 tensors (B, 3, H, W) sRGB in [0, 1].

    Returns:
        (B, 2, H, W) Cb, Cr in :mod:`nas.color`'s YCbCr scale (neutral 128/255).
    """
    chroma = torch.stack([rgb_to_ycbcr(x)[:, 1:] for x in sources])  # (K, B, 2, H, W)
    w = (chroma - CHROMA_NEUTRAL).abs()
    den = w.sum(0)
    fused = (w * chroma).sum(0) / den.clamp_min(eps)
    return torch.where(den > eps, fused, torch.full_like(fused, CHROMA_NEUTRAL))


def fusion_sources(batch: Batch) -> list[Tensor]:
    """The exposures a no-reference loss or metric scores a fusion against: ``[under,
    over]``, each replaced by its reference-frame copy (``"under_aligned"`` /
    ``"over_aligned"``, :mod:`nas.data.misalign`) where the batch warped it."""
    missing = [k for k in ("under", "over") if k not in batch]
    if missing:
        raise KeyError(f"a fusion batch needs {missing}; the batch has {sorted(batch)}")
    return [batch.get(f"{k}_aligned", batch[k]) for k in ("under", "over")]


class MEFSSIMLoss(FusionLoss):
    """No-reference fusion objective:
    ``(1 - MEF-SSIM) + mean_weight * L_mean + chroma_weight * L_chroma``.

    * ``MEF-SSIM`` is :func:`nas.metrics.mef_ssim` with ``differentiable=True``: the exact
      computation MEFB scores with (grey via ``rgb2gray``, ``scales`` scales with MEFB's
      weights, 11 x 11 windows), against the batch's ``"under"`` and ``"over"`` (their
      reference-frame copies for misaligned data: :func:`fusion_sources`). It measures
      local structure and contrast only: it has no luminance term and never sees colour.
    * ``L_mean`` supplies what MEF-SSIM leaves free: the mean of ``|patch mean of fused -
      target|`` over RGB channels and patches, with the target from
      :func:`well_exposed_means` (SPD-MEF's well-exposedness-weighted patch means). It fixes
      global brightness and colour at the patch scale (``mean_window``, 16 px), leaving
      everything finer to MEF-SSIM.
    * ``L_chroma`` is the mean ``|CbCr(fused) - target|`` per pixel, with the target from
      :func:`saturation_weighted_chroma` (DeepFuse's rule). MEF-SSIM scores grey only, and a
      network that relights each RGB channel raises its grey contrast by tilting the colour
      (typically to green, the largest grey weight): without this term the fused images of
      real photos come out with a green cast, even with ``L_mean`` (measured: see the README,
      "Real photos"). With it the colour follows the more saturated exposure, pixel by pixel,
      and MEF-SSIM shapes the luminance.

    MEF-SSIM needs ``11 * 2^(l - 1)`` pixels on the short side for ``l`` scales (44 for 3):
    smaller crops are scored with as many scales as fit (at least one: 11 pixels).

    Args:
        scales: MEF-SSIM scales (3 = MEFB's ``mef_ms_ssim``).
        mean_weight: weight of ``L_mean`` (0 drops it).
        mean_window: patch size of the mean target (stride half of it).
        mean_target: ``spd`` (SPD-MEF's well-exposedness-weighted source means, above) or
            ``mertens``: the patch means of Mertens' fusion of the sources
            (:func:`nas.pyramid.mertens_target`), a low-pass that keeps a classical fusion's
            global contrast instead of pulling every patch towards mid-grey.
        chroma_weight: weight of ``L_chroma`` (0 drops it).
        sigma_g, sigma_l: SPD-MEF's global and local well-exposedness widths.
    """

    def __init__(
        self,
        scales: int = 3,
        mean_weight: float = 1.0,
        mean_window: int = 16,
        mean_target: str = "spd",
        chroma_weight: float = 1.0,
        sigma_g: float = 0.2,
        sigma_l: float = 0.5,
        loss_weight: float = 1.0,
        reduction: str = "mean",
    ):
        super().__init__(loss_weight, reduction)
        if chroma_weight < 0:
            raise ValueError(f"chroma_weight must be >= 0, got {chroma_weight}")
        self.chroma_weight = float(chroma_weight)
        if scales < 1:
            raise ValueError(f"scales must be >= 1, got {scales}")
        if mean_weight < 0 or mean_window < 2:
            raise ValueError(
                f"mean_weight must be >= 0 and mean_window >= 2, got {mean_weight}, {mean_window}"
            )
        self.scales, self.mean_weight = int(scales), float(mean_weight)
        self.mean_window = int(mean_window)
        if mean_target not in MEAN_TARGETS:
            raise ValueError(f"mean_target must be one of {MEAN_TARGETS}, got {mean_target!r}")
        self.mean_target = mean_target
        self.sigma_g, self.sigma_l = float(sigma_g), float(sigma_l)

    def per_image(self, fused: Tensor, batch: Batch) -> Tensor:
        sources = fusion_sources(batch)
        fit = 1 + int(math.log2(max(min(fused.shape[-2:]) / 11, 1)))
        score = mef_ssim(fused, sources, scales=min(self.scales, fit), differentiable=True)
        loss = (1.0 - score).to(fused.dtype)
        if self.mean_weight > 0:
            stride = max(self.mean_window // 2, 1)
            if self.mean_target == "mertens":
                teacher = mertens_target(sources, fused.dtype)
                target = F.avg_pool2d(teacher, self.mean_window, stride)
            else:
                target = well_exposed_means(sources, self.mean_window, self.sigma_g, self.sigma_l)
            got = F.avg_pool2d(fused, self.mean_window, stride)
            loss = loss + self.mean_weight * _per_image_mean((got - target).abs())
        if self.chroma_weight > 0:
            target = saturation_weighted_chroma(sources)
            got = rgb_to_ycbcr(fused)[:, 1:]
            loss = loss + self.chroma_weight * _per_image_mean((got - target).abs())
        return loss

    def extra_repr(self) -> str:
        return (
            f"scales={self.scales}, mean_weight={self.mean_weight}, "
            f"mean_window={self.mean_window}, mean_target={self.mean_target!r}, "
            f"chroma_weight={self.chroma_weight}, "
            f"sigma_g={self.sigma_g}, sigma_l={self.sigma_l}, "
            f"{super().extra_repr()}"
        )
