"""Every registered model (timm style): shapes, range, gradients, parameter counts, colour path."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nas.baselines import create_model, get_model_info, list_models, register_model
from nas.baselines import registry as registry_module
from nas.baselines.ffmef import apply_pixel_filters
from nas.baselines.lcndr import LCNDR, edge_gradient_max
from nas.losses import list_losses

BASELINES = ("mef-cl", "ffmef", "lcndr", "hyperp-mb")
SHAPES = ((1, 3, 37, 53), (2, 3, 64, 64))


def _pair(shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(shape) * 0.5, torch.rand(shape) * 0.5 + 0.5


def test_baselines_registered() -> None:
    assert set(BASELINES) <= set(list_models())
    assert list_models("hyperp*") == ["hyperp-mb"]


@pytest.mark.parametrize("name", list_models(kind="network"))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_forward_backward(name: str, shape: tuple[int, ...]) -> None:
    model = create_model(name)
    under, over = _pair(shape)
    out = model(under, over)
    assert out.shape == shape
    assert torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1
    out.mean().backward()
    for pname, p in model.named_parameters():
        if not p.requires_grad:  # frozen by design (the authors' discarded layers)
            assert ".unused." in pname, f"{name}: {pname} is frozen"
            continue
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"


EXACT_PARAMS = {
    "mef-cl": 661_379,
    "ffmef": 7_662,
    "lcndr": 100_955,
    "hyperp-mb": 88_225,
    "crmef-general": 1_879_330,
    "crmef-misaligned": 2_634_526,
}
"""The parameter count each registered network builds (the README's Design notes quote the
baselines'); any change to a network shows here."""


@pytest.mark.parametrize("name", sorted(EXACT_PARAMS))
def test_parameter_count(name: str) -> None:
    n = sum(p.numel() for p in create_model(name).parameters())
    assert n == EXACT_PARAMS[name], f"{name}: {n} parameters"
    ref = get_model_info(name).ref_params  # the papers' rounded figures (BASELINES.md)
    if ref:
        assert abs(n - ref) / ref < 0.05, f"{name}: {n} parameters, BASELINES.md says about {ref}"


def test_every_network_has_a_pinned_count() -> None:
    nets = [n for n in list_models() if get_model_info(n).group != "classical"]
    assert sorted(nets) == sorted(EXACT_PARAMS)


@pytest.mark.parametrize("name", [n for n in BASELINES if get_model_info(n).color_space != "rgb"])
def test_grey_inputs_give_grey_output(name: str) -> None:
    """Colour paths keep neutral chroma: two grey exposures fuse to a grey image."""
    model = create_model(name).eval()
    grey = torch.rand(1, 1, 24, 32).expand(1, 3, 24, 32)
    with torch.no_grad():
        out = model(grey * 0.4, grey * 0.4 + 0.5)
    assert (out - out.mean(dim=1, keepdim=True)).abs().max() < 1e-4


def test_eval_mode_is_per_image() -> None:
    """In eval mode (BatchNorm running stats) a batch fuses like its images one by one."""
    model = create_model("lcndr").eval()
    under, over = _pair((2, 3, 24, 40))
    with torch.no_grad():
        both = model(under, over)
        single = torch.cat([model(under[i : i + 1], over[i : i + 1]) for i in range(2)])
    assert torch.allclose(both, single, atol=1e-5)


def test_metadata_names_a_known_loss() -> None:
    for name in BASELINES:
        info = get_model_info(name)
        assert info.loss in list_losses()
        assert info.paper and info.color_space in ("rgb", "ycbcr-y", "lab-l")


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(KeyError) as err:
        create_model("no-such-net")
    assert all(n in str(err.value) for n in BASELINES)


def test_register_function_and_duplicate() -> None:
    name = "test-dummy-net"

    @register_model(name, paper="none", loss="l1")
    def _factory(width: int = 4) -> nn.Module:
        return nn.Conv2d(3, width, 1)

    try:
        assert name in list_models("test-*")
        assert create_model(name, width=2).out_channels == 2
        assert get_model_info(name).loss == "l1"
        with pytest.raises(ValueError):
            register_model(name)(_factory)
    finally:
        registry_module._REGISTRY.pop(name, None)


def test_pixel_filters_identity() -> None:
    img = torch.rand(2, 1, 9, 11)
    ident = torch.zeros(2, 9, 9, 11)
    ident[:, 4] = 1.0  # centre tap of a 3x3 kernel
    assert torch.allclose(apply_pixel_filters(img, ident), img)
    assert torch.allclose(apply_pixel_filters(img, torch.full((2, 1, 9, 11), 2.0)), 2 * img)


def test_edge_gradient_max() -> None:
    x = torch.zeros(1, 1, 4, 4)
    x[..., :, 2:] = 1.0  # vertical step between columns 1 and 2
    fg = edge_gradient_max(x, eps=0.0)
    assert torch.allclose(fg[0, 0, :, 2], torch.ones(4))  # left difference at the step
    assert torch.allclose(fg[0, 0, :3, 1], torch.ones(3))  # diagonal max pulls it left-up
    assert fg[0, 0, :, 0].abs().max() == 0 and fg[0, 0, :, 3].abs().max() == 0


def test_lcndr_attention_token_cap() -> None:
    model = LCNDR(max_tokens=4)
    under, over = _pair((1, 3, 64, 48))
    out = model(under, over)
    assert out.shape == under.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("name", list_models(kind="network"))
def test_gradients_flow_at_initialisation(name: str) -> None:
    """No output clamp may swallow every gradient of a freshly built model (a dead start)."""
    torch.manual_seed(0)
    kwargs = {"channels": 8} if name.startswith("crmef-") else {}
    model = create_model(name, **kwargs)
    gt = torch.rand(2, 3, 32, 32)
    y = model(0.3 * gt, (2 * gt).clamp(0, 1))
    ((y - gt) ** 2).mean().backward()
    total = sum(float(p.grad.abs().sum()) for p in model.parameters() if p.grad is not None)
    assert total > 0, f"{name}: zero gradient at initialisation"


def test_registry_metadata_replaces_name_checks():
    from nas.baselines import get_model_info, list_models, registry_info, width_kwargs
    from nas.models import resolve_model

    groups = {n: get_model_info(n).group for n in list_models()}
    assert groups == {
        "average": "classical",
        "crmef-general": "crmef",
        "crmef-misaligned": "crmef",
        "ffmef": "baseline",
        "hyperp-mb": "baseline",
        "lcndr": "baseline",
        "mef-cl": "baseline",
        "mertens": "classical",
        "mertens-default": "classical",
    }
    assert width_kwargs("crmef-general", 8) == {"channels": 8}
    assert width_kwargs("ffmef", 8) == {} and width_kwargs("crmef-general", None) == {}
    assert width_kwargs("results/runs/x", 8) == {} and registry_info("results/runs/x") is None
    assert [n for n in list_models() if get_model_info(n).misaligned] == ["crmef-misaligned"]
    assert [n for n in list_models() if get_model_info(n).global_context] == ["lcndr"]
    assert resolve_model("crmef-misaligned", channels=8).misaligned
    assert not resolve_model("ffmef").misaligned
    assert resolve_model("lcndr").registry_info.global_context
