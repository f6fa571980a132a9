"""Losses: one contract, finite gradients, WGAN-GP on a linear critic, hand-made cases."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nas.losses import (
    AdversarialLoss,
    CRMEFLoss,
    FFMEFLoss,
    GradientLoss,
    HyperPMBLoss,
    IntensityLoss,
    LCNDRLoss,
    MEFCLLoss,
    MEFSSIMLoss,
    PatchGANCritic,
    adaptive_gamma,
    build_loss,
    check_loss_data,
    dynamic_lambdas,
    exposure_masks,
    gaussian_blur,
    list_losses,
    loss_for_model,
    saturation_weighted_chroma,
    scharr_magnitude,
    well_exposed_means,
    wgan_gp_penalty,
)

B, H, W = 2, 37, 53


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    return {
        "under": torch.rand(B, 3, H, W) * 0.4,
        "over": torch.rand(B, 3, H, W) * 0.4 + 0.6,
        "gt": torch.rand(B, 3, H, W),
    }


def _features(x: torch.Tensor) -> list[torch.Tensor]:
    """A stand-in feature extractor with two levels (no pretrained weights offline)."""
    return [nn.functional.avg_pool2d(x, 2), nn.functional.avg_pool2d(x, 4)]


LOSS_CONFIGS = [(name, {}) for name in list_losses()] + [
    ("crmef", {"critic": "patchgan"}),
    ("mef-cl", {"feature_extractor": _features}),
    ("hyperp-mb", {"dynamic": False}),
]


@pytest.mark.filterwarnings("ignore:MEFCLLoss without")
@pytest.mark.parametrize(("name", "kwargs"), LOSS_CONFIGS, ids=lambda v: str(v)[:20])
def test_loss_finite_with_gradient(name: str, kwargs: dict, batch) -> None:
    loss = build_loss(name, **kwargs)
    fused = torch.rand(B, 3, H, W, requires_grad=True)
    value = loss(fused, batch)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert torch.isfinite(fused.grad).all() and fused.grad.abs().sum() > 0


def test_reduction_and_weight(batch) -> None:
    fused = torch.rand(B, 3, H, W)
    per = LCNDRLoss(reduction="none")(fused, batch)
    assert per.shape == (B,)
    assert torch.allclose(LCNDRLoss(reduction="sum")(fused, batch), per.sum())
    assert torch.allclose(LCNDRLoss(loss_weight=3.0)(fused, batch), 3 * per.mean())
    with pytest.raises(ValueError):
        LCNDRLoss(reduction="max")


def test_missing_key_is_named() -> None:
    with pytest.raises(KeyError, match="gt"):
        IntensityLoss()(torch.rand(1, 3, 8, 8), {"under": torch.rand(1, 3, 8, 8)})


@pytest.mark.parametrize("lambda_gp", [1.0, 10.0])
def test_wgan_gp_linear_critic(lambda_gp: float) -> None:
    """critic(x) = <w, x> + b has gradient w everywhere: penalty = lambda (||w|| - 1)^2."""
    shape = (3, 2, 5, 4)
    w = torch.randn(shape[1:], dtype=torch.float64)

    def critic(x: torch.Tensor) -> torch.Tensor:
        return (x * w).flatten(1).sum(dim=1) + 0.3

    real, fake = torch.rand(shape, dtype=torch.float64), torch.rand(shape, dtype=torch.float64)
    penalty = wgan_gp_penalty(critic, real, fake, lambda_gp=lambda_gp)
    expected = lambda_gp * (w.norm() - 1) ** 2
    assert torch.allclose(penalty, expected, rtol=1e-6, atol=1e-9)


def test_wgan_gp_differentiable_wrt_critic() -> None:
    critic = PatchGANCritic(base_channels=8)
    real, fake = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    wgan_gp_penalty(critic, real, fake).backward()
    # every weight gets a gradient; the last bias cannot (it does not change d critic / d x)
    for name, p in critic.named_parameters():
        if name.endswith("weight"):
            assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_patchgan_critic_has_no_sigmoid_or_batchnorm() -> None:
    critic = PatchGANCritic()
    kinds = {type(m) for m in critic.modules()}
    assert nn.Sigmoid not in kinds and nn.BatchNorm2d not in kinds
    assert critic(torch.rand(2, 3, 64, 64)).shape[:2] == (2, 1)


def test_adversarial_generator_side(batch) -> None:
    class Const(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(1, 2, 3), keepdim=True).expand(-1, 1, 4, 4)

    fused = torch.rand(B, 3, H, W)
    loss = AdversarialLoss(critic=Const())
    assert torch.allclose(loss(fused, batch), -fused.mean())


def test_crmef_without_critic_drops_adversarial(batch) -> None:
    fused = torch.rand(B, 3, H, W)
    loss = CRMEFLoss()
    assert loss.dropped_terms == ("adversarial",) and "adversarial" in loss.describe()
    expected = IntensityLoss()(fused, batch) + 0.75 * GradientLoss()(fused, batch)
    assert torch.allclose(loss(fused, batch), expected)
    with pytest.raises(RuntimeError):
        loss.critic_loss(fused, batch)
    with_critic = CRMEFLoss(critic="patchgan")
    assert with_critic.dropped_terms == ()
    assert torch.isfinite(with_critic.critic_loss(fused, batch))


def test_supervised_losses_zero_at_gt(batch) -> None:
    for loss in (IntensityLoss(), GradientLoss(), CRMEFLoss()):
        assert loss(batch["gt"], batch).abs() < 1e-7


def test_mefcl_without_extractor_reports_dropped_infonce(batch) -> None:
    MEFCLLoss._warned = False
    with pytest.warns(UserWarning, match="InfoNCE"):
        loss = MEFCLLoss()
    assert loss.dropped_terms == ("infonce",) and "infonce" in loss.describe()
    fused = torch.rand(B, 3, H, W)
    with_nce = MEFCLLoss(feature_extractor=_features, lambda_nce=0.0)
    assert torch.allclose(loss(fused, batch), with_nce(fused, batch))


def test_mefcl_infonce_by_hand() -> None:
    """Identity features: S(f, pos) = 1 when the fused image is the positive."""
    pos = torch.rand(1, 3, 12, 12) + 0.1
    neg = torch.rand(4, 3, 12, 12) + 0.1
    batch = {"under": neg[:1], "over": neg[1:2], "positives": pos, "negatives": neg}
    loss = MEFCLLoss(feature_extractor=lambda x: x, tau=0.5)
    cos = nn.functional.cosine_similarity(pos, neg, dim=1).flatten(1).mean(dim=1)
    logits = torch.cat([torch.ones(1), cos]) / 0.5
    expected = -(logits[0] - torch.logsumexp(logits, dim=0))
    assert torch.allclose(loss.info_nce(pos, batch), expected.view(1), atol=1e-5)
    with pytest.raises(ValueError, match="positives"):
        loss.info_nce(pos, {"under": neg[:1], "over": neg[1:2]})


def test_unsupervised_losses_zero_when_sources_equal_fused() -> None:
    x = torch.rand(B, 3, H, W)
    batch = {"under": x, "over": x, "gt": x}
    for loss in (FFMEFLoss(), LCNDRLoss(), HyperPMBLoss()):
        assert loss(x, batch).abs() < 1e-4, type(loss).__name__


def test_scharr_magnitude() -> None:
    assert scharr_magnitude(torch.full((1, 1, 6, 6), 0.3)).abs().max() < 1e-6
    step = torch.zeros(1, 1, 6, 6)
    step[..., 3:] = 1.0
    g = scharr_magnitude(step)
    assert torch.allclose(g[..., 2], torch.full((1, 1, 6), 0.5))  # |gx| clipped to 1, gy = 0
    assert g.max() <= 1.0


def test_adaptive_gamma_and_lambdas_by_hand() -> None:
    def two_valued(a: float, b: float) -> torch.Tensor:
        x = torch.full((1, 1, 4, 4), a, dtype=torch.float64)
        x[..., 2:, :] = b
        return x

    under, correct, over = two_valued(0.0, 0.5), two_valued(0.25, 0.75), two_valued(0.8, 0.9)
    g_un, g_co, g_ov = math.exp(0.25), math.exp(0.125), -math.log2(0.05)  # high, high, low
    assert torch.allclose(adaptive_gamma(under), torch.tensor([g_un], dtype=torch.float64))
    assert torch.allclose(adaptive_gamma(over), torch.tensor([g_ov], dtype=torch.float64))
    lam1, lam2 = dynamic_lambdas(under, over, correct)
    d1, d2 = abs(g_un - g_co), abs(g_ov - g_co)
    assert math.isclose(lam1.item(), 2 * d1 / (d1 + d2), rel_tol=1e-9)
    assert math.isclose(lam2.item(), 2 * d2 / (d1 + d2), rel_tol=1e-9)
    # both differences zero -> (1, 1); one zero -> (0, 2)
    lam1, lam2 = dynamic_lambdas(correct, correct, correct)
    assert lam1.item() == 1.0 and lam2.item() == 1.0
    lam1, lam2 = dynamic_lambdas(correct, over, correct)
    assert lam1.item() == 0.0 and lam2.item() == 2.0


def test_exposure_masks() -> None:
    ramp = torch.linspace(0, 1, 80).view(1, 1, 1, 80).expand(1, 1, 40, 80)
    m_un, m_ov = exposure_masks(ramp, ramp)
    assert m_un.min() == 0 and m_un.max() == 1 and torch.allclose(m_ov, 1 - m_un)
    assert m_un[..., -1].mean() > m_un[..., 0].mean()  # bright part of the under image kept
    c = torch.full((1, 1, 20, 20), 0.7)
    assert torch.allclose(gaussian_blur(c, 10.0), c)


def test_build_loss_errors_list_valid_names() -> None:
    with pytest.raises(KeyError) as err:
        build_loss("no-such-loss")
    assert all(n in str(err.value) for n in ("crmef", "mef-cl", "ffmef", "lcndr", "hyperp-mb"))
    with pytest.raises(TypeError, match="beta1"):
        build_loss("crmef", betta1=0.5)


def test_model_to_paper_loss() -> None:
    assert loss_for_model("mef-cl") == "mef-cl" and loss_for_model("ffmef") == "ffmef"
    assert loss_for_model("lcndr") == "lcndr" and loss_for_model("hyperp-mb") == "hyperp-mb"


# --------------------------------------------------------------------------------------------
# The no-reference objective (real sequences)
# --------------------------------------------------------------------------------------------


def test_well_exposed_means_by_hand() -> None:
    """Two flat images: the target is their SPD-MEF-weighted mean, computed by hand."""
    dark = torch.full((1, 3, 32, 32), 0.1)
    bright = torch.tensor([0.9, 0.6, 0.3]).view(1, 3, 1, 1).expand(1, 3, 32, 32)
    gray = torch.tensor([0.298936021293775, 0.587043074451121, 0.114020904255103])

    def w(lum: float) -> float:  # global mean = local mean for a flat image
        return math.exp(-((lum - 0.5) ** 2) / (2 * 0.2**2) - (lum - 0.5) ** 2 / (2 * 0.5**2))

    l_b = float((gray * torch.tensor([0.9, 0.6, 0.3])).sum())
    w_d, w_b = w(0.1), w(l_b)
    expected = (w_d * 0.1 + w_b * torch.tensor([0.9, 0.6, 0.3])) / (w_d + w_b)
    got = well_exposed_means([dark, bright], window=16)
    assert got.shape == (1, 3, 3, 3)  # (32 - 16) // 8 + 1
    assert torch.allclose(got, expected.view(1, 3, 1, 1).expand_as(got), atol=1e-6)
    # the better-exposed image dominates: the target is close to the bright colour
    assert (got[0, :, 0, 0] - torch.tensor([0.9, 0.6, 0.3])).abs().max() < 0.1


def test_mef_ssim_loss_is_one_minus_metric_plus_mean_term() -> None:
    from nas.metrics import mef_ssim

    g = torch.Generator().manual_seed(0)
    scene = torch.rand(2, 3, 64, 64, generator=g)
    batch = {"under": scene * 0.3, "over": (scene * 1.6).clamp(0, 1)}
    fused = 0.5 * (batch["under"] + batch["over"])
    plain = MEFSSIMLoss(mean_weight=0.0, chroma_weight=0.0, reduction="none")(fused, batch)
    score = mef_ssim(fused, [batch["under"], batch["over"]])
    assert torch.allclose(plain.double(), 1 - score, atol=1e-6)
    full = MEFSSIMLoss(mean_weight=2.0, chroma_weight=0.0, reduction="none")(fused, batch)
    target = well_exposed_means([batch["under"], batch["over"]], 16)
    mean_term = (torch.nn.functional.avg_pool2d(fused, 16, 8) - target).abs().flatten(1).mean(1)
    assert torch.allclose(full, plain + 2.0 * mean_term, atol=1e-6)
    # a small crop is scored with the scales that fit: 24 px -> 2 scales
    small = {k: v[..., :24, :24] for k, v in batch.items()}
    s2 = mef_ssim(fused[..., :24, :24], [small["under"], small["over"]], scales=2)
    got = MEFSSIMLoss(mean_weight=0.0, chroma_weight=0.0, reduction="none")(
        fused[..., :24, :24], small
    )
    assert torch.allclose(got.double(), 1 - s2, atol=1e-6)


def test_mef_ssim_loss_gradient_step_improves_the_metric() -> None:
    from nas.metrics import mef_ssim

    g = torch.Generator().manual_seed(1)
    scene = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 96, 96, generator=g), 3, 1, 1)
    under, over = scene * 0.35, (scene * 1.8).clamp(0, 1)
    batch = {"under": under, "over": over}
    fused = (0.5 * (under + over)).requires_grad_()
    loss = MEFSSIMLoss(mean_weight=0.0, chroma_weight=0.0)
    before = float(mef_ssim(fused.detach(), [under, over]))
    opt = torch.optim.Adam([fused], lr=1e-2)
    for _ in range(20):
        opt.zero_grad()
        loss(fused, batch).backward()
        opt.step()
    after = float(mef_ssim(fused.detach().clamp(0, 1), [under, over]))
    assert after > before + 0.01, (before, after)


def test_saturation_weighted_chroma_by_hand() -> None:
    from nas.color import CHROMA_NEUTRAL, rgb_to_ycbcr

    grey = torch.full((1, 3, 4, 4), 0.5)
    red = torch.tensor([0.8, 0.2, 0.2]).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    blue = torch.tensor([0.2, 0.2, 0.6]).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    # a grey source has zero weight: the colour is the saturated one's
    assert torch.allclose(saturation_weighted_chroma([grey, red]), rgb_to_ycbcr(red)[:, 1:])
    # all grey: grey
    assert torch.allclose(saturation_weighted_chroma([grey, grey]), torch.tensor(CHROMA_NEUTRAL))
    # two colours: sum C |C - tau| / sum |C - tau| per channel
    c1, c2 = rgb_to_ycbcr(red)[:, 1:], rgb_to_ycbcr(blue)[:, 1:]
    w1, w2 = (c1 - CHROMA_NEUTRAL).abs(), (c2 - CHROMA_NEUTRAL).abs()
    expected = (w1 * c1 + w2 * c2) / (w1 + w2)
    assert torch.allclose(saturation_weighted_chroma([red, blue]), expected, atol=1e-6)
    # the loss term: zero chroma error for an image with the target chroma (grey + red -> red)
    big = [t[..., :1, :1].expand(1, 3, 48, 48) for t in (grey, red)]
    batch = {"under": big[0], "over": big[1]}
    only_chroma = MEFSSIMLoss(mean_weight=0.0, chroma_weight=1.0, reduction="none")
    no_chroma = MEFSSIMLoss(mean_weight=0.0, chroma_weight=0.0, reduction="none")
    fused = big[1]
    assert torch.allclose(only_chroma(fused, batch), no_chroma(fused, batch), atol=1e-6)
    greenish = (fused + torch.tensor([0.0, 0.2, 0.0]).view(1, 3, 1, 1)).clamp(0, 1)
    assert (only_chroma(greenish, batch) - no_chroma(greenish, batch)).item() > 0.05


def test_supervised_loss_on_unlabelled_data_is_a_clear_error() -> None:
    batch = {"under": torch.rand(1, 3, 48, 48), "over": torch.rand(1, 3, 48, 48)}
    with pytest.raises(ValueError, match="'gt'.*mef-ssim"):
        check_loss_data(build_loss("l1"), [batch], "l1", "sequences/")
    check_loss_data(build_loss("mef-ssim"), [batch], "mef-ssim", "sequences/")  # fine


@pytest.mark.filterwarnings("ignore:MEFCLLoss without")
@pytest.mark.parametrize(("name", "kwargs"), LOSS_CONFIGS, ids=lambda v: str(v)[:20])
def test_loss_gradient_is_exact(name: str, kwargs: dict) -> None:
    """``torch.autograd.gradcheck`` of every loss w.r.t. the fused image: float64, a small
    batch (2 x 3 x 32 x 32: the PatchGAN critic needs 32 px, MEF-CL's InfoNCE two images),
    analytic against numerical gradient (fast mode: along random directions)."""
    g = torch.Generator().manual_seed(0)
    rand = lambda *s: torch.rand(*s, generator=g, dtype=torch.float64)  # noqa: E731
    b = {
        "under": rand(2, 3, 32, 32) * 0.4,
        "over": rand(2, 3, 32, 32) * 0.4 + 0.6,
        "gt": rand(2, 3, 32, 32),
    }
    torch.manual_seed(0)
    loss = build_loss(name, **kwargs).double()
    fused = (0.1 + 0.8 * rand(2, 3, 32, 32)).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda f: loss(f, b), (fused,), eps=1e-6, atol=1e-6, fast_mode=True
    )
