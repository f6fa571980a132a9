"""CRMEF's losses: intensity (L1), Sobel gradient and the combined Eq. (7) objective."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nas.losses.adversarial import AdversarialLoss, _make_critic
from nas.losses.base import Batch, FusionLoss, _depthwise3x3, _mse, _per_image_mean

__all__ = ["sobel_gradients", "IntensityLoss", "GradientLoss", "CRMEFLoss"]

# --------------------------------------------------------------------------------------------
# CRMEF: L_Int + beta1 L_Gra + beta2 L_Dis
# --------------------------------------------------------------------------------------------

_SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def sobel_gradients(x: Tensor) -> Tensor:
    """Sobel derivatives (unnormalised 3x3 kernel), replicate border: (B,C,H,W) -> (B,2C,H,W)."""
    return _depthwise3x3(x, _SOBEL)


class IntensityLoss(FusionLoss):
    """CRMEF Eq. (8): ``L_Int = mean |fused - gt|`` (L1 to the ground truth, RGB)."""

    def per_image(self, fused: Tensor, batch: Batch) -> Tensor:
        return _per_image_mean((fused - self._get(batch, "gt")).abs())


class GradientLoss(FusionLoss):
    """CRMEF Eq. (9): ``L_Gra = mean (Sobel(fused) - Sobel(gt))^2`` (RGB, x and y parts).

    The paper writes ``(1/HW) ||grad y - grad y_gt||_2``; read as the mean squared error of the
    Sobel derivatives (the L2 counterpart of Eq. (8)'s mean absolute error).
    """

    def per_image(self, fused: Tensor, batch: Batch) -> Tensor:
        return _mse(sobel_gradients(fused), sobel_gradients(self._get(batch, "gt")))


class CRMEFLoss(FusionLoss):
    """CRMEF Eq. (7): ``L_Int + beta1 L_Gra + beta2 L_Dis`` (supervised, needs ``batch["gt"]``).

    ``L_Dis`` is the generator side of the WGAN-GP PatchGAN term (:class:`AdversarialLoss`);
    the critic is optional: with ``critic=None`` that term is 0 and ``dropped_terms`` is
    ``("adversarial",)``. Train the critic with :meth:`critic_loss`.

    Args:
        beta1, beta2: 0.75 and 0.05 in the paper.
        critic: ``None``, ``"patchgan"`` (a default :class:`PatchGANCritic`) or an ``nn.Module``.
        lambda_gp: gradient-penalty weight of the critic's loss.
    """

    def __init__(
        self,
        beta1: float = 0.75,
        beta2: float = 0.05,
        critic: nn.Module | str | None = None,
        lambda_gp: float = 10.0,
        loss_weight: float = 1.0,
        reduction: str = "mean",
    ):
        super().__init__(loss_weight, reduction)
        self.beta1, self.beta2 = float(beta1), float(beta2)
        self.intensity, self.gradient = IntensityLoss(), GradientLoss()
        made = _make_critic(critic)
        self.adversarial = None if made is None else AdversarialLoss(made, lambda_gp)
        self.dropped_terms = () if made is not None else ("adversarial",)

    def per_image(self, fused: Tensor, batch: Batch) -> Tensor:
        loss = self.intensity.per_image(fused, batch)
        loss = loss + self.beta1 * self.gradient.per_image(fused, batch)
        if self.adversarial is not None:
            loss = loss + self.beta2 * self.adversarial.per_image(fused, batch)
        return loss

    def critic_loss(self, fused: Tensor, batch: Batch) -> Tensor:
        """The critic's WGAN-GP loss; an error without a critic."""
        if self.adversarial is None:
            raise RuntimeError("CRMEFLoss was built with critic=None: no critic to train")
        return self.adversarial.critic_loss(fused, batch)

    def extra_repr(self) -> str:
        return f"beta1={self.beta1}, beta2={self.beta2}, {super().extra_repr()}"
