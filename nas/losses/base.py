"""The loss contract: :class:`FusionLoss`, the :data:`Batch` mapping and shared helpers."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Batch", "FusionLoss"]

Batch = Mapping[str, Tensor]
"""``{"under": (B,3,H,W), "over": (B,3,H,W), "gt": (B,3,H,W) optional, ...}``, sRGB in [0, 1]."""

_REDUCTIONS = ("none", "mean", "sum")


def _per_image_mean(x: Tensor) -> Tensor:
    """(B, ...) -> (B,) mean over everything but the batch axis."""
    return x.flatten(1).mean(dim=1)


def _mse(a: Tensor, b: Tensor) -> Tensor:
    return _per_image_mean((a - b) ** 2)


def _depthwise3x3(x: Tensor, kx: Tensor) -> Tensor:
    """Per-channel 3x3 filtering with kernels ``kx`` and ``kx.T`` (replicate border).

    (B, C, H, W) -> (B, 2C, H, W): channels [d/dx of each channel, d/dy of each channel].
    """
    c = x.shape[1]
    k = torch.stack([kx, kx.t()]).to(device=x.device, dtype=x.dtype)  # (2, 3, 3)
    weight = k.repeat(c, 1, 1).unsqueeze(1)  # (2C, 1, 3, 3): per channel x then y
    out = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), weight, groups=c)
    b, _, h, w = out.shape
    return out.view(b, c, 2, h, w).transpose(1, 2).reshape(b, 2 * c, h, w)


# --------------------------------------------------------------------------------------------
# The contract
# --------------------------------------------------------------------------------------------


class FusionLoss(nn.Module):
    """Base class of every loss here: ``forward(fused, batch) -> weighted, reduced loss``.

    Subclasses implement :meth:`per_image` returning (B,) values; the base applies
    ``reduction`` and ``loss_weight``.
    """

    dropped_terms: tuple[str, ...] = ()

    def __init__(self, loss_weight: float = 1.0, reduction: str = "mean"):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}; got {reduction!r}")
        self.loss_weight = float(loss_weight)
        self.reduction = reduction

    def per_image(self, fused: Tensor, batch: Batch) -> Tensor:
        """(B,) unweighted loss per image."""
        raise NotImplementedError

    def forward(self, fused: Tensor, batch: Batch) -> Tensor:
        """fused: sRGB (B, 3, H, W) in [0, 1]; batch: see the :mod:`nas.losses` docstring."""
        if fused.dim() != 4 or fused.shape[1] != 3:
            raise ValueError(f"fused must be (B, 3, H, W) RGB, got {tuple(fused.shape)}")
        values = self.per_image(fused, batch)
        if self.reduction == "mean":
            values = values.mean()
        elif self.reduction == "sum":
            values = values.sum()
        return self.loss_weight * values

    def _get(self, batch: Batch, key: str) -> Tensor:
        if key not in batch:
            raise KeyError(
                f"{type(self).__name__} needs batch[{key!r}]; the batch has {sorted(batch)}"
            )
        return batch[key]

    def describe(self) -> str:
        """One line: the loss, its weights and the paper terms it leaves out."""
        dropped = ", ".join(self.dropped_terms) or "none"
        return f"{type(self).__name__}({self.extra_repr()}); dropped terms: {dropped}"

    def extra_repr(self) -> str:
        return f"loss_weight={self.loss_weight}, reduction={self.reduction!r}"
