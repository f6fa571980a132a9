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

import csv
import io
import math
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from nas.latency.fingerprint import (
    DEFAULT_BATCH,
    DEFAULT_INPUT_SIZE,
    QUICK_BATCH,
    QUICK_INPUT_SIZE,
    device_fingerprint,
    now_iso,
    resolve_device,
)
from nas.latency.trace import UnitKey

REPO_ROOT = Path(__file__).resolve().parents[2]
TABLES_DIRNAME = "latency_tables"
COLUMNS: tuple[str, ...] = (
    "op",
    "C_in",
    "C_out",
    "H",
    "W",
    "stride",
    "batch",
    "median_ms",
    "mean_ms",
    "std_ms",
    "p10_ms",
    "p90_ms",
    "min_ms",
    "n",
    "shapes",
)
OPTIONAL_COLUMNS: tuple[str, ...] = ("min_ms", "shapes")
REQUIRED_COLUMNS: tuple[str, ...] = tuple(c for c in COLUMNS if c not in OPTIONAL_COLUMNS)
STATISTICS: tuple[str, ...] = ("median", "mean", "p10", "min")
"""Which per-row statistic a lookup returns (``LatencyTable.statistic``; default median)."""
_INT_COLUMNS = ("C_in", "C_out", "H", "W", "stride", "batch", "n")
_FLOAT_COLUMNS = ("median_ms", "mean_ms", "std_ms", "p10_ms", "p90_ms")
_FORMAT_FLOATS = (*_FLOAT_COLUMNS, "min_ms")


class LatencyTableError(ValueError):
    """A latency table is missing, corrupt, foreign or unusable; the message says which file."""


class LatencyTableNotFound(LatencyTableError, FileNotFoundError):
    """No table for this device; the message gives the ``python -m nas.profile`` command."""


class ForeignTableError(LatencyTableError):
    """The table was measured on another device (message names both fingerprints)."""


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


def format_shapes(shapes: Iterable[tuple[int, ...] | None]) -> str:
    """``[(16, 32, 64, 64), None]`` -> ``"16x32x64x64;-"``."""
    return ";".join("-" if s is None else "x".join(str(d) for d in s) for s in shapes)


def parse_shapes(text: str) -> tuple[tuple[int, ...] | None, ...]:
    """Inverse of :func:`format_shapes`."""
    if not text:
        return ()
    return tuple(None if p == "-" else tuple(int(d) for d in p.split("x")) for p in text.split(";"))


def default_table_dir() -> Path:
    """``$NAS_TABLES_DIR`` when set; else ``./latency_tables`` when it exists (the CLIs run
    from the repo root), else the repo's."""
    env = os.environ.get("NAS_TABLES_DIR")
    if env:
        return Path(env)
    cwd = Path.cwd() / TABLES_DIRNAME
    return cwd if cwd.is_dir() else REPO_ROOT / TABLES_DIRNAME


def meta_path_for(csv_path: Path) -> Path:
    """``foo.csv`` -> ``foo.meta.yaml``."""
    return csv_path.with_name(csv_path.name[: -len(".csv")] + ".meta.yaml")


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


def current_umask() -> int:
    """The process umask (read from /proc where possible, so it is never changed)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(items: list[tuple[Path, str | bytes]]) -> None:
    """Write each ``(path, text or bytes)`` atomically: a temp file in the same folder, fsync,
    then ``os.replace``; all temps are written before the first replace. Files get the usual
    ``0666 & ~umask`` mode (``mkstemp`` alone would leave them 0600)."""
    temps: list[tuple[str, Path]] = []
    try:
        for path, data in items:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            temps.append((tmp, path))
            os.chmod(tmp, 0o666 & ~current_umask())
            raw = data.encode() if isinstance(data, str) else data
            with os.fdopen(fd, "wb") as f:
                f.write(raw)
                f.flush()
                os.fsync(f.fileno())
        for tmp, path in temps:
            os.replace(tmp, path)
    finally:
        for tmp, _ in temps:
            Path(tmp).unlink(missing_ok=True)


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

    def lookup(
        self,
        op: str,
        C_in: int,
        C_out: int,
        H: int,
        W: int,
        stride: int = 1,
        batch: int | None = None,
    ) -> float:
        """Latency in ms (the :attr:`statistic`, median by default) of op ``op`` mapping
        C_in -> C_out at input H x W."""
        e = self.entry(op, C_in, C_out, H, W, stride, batch)
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
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(COLUMNS)
        for e in self.entries():
            d = asdict(e)
            w.writerow([f"{d[c]:.6g}" if c in _FORMAT_FLOATS else d[c] for c in COLUMNS])
        return buf.getvalue()

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
        meta_text = yaml.safe_dump(_yaml_safe(meta), sort_keys=False)
        atomic_write([(p, self.to_csv_text()), (meta_path_for(p), meta_text)])
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
        if not p.is_file():
            raise LatencyTableNotFound(f"latency table not found: {p}")
        try:
            text = p.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise LatencyTableError(f"latency table {p}: cannot read it: {e}") from None
        entries = _parse_csv(text, p)
        mp = meta_path_for(p)
        meta: dict[str, Any] = {}
        if mp.is_file():
            try:
                loaded = yaml.safe_load(mp.read_text())
            except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
                raise LatencyTableError(
                    f"latency table sidecar {mp}: not valid YAML: {e}"
                ) from None
            if loaded is not None and not isinstance(loaded, Mapping):
                raise LatencyTableError(
                    f"latency table sidecar {mp}: expected a mapping, got {type(loaded).__name__}"
                )
            meta = dict(loaded or {})
        elif require_meta:
            raise LatencyTableError(f"latency table {p} has no sidecar {mp.name}")
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


def _table_meta(csv_path: Path) -> dict[str, Any]:
    """The sidecar of a table file ({} if absent or unreadable)."""
    try:
        d = yaml.safe_load(meta_path_for(csv_path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return dict(d) if isinstance(d, Mapping) else {}


def _pick(
    tables: list[Path],
    metas: Mapping[Path, Mapping[str, Any]],
    fp: str | None,
    batch: int | None,
    input_size: tuple[int, int] | None,
    quick: bool | None,
) -> Path | None:
    """Among ``tables``, those matching the given settings; prefer default, full, then quick."""

    def ok(c: Path) -> bool:
        m = metas[c]
        if batch is not None and int(m.get("batch", -1)) != int(batch):
            return False
        if input_size is not None and tuple(m.get("input_size", ())) != tuple(input_size):
            return False
        return quick is None or bool(m.get("quick", False)) == bool(quick)

    match = [c for c in tables if ok(c)]
    if fp is not None:
        default = next((c for c in match if c.name == f"{fp}.csv"), None)
        if default is not None:
            return default
    full = [c for c in match if not metas[c].get("quick", False)]
    return (full or match or [None])[0]


def _parse_csv(text: str, path: Path) -> list[LatencyEntry]:
    try:
        reader = csv.DictReader(io.StringIO(text))
        header = reader.fieldnames
    except csv.Error as e:
        raise LatencyTableError(f"latency table {path}: not a valid CSV: {e}") from None
    if not header:
        raise LatencyTableError(f"latency table {path}: empty file (no header row)")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise LatencyTableError(
            f"latency table {path}: missing column(s) {missing}; header is {header}, "
            f"expected at least {list(REQUIRED_COLUMNS)}"
        )
    names = {f.name for f in fields(LatencyEntry)}
    entries: list[LatencyEntry] = []
    try:
        for row in reader:
            line = reader.line_num
            if None in row or any(row.get(c) is None for c in REQUIRED_COLUMNS):
                raise LatencyTableError(
                    f"latency table {path}, line {line}: wrong number of fields"
                )
            vals: dict[str, Any] = {"op": row["op"].strip()}
            if not vals["op"]:
                raise LatencyTableError(f"latency table {path}, line {line}: empty op name")
            for c in _INT_COLUMNS:
                try:
                    vals[c] = int(row[c])
                except ValueError:
                    raise LatencyTableError(
                        f"latency table {path}, line {line}: column {c!r} must be an integer, "
                        f"got {row[c]!r}"
                    ) from None
            for c in _FLOAT_COLUMNS:
                try:
                    v = float(row[c])
                except ValueError:
                    v = float("nan")
                if not math.isfinite(v) or v < 0:
                    raise LatencyTableError(
                        f"latency table {path}, line {line}: column {c!r} must be a finite "
                        f"non-negative number, got {row[c]!r}"
                    )
                vals[c] = v
            vals["shapes"] = row.get("shapes") or ""
            raw_min = row.get("min_ms")
            vals["min_ms"] = float("nan")
            if raw_min not in (None, "", "nan"):
                try:
                    vals["min_ms"] = float(raw_min)
                except ValueError:
                    raise LatencyTableError(
                        f"latency table {path}, line {line}: column 'min_ms' must be a number, "
                        f"got {raw_min!r}"
                    ) from None
            entries.append(LatencyEntry(**{k: v for k, v in vals.items() if k in names}))
    except csv.Error as e:
        raise LatencyTableError(f"latency table {path}: not a valid CSV: {e}") from None
    return entries


def _yaml_safe(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _yaml_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_yaml_safe(x) for x in v]
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, str):
        return str(v)  # plain str (torch.__version__ is a str subclass)
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return float(v)
    if hasattr(v, "item"):
        return v.item()
    return str(v)
