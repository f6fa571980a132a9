"""The ops registry, looped over every op (timm style)."""

from __future__ import annotations

import pytest
import torch

from nas.ops import DeformConvOp, Unit, create_op, get_op_spec, list_ops

ALL_OPS = list_ops()


def test_registry_has_the_crmef_candidates() -> None:
    expected = (
        [f"conv_{k}" for k in (1, 3, 5, 7)]
        + [f"dilconv_{k}" for k in (3, 5, 7)]
        + [f"resconv_{k}" for k in (3, 5, 7)]
        + [f"resdilconv_{k}" for k in (3, 5, 7)]
        + [f"deform_{k}" for k in (3, 5, 7)]
        + ["skip"]
    )
    assert set(expected) <= set(ALL_OPS)
    assert list_ops("deform_*") == ["deform_3", "deform_5", "deform_7"]


@pytest.mark.parametrize("name", ALL_OPS)
@pytest.mark.parametrize("C_in,C_out,stride", [(4, 4, 1), (4, 6, 1), (6, 4, 2)])
def test_op_forward_backward(name: str, C_in: int, C_out: int, stride: int) -> None:
    op = create_op(name, C_in, C_out, stride)
    assert isinstance(op, Unit) and op.op_name == name
    x = torch.randn(2, C_in, 37, 53, requires_grad=True)
    y = op(x)
    assert y.shape == (2, C_out, (37 - 1) // stride + 1, (53 - 1) // stride + 1)
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for p in op.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


def test_skip_is_parameter_free_at_equal_shapes() -> None:
    assert get_op_spec("skip").parameter_free
    op = create_op("skip", 5, 5)
    x = torch.randn(1, 5, 9, 9)
    assert sum(p.numel() for p in op.parameters()) == 0
    assert torch.equal(op(x), x)


def test_residual_op_is_conv_plus_identity() -> None:
    op = create_op("resconv_3", 4, 4)
    x = torch.randn(1, 4, 11, 11)
    conv = create_op("conv_3", 4, 4)
    conv.load_state_dict(op.state_dict(), strict=False)
    torch.testing.assert_close(op(x), x + conv(x))


@pytest.mark.parametrize("k", [3, 5, 7])
def test_deform_op_starts_as_plain_conv(k: int) -> None:
    op = create_op(f"deform_{k}", 4, 6)
    assert isinstance(op, DeformConvOp)
    x = torch.randn(2, 4, 13, 17)
    torch.testing.assert_close(op(x), op.as_conv(x), atol=1e-5, rtol=1e-5)
    # offsets predicted from a separate feature (the alignment module's use): the offset and
    # mask predictor starts at zero, so the feature does not matter yet
    torch.testing.assert_close(
        op(x, torch.randn(2, 4, 13, 17)), op.as_conv(x), atol=1e-5, rtol=1e-5
    )


def test_unknown_op_lists_valid_names() -> None:
    with pytest.raises(KeyError, match="conv_3"):
        create_op("conv_9", 4, 4)


@pytest.mark.parametrize("bad", [dict(C_in=0, C_out=4), dict(C_in=4, C_out=4, stride=3)])
def test_bad_op_arguments(bad: dict) -> None:
    with pytest.raises(ValueError):
        create_op("conv_3", **bad)


# --- every op, both styles, against a functional restatement with the op's own weights ----

STYLE_CASES = [(4, 4, 1), (4, 6, 1), (6, 4, 2)]


def _restate(op: torch.nn.Module, name: str, style: str, x: torch.Tensor, feat=None):
    """What op ``name`` of ``style`` computes, written with ``torch.nn.functional`` calls on
    the op's own parameters (deformable ops through the grid-sample kernel, an independent
    implementation of the same sampling)."""
    import torch.nn.functional as F

    from nas.ops.deform_conv import deform_backend, deform_conv2d

    spec = get_op_spec(name)
    k, d = spec.kernel, spec.dilation

    def shortcut(t: torch.Tensor, sc) -> torch.Tensor:
        return t if sc.proj is None else F.conv2d(t, sc.proj.weight, sc.proj.bias, sc.proj.stride)

    if spec.family == "skip":
        return shortcut(x, op.shortcut)
    if spec.family == "deform":
        oc = op.offset_conv
        om = F.conv2d(x if feat is None else feat, oc.weight, oc.bias, oc.stride, oc.padding)
        taps = k * k
        gate = torch.sigmoid(om[:, 2 * taps :])
        mask = gate if style == "authors" else 2.0 * gate
        with deform_backend("grid_sample"):
            y = deform_conv2d(
                x, om[:, : 2 * taps], op.weight, op.bias, op.stride, (k - 1) // 2, 1, mask
            )
        return y if style == "authors" else F.leaky_relu(y, 0.1)
    c = op.conv
    conv = F.conv2d(x, c.weight, c.bias, c.stride, (k - 1) // 2 * d, d)
    if style == "authors":
        if spec.family in ("conv", "dilconv"):
            return conv
        a = F.prelu(conv + x, op.act.weight)
        return F.conv2d(a, op.out.weight, op.out.bias, 1, 1)
    y = F.leaky_relu(conv, 0.1)
    return y if spec.family in ("conv", "dilconv") else shortcut(x, op.shortcut) + y


@pytest.mark.parametrize("style", ["lean", "authors"])
@pytest.mark.parametrize("name", ALL_OPS)
@pytest.mark.parametrize("C_in,C_out,stride", STYLE_CASES)
def test_op_equals_its_functional_restatement(
    style: str, name: str, C_in: int, C_out: int, stride: int
) -> None:
    spec = get_op_spec(name)
    if style == "authors" and spec.family in ("resconv", "resdilconv") and stride != 1:
        with pytest.raises(ValueError, match="stride 1"):
            create_op(name, C_in, C_out, stride, style=style)
        return
    torch.manual_seed(0)
    op = create_op(name, C_in, C_out, stride, style=style).double()
    prefix = "authors." if style == "authors" and name != "skip" else ""
    assert op.op_name == prefix + name
    with torch.no_grad():  # non-trivial weights everywhere (offsets and masks included)
        for p in op.parameters():
            p.copy_(0.3 * torch.randn_like(p))
    x = torch.randn(2, C_in, 13, 17, dtype=torch.float64)
    y = op(x)
    assert y.shape == (2, C_out, (13 - 1) // stride + 1, (17 - 1) // stride + 1)
    torch.testing.assert_close(y, _restate(op, name, style, x), rtol=1e-10, atol=1e-10)
    if spec.takes_offset_feat:
        feat = torch.randn(2, C_in, 13, 17, dtype=torch.float64)
        torch.testing.assert_close(
            op(x, feat), _restate(op, name, style, x, feat), rtol=1e-10, atol=1e-10
        )
