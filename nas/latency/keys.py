"""Row types of a latency table: keys, entries and shape strings (see :mod:`nas.latency.table`).

A row is keyed by :class:`TableKey`, the unit's :class:`~nas.latency.trace.UnitKey` plus the
batch size; :class:`LatencyEntry` holds the key and the row's timings;
:class:`MissingLatencyEntry` is raised for a unit without a row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

from nas.latency.trace import UnitKey


class MissingLatencyEntry(KeyError):
    """A unit has no row in the table; the message names op, channels and scale."""

    def __init__(self, message: str, key: TableKey | None = None) -> None:
        super().__init__(message)
        self.key = key

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "missing latency entry"


class TableKey(NamedTuple("TableKey", [*UnitKey.__annotations__.items(), ("batch", int)])):
    """A full row key: the fields of :class:`~nas.latency.trace.UnitKey`, then ``batch``.

    ``(op, C_in, C_out, H, W, stride, batch)``; one schema, so the two keys cannot drift apart.
    """

    __slots__ = ()

    @property
    def unit_key(self) -> UnitKey:
        return UnitKey(*self[:-1])


@dataclass(frozen=True)
class LatencyEntry:
    """One table row: its key and its timings, in milliseconds over ``n`` timed calls."""

    key: TableKey
    median_ms: float
    mean_ms: float
    std_ms: float = 0.0
    p10_ms: float = 0.0
    p90_ms: float = 0.0
    min_ms: float = float("nan")
    n: int = 0
    shapes: str = ""

    def columns(self) -> dict[str, Any]:
        """The row as ``{column: value}``: the key's fields, then the timings (CSV order)."""
        timings = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "key"}
        return {**self.key._asdict(), **timings}

    @classmethod
    def from_columns(cls, columns: Mapping[str, Any]) -> LatencyEntry:
        """The inverse of :meth:`columns`; columns that are neither key nor timing are ignored."""
        key = TableKey(**{k: columns[k] for k in TableKey._fields})
        names = {f.name for f in fields(cls)} - {"key"}
        return cls(key, **{k: v for k, v in columns.items() if k in names})

    @classmethod
    def constant(cls, key: TableKey | tuple, ms: float, n: int = 0) -> LatencyEntry:
        """An entry whose statistics all equal ``ms`` (synthetic and rigged tables)."""
        return cls(TableKey(*key), ms, ms, std_ms=0.0, p10_ms=ms, p90_ms=ms, min_ms=ms, n=n)


def format_shapes(shapes: Iterable[tuple[int, ...] | None]) -> str:
    """``[(16, 32, 64, 64), None]`` -> ``"16x32x64x64;-"``."""
    return ";".join("-" if s is None else "x".join(str(d) for d in s) for s in shapes)
