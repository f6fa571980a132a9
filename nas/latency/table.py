"""Latency look-up tables: one CSV per device plus a YAML sidecar that describes it.

``latency_tables/<name>.csv`` holds one row per (op, C_in, C_out, H, W, stride, batch)::

    op,C_in,C_out,H,W,stride,batch,median_ms,mean_ms,std_ms,p10_ms,p90_ms,min_ms,n,shapes
    conv_3,32,32,128,128,1,16,21.4,21.9,1.2,20.8,23.5,20.1,1000,16x32x128x128

``H, W`` are the spatial size of the unit's first input, ``shapes`` the shapes of all its
inputs as timed (``-`` for a ``None`` argument), informational; ``min_ms`` and ``shapes`` are
optional on reading. Lookups return the median unless ``LatencyTable.statistic`` says
otherwise (``min`` is the robust choice on a machine with background load, as ``timeit``
advises; see :mod:`nas.latency.validate`). ``<name>.meta.yaml`` records
the device (fingerprint, CPU/GPU model, versions, threads, dtype), the profiling settings
(batch, input size, warm-up, repetitions, rounds), the date, the tool version, and an optional
``calibration`` of the additive predictor (see :mod:`nas.latency.predict`). Table names and
fingerprints are described in :mod:`nas.latency.fingerprint`.

Writes are atomic (temporary file in the same folder, then ``os.replace``, CSV and sidecar);
a corrupt table raises :class:`LatencyTableError` naming the file and the problem, and is
never overwritten by a later profile run (the run loads it first and stops).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nas.latency.fingerprint import (
    DEFAULT_BATCH,
    DEFAULT_INPUT_SIZE,
    QUICK_BATCH,
    QUICK_INPUT_SIZE,
    device_fingerprint,
    now_iso,
    resolve_device,
)
from nas.latency.keys import (
    LatencyEntry,
    MissingLatencyEntry,
    TableKey,
)
from nas.latency.table_io import (
    ForeignTableError,
    LatencyTableError,
    LatencyTableNotFound,
    _pick,
    _table_meta,
    read_sidecar,
    read_table_csv,
    table_csv_text,
    write_table_files,
)
from nas.latency.trace import UnitKey

TABLES_DIRNAME = "latency_tables"
STATISTICS: tuple[str, ...] = ("median", "mean", "p10", "min")
"""Which per-row statistic a lookup returns (``LatencyTable.statistic``; default median)."""


@dataclass(frozen=True)
class Calibration:
    """An affine correction of the additive prediction: ``measured ~ a * predicted + b`` (ms).

    Fitted on random derived networks measured end to end (:mod:`nas.latency.validate`),
    disjoint from the networks used to report accuracy. ``scope`` says what it was fitted on
    (space, width, input size, batch); ``info`` holds the fit's statistics.
    """

    a: float = 1.0
    b: float = 0.0
    scope: str = ""
    info: Mapping[str, Any] = field(default_factory=dict)

    A_RANGE = (0.5, 2.0)
    """Plausible slopes: outside, table and measurements disagree about relative costs."""

    def apply(self, ms):  # float or Tensor
        return self.a * ms + self.b

    def problems(self) -> list[str]:
        """Why this calibration should not be used (empty when it looks sound).

        The slope must lie in :attr:`A_RANGE` and, when validation metrics are recorded,
        the calibrated MAPE must not exceed the raw one.
        """
        out = []
        lo, hi = self.A_RANGE
        if not lo <= self.a <= hi:
            out.append(
                f"slope a={self.a:.3f} is outside [{lo}, {hi}]: the table and the end-to-end "
                f"measurements disagree about relative costs (background load? re-profile)"
            )
        raw = (self.info.get("validation_raw") or {}).get("mape")
        cal = (self.info.get("validation_calibrated") or {}).get("mape")
        if raw is not None and cal is not None and cal > raw:
            out.append(f"calibrated MAPE {cal:.2f} % is worse than raw {raw:.2f} %")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"a": float(self.a), "b": float(self.b), "scope": self.scope, **dict(self.info)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "<calibration>") -> Calibration:
        try:
            a, b = float(d["a"]), float(d["b"])
        except (KeyError, TypeError, ValueError):
            raise LatencyTableError(
                f"{source}: calibration needs numeric 'a' and 'b', got {dict(d)!r}"
            ) from None
        if not (math.isfinite(a) and math.isfinite(b)):
            raise LatencyTableError(f"{source}: calibration a={a}, b={b} is not finite")
        info = {k: v for k, v in d.items() if k not in ("a", "b", "scope")}
        return cls(a, b, str(d.get("scope", "")), info)


def calibration_scope(
    channels: int,
    misaligned: bool,
    input_size: tuple[int, int],
    batch: int,
    statistic: str = "median",
) -> str:
    """Key of a calibration in the sidecar: ``C32-aligned-128x128-b16`` (``-min`` etc. appended
    for a non-median statistic)."""
    kind = "misaligned" if misaligned else "aligned"
    key = f"C{int(channels)}-{kind}-{int(input_size[0])}x{int(input_size[1])}-b{int(batch)}"
    return key if statistic == "median" else f"{key}-{statistic}"


def default_table_dir() -> Path:
    """Where latency tables are read and written, one rule for every tool and library call:
    ``$NAS_TABLES_DIR`` when set, else ``./latency_tables`` in the current folder (in a
    source checkout run from its root, the repository's tables)."""
    env = os.environ.get("NAS_TABLES_DIR")
    return Path(env) if env else Path.cwd() / TABLES_DIRNAME


def profile_command(
    device: str = "cpu",
    batch: int | None = None,
    input_size: tuple[int, int] | None = None,
    quick: bool = False,
    threads: int | None = None,
    out: Path | str | None = None,
    spaces: Iterable[str] | None = None,
    channels: Iterable[int] | None = None,
    timing: Mapping[str, Any] | None = None,
) -> str:
    """The ``python -m nas.profile`` command line that writes the table for these settings.

    ``timing`` (a sidecar) adds ``--reps/--warmup/--rounds/--max-seconds`` where recorded.
    """
    parts = ["python -m nas.profile", f"--device {device}"]
    if spaces:
        parts.append("--space " + " ".join(spaces))
    if channels:
        parts.append("--channels " + " ".join(str(c) for c in channels))
    if quick:
        parts.append("--quick")
    default_b = QUICK_BATCH if quick else DEFAULT_BATCH
    default_in = QUICK_INPUT_SIZE if quick else DEFAULT_INPUT_SIZE
    if batch is not None and int(batch) != default_b:
        parts.append(f"--batch {int(batch)}")
    if input_size is not None and tuple(input_size) != default_in:
        parts.append(f"--input-size {int(input_size[0])} {int(input_size[1])}")
    if threads is not None and str(device).startswith("cpu"):
        parts.append(f"--threads {int(threads)}")
    for key, flag in (
        ("reps", "--reps"),
        ("warmup", "--warmup"),
        ("rounds", "--rounds"),
        ("max_seconds", "--max-seconds"),
    ):
        v = (timing or {}).get(key)
        if v is not None and not (key == "rounds" and v == 1):
            parts.append(f"{flag} {v:g}" if isinstance(v, float) else f"{flag} {v}")
    if out is not None and Path(out).resolve() != default_table_dir().resolve():
        parts.append(f"--out {out}")
    return " ".join(parts)


class LatencyTable:
    """Per-device latency look-up table: (op, C_in, C_out, H, W, stride, batch) -> ms.

    Args:
        entries: rows; a later row replaces an earlier one with the same key.
        meta: the sidecar mapping (device description, settings, calibration).
        path: where the CSV lives (set by :meth:`read`, :meth:`load` and :meth:`save`).
    """

    def __init__(
        self,
        entries: Iterable[LatencyEntry] = (),
        meta: Mapping[str, Any] | None = None,
        path: str | Path | None = None,
    ) -> None:
        self._rows: dict[TableKey, LatencyEntry] = {}
        self.meta: dict[str, Any] = dict(meta or {})
        self.path = Path(path) if path is not None else None
        self.revision = 0
        self._statistic = "median"
        self.update(entries)

    @property
    def statistic(self) -> str:
        """Row statistic returned by :meth:`lookup`: ``median`` (default), ``mean``, ``p10``
        or ``min``. Not stored; set it per use."""
        return self._statistic

    @statistic.setter
    def statistic(self, value: str) -> None:
        if value not in STATISTICS:
            raise ValueError(f"statistic must be one of {STATISTICS}, got {value!r}")
        self._statistic = value

    # --- basic container behaviour --------------------------------------------------------
    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[LatencyEntry]:
        return iter(self._rows.values())

    def __contains__(self, key: object) -> bool:
        if isinstance(key, UnitKey) or (isinstance(key, tuple) and len(key) == 6):
            return TableKey(*key, self.batch) in self._rows
        return key in self._rows

    def __repr__(self) -> str:
        where = f" {self.path}" if self.path else ""
        return f"LatencyTable({self.name!r}, {len(self)} rows, batch={self.batch}{where})"

    def entries(self) -> list[LatencyEntry]:
        return sorted(self._rows.values(), key=lambda e: e.key)

    @property
    def name(self) -> str:
        if self.path is not None:
            return self.path.name[: -len(".csv")]
        return str(self.meta.get("name", "<in-memory>"))

    @property
    def device_fingerprint(self) -> str | None:
        fp = self.meta.get("device_fingerprint")
        return str(fp) if fp else None

    @property
    def batch(self) -> int:
        """The table's batch size (sidecar ``batch``; else the rows' common batch)."""
        if "batch" in self.meta:
            return int(self.meta["batch"])
        batches = {k.batch for k in self._rows}
        return batches.pop() if len(batches) == 1 else DEFAULT_BATCH

    # --- mutation ---------------------------------------------------------------------------
    def update(self, entries: Iterable[LatencyEntry]) -> None:
        """Add rows; a row replaces an existing one with the same key."""
        for e in entries:
            self._rows[e.key] = e
        self.revision += 1

    def merge(self, other: LatencyTable) -> None:
        """Take every row of ``other`` (its rows win)."""
        self.update(other)

    # --- queries ----------------------------------------------------------------------------
    def entry(
        self,
        op: str,
        C_in: int,
        C_out: int,
        H: int,
        W: int,
        stride: int = 1,
        batch: int | None = None,
    ) -> LatencyEntry:
        """The row for a unit; raises :class:`MissingLatencyEntry` naming what is missing."""
        b = self.batch if batch is None else int(batch)
        key = TableKey(op, int(C_in), int(C_out), int(H), int(W), int(stride), b)
        try:
            return self._rows[key]
        except KeyError:
            raise MissingLatencyEntry(self.missing_message(key), key) from None

    def lookup(self, *unit: Any, **kwargs: Any) -> float:
        """Latency in ms (the :attr:`statistic`, median by default) of the row :meth:`entry`
        finds for the same arguments (``op, C_in, C_out, H, W[, stride, batch]``)."""
        e = self.entry(*unit, **kwargs)
        v = getattr(e, f"{self._statistic}_ms")
        if not math.isfinite(v):
            raise LatencyTableError(
                f"latency table {self.path or self.name}: row {e.key.unit_key.describe()} has "
                f"no {self._statistic}_ms value (an older table?); re-profile it"
            )
        return v

    def lookup_key(self, key: UnitKey, batch: int | None = None) -> float:
        return self.lookup(*key, batch=batch)

    def missing_message(
        self,
        key: TableKey,
        spaces: Iterable[str] | None = None,
        channels: Iterable[int] | None = None,
        input_size: tuple[int, int] | None = None,
    ) -> str:
        """Message of a :class:`MissingLatencyEntry`: what is missing, what the table has,
        and the profile command that adds it (more exact when ``spaces``, ``channels`` and
        ``input_size`` of the query are known)."""
        where = str(self.path) if self.path else self.name
        near = sorted(
            {(k.C_in, k.C_out, k.H, k.W) for k in self._rows if k.op == key.op},
        )[:8]
        hint = (
            f"; rows for {key.op} exist at (C_in, C_out, H, W) {near}"
            if near
            else f"; the table has no rows for op {key.op!r}"
        )
        cmd = self.suggested_command(spaces, channels, input_size)
        return (
            f"latency table {where} has no entry for op {key.op!r} with C_in={key.C_in}, "
            f"C_out={key.C_out} at scale {key.H}x{key.W} (stride {key.stride}, batch "
            f"{key.batch}){hint}. Add it by profiling the space, width and input size you use"
            f" (rows are merged): `{cmd}`"
        )

    def suggested_command(
        self,
        spaces: Iterable[str] | None = None,
        channels: Iterable[int] | None = None,
        input_size: tuple[int, int] | None = None,
    ) -> str:
        """The ``python -m nas.profile`` command that extends this table."""
        m = self.meta
        if input_size is None and "input_size" in m:
            input_size = tuple(m["input_size"])
        return profile_command(
            device=str(m.get("device_type", "cpu")),
            batch=int(m.get("batch", self.batch)),
            input_size=input_size,
            quick=bool(m.get("quick", False)),
            threads=m.get("threads") if m.get("device_type", "cpu") == "cpu" else None,
            out=self.path.parent if self.path else None,
            spaces=spaces,
            channels=channels,
            timing=m,
        )

    # --- calibration ------------------------------------------------------------------------
    def calibration(self, scope: str | None = None) -> Calibration | None:
        """The calibration fitted for ``scope`` (see :func:`calibration_scope`), if any.

        With ``scope=None`` the only calibration of the table is returned (None when there
        are several or none).
        """
        cals = self.meta.get("calibration") or {}
        if not isinstance(cals, Mapping):
            raise LatencyTableError(f"{self.path or self.name}: 'calibration' must be a mapping")
        if scope is None:
            if len(cals) != 1:
                return None
            scope = next(iter(cals))
        d = cals.get(scope)
        if d is None:
            return None
        return Calibration.from_dict({**d, "scope": scope}, source=str(self.path or self.name))

    def set_calibration(self, cal: Calibration) -> None:
        """Store ``cal`` under its scope in the sidecar (save the table to persist it)."""
        if not cal.scope:
            raise ValueError("a stored calibration needs a scope")
        cals = dict(self.meta.get("calibration") or {})
        d = cal.to_dict()
        d.pop("scope")
        cals[cal.scope] = d
        self.meta["calibration"] = cals
        self.revision += 1

    def remove_calibration(self, scope: str) -> bool:
        """Drop the calibration of ``scope``; True if there was one."""
        cals = dict(self.meta.get("calibration") or {})
        if cals.pop(scope, None) is None:
            return False
        if cals:
            self.meta["calibration"] = cals
        else:
            self.meta.pop("calibration", None)
        self.revision += 1
        return True

    # --- I/O --------------------------------------------------------------------------------
    def to_csv_text(self) -> str:
        return table_csv_text(self.entries())

    def save(self, path: str | Path | None = None) -> Path:
        """Write ``<path>`` (CSV) and its ``.meta.yaml`` sidecar atomically; returns the CSV."""
        p = Path(path) if path is not None else self.path
        if p is None:
            raise ValueError("LatencyTable.save: no path given and the table has none")
        if p.suffix != ".csv":
            raise ValueError(f"latency tables are .csv files, got {p}")
        meta = dict(self.meta)
        meta["name"] = p.name[: -len(".csv")]
        meta["rows"] = len(self)
        meta.setdefault("created", now_iso())
        meta["updated"] = now_iso()
        write_table_files(p, self.to_csv_text(), meta)
        self.meta, self.path = meta, p
        return p

    @classmethod
    def read(cls, path: str | Path, require_meta: bool = False) -> LatencyTable:
        """Load a CSV (and its sidecar when present) without any device check.

        Raises:
            LatencyTableNotFound: no such file.
            LatencyTableError: unparseable CSV or sidecar, missing columns, bad values.
        """
        p = Path(path)
        entries = read_table_csv(p)
        meta = read_sidecar(p, require_meta)
        table = cls(entries, meta, p)
        table.calibration()  # validates the calibration block, if any
        return table

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        device: str | None = None,
        allow_foreign: bool = False,
        *,
        directory: str | Path | None = None,
        threads: int | None = None,
        dtype: str = "float32",
        batch: int | None = None,
        input_size: tuple[int, int] | None = None,
        quick: bool | None = None,
    ) -> LatencyTable:
        """The latency table of the current device.

        Args:
            path: an explicit table CSV; else the table is looked up by device fingerprint in
                ``directory`` (default :func:`default_table_dir`).
            device: ``cpu``/``cuda``/``cuda:N``; None: CUDA when present, else CPU.
            allow_foreign: accept a table whose sidecar names another device (with no table of
                this device, the only/first foreign table in ``directory`` is used).
            threads, dtype: complete the device fingerprint (threads: current torch setting).
            batch, input_size, quick: pick among this device's tables; by default the table
                with default settings is preferred, then any full table, then a quick one.

        Raises:
            LatencyTableNotFound: no table; the message gives the exact profile command.
            ForeignTableError: the table belongs to another device (message names both).
            LatencyTableError: the table is corrupt.
        """
        dev = resolve_device(device)
        fp = device_fingerprint(dev, threads, dtype)
        if path is not None:
            table = cls.read(path)
            table.check_device(fp, allow_foreign)
            return table
        d = Path(directory) if directory is not None else default_table_dir()
        cands = (
            sorted(c for c in d.glob("*.csv") if not c.name.startswith(".")) if d.is_dir() else []
        )
        metas = {c: _table_meta(c) for c in cands}
        own = [c for c in cands if metas[c].get("device_fingerprint") == fp]
        chosen = _pick(own, metas, fp, batch, input_size, quick)
        if chosen is None and allow_foreign:
            foreign = [c for c in cands if c not in own]
            chosen = _pick(foreign, metas, None, batch, input_size, quick)
        if chosen is None:
            given = {"batch": batch, "input_size": input_size, "quick": quick}
            want = ", ".join(f"{k}={v}" for k, v in given.items() if v is not None)
            cmd = profile_command(
                device=dev.type if dev.index in (None, 0) else str(dev),
                batch=batch,
                input_size=input_size,
                quick=bool(quick),
                threads=threads if dev.type == "cpu" else None,
                out=d,
            )
            others = f" Tables there: {[c.name for c in cands]}." if cands else ""
            raise LatencyTableNotFound(
                f"no latency table for this device ({fp}{', ' + want if want else ''}) in {d}."
                f"{others} "
                f"Create it with `{cmd}`"
                + (" (or pass --allow-foreign-table to use another device's)" if cands else "")
            )
        table = cls.read(chosen)
        table.check_device(fp, allow_foreign)
        return table

    def check_device(self, fingerprint: str, allow_foreign: bool = False) -> None:
        """Raise :class:`ForeignTableError` unless the sidecar's fingerprint is ``fingerprint``."""
        mine = self.device_fingerprint
        if mine == fingerprint or allow_foreign:
            return
        where = self.path or self.name
        if mine is None:
            raise ForeignTableError(
                f"latency table {where} has no sidecar device fingerprint, so it cannot be "
                f"checked against this device ({fingerprint}); re-profile, or pass "
                f"--allow-foreign-table (allow_foreign=True) to use it anyway"
            )
        raise ForeignTableError(
            f"latency table {where} was measured on {mine}, but this device is {fingerprint}; "
            f"latencies do not transfer between devices. Profile this one "
            f"(`{profile_command(device=fingerprint.split('-')[0])}`) or pass "
            f"--allow-foreign-table (allow_foreign=True) to use it anyway"
        )

    # --- construction helpers -------------------------------------------------------------
    @classmethod
    def from_rows(
        cls,
        rows: Mapping[tuple, float | Mapping[str, Any]],
        batch: int = 1,
        meta: Mapping[str, Any] | None = None,
        device_fingerprint: str | None = None,
    ) -> LatencyTable:
        """A table from ``{(op, C_in, C_out, H, W, stride[, batch]): ms or {column: value}}``.

        For tests and rigged experiments; the sidecar gets this device's fingerprint unless
        ``device_fingerprint`` (or ``meta``) says otherwise.
        """
        entries = []
        for key, value in rows.items():
            k = TableKey(*key) if len(key) == 7 else TableKey(*key, batch)
            if isinstance(value, Mapping):
                base = LatencyEntry.constant(k, float(value.get("median_ms", 0.0)))
                entries.append(replace(base, **dict(value)))
            else:
                entries.append(LatencyEntry.constant(k, float(value)))
        m: dict[str, Any] = {"batch": batch, "source": "from_rows"}
        m["device_fingerprint"] = device_fingerprint or _current_fp_safe()
        m.update(meta or {})
        return cls(entries, m)


RiggedTable = LatencyTable.from_rows
"""Alias: build a table from a dict of rows (tests, what-if experiments)."""


def _current_fp_safe() -> str:
    try:
        return device_fingerprint("cpu")
    except Exception:  # pragma: no cover - platform oddities
        return "unknown"
