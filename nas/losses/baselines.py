"""The baselines' own paper losses: MEF-CL, FFMEF (GIF), LCNDR and HyperP_MB."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from nas.color import CHROMA_NEUTRAL, rgb_to_lab, rgb_to_y, rgb_to_ycbcr
from nas.losses.base import Batch, FusionLoss, _depthwise3x3, _mse, _per_image_mean
from nas.metrics import ms_ssim, ssim

__all__ = [
    "MEFCLLoss",
    "FFMEFLoss",
    "LCNDRLoss",
    "HyperPMBLoss",
    "scharr_magnitude",
    "gaussian_blur",
    "exposure_masks",
    "adaptive_gamma",
    "dynamic_lambdas",
]

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

_SCHARR = torch.tensor([[-3.0, 0.0, 3.0], [-10.0, 0.0, 10.0], [-3.0, 0.0, 3.0]])


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
