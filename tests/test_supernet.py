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
    net = Supernet(space).eval()
    u, o = _pair(2, 37, 53)
    y = net(u, o)
    assert y.shape == (2, 3, 37, 53) and 0.0 <= y.min() and y.max() <= 1.0
    # images of a batch do not influence each other (eval mode): each alone gives the same
    torch.testing.assert_close(net(u[1:], o[1:]), y[1:], atol=1e-5, rtol=1e-4)


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
    alpha = torch.nn.Parameter(torch.tensor([0.3, -1.0, 2.0]))
    m = MixedOp("drm.0", ("resconv_1", "resconv_3", "skip"), 4, 4, alpha)
    assert not list(m.parameters()) or all(p is not alpha for p in m.parameters())
    x = torch.randn(1, 4, 9, 9)
    w = torch.softmax(alpha.detach(), 0)
    expected = sum(wi * op(x) for wi, op in zip(w, m.ops.values()))
    torch.testing.assert_close(m(x), expected)
    m(x).sum().backward()
    assert alpha.grad is not None and alpha.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="alpha of shape"):
        m.bind(torch.zeros(2))


def test_mixed_ops_follow_their_alpha_through_copies_and_conversions() -> None:
    import copy

    net = Supernet("tiny")
    for moved in (copy.deepcopy(net), copy.deepcopy(net).to("meta"), net.double().float()):
        for _, m in moved.mixed_ops():
            assert m._alpha[0] is moved.alpha(m.slot)
    # a forward pass on the meta device works (latency tracing relies on it)
    meta = copy.deepcopy(net).to("meta")
    y = meta(torch.empty(1, 3, 16, 16, device="meta"), torch.empty(1, 3, 16, 16, device="meta"))
    assert y.device.type == "meta" and y.shape == (1, 3, 16, 16)


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
