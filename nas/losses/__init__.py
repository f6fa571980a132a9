"""Training losses: CRMEF's (intensity, Sobel gradient, WGAN-GP PatchGAN) and the baselines' own.

**One contract** (BasicSR style). Every loss is an ``nn.Module`` whose constructor takes
``loss_weight: float = 1.0, reduction: str = "mean"`` plus its own arguments (YAML keys equal
constructor arguments: ``build_loss(name, **yaml_dict)``), and whose forward is::

    loss = criterion(fused, batch)

* ``fused``: the model output, sRGB (B, 3, H, W) in [0, 1] (every model in the toolkit returns
  RGB; losses defined on a luminance channel convert it themselves: FFMEF and LCNDR use BT.601
  Y of :mod:`nas.color`, HyperP_MB uses CIELAB ``L / 100``).
* ``batch``: a mapping with ``"under"`` and ``"over"`` (sRGB (B, 3, H, W) in [0, 1]) and, for
  the supervised losses, ``"gt"`` (same shape). Extra keys are ignored except where a loss
  documents them (MEF-CL's ``"positives"`` / ``"negatives"``). A missing key raises
  ``KeyError`` naming the loss and the keys present.
* returns ``loss_weight * reduce(per_image)`` where ``per_image`` is (B,) and ``reduction`` is
  ``"mean"`` (scalar), ``"sum"`` (scalar) or ``"none"`` ((B,) per-image values).

Every loss has ``dropped_terms`` (paper terms it cannot compute here, e.g. MEF-CL's InfoNCE
without VGG weights) and ``describe()`` (a one-line account, dropped terms included).

The SSIM / MS-SSIM inside the baselines' losses are :func:`nas.metrics.ssim` and
:func:`nas.metrics.ms_ssim` (differentiable; images must be at least 11 x 11).

Names for :func:`build_loss`: ``crmef``, ``mef-cl``, ``ffmef``, ``lcndr``, ``hyperp-mb``,
``mef-ssim`` (the no-reference objective for real sequences without ground truth), ``l1``
(= ``intensity``), ``gradient``, ``adversarial``; :func:`loss_for_model` gives a
registered model's own paper loss name.

Submodules: :mod:`~nas.losses.base` (the contract), :mod:`~nas.losses.crmef`,
:mod:`~nas.losses.adversarial` (WGAN-GP PatchGAN), :mod:`~nas.losses.baselines` (MEF-CL, FFMEF,
LCNDR, HyperP_MB), :mod:`~nas.losses.no_reference` (``mef-ssim``) and
:mod:`~nas.losses.registry` (:data:`LOSSES`, :func:`build_loss`); everything is re-exported here.
"""

from __future__ import annotations

from nas.losses.adversarial import AdversarialLoss, PatchGANCritic, wgan_gp_penalty
from nas.losses.base import Batch, FusionLoss
from nas.losses.baselines import (
    FFMEFLoss,
    HyperPMBLoss,
    LCNDRLoss,
    MEFCLLoss,
    adaptive_gamma,
    dynamic_lambdas,
    exposure_masks,
    gaussian_blur,
    scharr_magnitude,
)
from nas.losses.crmef import CRMEFLoss, GradientLoss, IntensityLoss, sobel_gradients
from nas.losses.no_reference import (
    MEFSSIMLoss,
    fusion_sources,
    saturation_weighted_chroma,
    well_exposed_means,
)
from nas.losses.registry import (
    LOSSES,
    LossArgumentError,
    UnknownLossError,
    build_loss,
    build_objective,
    check_loss_data,
    list_losses,
    loss_for_model,
)
from nas.losses.teacher import TeacherWarmup, set_loss_epoch, with_teacher

__all__ = [
    "Batch",
    "FusionLoss",
    "IntensityLoss",
    "GradientLoss",
    "PatchGANCritic",
    "wgan_gp_penalty",
    "AdversarialLoss",
    "CRMEFLoss",
    "MEFCLLoss",
    "FFMEFLoss",
    "LCNDRLoss",
    "HyperPMBLoss",
    "MEFSSIMLoss",
    "fusion_sources",
    "saturation_weighted_chroma",
    "well_exposed_means",
    "sobel_gradients",
    "scharr_magnitude",
    "gaussian_blur",
    "exposure_masks",
    "adaptive_gamma",
    "dynamic_lambdas",
    "LOSSES",
    "list_losses",
    "build_loss",
    "build_objective",
    "UnknownLossError",
    "LossArgumentError",
    "TeacherWarmup",
    "set_loss_epoch",
    "with_teacher",
    "check_loss_data",
    "loss_for_model",
]
