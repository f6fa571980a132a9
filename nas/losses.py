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
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas.color import CHROMA_NEUTRAL, rgb_to_lab, rgb_to_y, rgb_to_ycbcr
from nas.metrics import mef_ssim, ms_ssim, ssim

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
    "check_loss_data",
    "loss_for_model",
]

Batch = Mapping[str, Tensor]
"""``{"under": (B,3,H,W), "over": (B,3,H,W), "gt": (B,3,H,W) optional, ...}``, sRGB in [0, 1]."""

_REDUCTIONS = ("none", "mean", "sum")


def _per_image_mean(x: Tensor) -> Tensor:
    """(B, ...) -> (B,) mean over everything but the batch axis."""
    return x.flatten(1).mean(dim=1)


def _mse(a: Tensor, b: Tensor) -> Tensor:
    return _per_image_mean((a - b) ** 2)


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
        """fused: sRGB (B, 3, H, W) in [0, 1]; batch: see the module docstring."""
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


# --------------------------------------------------------------------------------------------
# CRMEF: L_Int + beta1 L_Gra + beta2 L_Dis
# --------------------------------------------------------------------------------------------


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


_SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
_SCHARR = torch.tensor([[-3.0, 0.0, 3.0], [-10.0, 0.0, 10.0], [-3.0, 0.0, 3.0]])


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


# --------------------------------------------------------------------------------------------
# MEF-CL: L_MSE + 10 L_SSIM + 20 L_InfoNCE
# --------------------------------------------------------------------------------------------


def _feature_list(features: Tensor | Sequence[Tensor]) -> list[Tensor]:
    return [features] if isinstance(features, Tensor) else list(features)


class MEFCLLoss(FusionLoss):
    """MEF-CL Eq. (2): ``L_MSE + 10 L_SSIM + 20 L_InfoNCE`` (unsupervised, RGB).

    * ``L_MSE = (MSE(f, under) + MSE(f, over)) / 2``; ``L_SSIM = 1 - (SSIM(f, under) +
      SSIM(f, over)) / 2`` (Eqs. 3-4).
    * ``L_InfoNCE`` (Eqs. 5-8), tau = 0.01: per image ``-log(exp(S+/tau) / (exp(S+/tau) +
      sum_j exp(S-_j/tau)))`` with ``S`` the mean over pixels of the per-pixel cosine
      similarity of feature maps, averaged over the extractor's feature levels (the paper's
      shallow "attribute" and deep "content" VGG-16 blocks). Anchor: the fused image.
      Positives (normal-light images of *other* scenes): ``batch["positives"]`` (B, 3, H, W)
      if given, else ``batch["gt"]`` rolled by one along the batch (needs B > 1). Negatives
      (badly exposed images): ``batch["negatives"]`` (N, 3, H, W) if given, else all the
      batch's under- and over-exposed inputs (N = 2B; the paper uses N = 360 from a bank).
      Positive and negative features are computed without gradient.

    Args:
        feature_extractor: callable (B, 3, H, W) -> tensor or list of tensors (B, C, h, w),
            e.g. VGG-16 blocks with ImageNet weights. ``None`` (no weights offline) drops
            ``L_InfoNCE`` (the paper's "w/o L_InfoNCE" ablation): ``dropped_terms`` is
            ``("infonce",)`` and a warning is issued once per process.
        lambda_ssim, lambda_nce, tau: 10, 20, 0.01 in the paper.
    """

    _warned = False

    def __init__(
        self,
        feature_extractor: Callable[[Tensor], Tensor | Sequence[Tensor]] | None = None,
        lambda_ssim: float = 10.0,
        lambda_nce: float = 20.0,
        tau: float = 0.01,
        loss_weight: float = 1.0,
        reduction: str = "mean",
    ):
        super().__init__(loss_weight, reduction)
        self.feature_extractor = feature_extractor
        self.lambda_ssim, self.lambda_nce, self.tau = float(lambda_ssim), float(lambda_nce), tau
        if feature_extractor is None:
            self.dropped_terms = ("infonce",)
            if not MEFCLLoss._warned:
                MEFCLLoss._warned = True
                warnings.warn(
                    "MEFCLLoss without a feature extractor: the InfoNCE term is dropped "
                    "(MEF-CL's 'w/o L_InfoNCE' ablation)",
                    stacklevel=2,
                )

    def per_image(self, fused: Tensor, batch: Batch) -> Tensor:
        under, over = self._get(batch, "under"), self._get(batch, "over")
        l_mse = 0.5 * (_mse(fused, under) + _mse(fused, over))
        l_ssim = 1 - 0.5 * (ssim(fused, under) + ssim(fused, over))
        loss = l_mse + self.lambda_ssim * l_ssim
        if self.feature_extractor is not None:
            loss = loss + self.lambda_nce * self.info_nce(fused, batch)
        return loss

    def info_nce(self, fused: Tensor, batch: Batch) -> Tensor:
        """(B,) InfoNCE per fused image (see the class docstring for positives / negatives)."""
        assert self.feature_extractor is not None
        if "positives" in batch:
            positives = batch["positives"]
        elif "gt" in batch and fused.shape[0] > 1:
            positives = batch["gt"].roll(1, dims=0)
        else:
            raise ValueError(
                "MEFCLLoss InfoNCE needs batch['positives'], or batch['gt'] with batch size > 1 "
                "(normal-light images of other scenes)"
            )
        negatives = batch.get("negatives")
        if negatives is None:
            negatives = torch.cat([self._get(batch, "under"), self._get(batch, "over")], dim=0)
        anchor = _feature_list(self.feature_extractor(fused))
        with torch.no_grad():
            pos = _feature_list(self.feature_extractor(positives))
            neg = _feature_list(self.feature_extractor(negatives))
        losses = []
        for fa, fp, fn in zip(anchor, pos, neg, strict=True):
            fa, fp, fn = (F.normalize(f, dim=1) for f in (fa, fp, fn))
            s_pos = _per_image_mean((fa * fp).sum(dim=1)).unsqueeze(1)  # (B, 1)
            s_neg = torch.einsum("bchw,nchw->bn", fa, fn) / (fa.shape[2] * fa.shape[3])
            logits = torch.cat([s_pos, s_neg], dim=1) / self.tau
            target = torch.zeros(fa.shape[0], dtype=torch.long, device=fa.device)
            losses.append(F.cross_entropy(logits, target, reduction="none"))
        return torch.stack(losses).mean(dim=0)

    def extra_repr(self) -> str:
        return (
            f"lambda_ssim={self.lambda_ssim}, lambda_nce={self.lambda_nce}, tau={self.tau}, "
            f"{super().extra_repr()}"
        )


# --------------------------------------------------------------------------------------------
# FFMEF: the gradient-driven image fidelity (GIF) loss, on Y
# --------------------------------------------------------------------------------------------


def scharr_magnitude(y: Tensor) -> Tensor:
    """FFMEF's gradient map: ``(min(|Scharr_x|, 1) + min(|Scharr_y|, 1)) / 2``.

    The authors' code applies cv2.Scharr on 0..255 values, clips each |derivative| to 255 and
    divides by 255; on [0, 1] inputs that is the formula above (replicate border).
    (B, 1, H, W) in [0, 1] -> (B, 1, H, W) in [0, 1].
    """
    g = _depthwise3x3(y, _SCHARR).abs().clamp(max=1.0)
    return 0.5 * (g[:, 0::2] + g[:, 1::2])


class FFMEFLoss(FusionLoss):
    """FFMEF's GIF loss, Eq. (6): ``1.25 L_steep + L_smooth + 2 L_global`` on BT.601 Y.

    With Scharr gradient maps ``g_i`` (:func:`scharr_magnitude`) of the sources' Y:

    * masks ``m_i = [maxpool3x3(g_i) >= 0.5]`` (Eq. 7), ``m_sth = 1 - (m_0 | m_1)``;
    * ``L_steep = mean(m_0 |Y_f - Y_0|) + mean(m_1 |Y_f - Y_1|)`` (Eq. 8);
    * saturation weights (Eq. 9): ``s_i`` = softmax over the two images of
      ``|Cb_i - n| + |Cr_i - n|`` and ``S_i`` = softmax of the ``s_i`` (chroma in the [0, 1]
      scale of :mod:`nas.color`, ``n = 128/255``, as the code uses /255 chroma);
      ``L_smooth = mean(m_sth |Y_f - (S_0 Y_0 + S_1 Y_1)|)`` (Eq. 10);
    * ``L_global = mean |g(Y_f) - max(g_0, g_1)|`` (Eq. 11).

    Means are over all pixels (the code's weighted L1). Unsupervised: uses under / over only.

    Args:
        lambda_steep, lambda_global: 1.25 and 2 (the paper's lambda_1, lambda_2).
        threshold: mask binarisation threshold, 0.5.
    """

    def __init__(
        self,
        lambda_steep: float = 1.25,
        lambda_global: float = 2.0,
        threshold: float = 0.5,
        loss_weight: float = 1.0,
        reduction: str = "mean",
    ):
        super().__init__(loss_weight, reduction)
        self.lambda_steep, self.lambda_global = float(lambda_steep), float(lambda_global)
        self.threshold = float(threshold)

    def per_image(self, fused: Tensor, batch: Batch) -> Tensor:
        src0, src1 = rgb_to_ycbcr(self._get(batch, "under")), rgb_to_ycbcr(self._get(batch, "over"))
        y0, y1, yf = src0[:, :1], src1[:, :1], rgb_to_y(fused)
        g0, g1 = scharr_magnitude(y0), scharr_magnitude(y1)
        m0, m1 = (
            (F.max_pool2d(g, 3, stride=1, padding=1) >= self.threshold).to(yf.dtype)
            for g in (g0, g1)
        )
        m_smooth = 1 - torch.maximum(m0, m1)
        sat = torch.stack(
            [(s[:, 1:] - CHROMA_NEUTRAL).abs().sum(1, keepdim=True) for s in (src0, src1)]
        )
        weights = torch.softmax(torch.softmax(sat, dim=0), dim=0)
        y_w = weights[0] * y0 + weights[1] * y1
        steep = _per_image_mean(m0 * (yf - y0).abs()) + _per_image_mean(m1 * (yf - y1).abs())
        smooth = _per_image_mean(m_smooth * (yf - y_w).abs())
        glob = _per_image_mean((scharr_magnitude(yf) - torch.maximum(g0, g1)).abs())
        return self.lambda_steep * steep + smooth + self.lambda_global * glob

    def extra_repr(self) -> str:
        return (
            f"lambda_steep={self.lambda_steep}, lambda_global={self.lambda_global}, "
            f"threshold={self.threshold}, {super().extra_repr()}"
        )


# --------------------------------------------------------------------------------------------
# LCNDR: 0.3 L_SSIM + 5 L_MSE, on Y
# --------------------------------------------------------------------------------------------


class LCNDRLoss(FusionLoss):
    """LCNDR Eq. (6): ``alpha L_SSIM + beta L_MSE`` on BT.601 Y, unsupervised.

    ``L_SSIM = 0.5 (1 - SSIM(Y_O, Y_F)) + 0.5 (1 - SSIM(Y_U, Y_F))`` (Eq. 7) and
    ``L_MSE = 0.5 MSE(Y_O, Y_F) + 0.5 MSE(Y_U, Y_F)`` (BASELINES.md: both terms to the two
    sources with weights 0.5 / 0.5; the paper's Eq. 9 typesets an unusual normalised root).

    Args:
        alpha, beta: 0.3 and 5 in the paper.
    """

    def __init__(
        self,
        alpha: float = 0.3,
        beta: float = 5.0,
        loss_weight: float = 1.0,
        reduction: str = "mean",
    ):
        super().__init__(loss_weight, reduction)
        self.alpha, self.beta = float(alpha), float(beta)

    def per_image(self, fused: Tensor, batch: Batch) -> Tensor:
        yf = rgb_to_y(fused)
        yu, yo = rgb_to_y(self._get(batch, "under")), rgb_to_y(self._get(batch, "over"))
        l_ssim = 0.5 * (1 - ssim(yf, yo)) + 0.5 * (1 - ssim(yf, yu))
        l_mse = 0.5 * _mse(yf, yo) + 0.5 * _mse(yf, yu)
        return self.alpha * l_ssim + self.beta * l_mse

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, {super().extra_repr()}"


# --------------------------------------------------------------------------------------------
# HyperP_MB: lambda1 L_un + lambda2 L_ov + L_co, on CIELAB L / 100
# --------------------------------------------------------------------------------------------


def gaussian_blur(x: Tensor, sigma: float, kernel_size: int | None = None) -> Tensor:
    """Separable Gaussian blur (normalised kernel, replicate border), (B,C,H,W) -> same.

    ``kernel_size`` defaults to ``6 sigma + 1`` (HyperP_MB Eq. 3: 61 for sigma = 10).
    """
    k = int(kernel_size if kernel_size is not None else 6 * sigma + 1)
    if k % 2 == 0:
        raise ValueError(f"kernel_size must be odd, got {k}")
    t = torch.arange(k, device=x.device, dtype=x.dtype) - (k - 1) / 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    c, r = x.shape[1], k // 2
    x = F.pad(x, (r, r, r, r), mode="replicate")
    x = F.conv2d(x, g.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(x, g.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def _minmax(x: Tensor, eps: float = 1e-8) -> Tensor:
    """Per-image min-max normalisation to [0, 1]; a constant image gives all ones."""
    lo = x.flatten(1).amin(dim=1).view(-1, 1, 1, 1)
    hi = x.flatten(1).amax(dim=1).view(-1, 1, 1, 1)
    rng = hi - lo
    return torch.where(rng > eps, (x - lo) / rng.clamp(min=eps), torch.ones_like(x))


def exposure_masks(
    under: Tensor, over: Tensor, sigma: float = 10.0, kernel_size: int | None = None
) -> tuple[Tensor, Tensor]:
    """HyperP_MB's MaskBuilder (Eqs. 1-5) on luminance maps (B, 1, H, W) in [0, 1].

    ``m_un = minmax(blur(under))`` (keeps the bright, informative part of the under-exposed
    image), ``m_ov = 1 - minmax(blur(over))`` (keeps the dark part of the over-exposed one);
    blur = Gaussian with ``sigma`` (10) and kernel ``6 sigma + 1`` (61). Both in [0, 1].
    """
    m_un = _minmax(gaussian_blur(under, sigma, kernel_size))
    m_ov = 1 - _minmax(gaussian_blur(over, sigma, kernel_size))
    return m_un, m_ov


def adaptive_gamma(img: Tensor, tau: float = 3.0) -> Tensor:
    """Adaptive gamma (Rahman et al. 2016) per image, as HyperP_MB's ParamTuner uses it.

    With mean ``mu`` and (population) standard deviation ``sigma`` of each image in [0, 1]:
    low contrast (``4 sigma <= 1 / tau``) gives ``gamma = -log2(sigma)``, otherwise
    ``gamma = exp((1 - (mu + sigma)) / 2)``. (B, C, H, W) -> (B,). ``sigma`` is floored at
    1e-6 so a constant image gives a finite gamma.
    """
    flat = img.flatten(1)
    mu, sigma = flat.mean(dim=1), flat.std(dim=1, unbiased=False)
    low = -torch.log2(sigma.clamp(min=1e-6))
    high = torch.exp((1 - (mu + sigma)) / 2)
    return torch.where(4 * sigma <= 1 / tau, low, high)


def dynamic_lambdas(
    under: Tensor, over: Tensor, correct: Tensor, beta: float = 2.0, tau: float = 3.0
) -> tuple[Tensor, Tensor]:
    """HyperP_MB's ParamTuner (Eqs. 10-13): per-sample (lambda_1, lambda_2), each (B,).

    ``D_1 = |gamma_un - gamma_co|``, ``D_2 = |gamma_ov - gamma_co|`` (:func:`adaptive_gamma`),
    ``lambda_i = beta D_i / (D_1 + D_2)``; ``beta / 2`` each (1, 1) where both D are 0.
    Computed without gradient (they are weights, not targets).
    """
    with torch.no_grad():
        g_un, g_ov, g_co = (adaptive_gamma(x, tau) for x in (under, over, correct))
        d1, d2 = (g_un - g_co).abs(), (g_ov - g_co).abs()
        total = d1 + d2
        safe = torch.where(total > 0, total, torch.ones_like(total))
        half = torch.full_like(total, beta / 2)
        return (
            torch.where(total > 0, beta * d1 / safe, half),
            torch.where(total > 0, beta * d2 / safe, half),
        )


def _lum(rgb: Tensor) -> Tensor:
    """CIELAB ``L / 100`` in [0, 1], (B, 3, H, W) -> (B, 1, H, W)."""
    return rgb_to_lab(rgb)[:, :1] / 100.0


class HyperPMBLoss(FusionLoss):
    """HyperP_MB Eq. (6): ``lambda_1 L_un + lambda_2 L_ov + L_co`` on CIELAB ``L / 100``.

    Each term is ``MSE + alpha (1 - MS-SSIM)`` (Eqs. 7-9, alpha = 1000). ``L_co`` compares the
    fused L with the correctly exposed image ``batch["gt"]``; ``L_un`` and ``L_ov`` compare the
    masked fused L with the masked under / over L (masks from :func:`exposure_masks`, applied to
    both images by multiplication). ``lambda_1, lambda_2`` come per sample from
    :func:`dynamic_lambdas` (``dynamic=False``: both 1).

    Args:
        alpha: MS-SSIM weight, 1000.
        sigma: Gaussian sigma of the masks, 10 (kernel 6 sigma + 1 = 61).
        beta, tau: ParamTuner's 2 and 3.
        dynamic: use the dynamic lambdas (the paper's "PT"); False gives 1, 1.
    """

    def __init__(
        self,
        alpha: float = 1000.0,
        sigma: float = 10.0,
        beta: float = 2.0,
        tau: float = 3.0,
        dynamic: bool = True,
        loss_weight: float = 1.0,
        reduction: str = "mean",
    ):
        super().__init__(loss_weight, reduction)
        self.alpha, self.sigma, self.beta, self.tau = float(alpha), float(sigma), beta, tau
        self.dynamic = bool(dynamic)

    def _term(self, a: Tensor, b: Tensor) -> Tensor:
        return _mse(a, b) + self.alpha * (1 - ms_ssim(a, b))

    def per_image(self, fused: Tensor, batch: Batch) -> Tensor:
        lf = _lum(fused)
        lu, lo, lc = (_lum(self._get(batch, k)) for k in ("under", "over", "gt"))
        m_un, m_ov = exposure_masks(lu, lo, self.sigma)
        if self.dynamic:
            lam1, lam2 = dynamic_lambdas(lu, lo, lc, self.beta, self.tau)
        else:
            lam1 = lam2 = torch.ones(lf.shape[0], device=lf.device, dtype=lf.dtype)
        l_un = self._term(m_un * lf, m_un * lu)
        l_ov = self._term(m_ov * lf, m_ov * lo)
        return lam1 * l_un + lam2 * l_ov + self._term(lf, lc)

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, sigma={self.sigma}, beta={self.beta}, tau={self.tau}, "
            f"dynamic={self.dynamic}, {super().extra_repr()}"
        )


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
        chroma_weight: weight of ``L_chroma`` (0 drops it).
        sigma_g, sigma_l: SPD-MEF's global and local well-exposedness widths.
    """

    def __init__(
        self,
        scales: int = 3,
        mean_weight: float = 1.0,
        mean_window: int = 16,
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
        self.sigma_g, self.sigma_l = float(sigma_g), float(sigma_l)

    def per_image(self, fused: Tensor, batch: Batch) -> Tensor:
        sources = fusion_sources(batch)
        fit = 1 + int(math.log2(max(min(fused.shape[-2:]) / 11, 1)))
        score = mef_ssim(fused, sources, scales=min(self.scales, fit), differentiable=True)
        loss = (1.0 - score).to(fused.dtype)
        if self.mean_weight > 0:
            target = well_exposed_means(sources, self.mean_window, self.sigma_g, self.sigma_l)
            stride = max(self.mean_window // 2, 1)
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
            f"mean_window={self.mean_window}, chroma_weight={self.chroma_weight}, "
            f"sigma_g={self.sigma_g}, sigma_l={self.sigma_l}, "
            f"{super().extra_repr()}"
        )


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


def list_losses() -> list[str]:
    """Names :func:`build_loss` accepts, sorted."""
    return sorted(LOSSES)


def build_loss(name: str, **kwargs: Any) -> FusionLoss:
    """Build loss ``name`` with constructor arguments ``kwargs`` (e.g. a YAML mapping).

    Unknown names raise ``KeyError`` and unknown arguments ``TypeError``, each listing the
    valid ones.
    """
    if name not in LOSSES:
        raise KeyError(f"unknown loss {name!r}; valid losses: {', '.join(list_losses())}")
    cls = LOSSES[name]
    valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise TypeError(f"loss {name!r}: unknown arguments {unknown}; valid: {valid}")
    return cls(**kwargs)


def loss_for_model(model_name: str) -> str:
    """The paper loss name of a registered model (``nas.baselines`` metadata), e.g. ``ffmef``."""
    from nas.baselines import get_model_info  # local: losses must not need the models to import

    return get_model_info(model_name).loss
