"""Profiled units: the modules a latency table has rows for.

A network in this toolkit is a composition of :class:`Unit` modules (candidate ops and the
fixed parts around them: stems, pooling, heads, relighting arithmetic). The latency profiler
hooks every outermost unit, records the shapes it is called with, and times each distinct
(unit, shapes) pair on its own; a prediction for a whole network is the sum over its units.
Units never nest (a unit holds plain ``torch.nn`` layers only).
"""

from __future__ import annotations

from torch import Tensor, nn


class Unit(nn.Module):
    """Base of every profiled module.

    Attributes:
        op_name: the latency-table name: the registry name for candidate ops (``"conv_3"``),
            ``"fixed.<part>"`` for the fixed parts of a network.
        C_in, C_out: channels in and out (for multi-input units, of the first input).
        stride: spatial stride of the unit (1 or 2).
    """

    op_name: str = "unit"

    def __init__(self, C_in: int, C_out: int, stride: int = 1) -> None:
        super().__init__()
        self.C_in = C_in
        self.C_out = C_out
        self.stride = stride

    def extra_repr(self) -> str:
        return f"{self.op_name}, C_in={self.C_in}, C_out={self.C_out}, stride={self.stride}"


def call_slot(op: nn.Module, x: Tensor, offset_feat: Tensor | None = None) -> Tensor:
    """Run a slot; deformable ops (and mixed ops over them) also receive the offset feature."""
    return op(x, offset_feat) if getattr(op, "takes_offset_feat", False) else op(x)
