"""Unit tracing: which profiled units a network executes, with which shapes.

A network is a composition of :class:`~nas.ops.Unit` modules (candidate ops and fixed parts).
:func:`trace_units` runs one forward pass with hooks on every outermost unit and records each
call: the unit, its latency-table key and the shapes of its tensor inputs. A prediction for a
network is the sum of the table entries of its calls; the profiler times each distinct key on
its own. For a :class:`~nas.supernet.Supernet` every candidate of every ``MixedOp`` runs, so
its trace holds every candidate at the shapes of every slot instance, tagged with the slot.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from nas.ops import Unit
from nas.supernet import MixedOp

Shape = tuple[int, ...]


class UnitKey(NamedTuple):
    """A latency-table key without the batch: ``(op, C_in, C_out, H, W, stride)``.

    ``H, W`` are the spatial size of the unit's first input.
    """

    op: str
    C_in: int
    C_out: int
    H: int
    W: int
    stride: int

    def describe(self) -> str:
        """Human-readable form used in messages: ``conv_3 C_in=32 C_out=32 at 64x64 stride 1``."""
        return (
            f"{self.op} C_in={self.C_in} C_out={self.C_out} at {self.H}x{self.W} "
            f"stride {self.stride}"
        )


@dataclass(frozen=True)
class UnitCall:
    """One call of a profiled unit during a traced forward pass.

    Attributes:
        path: module path of the unit in the network (``"drm.op0"``, ``"drm.op0.ops.conv_3"``).
        module: the unit itself (not compared, not printed).
        op_name, C_in, C_out, stride: the unit's attributes.
        in_shapes: shape of every positional argument, ``None`` where the argument was ``None``;
            shapes include the traced batch size as dim 0.
        kw_shapes: ``((name, shape), ...)`` for tensor keyword arguments (usually empty).
        out_shapes: shapes of the tensor outputs (a tuple/list output gives several).
        slot: for a candidate inside a ``MixedOp``, the slot name (``MixedOp.slot``), else None.
        mixed_path: path of that ``MixedOp`` (one slot may have several instances).
    """

    path: str
    module: Unit = field(compare=False, repr=False)
    op_name: str
    C_in: int
    C_out: int
    stride: int
    in_shapes: tuple[Shape | None, ...]
    kw_shapes: tuple[tuple[str, Shape], ...] = ()
    out_shapes: tuple[Shape, ...] = ()
    slot: str | None = None
    mixed_path: str | None = None

    @property
    def key(self) -> UnitKey:
        """``(op_name, C_in, C_out, H, W, stride)`` with H, W of the first input."""
        first = self.in_shapes[0] if self.in_shapes else None
        if first is None or len(first) < 2:
            raise ValueError(f"unit {self.path} ({self.op_name}) has no spatial first input")
        return UnitKey(self.op_name, self.C_in, self.C_out, first[-2], first[-1], self.stride)

    @property
    def is_candidate(self) -> bool:
        """True for a candidate op of a supernet slot (inside a ``MixedOp``)."""
        return self.slot is not None


def outermost_units(net: nn.Module) -> list[tuple[str, Unit]]:
    """``(path, unit)`` for every :class:`Unit` in ``net`` that has no unit ancestor.

    ``net`` itself counts when it is a unit (path ``""``).
    """
    found: list[tuple[str, Unit]] = []
    for path, m in net.named_modules():
        if not isinstance(m, Unit):
            continue
        if any(path == p or path.startswith(p + ".") if p else True for p, _ in found):
            continue
        found.append((path, m))
    return found


def _shape_of(value: Any, where: str) -> Shape | None:
    if value is None:
        return None
    if isinstance(value, Tensor):
        return tuple(value.shape)
    raise TypeError(
        f"{where}: the latency profiler supports tensor and None arguments only, "
        f"got {type(value).__name__}"
    )


def _out_shapes(out: Any) -> tuple[Shape, ...]:
    if isinstance(out, Tensor):
        return (tuple(out.shape),)
    if isinstance(out, (list, tuple)):
        return tuple(tuple(t.shape) for t in out if isinstance(t, Tensor))
    return ()


def _parent_mixed(path: str, mixed: Sequence[tuple[str, MixedOp]]) -> tuple[str, str] | None:
    for mpath, m in mixed:
        if path.startswith(mpath + ".") if mpath else True:
            return mpath, m.slot
    return None


def _on_meta(net: nn.Module) -> bool:
    p = next(net.parameters(), None)
    return p is not None and p.device.type == "meta"


def trace_units(
    net: nn.Module,
    input_size: tuple[int, int] = (128, 128),
    batch: int = 1,
    inputs: Sequence[Tensor] | None = None,
) -> list[UnitCall]:
    """Run one forward of ``net(under, over)`` and record every outermost unit call.

    Args:
        net: a network built from units (``CRMEFNet``, ``Supernet``, a baseline, a unit).
        input_size: (H, W) of the random RGB inputs, each (batch, 3, H, W) in [0, 1).
        batch: batch size of the traced pass (shapes are recorded with it as dim 0).
        inputs: explicit positional inputs instead of the random pair.

    Returns:
        The calls in execution order. Candidates inside a ``MixedOp`` carry its slot name and
        path. The network's parameters are not changed; the pass runs under
        ``torch.inference_mode()`` on the device of the network's parameters.

    Without explicit ``inputs`` only shapes are needed, so the pass runs on a copy of the
    network on the ``meta`` device (no arithmetic: tracing a supernet at 1024x768 takes
    seconds, not minutes); the calls still name the network's own unit modules. A network
    with an op that has no meta implementation is traced for real.
    """
    if inputs is None and not _on_meta(net):
        try:
            shadow = copy.deepcopy(net).to("meta")
            calls = trace_units(shadow, input_size, batch)
        except (NotImplementedError, RuntimeError):
            pass  # an op without a meta kernel: trace for real below
        else:
            real = dict(outermost_units(net))
            return [dataclasses.replace(c, module=real[c.path]) for c in calls]
    units = outermost_units(net)
    if not units:
        raise ValueError(f"{type(net).__name__} contains no profiled Unit modules")
    mixed = [(p, m) for p, m in net.named_modules() if isinstance(m, MixedOp)]
    calls: list[UnitCall] = []
    handles = []

    def make_hook(path: str, unit: Unit):
        parent = _parent_mixed(path, mixed)

        def hook(module: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
            where = f"unit {path or type(unit).__name__} ({unit.op_name})"
            in_shapes = tuple(_shape_of(a, where) for a in args)
            kw = tuple(
                (k, tuple(v.shape)) for k, v in sorted(kwargs.items()) if isinstance(v, Tensor)
            )
            calls.append(
                UnitCall(
                    path=path,
                    module=unit,
                    op_name=unit.op_name,
                    C_in=int(unit.C_in),
                    C_out=int(unit.C_out),
                    stride=int(unit.stride),
                    in_shapes=in_shapes,
                    kw_shapes=kw,
                    out_shapes=_out_shapes(out),
                    slot=parent[1] if parent else None,
                    mixed_path=parent[0] if parent else None,
                )
            )

        return hook

    for path, unit in units:
        handles.append(unit.register_forward_hook(make_hook(path, unit), with_kwargs=True))
    try:
        if inputs is None:
            try:
                p = next(net.parameters())
                device, dtype = p.device, p.dtype
            except StopIteration:
                device, dtype = torch.device("cpu"), torch.float32
            H, W = input_size
            gen = torch.Generator().manual_seed(0)  # leaves the global RNG alone
            inputs = [
                torch.rand(batch, 3, H, W, generator=gen).to(device=device, dtype=dtype)
                for _ in range(2)
            ]
        with torch.inference_mode():
            net(*inputs)
    finally:
        for h in handles:
            h.remove()
    return calls
