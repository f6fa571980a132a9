"""The torch pyramid fusion (nas.pyramid), the pyramid head (nas.heads) and the teacher."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from nas.classical import MertensDefault
from nas.genotype import build, derive
from nas.losses import TeacherWarmup, build_loss, build_objective
from nas.metrics import mef_ssim
from nas.pyramid import (
    collapse,
    laplacian_pyramid,
    max_levels,
    mertens_fuse,
    mertens_log_weights,
    mertens_quality,
    pyr_down,
    pyr_up,
)
from nas.space import SpaceError, load_space
from nas.supernet import Supernet


def _pair(h: int = 48, w: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, h, w, generator=g)
    base = torch.nn.functional.avg_pool2d(base, 3, 1, 1)  # some spatial structure
    return (base * 0.4).clamp(0, 1), (base * 1.8 + 0.1).clamp(0, 1)


def test_pyramid_sizes_and_exact_reconstruction() -> None:
    x = torch.rand(2, 3, 37, 53, dtype=torch.float64)
    assert pyr_down(x).shape[-2:] == (19, 27)  # ceil, as cv2.pyrDown
    assert pyr_up(pyr_down(x), (37, 53)).shape[-2:] == (37, 53)
    lap = laplacian_pyramid(x, max_levels(37, 53))
    assert len(lap) == max_levels(37, 53) + 1 == 6
    torch.testing.assert_close(collapse(lap), x, rtol=0, atol=1e-12)


def test_pyr_down_matches_the_binomial_filter_by_hand() -> None:
    x = torch.zeros(1, 1, 9, 9, dtype=torch.float64)
    x[0, 0, 4, 4] = 1.0  # an impulse at an even position stays on the grid
    k = torch.tensor([1, 4, 6, 4, 1], dtype=torch.float64) / 16
    y = pyr_down(x)[0, 0]
    torch.testing.assert_close(y[2, 2], k[2] * k[2])
    torch.testing.assert_close(y[1, 2], k[0] * k[2])
    # keeping one sample in four keeps a quarter of the mass
    torch.testing.assert_close(y.sum(), torch.tensor(0.25, dtype=torch.float64))


def test_mertens_quality_by_hand() -> None:
    x = torch.tensor([0.2, 0.5, 0.8]).view(1, 3, 1, 1).expand(1, 3, 3, 3).clone()
    c, s, e = mertens_quality(x)
    assert torch.all(c == 0)  # flat image: no Laplacian response
    torch.testing.assert_close(s, torch.full_like(s, float(np.std([0.2, 0.5, 0.8]))))
    want = float(np.prod(np.exp(-((np.array([0.2, 0.5, 0.8]) - 0.5) ** 2) / 0.08)))
    torch.testing.assert_close(e, torch.full_like(e, want))


def test_torch_mertens_follows_opencv() -> None:
    """Same algorithm as cv2.createMergeMertens() (defaults 1, 1, 0): near-equal images,
    MEF-SSIM within 2e-3 (border handling of pyrUp differs slightly)."""
    u, o = _pair(96, 128)
    ref = MertensDefault().fuse(u, o)
    ours = mertens_fuse([u, o])
    assert (ours - ref).abs().mean() < 0.01
    assert abs(float(mef_ssim(ours, [u, o])) - float(mef_ssim(ref, [u, o]))) < 2e-3


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_pyramid_head_starts_as_mertens_and_learns(scale: int) -> None:
    space = load_space("crmef-pyramid").with_channels(8)
    space = dataclasses.replace(space, arch=dataclasses.replace(space.arch, scale=scale))
    net = build(derive(Supernet(space))).eval()
    u, o = _pair()
    with torch.no_grad():
        torch.testing.assert_close(net(u, o), mertens_fuse([u, o]), rtol=0, atol=1e-5)
    # the correction is trainable: one gradient step moves the output off Mertens
    net.train()
    loss = build_loss("mef-ssim", mean_weight=0.0, chroma_weight=0.0)
    out = loss(net(u, o), {"under": u, "over": o})
    out.backward()
    assert net.head.correction.weight.grad.abs().sum() > 0
    assert net.drm.head is None  # the illumination head is not built into the count


def _fast_net(scale: int, C: int = 8) -> torch.nn.Module:
    space = load_space("crmef-pyramid").with_channels(C)
    arch = dataclasses.replace(space.arch, head="fast", scale=scale)
    return build(derive(Supernet(dataclasses.replace(space, arch=arch)))).eval()


def _two_band_by_hand(u: torch.Tensor, o: torch.Tensor, s: int) -> torch.Tensor:
    """The fast head with zero correction, restated: Mertens at 1/s, detail at full size."""
    ul, ol = (torch.nn.functional.avg_pool2d(x, s, s, ceil_mode=True) for x in (u, o))
    w = torch.softmax(mertens_log_weights([ul, ol]), dim=1)
    low = mertens_fuse([ul, ol])
    size = u.shape[-2:]

    def up(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x, size=size, mode="bilinear")

    blend_lo = w[:, :1] * ul + w[:, 1:] * ol
    return (up(w[:, :1]) * u + (1 - up(w[:, :1])) * o + up(low - blend_lo)).clamp(0, 1)


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_fast_head_starts_as_two_band_mertens(scale: int) -> None:
    u, o = _pair(64, 96)
    net = _fast_net(scale)
    with torch.no_grad():
        torch.testing.assert_close(net(u, o), _two_band_by_hand(u, o, scale), rtol=0, atol=1e-5)
    assert net.head.op_name == f"fixed.fast_head_x{scale}"
    net.train()
    loss = build_loss("mef-ssim", mean_weight=0.0, chroma_weight=0.0)
    loss(net(u, o), {"under": u, "over": o}).backward()
    assert net.head.correction.weight.grad.abs().sum() > 0


def test_fast_head_at_scale_one_is_the_pyramid_head() -> None:
    u, o = _pair()
    with torch.no_grad():
        torch.testing.assert_close(_fast_net(1)(u, o), mertens_fuse([u, o]), rtol=0, atol=1e-5)


def test_pyramid_scale_needs_the_pyramid_head() -> None:
    arch = load_space("crmef").arch
    with pytest.raises(SpaceError, match="needs head: pyramid or fast"):
        dataclasses.replace(arch, scale=2)
    with pytest.raises(SpaceError, match="head must be one of"):
        dataclasses.replace(arch, head="unet")


def test_teacher_warmup_switches_objective() -> None:
    u, o = _pair()
    batch = {"under": u, "over": o}
    loss = build_objective("mef-ssim", {"mean_weight": 0.0}, "mertens", 2)
    assert isinstance(loss, TeacherWarmup)
    teacher = mertens_fuse([u, o])
    loss.set_epoch(0)
    assert float(loss(teacher, batch)) < 1e-6  # the teacher itself: zero L1
    torch.testing.assert_close(loss(u, batch), (u - teacher).abs().mean())
    loss.set_epoch(2)  # after the warm-up: the objective alone
    want = build_loss("mef-ssim", mean_weight=0.0)(u, batch)
    torch.testing.assert_close(loss(u, batch), want)
    assert not isinstance(build_objective("mef-ssim", None, "mertens", 0), TeacherWarmup)
    with pytest.raises(ValueError, match="unknown teacher"):
        build_objective("mef-ssim", None, "oracle", 1)


def test_max_levels_is_opencvs_formula_exactly() -> None:
    """The comparison form equals ``int(log(min) / log(2))`` for every side up to 2^17."""
    for side in range(1, 1 << 17):
        assert max_levels(side, side + 5) == int(math.log(side) / math.log(2.0)), side
