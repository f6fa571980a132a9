"""WGAN-GP PatchGAN: the critic, the gradient penalty and the generator loss (CRMEF's L_Dis)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from nas.losses.base import Batch, FusionLoss

__all__ = ["PatchGANCritic", "wgan_gp_penalty", "AdversarialLoss"]


class PatchGANCritic(nn.Module):
    """A small PatchGAN critic (Isola et al. 2017) for WGAN-GP: no sigmoid, no batch norm.

    ``conv4x4/2 -> LReLU(0.2)``, then ``n_layers - 1`` blocks ``conv4x4/2 -> norm -> LReLU``,
    one ``conv4x4/1 -> norm -> LReLU`` and a ``conv4x4/1`` to one channel; widths
    ``base_channels * (1, 2, 4, 8, ...)`` capped at 8x. ``norm``: ``"layer"`` (GroupNorm with one
    group, as Gulrajani et al. recommend for critics), ``"instance"`` or ``"none"``; all are
    per-sample, so the gradient penalty stays per-sample.

    Shapes: (B, in_channels, H, W) -> (B, 1, H', W') unbounded patch scores, H' ~ H / 2^n_layers
    - 2 (needs H, W >= about 2^(n_layers+1) + 8; 24 px for the default n_layers = 3).
    """

    def __init__(
        self, in_channels: int = 3, base_channels: int = 32, n_layers: int = 3, norm: str = "layer"
    ):
        super().__init__()
        norms: dict[str, Callable[[int], nn.Module]] = {
            "layer": lambda c: nn.GroupNorm(1, c),
            "instance": lambda c: nn.InstanceNorm2d(c, affine=True),
            "none": lambda c: nn.Identity(),
        }
        if norm not in norms:
            raise ValueError(f"norm must be one of {sorted(norms)}; got {norm!r}")
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, base_channels, 4, 2, 1),
            nn.LeakyReLU(0.2),
        ]
        c = base_channels
        for i in range(1, n_layers + 1):
            c_out = base_channels * min(2**i, 8)
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(c, c_out, 4, stride, 1), norms[norm](c_out), nn.LeakyReLU(0.2)]
            c = c_out
        layers.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def _critic_score(critic: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """(B,) critic value per image: the mean of its patch scores."""
    return critic(x).reshape(x.shape[0], -1).mean(dim=1)


def wgan_gp_penalty(
    critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, lambda_gp: float = 10.0
) -> Tensor:
    """WGAN-GP gradient penalty (Gulrajani et al. 2017), scalar.

    ``lambda_gp * E[(||grad_x D(x_hat)||_2 - 1)^2]`` at ``x_hat = e real + (1 - e) fake``,
    ``e ~ U(0, 1)`` per sample; ``D(x)`` is the critic's mean patch score per image, and the
    norm is over all of one sample's pixels and channels. ``real`` and ``fake`` are detached;
    the penalty is differentiable w.r.t. the critic's parameters.

    Args:
        critic: maps (B, C, H, W) to scores of shape (B,) or (B, ...) (averaged per image).
        real, fake: (B, C, H, W).
        lambda_gp: penalty weight (10 in the paper).
    """
    if real.shape != fake.shape:
        raise ValueError(f"real {tuple(real.shape)} and fake {tuple(fake.shape)} differ")
    b = real.shape[0]
    eps = torch.rand((b,) + (1,) * (real.dim() - 1), device=real.device, dtype=real.dtype)
    with torch.enable_grad():
        x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
        (grad,) = torch.autograd.grad(_critic_score(critic, x_hat).sum(), x_hat, create_graph=True)
        norm = torch.sqrt(grad.reshape(b, -1).pow(2).sum(dim=1) + 1e-12)
        return lambda_gp * ((norm - 1) ** 2).mean()


def _make_critic(critic: nn.Module | str | bool | None) -> nn.Module | None:
    if critic is None or critic is False:
        return None
    if critic is True or critic == "patchgan":
        return PatchGANCritic()
    if isinstance(critic, nn.Module):
        return critic
    raise ValueError(f"critic must be None, 'patchgan' or an nn.Module; got {critic!r}")


class AdversarialLoss(FusionLoss):
    """Generator side of WGAN-GP: ``-D(fused)`` per image (D = mean patch score).

    The critic is trained separately with :meth:`critic_loss` (fake detached); it is a
    submodule, so a trainer steps it with its own optimiser and must not let the generator's
    optimiser hold its parameters.

    Args:
        critic: an ``nn.Module`` critic, or ``"patchgan"`` for a default :class:`PatchGANCritic`.
        lambda_gp: weight of the gradient penalty in :meth:`critic_loss`.
    """

    def __init__(
        self,
        critic: nn.Module | str = "patchgan",
        lambda_gp: float = 10.0,
        loss_weight: float = 1.0,
        reduction: str = "mean",
    ):
        super().__init__(loss_weight, reduction)
        made = _make_critic(critic)
        if made is None:
            raise ValueError("AdversarialLoss needs a critic")
        self.critic = made
        self.lambda_gp = float(lambda_gp)

    def per_image(self, fused: Tensor, batch: Batch) -> Tensor:
        return -_critic_score(self.critic, fused)

    def critic_loss(self, fused: Tensor, batch: Batch) -> Tensor:
        """CRMEF Eq. (10), scalar: ``E D(fake) - E D(gt) + lambda_gp * GP`` (fake detached)."""
        real, fake = self._get(batch, "gt"), fused.detach()
        wasserstein = (
            _critic_score(self.critic, fake).mean() - _critic_score(self.critic, real).mean()
        )
        return wasserstein + wgan_gp_penalty(self.critic, real, fake, self.lambda_gp)
