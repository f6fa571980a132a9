"""Tests for :mod:`nas.flops` against hand counts.

Conventions under test: convolution MACs ``B * C_out * C_in/groups * kh * kw * H_out * W_out``
without bias, FLOPs = 2 x MACs, bilinear resize 8 FLOPs per output element per channel,
deformable sampling 4 MACs per (image, input channel, tap, output pixel).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas.flops import (
    DEFORM_SAMPLING_KEY,
    FlopReport,
    count_flops,
    count_macs_thop,
    count_params,
    flop_formulas,
)
from nas.genotype import CRMEF_GENERAL, CRMEF_MISALIGNED, build
from nas.modules import DASMMerge, DASMOffset, SRSMHead
from nas.modules_authors import SRSMHeadA
from nas.ops import AuthorsDeform, DeformConvOp, create_op

S = 16  # spatial size of the single-op tests


def _x(C: int, H: int = S, W: int = S, B: int = 1) -> Tensor:
    return torch.rand(B, C, H, W)


class _Resize(nn.Module):
    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)


class _GridSample(nn.Module):
    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def forward(self, x: Tensor, grid: Tensor) -> Tensor:
        return F.grid_sample(x, grid, mode=self.mode, align_corners=False)


# --- single layers -----------------------------------------------------------------------


def test_conv2d_hand_count_no_bias() -> None:
    conv = nn.Conv2d(4, 8, 3, padding=1)
    macs = 8 * 4 * 9 * 16 * 16  # bias is not counted by either counter
    assert count_macs_thop(conv, inputs=(_x(4),)) == macs
    r = count_flops(conv, inputs=(_x(4),))
    assert r.total_flops == 2 * macs
    assert r.macs == macs
    assert r.by_operator == {"aten.convolution": 2 * macs}
    assert r.input_size == (S, S) and r.batch == 1
    assert r.gflops == pytest.approx(2 * macs / 1e9)
    # batch scales linearly; a bias-free conv counts the same
    assert count_flops(conv, inputs=(_x(4, B=3),)).total_flops == 3 * 2 * macs
    nobias = nn.Conv2d(4, 8, 3, padding=1, bias=False)
    assert count_macs_thop(nobias, inputs=(_x(4),)) == macs


def test_strided_grouped_conv_hand_count() -> None:
    conv = nn.Conv2d(8, 6, 3, stride=2, padding=1, groups=2)
    macs = 6 * (8 // 2) * 9 * 8 * 8  # 16x16 -> 8x8
    assert count_macs_thop(conv, inputs=(_x(8),)) == macs
    assert count_flops(conv, inputs=(_x(8),)).total_flops == 2 * macs


@pytest.mark.parametrize(
    "name",
    [
        "conv_3",
        "dilconv_3",  # dilation changes the footprint, not the MACs
        "resconv_3",  # the residual add is elementwise: not counted
        "resdilconv_5",
        "conv_1",
    ],
)
def test_registry_conv_ops(name: str) -> None:
    op = create_op(name, 4, 8)
    k = op.conv.kernel_size[0]
    macs = 8 * 4 * k * k * S * S
    # resconv_3 with C_in != C_out has a 1x1 projection shortcut
    if getattr(getattr(op, "shortcut", None), "proj", None) is not None:
        macs += 8 * 4 * S * S
    assert count_macs_thop(op, inputs=(_x(4),)) == macs
    r = count_flops(op, inputs=(_x(4),))
    assert r.total_flops == 2 * macs
    assert set(r.by_operator) == {"aten.convolution"}


def test_resconv_identity_shortcut_add_not_counted() -> None:
    op = create_op("resconv_3", 8, 8)
    assert op.shortcut.proj is None
    macs = 8 * 8 * 9 * S * S
    assert count_macs_thop(op, inputs=(_x(8),)) == macs
    assert count_flops(op, inputs=(_x(8),)).total_flops == 2 * macs


@pytest.mark.parametrize("kernel", [3, 5])
def test_deform_op_hand_count(kernel: int) -> None:
    C_in, C_out = 4, 8
    op = create_op(f"deform_{kernel}", C_in, C_out)
    assert isinstance(op, DeformConvOp)
    K, L = kernel * kernel, S * S
    conv = C_out * C_in * K * L
    offset_conv = (3 * K) * C_in * 9 * L  # 3x3 conv predicting 2K offsets + K masks
    sampling = 4 * C_in * K * L
    assert count_macs_thop(op, inputs=(_x(C_in),)) == conv + offset_conv + sampling
    r = count_flops(op, inputs=(_x(C_in),))
    assert r.by_operator[DEFORM_SAMPLING_KEY] == 2 * sampling
    assert r.by_operator["aten.convolution"] == 2 * offset_conv
    matmul = sum(v for k, v in r.by_operator.items() if k in ("aten.addmm", "aten.mm", "aten.bmm"))
    assert matmul == 2 * conv
    assert r.total_flops == 2 * (conv + offset_conv + sampling)


def test_deform_op_called_twice_and_with_offset_feature() -> None:
    """thop's rule adds the offset conv once per call; a separate offset feature is fine."""
    C = 4
    op = create_op("deform_3", C, C)

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.op = op

        def forward(self, x: Tensor, feat: Tensor) -> Tensor:
            return self.op(self.op(x, feat), feat)

    K, L = 9, S * S
    one = C * C * K * L + 3 * K * C * 9 * L + 4 * C * K * L
    inputs = (_x(C), _x(C))
    assert count_macs_thop(Twice(), inputs=inputs) == 2 * one
    assert count_flops(Twice(), inputs=inputs).total_flops == 2 * 2 * one


@pytest.mark.parametrize(("size", "B", "C"), [((32, 24), 1, 3), ((7, 9), 2, 5)])
def test_bilinear_interpolate(size: tuple[int, int], B: int, C: int) -> None:
    r = count_flops(_Resize(size), inputs=(_x(C, 10, 12, B=B),))
    expected = 8 * B * C * size[0] * size[1]
    assert r.total_flops == expected
    assert r.by_operator == {"aten.upsample_bilinear2d": expected}
    # thop counts modules only: a functional interpolate is invisible to it
    assert count_macs_thop(_Resize(size), inputs=(_x(C, 10, 12, B=B),)) == 0


def test_interpolate_scale_factor_and_align_corners() -> None:
    class Up(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)

    assert count_flops(Up(), inputs=(_x(3, 5, 6),)).total_flops == 8 * 3 * 10 * 12


@pytest.mark.parametrize(("mode", "per_elem"), [("bilinear", 8), ("nearest", 0), ("bicubic", 32)])
def test_grid_sample(mode: str, per_elem: int) -> None:
    x, grid = _x(3, 10, 10, B=2), torch.rand(2, 5, 7, 2) * 2 - 1
    r = count_flops(_GridSample(mode), inputs=(x, grid))
    assert r.total_flops == per_elem * 2 * 3 * 5 * 7


def test_formulas_do_not_touch_global_registry() -> None:
    from torch.utils.flop_counter import flop_registry

    for op in flop_formulas():
        assert op not in flop_registry
    count_flops(_Resize((8, 8)), inputs=(_x(2),))
    for op in flop_formulas():
        assert op not in flop_registry


# --- whole networks against an independent hand count ------------------------------------


def _hand_count(
    net: nn.Module, inputs: tuple[Tensor, ...], thop_extra_out: dict | None = None
) -> dict[str, int]:
    """MACs of every conv, deformable op and bilinear resize, from hooks on the modules.

    Convolutions: from each ``nn.Conv2d``'s weight and recorded output size. Deformable ops:
    main convolution and sampling from their weight / kernel and output size (their offset
    convs are ``nn.Conv2d`` and counted above). Resizes: from the architecture, the units
    that call ``F.interpolate`` and the sizes they are called with.
    """
    counts = {"conv": 0, "deform_conv": 0, "deform_sampling": 0, "resize": 0}
    thop_extra = {"norm_act": 0}  # thop's own rules: BatchNorm 4 / element, PReLU 1 / element

    def on_bn(m: nn.Module, x: tuple[Tensor, ...], y: Tensor) -> None:
        thop_extra["norm_act"] += 4 * x[0].numel()

    def on_prelu(m: nn.Module, x: tuple[Tensor, ...], y: Tensor) -> None:
        thop_extra["norm_act"] += x[0].numel()

    def on_conv(m: nn.Conv2d, x: tuple[Tensor, ...], y: Tensor) -> None:
        cin_g = m.in_channels // m.groups
        kh, kw = m.kernel_size
        counts["conv"] += y.shape[0] * m.out_channels * cin_g * kh * kw * y.shape[2] * y.shape[3]

    def on_deform(m: DeformConvOp, x: tuple[Tensor, ...], y: Tensor) -> None:
        B, C_in = x[0].shape[:2]
        k, L = m.kernel, y.shape[2] * y.shape[3]
        counts["deform_conv"] += B * y.shape[1] * C_in * k * k * L
        counts["deform_sampling"] += 4 * B * C_in * k * k * L

    def resize(src: Tensor, ref: Tensor) -> None:
        if src.shape[-2:] != ref.shape[-2:]:  # 4 MACs per output element and channel
            counts["resize"] += 4 * src.shape[0] * src.shape[1] * ref.shape[2] * ref.shape[3]

    def on_srsm_head(m: nn.Module, x: tuple[Tensor, ...], y: Tensor) -> None:
        resize(x[0], x[-1])  # lean (f, r, image), authors (a, image)

    def on_offset(m: DASMOffset, x: tuple[Tensor, ...], y: Tensor) -> None:
        if m.merge is not None and len(x) > 2 and x[2] is not None:
            resize(x[2], y)

    def on_merge(m: nn.Module, x: tuple[Tensor, ...], y: Tensor) -> None:
        resize(x[1], x[0])

    hooks = []
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(on_conv))
        elif isinstance(m, (DeformConvOp, AuthorsDeform)):
            hooks.append(m.register_forward_hook(on_deform))
        elif isinstance(m, (SRSMHead, SRSMHeadA)):
            hooks.append(m.register_forward_hook(on_srsm_head))
        elif isinstance(m, DASMOffset):
            hooks.append(m.register_forward_hook(on_offset))
        elif isinstance(m, DASMMerge):
            hooks.append(m.register_forward_hook(on_merge))
        elif isinstance(m, nn.BatchNorm2d):
            hooks.append(m.register_forward_hook(on_bn))
        elif isinstance(m, nn.PReLU):
            hooks.append(m.register_forward_hook(on_prelu))
    try:
        with torch.no_grad():
            net(*inputs)
    finally:
        for h in hooks:
            h.remove()
    if thop_extra_out is not None:
        thop_extra_out.update(thop_extra)
    return counts


def _pair(H: int = 32, W: int = 32) -> tuple[Tensor, Tensor]:
    return torch.rand(1, 3, H, W), torch.rand(1, 3, H, W)


@pytest.mark.parametrize("style", ["authors", "lean"])
@pytest.mark.parametrize("genotype", [CRMEF_GENERAL, CRMEF_MISALIGNED], ids=lambda g: g.space)
def test_derived_net_matches_hand_count(genotype, style: str) -> None:
    genotype = dataclasses.replace(
        genotype, arch=dataclasses.replace(genotype.arch, style=style, channels=8)
    )
    net = build(genotype)
    keys_before = list(net.state_dict())
    inputs = _pair()
    extra: dict[str, int] = {}
    hand = _hand_count(net, inputs, extra)
    assert hand["resize"] > 0
    assert (extra["norm_act"] > 0) == (style == "authors")  # BatchNorm and PReLU
    assert (hand["deform_conv"] > 0) == genotype.arch.misaligned

    r = count_flops(net, inputs=inputs)
    expected_flops = 2 * sum(hand.values())
    assert r.total_flops == pytest.approx(expected_flops, rel=1e-2)
    assert r.total_flops == expected_flops  # in fact exact
    assert r.by_operator["aten.upsample_bilinear2d"] == 2 * hand["resize"]
    assert r.by_operator.get(DEFORM_SAMPLING_KEY, 0) == 2 * hand["deform_sampling"]
    assert sum(r.by_operator.values()) == r.total_flops
    assert sum(r.by_module.values()) == r.total_flops
    expected_modules = {"srsm_under", "srsm_over", "drm"} | (
        {"dasm"} if genotype.arch.misaligned else set()
    )
    assert set(r.by_module) == expected_modules
    assert r.by_module["srsm_under"] == r.by_module["srsm_over"]

    # thop: modules only, so convolutions (+ the deformable rule) but no resize
    # (and thop's own BatchNorm / PReLU rules, which torch's counter leaves out)
    thop_macs = hand["conv"] + hand["deform_conv"] + hand["deform_sampling"] + extra["norm_act"]
    assert count_macs_thop(net, inputs=inputs) == pytest.approx(thop_macs, rel=1e-2)
    assert count_macs_thop(net, inputs=inputs) == thop_macs

    # counting leaves the model as it was
    assert list(net.state_dict()) == keys_before
    assert all(not m._forward_hooks for m in net.modules())
    assert not any(hasattr(m, "total_ops") for m in net.modules())


def test_default_inputs_and_model_state() -> None:
    net = build(CRMEF_GENERAL.with_channels(4))
    net.train()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    r = count_flops(net, (24, 20), batch=2)
    assert isinstance(r, FlopReport)
    assert r.input_size == (24, 20) and r.batch == 2
    assert r.total_flops == 2 * count_flops(net, (24, 20)).total_flops
    macs = count_macs_thop(net, (24, 20), batch=2)
    assert macs == 2 * count_macs_thop(net, (24, 20))
    assert net.training
    assert list(net.state_dict()) == list(state)
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    assert "G" in str(r)


def test_count_params() -> None:
    conv = nn.Conv2d(4, 8, 3)
    assert count_params(conv) == 8 * 4 * 9 + 8
    op = create_op("deform_3", 4, 8)
    assert count_params(op) == (8 * 4 * 9 + 8) + (27 * 4 * 9 + 27)
    shared = nn.Sequential(conv, conv)
    assert count_params(shared) == count_params(conv)
    conv.bias.requires_grad_(False)
    assert count_params(conv, trainable_only=True) == 8 * 4 * 9


def test_bad_arguments() -> None:
    conv = nn.Conv2d(3, 3, 1)
    with pytest.raises(ValueError):
        count_flops(conv, (0, 8))
    with pytest.raises(ValueError):
        count_flops(conv, inputs=())
