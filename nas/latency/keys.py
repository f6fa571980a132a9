"""Row types of a latency table: keys, entries and shape strings (see :mod:`nas.latency.table`).

A row is keyed by :class:`TableKey`, the unit's :class:`~nas.latency.trace.UnitKey` plus the
batch size; :class:`LatencyEntry` holds the row's timings, :class:`MissingLatencyEntry` is
raised for a unit without a row.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from nas.latency.trace import UnitKey


class MissingLatencyEntry(KeyError):
    """A unit has no row in the table; the message names op, channels and scale."""

    def __init__(self, message: str, key: TableKey | None = None) -> None:
        super().__init__(message)
        self.key = key

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "missing latency entry"


class TableKey(NamedTuple):
    """A full row key: :class:`~nas.latency.trace.UnitKey` plus the batch size."""

    op: str
    C_in: int
    C_out: int
    H: int
    W: int
    stride: int
    batch: int

    @property
    def unit_key(self) -> UnitKey:
        return UnitKey(*self[:6])


@dataclass(frozen=True)
class LatencyEntry:
    """One table row; times in milliseconds over ``n`` timed calls."""

    op: str
    C_in: int
    C_out: int
    H: int
    W: int
    stride: int
    batch: int
    median_ms: float
    mean_ms: float
    std_ms: float = 0.0
    p10_ms: float = 0.0
    p90_ms: float = 0.0
    min_ms: float = float("nan")
    n: int = 0
    shapes: str = ""

    @property
    def key(self) -> TableKey:
        return TableKey(self.op, self.C_in, self.C_out, self.H, self.W, self.stride, self.batch)

    @classmethod
    def constant(cls, key: TableKey | tuple, ms: float, n: int = 0) -> LatencyEntry:
        """An entry whose statistics all equal ``ms`` (synthetic and rigged tables)."""
        k = TableKey(*key)
        return cls(*k, median_ms=ms, mean_ms=ms, std_ms=0.0, p10_ms=ms, p90_ms=ms, min_ms=ms, n=n)


def format_shapes(shapes: Iterable[tuple[int, ...] | None]) -> str:
    """``[(16, 32, 64, 64), None]`` -> ``"16x32x64x64;-"``."""
    return ";".join("-" if s is None else "x".join(str(d) for d in s) for s in shapes)
