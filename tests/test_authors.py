"""``style: authors``: the CRMEF authors' released network, checked against its published
parameter count and against a functional re-statement of their forward pass."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from nas.baselines import create_model
from nas.genotype import CRMEF_GENERAL, CRMEF_MISALIGNED, build, count_parameters, extract
from nas.ops import AuthorsDeform, AuthorsResBlock, create_op
from nas.space import ArchConfig, SpaceError, load_space
from nas.supernet import Supernet


def _styled(g, style: str, channels: int):
    return dataclasses.replace(g, arch=dataclasses.replace(g.arch, style=style, channels=channels))


def test_published_general_net_has_the_published_parameter_count() -> None:
    """Table II of the paper: 1.879 M; the authors' code builds exactly 1,879,330."""
    net = create_model("crmef-general")
    assert net.arch.style == "authors" and net.arch.channels == 64
    assert count_parameters(net) == 1_879_330
    per_image = sum(count_parameters(m) for m in net.srsm_under)
    assert per_image == 310_664  # two SRSM cascades at 64 channels
    assert count_parameters(net.drm) == 1_258_002  # the detail module at 128 channels
    # the authors' misaligned net (their AHDR_MEF_deform with this genotype), counted by hand
    # from their code: SRSM 4 x 155,332 + pyramid 221,824 + PCD 1,458,172 + DRM 333,202
    assert count_parameters(create_model("crmef-misaligned")) == 2_634_526


def test_widths_in_the_authors_style() -> None:
    """C is the relighting width; the aligned detail module runs at 2C."""
    net = build(_styled(CRMEF_GENERAL, "authors", 32))
    assert net.drm.op0.C_in == 64 and net.srsm_under[0].feat1.C_in == 32
    lean = build(_styled(CRMEF_GENERAL, "lean", 32))
    assert count_parameters(net) == 474_786 and count_parameters(lean) < count_parameters(net)


def test_resblock_is_conv3x3_of_prelu_of_residual_conv() -> None:
    torch.manual_seed(0)
    op = create_op("resdilconv_5", 6, 4, style="authors")
    assert isinstance(op, AuthorsResBlock) and op.op_name == "authors.resdilconv_5"
    with torch.no_grad():
        op.act.weight.fill_(0.3)
    x = torch.randn(2, 6, 11, 13)
    h = F.conv2d(x, op.conv.weight, op.conv.bias, padding=4, dilation=2) + x
    h = torch.where(h > 0, h, 0.3 * h)
    ref = F.conv2d(h, op.out.weight, op.out.bias, padding=1)
    torch.testing.assert_close(op(x), ref)
    assert count_parameters(op) == (6 * 6 * 25 + 6) + (4 * 6 * 9 + 4) + 1


def test_authors_conv_is_bare() -> None:
    op = create_op("conv_3", 4, 5, style="authors")
    x = torch.randn(1, 4, 9, 9)
    torch.testing.assert_close(op(x), F.conv2d(x, op.conv.weight, op.conv.bias, padding=1))
    assert create_op("skip", 4, 4, style="authors").op_name == "skip"


@pytest.mark.parametrize("kernel", [3, 5])
def test_authors_deform_at_zero_offsets_is_half_masked_conv(kernel: int) -> None:
    """Offset conv k x k, zero-initialised; mask sigmoid(0) = 0.5 (DCNv2's DCN_sep)."""
    torch.manual_seed(0)
    op = create_op(f"deform_{kernel}", 4, 6, style="authors")
    assert isinstance(op, AuthorsDeform) and op.offset_conv.kernel_size == (kernel, kernel)
    with torch.no_grad():
        op.bias.normal_()
    x, feat = torch.randn(1, 4, 10, 12), torch.randn(1, 4, 10, 12)
    conv = F.conv2d(x, op.weight, None, padding=kernel // 2)
    torch.testing.assert_close(op(x, feat), 0.5 * conv + op.bias.view(1, -1, 1, 1))


def _srsm_reference(m, x: torch.Tensor) -> torch.Tensor:
    """The authors' AttenionNet_relaxed forward, restated with functional ops."""
    a = m.slope.item()

    def act(t):
        return torch.where(t > 0, t, a * t)

    h = act(m.stem.conv(x))
    h = act(act(m.feat1(h)))
    h = torch.cat([F.max_pool2d(h, 3, 2, 1), F.avg_pool2d(h, 3, 2, 1)], 1)
    h = act(m.feat2(h))
    h = act(m.conv(h)) + h
    h = F.interpolate(h, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return torch.sigmoid(m.head.conv(h)) * x


def _drm_reference(d, u: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """The authors' illuminationNet forward (eval mode), restated; output clamped to [0, 1]."""
    s = u + o
    x = d.stem.act(d.stem.bn(d.stem.conv2(d.stem.conv1(s))))
    x = d.post0.act(d.post0.bn(d.op0(x)))
    x = d.post1.act(d.post1.bn(d.op1(x)) + x)
    x = d.post2.act(d.post2.bn(d.op2(x)))
    x = d.post3.act(d.post3.bn(d.op3(x)) + x)
    return (s / (torch.sigmoid(d.head.conv(x)) + 1e-5)).clamp(0, 1)


def test_general_net_matches_the_authors_forward() -> None:
    torch.manual_seed(0)
    net = build(_styled(CRMEF_GENERAL, "authors", 8)).eval()
    with torch.no_grad():  # non-trivial norm statistics and slopes
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        for s in [*net.srsm_under, *net.srsm_over]:
            s.slope.fill_(0.1)
    u, o = torch.rand(1, 3, 21, 30), torch.rand(1, 3, 21, 30)
    with torch.no_grad():
        ru, ro = u, o
        for su, so in zip(net.srsm_under, net.srsm_over):
            ru, ro = _srsm_reference(su, ru), _srsm_reference(so, ro)
        ref = _drm_reference(net.drm, ru, ro)
        torch.testing.assert_close(net(u, o), ref)


@pytest.mark.parametrize("space", ["crmef", "crmef-misaligned"])
def test_shipped_spaces_use_the_authors_style(space: str) -> None:
    sp = load_space(space)
    assert sp.arch.style == "authors"
    net = Supernet(sp.with_channels(8))
    g = CRMEF_MISALIGNED if sp.arch.misaligned else CRMEF_GENERAL
    net.set_onehot(g.choice)
    derived = extract(net, dataclasses.replace(g, arch=net.arch))
    u, o = torch.rand(1, 3, 24, 20), torch.rand(1, 3, 24, 20)
    net.eval()
    derived.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(u, o), derived(u, o))


def test_style_is_validated_and_defaults_to_lean() -> None:
    assert ArchConfig().style == "lean"  # genotype files written before styles existed
    with pytest.raises(SpaceError, match="style"):
        ArchConfig(style="paper")
    with pytest.raises(ValueError, match="style"):
        create_op("conv_3", 4, 4, style="paper")
