"""Spaces with searched whole-network choices (scale, width): variants, the choice supernet,
derivation, inherited weights, the mixed expected latency and the target penalty forms."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from nas.genotype import Genotype, build, derive, extract
from nas.latency import LatencyPenalty, predict
from nas.latency.predict import expected_latency
from nas.latency.profiler import collect_units, synthetic_table
from nas.space import SearchSpace, SpaceError, load_space
from nas.supernet import ChoiceSupernet, Supernet, make_supernet

SIZE = (48, 64)


def _space(**choices) -> SearchSpace:
    d = load_space("crmef-fast").to_dict()
    d["choices"] = choices or {"scale": [2, 4], "channels": [4, 8]}
    return SearchSpace.from_dict(d, source="test")


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return _space()


@pytest.fixture(scope="module")
def table(space):
    return synthetic_table([space], [], SIZE)


def _pair(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(1, 3, *SIZE, generator=g) * 0.5
    return u, (u * 1.8 + 0.1).clamp(0, 1)


def test_shipped_fast_space_has_eight_variants() -> None:
    sp = load_space("crmef-fast")
    assert sp.choices == {"scale": (2, 4, 8, 16), "channels": (8, 16)}
    assert (sp.arch.scale, sp.arch.channels, sp.arch.head) == (2, 8, "fast")
    got = [(a["scale"], a["channels"], v.arch.scale, v.arch.channels) for a, v in sp.variants()]
    assert got == [(s, c, s, c) for s in (2, 4, 8, 16) for c in (8, 16)]
    assert all(not v.choices for _, v in sp.variants())
    assert SearchSpace.from_dict(sp.to_dict()) == sp
    assert [v.arch.channels for v in load_space("crmef-pyramid").expand([8, 16])] == [8, 16]


@pytest.mark.parametrize(
    "choices, needle",
    [
        ({"scale": [2, 2]}, "without repeats"),
        ({"depth": [1, 2]}, "unknown key"),
        ({"scale": [3]}, "scale must be one of"),
        ({"head": ["crmef"], "scale": [2]}, "needs head: pyramid or fast"),
    ],
)
def test_bad_choices_name_the_key(choices, needle) -> None:
    with pytest.raises(SpaceError, match=needle):
        _space(**choices)


def test_plain_supernet_refuses_a_choice_space(space) -> None:
    with pytest.raises(ValueError, match="make_supernet"):
        Supernet(space)
    assert isinstance(make_supernet(space), ChoiceSupernet)
    assert isinstance(make_supernet("crmef-pyramid"), Supernet)


def _perturbed(space) -> ChoiceSupernet:
    torch.manual_seed(0)
    net = make_supernet(space)
    with torch.no_grad():  # move every head off Mertens so the bodies matter
        for v in net.nets:
            v.head.correction.weight.normal_(0, 0.5)
    return net.eval()


def test_mixture_is_the_weighted_sum_of_variants(space) -> None:
    net = _perturbed(space)
    u, o = _pair()
    with torch.no_grad():
        net.alpha("choice.scale").copy_(torch.tensor([0.3, -0.2]))
        net.alpha("choice.channels").copy_(torch.tensor([-1.0, 0.5]))
        ps = torch.softmax(torch.tensor([0.3, -0.2]), 0)
        pc = torch.softmax(torch.tensor([-1.0, 0.5]), 0)
        want = sum(ps[i] * pc[j] * net.nets[2 * i + j](u, o) for i in range(2) for j in range(2))
        torch.testing.assert_close(net(u, o), want)
    # the op alphas are shared: one parameter per slot, read by every variant
    assert len(net.arch_parameters()) == len(space.slots) + 2
    assert all(v.alpha("drm.0") is net.alpha("drm.0") for v in net.nets)
    assert not {id(p) for p in net.weight_parameters()} & {id(p) for p in net.arch_parameters()}


def test_alphas_of_ops_and_choices_get_gradients(space) -> None:
    net = _perturbed(space).train()
    u, o = _pair()
    net(u, o).square().mean().backward()
    for p in net.arch_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_derive_picks_choices_and_extract_equals_the_onehot_supernet(space) -> None:
    net = _perturbed(space)
    choice = {s: space.candidates[s][1] for s in space.slots}
    net.set_onehot({**choice, "scale": 4, "channels": 8})
    g = derive(net)
    assert (g.arch.scale, g.arch.channels, g.choice) == (4, 8, choice)
    derived = extract(net, g).eval()
    u, o = _pair(1)
    with torch.no_grad():
        torch.testing.assert_close(derived(u, o), net(u, o), rtol=0, atol=1e-6)
    assert isinstance(build(g), torch.nn.Module)


def test_expected_latency_mixes_the_variants_and_equals_predict_at_onehot(space, table) -> None:
    net = make_supernet(space)
    choice = {s: space.candidates[s][-1] for s in space.slots}
    for scale, C in [(2, 8), (4, 4)]:
        net.set_onehot({**choice, "scale": scale, "channels": C})
        g = derive(net)
        want = predict(g, SIZE, table, calibrated=False)
        got = float(expected_latency(net, table, SIZE, calibrated=False).detach())
        assert got == pytest.approx(want, rel=1e-6)
    # half-way between two variants: the mean of their latencies
    with torch.no_grad():
        net.alpha("choice.scale").zero_()
    lat = [
        predict(dataclasses.replace(g, arch=dataclasses.replace(g.arch, scale=s)), SIZE, table)
        for s in (2, 4)
    ]
    got = float(expected_latency(net, table, SIZE, calibrated=False).detach())
    assert got == pytest.approx(sum(lat) / 2, rel=1e-6)


def test_profiling_covers_every_variant(space) -> None:
    ops = {k.op for k in collect_units([space], [], SIZE)}
    assert {"fixed.fast_head_x2", "fixed.fast_head_x4"} <= ops
    chans = {k.C_in for k in collect_units([space], [], SIZE) if k.op == "fixed.fast_head_x2"}
    assert chans == {3}


@pytest.mark.parametrize("form", ["log", "abs", "hinge"])
def test_penalty_forms_by_hand(space, table, form) -> None:
    net = make_supernet(space)
    ref = LatencyPenalty(net, table, SIZE).reference_ms
    T0 = 0.5 * ref
    pen = LatencyPenalty(net, table, SIZE, form=form, target_ms=T0)
    r = pen()
    ms = pen.last_ms
    want = {"log": math.log(ms / T0), "abs": abs(ms / T0 - 1), "hinge": max(0.0, ms / T0 - 1)}
    assert float(r.detach()) == pytest.approx(want[form], rel=1e-6)
    r.backward()
    assert net.alpha("choice.scale").grad.abs().sum() > 0
    # below the target the hinge is flat (no gradient), the absolute form pulls back up
    if form in ("abs", "hinge"):
        low = LatencyPenalty(net, table, SIZE, form=form, target_ms=10 * ref)
        net.zero_grad()
        rl = low()
        assert float(rl.detach()) == pytest.approx(0.0 if form == "hinge" else 1 - ms / (10 * ref))


def test_target_forms_need_a_target_and_paper_needs_one_network(space, table) -> None:
    net = make_supernet(space)
    with pytest.raises(ValueError, match="target"):
        LatencyPenalty(net, table, SIZE, form="abs")
    with pytest.raises(ValueError, match="choices"):
        LatencyPenalty(net, table, SIZE, form="paper")
    from nas.search import SearchConfig

    with pytest.raises(ValueError, match="target_ms"):
        SearchConfig(latency_penalty="hinge")
    assert SearchConfig(latency_penalty="hinge", target_ms=50).target_ms == 50


def test_options_label_ops_and_choices(space) -> None:
    opts = space.options
    assert opts["choice.scale"] == ("scale=2", "scale=4")
    assert opts["drm.0"] == space.candidates["drm.0"]
    assert set(opts) == set(make_supernet(space).softmax_weights())


def _small_space() -> SearchSpace:
    d = _space().to_dict()
    for i, slot in enumerate(d["slots"]):
        d["slots"][slot] = d["slots"][slot][:2] if i in (0, 3, 6) else d["slots"][slot][:1]
    return SearchSpace.from_dict(d, source="small")


@pytest.mark.parametrize("target_scale, tol", [(0.5, (0.25, 0.25)), (1.0, (0.0, None))])
def test_derive_for_target_is_the_most_probable_net_that_meets_it(table, target_scale, tol) -> None:
    """Against brute force: every net of a small space, predicted with ``predict``."""
    import itertools

    from nas.latency.predict import derive_for_target

    space = _small_space()
    torch.manual_seed(3)
    net = make_supernet(space, alpha_init_std=1.0)
    w = {k: v.detach().double() for k, v in net.softmax_weights().items()}
    nets = []
    for a, _ in space.variants():
        for ops in itertools.product(*(space.candidates[s] for s in space.slots)):
            arch = dataclasses.replace(space.arch, **a)
            g = Genotype(space.name, arch, tuple(zip(space.slots, ops)))
            lp = sum(math.log(w[s][space.candidates[s].index(o)]) for s, o in g.ops)
            lp += sum(math.log(w[f"choice.{k}"][space.choices[k].index(v)]) for k, v in a.items())
            nets.append((lp, predict(g, SIZE, table), g))
    times = sorted(ms for _, ms, _ in nets)
    target = times[len(times) // 2] * target_scale
    lo = -math.inf if tol[1] is None else (1 - tol[1]) * target
    ok = [n for n in nets if lo <= n[1] <= (1 + tol[0]) * target]
    got, note = derive_for_target(net, derive(net), table, SIZE, target, tol)
    if ok:
        want = max(ok, key=lambda n: n[0])[2]
        assert note["met"]
    else:
        want = min(nets, key=lambda n: abs(math.log(n[1] / target)))[2]
    assert got == want
    assert note["chosen"] == {"scale": got.arch.scale, "channels": got.arch.channels}


def test_derive_for_target_far_below_takes_the_fastest(table) -> None:
    from nas.latency.predict import derive_for_target

    space = _small_space()
    net = make_supernet(space)
    got, note = derive_for_target(net, derive(net), table, SIZE, 1e-6, (0.25, 0.25))
    assert not note["met"]
    fastest = min(
        (predict(dataclasses.replace(got, arch=dataclasses.replace(got.arch, **a)), SIZE, table), a)
        for a, _ in space.variants()
    )
    assert predict(got, SIZE, table) <= fastest[0] + 1e-9
