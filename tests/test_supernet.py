"""Supernet forward/backward, relaxation, one-hot equivalence with the derived net."""

from __future__ import annotations

import pytest
import torch

from nas.genotype import derive, extract
from nas.space import load_space
from nas.supernet import CRMEFNet, MixedOp, Supernet

SPACES = ["tiny", "tiny-misaligned", "crmef", "crmef-misaligned"]


def _pair(b: int = 2, h: int = 64, w: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(b, 3, h, w), torch.rand(b, 3, h, w)


@pytest.mark.parametrize("space", SPACES)
def test_forward_backward(space: str) -> None:
    sp = load_space(space)
    if sp.arch.channels > 8:
        sp = sp.with_channels(8)  # the full spaces at a test-sized width
    net = Supernet(sp)
    u, o = _pair()
    y = net(u, o)
    assert y.shape == u.shape and torch.isfinite(y).all()
    assert 0.0 <= y.min() and y.max() <= 1.0
    y.mean().backward()
    for p in net.arch_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    assert all(p.grad is not None for p in net.weight_parameters() if p.requires_grad)


@pytest.mark.parametrize("space", ["tiny", "tiny-misaligned"])
def test_odd_sizes(space: str) -> None:
    net = Supernet(space)
    u, o = _pair(1, 37, 53)
    assert net(u, o).shape == (1, 3, 37, 53)


def test_arch_and_weight_parameters_are_disjoint() -> None:
    net = Supernet("tiny")
    arch = {id(p) for p in net.arch_parameters()}
    weights = {id(p) for p in net.weight_parameters()}
    assert arch and weights and not arch & weights
    assert len(arch) == len(net.space.slots)
    assert len(arch) + len(weights) == len(list(net.parameters()))


def test_each_slot_has_its_own_alpha_and_mixedops_read_it() -> None:
    net = Supernet("tiny")
    slots = {m.slot for _, m in net.mixed_ops()}
    assert slots == set(net.space.slots)
    # SRSM slots appear once per SRSM instance (2 images x cascades), sharing one alpha
    n_feat1 = sum(1 for _, m in net.mixed_ops() if m.slot == "srsm.feat1")
    assert n_feat1 == 2 * net.arch.cascades


def test_mixed_op_is_softmax_weighted_sum() -> None:
    weights: dict = {}
    m = MixedOp("drm.0", ("resconv_1", "resconv_3", "skip"), 4, 4, weights)
    x = torch.randn(1, 4, 9, 9)
    w = torch.softmax(torch.tensor([0.3, -1.0, 2.0]), 0)
    weights["drm.0"] = w
    expected = sum(wi * op(x) for wi, op in zip(w, m.ops.values()))
    torch.testing.assert_close(m(x), expected)


@pytest.mark.parametrize("space", ["tiny", "tiny-misaligned"])
def test_derived_net_equals_supernet_at_onehot_alpha(space: str) -> None:
    net = Supernet(space)
    for a in net.arch_parameters():  # a non-trivial choice
        a.data.normal_()
    g = derive(net)
    derived = extract(net, g)
    assert isinstance(derived, CRMEFNet) and not isinstance(derived, Supernet)
    net.set_onehot(g.choice)
    u, o = _pair(2, 33, 47)
    with torch.no_grad():
        torch.testing.assert_close(derived(u, o), net(u, o), atol=1e-6, rtol=1e-5)
    n_derived = sum(p.numel() for p in derived.parameters())
    assert n_derived < sum(p.numel() for p in net.weight_parameters())


@pytest.mark.parametrize(
    "u,o,match",
    [
        (torch.rand(3, 32, 32), torch.rand(3, 32, 32), "under must be"),
        (torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32), r"\(B, 3, H, W\)"),
        (torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 30), "same shape"),
        (torch.rand(1, 3, 32, 32), None, "over must be"),
    ],
)
def test_bad_inputs_raise_clear_errors(u, o, match: str) -> None:
    net = Supernet("tiny")
    with pytest.raises(ValueError, match=match):
        net(u, o)


def test_single_input_is_an_error() -> None:
    with pytest.raises(TypeError):
        Supernet("tiny")(torch.rand(1, 3, 16, 16))
