"""The loss registry: :data:`LOSSES`, :func:`build_loss`, :func:`list_losses` and helpers."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from nas.losses.adversarial import AdversarialLoss
from nas.losses.base import Batch, FusionLoss
from nas.losses.baselines import FFMEFLoss, HyperPMBLoss, LCNDRLoss, MEFCLLoss
from nas.losses.crmef import CRMEFLoss, GradientLoss, IntensityLoss
from nas.losses.no_reference import MEFSSIMLoss
from nas.losses.teacher import with_teacher

__all__ = [
    "LossArgumentError",
    "UnknownLossError",
    "LOSSES",
    "list_losses",
    "build_loss",
    "build_objective",
    "check_loss_data",
    "loss_for_model",
]

# --------------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------------

LOSSES: dict[str, type[FusionLoss]] = {
    "crmef": CRMEFLoss,
    "mef-cl": MEFCLLoss,
    "ffmef": FFMEFLoss,
    "lcndr": LCNDRLoss,
    "hyperp-mb": HyperPMBLoss,
    "mef-ssim": MEFSSIMLoss,
    "l1": IntensityLoss,
    "intensity": IntensityLoss,
    "gradient": GradientLoss,
    "adversarial": AdversarialLoss,
}
"""Loss name -> class; constructor arguments are the YAML keys."""


def check_loss_data(
    criterion: Callable[[Tensor, Batch], Tensor], batches: Sequence[Batch], name: str, data: str
) -> None:
    """Raise ``ValueError`` up front when loss ``name`` needs batch keys that ``data`` lacks
    (a supervised loss on real sequences without ground truth), instead of mid-run."""
    for b in batches:
        try:
            with torch.no_grad():
                criterion(b["under"], b)
        except KeyError as e:
            hint = " (use the no-reference loss 'mef-ssim')" if "gt" not in b else ""
            msg = f"loss {name!r} cannot train on data {data!r}: {e.args[0]}{hint}"
            raise ValueError(msg) from None


class UnknownLossError(KeyError):
    """:func:`build_loss` was given a name that is not a loss (the message lists them)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class LossArgumentError(TypeError):
    """:func:`build_loss` was given constructor arguments the loss does not take."""


def list_losses() -> list[str]:
    """Names :func:`build_loss` accepts, sorted."""
    return sorted(LOSSES)


def build_loss(name: str, **kwargs: Any) -> FusionLoss:
    """Build loss ``name`` with constructor arguments ``kwargs`` (e.g. a YAML mapping).

    Unknown names raise :class:`UnknownLossError` (a ``KeyError``) and unknown arguments
    :class:`LossArgumentError` (a ``TypeError``), each listing the valid ones.
    """
    if name not in LOSSES:
        msg = f"unknown loss {name!r}; valid losses: {', '.join(list_losses())}"
        raise UnknownLossError(msg)
    cls = LOSSES[name]
    valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise LossArgumentError(f"loss {name!r}: unknown arguments {unknown}; valid: {valid}")
    return cls(**kwargs)


def build_objective(
    name: str,
    loss_args: dict[str, Any] | None = None,
    teacher: str | None = None,
    teacher_epochs: int = 0,
) -> FusionLoss:
    """The objective of a run: loss ``name`` with ``loss_args``, wrapped in a teacher
    warm-up when ``teacher`` and ``teacher_epochs`` are set (RunConfig's keys)."""
    return with_teacher(build_loss(name, **(loss_args or {})), teacher, teacher_epochs)


def loss_for_model(model_name: str) -> str:
    """The paper loss name of a registered model (``nas.baselines`` metadata), e.g. ``ffmef``."""
    from nas.baselines import get_model_info  # local: losses must not need the models to import

    return get_model_info(model_name).loss
