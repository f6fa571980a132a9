"""Distillation warm-up from a classical teacher (``teacher: mertens``, ``teacher_epochs: N``).

Classical fusion gives a free label for every training pair. :class:`TeacherWarmup` wraps the
run's objective: for the first ``epochs`` epochs the loss is the L1 distance to the teacher's
fusion of the same pair; afterwards it is the wrapped objective alone, which can climb beyond
the teacher. The teacher is computed in torch on the batch's device
(:func:`nas.pyramid.mertens_target`, OpenCV's ``createMergeMertens()`` algorithm and default
weights), so it costs a few milliseconds per crop and needs no cache.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nas.losses.base import Batch, FusionLoss, _per_image_mean
from nas.losses.no_reference import fusion_sources
from nas.pyramid import mertens_target

__all__ = ["TEACHERS", "TeacherWarmup", "set_loss_epoch", "with_teacher"]

TEACHERS = ("mertens",)


class TeacherWarmup(FusionLoss):
    """``L1(fused, teacher(under, over))`` while ``epoch < epochs``, then ``objective``.

    Args:
        objective: the run's loss (any :class:`~nas.losses.base.FusionLoss`).
        teacher: ``mertens`` (the only one: OpenCV's default weights, in torch).
        epochs: warm-up epochs (0: the objective from the start).

    The epoch comes from :meth:`set_epoch`, which the search and training tasks call at
    every step (:func:`set_loss_epoch`). ``"under"``/``"over"`` of the batch are the
    teacher's inputs (their reference-frame copies where a misaligned batch has them).
    """

    def __init__(self, objective: FusionLoss, teacher: str = "mertens", epochs: int = 0):
        super().__init__(objective.loss_weight, objective.reduction)
        if teacher not in TEACHERS:
            raise ValueError(f"unknown teacher {teacher!r}; valid teachers: {list(TEACHERS)}")
        if epochs < 0:
            raise ValueError(f"teacher epochs must be >= 0, got {epochs}")
        self.objective, self.teacher, self.epochs = objective, teacher, int(epochs)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def distilling(self) -> bool:
        return self.epoch < self.epochs

    def per_image(self, fused: Tensor, batch: Batch) -> Tensor:
        if not self.distilling:
            return self.objective.per_image(fused, batch)
        target = mertens_target(fusion_sources(batch), fused.dtype)
        return _per_image_mean((fused - target).abs())

    def extra_repr(self) -> str:
        return f"teacher={self.teacher!r}, epochs={self.epochs}"


def with_teacher(objective: FusionLoss, teacher: str | None, epochs: int) -> FusionLoss:
    """``objective`` wrapped in a :class:`TeacherWarmup` when a teacher and epochs are set."""
    if teacher is None or epochs <= 0:
        return objective
    return TeacherWarmup(objective, teacher, epochs)


def set_loss_epoch(loss: torch.nn.Module, epoch: int) -> None:
    """Tell a loss that keeps a schedule (a :class:`TeacherWarmup`) the current epoch."""
    if hasattr(loss, "set_epoch"):
        loss.set_epoch(epoch)
