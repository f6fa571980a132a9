"""Parameter, MAC and FLOP counts of the networks of this toolkit.

Two independent counters, both run on a real forward pass of ``model(under, over)`` with two
random ``(B, 3, H, W)`` images (or on ``inputs`` you pass):

* :func:`count_macs_thop` -- ``thop.profile`` (multiply-accumulates, the number most papers
  quote as "FLOPs"). thop counts **modules only**: it hooks ``nn.Conv2d``, ``nn.Linear``, ...
  so functional calls (``F.max_pool2d`` / ``F.avg_pool2d``, ``F.interpolate``, ``torch.sigmoid``,
  additions and products of tensors) contribute nothing to its number. ``nn.LeakyReLU`` counts
  0 in thop 0.1.1. A rule is added for :class:`~nas.ops.DeformConvOp`, whose main weight is a
  raw ``nn.Parameter`` that thop would otherwise miss.
* :func:`count_flops` -- ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs, 2 per MAC, the
  convention torch uses), which sees every aten op the forward pass dispatches, whether it
  comes from a module or a functional call. Torch only has formulas for matmuls, convolutions
  and attention; formulas are added here (through ``custom_mapping``, so torch's global
  registry is left untouched) for bilinear interpolation and ``grid_sample``, and the
  deformable convolution's sampling is added by a forward hook (see below).

Conventions (both counters, checked by ``tests/test_flops.py``):

* Convolution: ``B * C_out * (C_in / groups) * kh * kw * H_out * W_out`` MACs. **Bias is not
  counted** (torch's ``conv_flop_count`` and ``addmm_flop`` ignore it, and so does thop 0.1.1's
  ``calculate_conv2d_flops``). Older thop releases (< 0.1) added one MAC per output element
  for the bias; the tests pin the convention down.
* Bilinear interpolation (``F.interpolate(mode="bilinear")`` dispatches to
  ``aten.upsample_bilinear2d``, ``.default`` overload for ``size=``/``scale_factor=`` in torch
  2.x, ``.vec`` in some call paths; both are one overload packet and both are counted):
  4 MACs = 8 FLOPs per output element per channel (four weighted neighbours; the weight
  computation, shared by all channels, is ignored). Anti-aliased resizing
  (``aten._upsample_bilinear2d_aa``) is not counted.
* ``grid_sample`` (``aten.grid_sampler_2d``): 8 FLOPs per output element per channel for
  bilinear, 0 for nearest, 32 for bicubic (16 taps).
* Deformable convolution (:class:`~nas.ops.DeformConvOp`): its offset/mask convolution is an
  ``nn.Conv2d`` and is counted like any convolution; the main convolution is
  ``B * C_out * (C_in / groups) * k * k * H_out * W_out`` MACs; the bilinear sampling of the
  ``k * k`` deformed taps adds ``4 * B * C_in * k * k * H_out * W_out`` MACs (four weighted
  neighbours per sample and channel; the mask multiply is folded into the bilinear weights,
  which are per sample, not per channel, and are ignored). In :func:`count_flops` the
  convolution part is the matmul of :func:`~nas.ops.deform_conv.deform_conv2d` (counted by
  torch as ``aten.addmm``/``aten.bmm``) and the sampling part, a gather that torch does not
  count, is added by a forward hook on every ``DeformConvOp`` as ``8 * B * C_in * k * k *
  H_out * W_out`` FLOPs under the key ``"deform_conv.sampling"``. A bare call of
  ``deform_conv2d`` outside a ``DeformConvOp`` gets its matmul counted but not its sampling.
* Not counted by either counter: elementwise arithmetic (residual additions of ``resconv``,
  relighting products / divisions, clamps), activations, sigmoid, pooling, concatenation.
  They are memory-bound and a small fraction of the arithmetic of these networks.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from math import prod
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from nas.ops.authors import AuthorsDeform
from nas.ops.deform import DeformConvOp

DEFORM_OPS = (DeformConvOp, AuthorsDeform)
"""The deformable ops (both styles): weight as a raw parameter, sampling counted by hook."""

__all__ = [
    "DEFORM_SAMPLING_KEY",
    "FlopReport",
    "count_flops",
    "count_macs_thop",
    "count_params",
    "deform_sampling_macs",
    "flop_formulas",
]

DEFORM_SAMPLING_KEY = "deform_conv.sampling"
"""``FlopReport.by_operator`` key of the deformable convolutions' bilinear sampling."""

BILINEAR_FLOPS_PER_ELEMENT = 8
"""4 multiply-accumulates (four weighted neighbours) per output element and channel."""

_GRID_SAMPLER_FLOPS = {0: 8, 1: 0, 2: 32}
"""``grid_sampler_2d`` interpolation mode (0 bilinear, 1 nearest, 2 bicubic) -> FLOPs/element."""


# --- parameters --------------------------------------------------------------------------


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared parameters counted once).

    Args:
        model: any module.
        trainable_only: count only parameters with ``requires_grad``.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# --- inputs ------------------------------------------------------------------------------


def _make_inputs(
    model: nn.Module,
    input_size: tuple[int, int],
    batch: int,
    inputs: Sequence[Tensor] | None,
) -> tuple[tuple[Tensor, ...], tuple[int, int], int]:
    """``(inputs, (H, W), batch)``: ``inputs`` as given, or a random ``(under, over)`` pair."""
    if inputs is not None:
        inputs = tuple(inputs)
        if not inputs or not all(isinstance(t, Tensor) for t in inputs):
            raise ValueError("inputs must be a non-empty sequence of tensors")
        first = inputs[0]
        size = (int(first.shape[-2]), int(first.shape[-1])) if first.dim() >= 2 else (1, 1)
        return inputs, size, int(first.shape[0]) if first.dim() >= 1 else 1
    H, W = (int(s) for s in input_size)
    if H <= 0 or W <= 0 or batch <= 0:
        raise ValueError(f"input_size and batch must be positive, got {(H, W)} and {batch}")
    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    gen = torch.Generator().manual_seed(0)
    under = torch.rand(batch, 3, H, W, generator=gen).to(device=device, dtype=dtype)
    over = torch.rand(batch, 3, H, W, generator=gen).to(device=device, dtype=dtype)
    return (under, over), (H, W), batch


def deform_sampling_macs(module: DeformConvOp, x: Tensor, out: Tensor) -> int:
    """MACs of a ``DeformConvOp`` call's bilinear sampling: ``4 * B * C_in * k*k * H_out*W_out``.

    Args:
        module: the op. x: its input ``(B, C_in, H, W)``. out: its output ``(B, C_out, H', W')``.
    """
    B, C_in = int(x.shape[0]), int(x.shape[1])
    return 4 * B * C_in * module.kernel * module.kernel * int(out.shape[-2] * out.shape[-1])


# --- thop --------------------------------------------------------------------------------


def _thop_deform_rule() -> Callable[[DeformConvOp, tuple[Tensor, ...], Tensor], None]:
    """A thop rule for ``DeformConvOp``: main convolution + sampling + its offset conv.

    thop does not descend into a module that has a rule, so the rule also adds what thop's own
    ``nn.Conv2d`` rule counted for ``offset_conv`` during this call (the increase of its
    ``total_ops`` since the previous call of the same op).
    """
    seen: dict[int, float] = {}

    def rule(m: DeformConvOp, x: tuple[Tensor, ...], y: Tensor) -> None:
        inp = x[0]
        # weight (C_out, C_in / groups, k, k): one MAC per weight per output pixel and image.
        conv = m.weight.numel() * int(y.shape[0]) * int(y.shape[-2] * y.shape[-1])
        offset_total = float(m.offset_conv.total_ops.item())
        offset = offset_total - seen.get(id(m), 0.0)
        seen[id(m)] = offset_total
        m.total_ops += conv + deform_sampling_macs(m, inp, y) + offset

    return rule


class _Root(nn.Module):
    """Holds the profiled model as a child.

    ``thop.profile`` adds the root's own count *and* descends into the root's children, while
    for any other module with a rule it takes the rule's count only; a root with a rule (a bare
    ``DeformConvOp``) would have its offset conv counted twice.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Tensor) -> Any:
        return self.model(*args)


def count_macs_thop(
    model: nn.Module,
    input_size: tuple[int, int] = (256, 256),
    batch: int = 1,
    *,
    inputs: Sequence[Tensor] | None = None,
) -> int:
    """Multiply-accumulates of one forward pass, counted by ``thop.profile``.

    Runs on a deep copy of ``model`` (thop registers ``total_ops`` / ``total_params`` buffers
    on every module and switches it to eval mode), so the caller's model, its hooks and its
    ``state_dict`` are never touched. Only modules are counted (see the module docstring):
    convolutions, linear layers, normalisation, ``nn.Upsample``...; functional pooling,
    interpolation and elementwise arithmetic are not in thop's number. Bias is not counted.

    Args:
        model: called as ``model(under, over)`` unless ``inputs`` is given.
        input_size: ``(H, W)`` of the two random input images.
        batch: batch size B.
        inputs: explicit inputs (``model(*inputs)``); ``input_size`` and ``batch`` are then
            ignored.
    """
    with warnings.catch_warnings():  # thop 0.1.1 imports distutils' LooseVersion
        warnings.simplefilter("ignore", DeprecationWarning)
        import thop

    work = _Root(copy.deepcopy(model))
    args, _, _ = _make_inputs(work, input_size, batch, inputs)
    macs, _ = thop.profile(
        work, inputs=args, custom_ops={op: _thop_deform_rule() for op in DEFORM_OPS}, verbose=False
    )
    return int(round(float(macs)))


# --- torch FlopCounterMode ---------------------------------------------------------------


def _bilinear_upsample_flop(*args: Any, out_shape: Sequence[int], **kwargs: Any) -> int:
    """``aten.upsample_bilinear2d`` (all overloads): 8 FLOPs per output element."""
    return BILINEAR_FLOPS_PER_ELEMENT * prod(out_shape)


def _grid_sampler_flop(
    input_shape: Sequence[int],
    grid_shape: Sequence[int],
    interpolation_mode: int = 0,
    *args: Any,
    out_shape: Sequence[int],
    **kwargs: Any,
) -> int:
    """``aten.grid_sampler_2d``: 8 (bilinear) / 0 (nearest) / 32 (bicubic) FLOPs per element."""
    return _GRID_SAMPLER_FLOPS.get(int(interpolation_mode), 8) * prod(out_shape)


def flop_formulas() -> dict[Any, Callable[..., int]]:
    """The formulas :func:`count_flops` adds to torch's: ``{overload packet: formula}``.

    Meant for ``FlopCounterMode(custom_mapping=...)``; each formula receives the shapes of the
    op's arguments and ``out_shape`` (torch's ``shape_wrapper`` convention).
    """
    aten = torch.ops.aten
    return {
        aten.upsample_bilinear2d: _bilinear_upsample_flop,
        aten.grid_sampler_2d: _grid_sampler_flop,
    }


@dataclass
class FlopReport:
    """FLOPs of one forward pass (2 FLOPs per multiply-accumulate).

    Attributes:
        total_flops: all counted FLOPs.
        by_operator: FLOPs per aten op (``"aten.convolution"``, ``"aten.addmm"``,
            ``"aten.upsample_bilinear2d"``, ...) plus ``"deform_conv.sampling"``.
        by_module: FLOPs per top-level child of the model (``srsm_under``, ``dasm``, ``drm``,
            ...); FLOPs spent in the model's own ``forward`` outside any child, if any, under
            ``"<root>"``. Empty for a model without children.
        input_size: ``(H, W)`` of the inputs.
        batch: batch size.
    """

    total_flops: int
    by_operator: dict[str, int] = field(default_factory=dict)
    by_module: dict[str, int] = field(default_factory=dict)
    input_size: tuple[int, int] = (0, 0)
    batch: int = 1

    @property
    def gflops(self) -> float:
        """``total_flops / 1e9``."""
        return self.total_flops / 1e9

    @property
    def macs(self) -> int:
        """``total_flops // 2``: the multiply-accumulates (the usual "FLOPs" of papers)."""
        return self.total_flops // 2

    @property
    def gmacs(self) -> float:
        """``macs / 1e9``."""
        return self.macs / 1e9

    def __str__(self) -> str:
        H, W = self.input_size
        lines = [
            f"FLOPs at {H}x{W}, batch {self.batch}: {self.gflops:.3f} G ({self.gmacs:.3f} GMACs)"
        ]
        for title, table in (("by operator", self.by_operator), ("by module", self.by_module)):
            if table:
                lines.append(f"  {title}:")
                width = max(len(k) for k in table)
                for k, v in sorted(table.items(), key=lambda kv: -kv[1]):
                    share = 100.0 * v / self.total_flops if self.total_flops else 0.0
                    lines.append(f"    {k:<{width}}  {v / 1e9:10.4f} G  {share:5.1f}%")
        return "\n".join(lines)


def _top_level_flops(
    counts: dict[str, dict[Any, int]], root: str, names: Sequence[str]
) -> dict[str, int]:
    """Sum ``FlopCounterMode`` per-module counts over each top-level child's subtree.

    The tracker keys modules that ran by path (``root.child.grandchild``); containers that are
    never called (``nn.ModuleList``) have no key of their own. For each child, sum the
    outermost keys under it (keys with no ancestor key under it), which cover disjoint
    subtrees.
    """
    out: dict[str, int] = {}
    for name in names:
        base = f"{root}.{name}"
        keys = [k for k in counts if k == base or k.startswith(base + ".")]
        outer = [k for k in keys if not any(j != k and k.startswith(j + ".") for j in keys)]
        total = sum(sum(counts[k].values()) for k in outer)
        if total:
            out[name] = total
    return out


def count_flops(
    model: nn.Module,
    input_size: tuple[int, int] = (256, 256),
    batch: int = 1,
    *,
    inputs: Sequence[Tensor] | None = None,
) -> FlopReport:
    """FLOPs of one forward pass, counted by ``torch.utils.flop_counter.FlopCounterMode``.

    The forward pass runs under ``torch.no_grad()`` in eval mode (the training flag is
    restored). Formulas for bilinear interpolation and ``grid_sample`` are passed through
    ``custom_mapping`` (torch's global registry is not modified); the deformable convolutions'
    sampling is added by temporary forward hooks, removed afterwards. The model's parameters,
    buffers and ``state_dict`` are not changed. See the module docstring for what is counted.

    Args:
        model: called as ``model(under, over)`` unless ``inputs`` is given.
        input_size: ``(H, W)`` of the two random input images.
        batch: batch size B.
        inputs: explicit inputs (``model(*inputs)``); ``input_size`` and ``batch`` are then
            taken from ``inputs[0]``.
    """
    args, size, B = _make_inputs(model, input_size, batch, inputs)
    names = {id(m): n for n, m in model.named_modules()}
    sampling: dict[str, int] = {}  # top-level child (or "<root>") -> FLOPs

    def on_deform(m: nn.Module, x: tuple[Tensor, ...], y: Tensor) -> None:
        path = names.get(id(m), "")
        top = path.split(".", 1)[0] if path else "<root>"
        flops = 2 * deform_sampling_macs(m, x[0], y)  # type: ignore[arg-type]
        sampling[top] = sampling.get(top, 0) + flops

    handles = [
        m.register_forward_hook(on_deform) for m in model.modules() if isinstance(m, DEFORM_OPS)
    ]
    was_training = model.training
    counter = FlopCounterMode(display=False, custom_mapping=flop_formulas())
    try:
        model.eval()
        with torch.no_grad(), counter:
            model(*args)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()

    counts = counter.get_flop_counts()
    by_operator = {str(op): int(v) for op, v in counts.get("Global", {}).items() if v}
    sampling_total = sum(sampling.values())
    if sampling_total:
        by_operator[DEFORM_SAMPLING_KEY] = sampling_total
    total = sum(by_operator.values())

    child_names = [n for n, _ in model.named_children()]
    by_module = _top_level_flops(counts, type(model).__name__, child_names)
    for top, v in sampling.items():
        by_module[top] = by_module.get(top, 0) + v
    if child_names:
        rest = total - sum(by_module.values())
        if rest:
            by_module["<root>"] = by_module.get("<root>", 0) + rest
    return FlopReport(total, by_operator, by_module, size, B)


def size_report(
    model: nn.Module, input_size: tuple[int, int], batch: int = 1
) -> tuple[dict[str, float], str | None]:
    """``{params, macs, flops}`` of a two-input model at ``input_size`` (H, W) and ``batch``:
    the parameter count, thop's MACs and FlopCounterMode's FLOPs (:func:`count_flops`). A
    counter that fails gives NaN and its reason (second value; None when both counted)."""
    out: dict[str, float] = {"params": float(count_params(model))}
    problems = []
    cpu = model.to("cpu")
    try:
        out["macs"] = float(count_macs_thop(cpu, input_size, batch))
    except Exception as e:  # noqa: BLE001 - report, keep the row
        out["macs"] = float("nan")
        problems.append(f"thop: {type(e).__name__}: {e}")
    try:
        out["flops"] = float(count_flops(cpu, input_size, batch).total_flops)
    except Exception as e:  # noqa: BLE001
        out["flops"] = float("nan")
        problems.append(f"FlopCounterMode: {type(e).__name__}: {e}")
    return out, "; ".join(problems) or None


def build_parser() -> Any:
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m nas.flops",
        description="Parameters, thop MACs and FlopCounterMode FLOPs of one model.",
    )
    ap.add_argument(
        "--model",
        "--genotype",
        dest="model",
        default="crmef-general",
        help="any model reference (registry name, genotype.yaml, run, model file); "
        "default crmef-general",
    )
    ap.add_argument(
        "--channels", type=int, default=None, help="width of registry models that have one"
    )
    ap.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("H", "W"))
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m nas.flops [--model REF] [--channels C] [--size H W]``: print counts."""
    from nas.baselines import width_kwargs
    from nas.models import resolve_model

    a = build_parser().parse_args(argv)
    resolved = resolve_model(a.model, **width_kwargs(a.model, a.channels))
    net = resolved.model
    size = (a.size[0], a.size[1])
    print(f"{resolved.genotype or resolved.name}\nparams: {count_params(net):,}")
    print(f"thop MACs: {count_macs_thop(net, size) / 1e9:.3f} G")
    print(count_flops(net, size))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
