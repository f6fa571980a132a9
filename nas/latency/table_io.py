"""Latency table files: the CSV layout, reading and writing a table and its YAML sidecar,
and finding a device's table in a folder (see :mod:`nas.latency.table` for the format).

Writes go through :func:`nas.utils.atomic_write_text` (temporary file in the same folder,
then ``os.replace``); a corrupt file raises :class:`LatencyTableError` naming the file and
the problem.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from nas.latency.keys import LatencyEntry
from nas.report import yaml_safe
from nas.utils import atomic_write_many

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
_INT_COLUMNS = ("C_in", "C_out", "H", "W", "stride", "batch", "n")
_FLOAT_COLUMNS = ("median_ms", "mean_ms", "std_ms", "p10_ms", "p90_ms")
_FORMAT_FLOATS = (*_FLOAT_COLUMNS, "min_ms")


class LatencyTableError(ValueError):
    """A latency table is missing, corrupt, foreign or unusable; the message says which file."""


class LatencyTableNotFound(LatencyTableError, FileNotFoundError):
    """No table for this device; the message gives the ``python -m nas.profile`` command."""


class ForeignTableError(LatencyTableError):
    """The table was measured on another device (message names both fingerprints)."""


def meta_path_for(csv_path: Path) -> Path:
    """``foo.csv`` -> ``foo.meta.yaml``."""
    return csv_path.with_name(csv_path.name[: -len(".csv")] + ".meta.yaml")


def table_csv_text(entries: Iterable[LatencyEntry]) -> str:
    """The CSV text of ``entries``: a :data:`COLUMNS` header, then one row per entry."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for e in entries:
        d = e.columns()
        w.writerow([f"{d[c]:.6g}" if c in _FORMAT_FLOATS else d[c] for c in COLUMNS])
    return buf.getvalue()


def write_table_files(path: Path, csv_text: str, meta: Mapping[str, Any]) -> None:
    """Write the CSV ``path`` and its ``.meta.yaml`` sidecar (``meta``), each atomically."""
    meta_text = yaml.safe_dump(yaml_safe(meta), sort_keys=False)
    atomic_write_many([(path, csv_text), (meta_path_for(path), meta_text)])


def read_table_csv(path: Path) -> list[LatencyEntry]:
    """The rows of the table CSV ``path``.

    Raises:
        LatencyTableNotFound: no such file.
        LatencyTableError: unparseable CSV, missing columns, bad values.
    """
    if not path.is_file():
        raise LatencyTableNotFound(f"latency table not found: {path}")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise LatencyTableError(f"latency table {path}: cannot read it: {e}") from None
    return _parse_csv(text, path)


def read_sidecar(csv_path: Path, require_meta: bool = False) -> dict[str, Any]:
    """The sidecar of the table CSV ``csv_path`` ({} when absent, unless ``require_meta``).

    Raises:
        LatencyTableError: the sidecar is not a YAML mapping, or is absent and required.
    """
    mp = meta_path_for(csv_path)
    meta: dict[str, Any] = {}
    if mp.is_file():
        try:
            loaded = yaml.safe_load(mp.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise LatencyTableError(f"latency table sidecar {mp}: not valid YAML: {e}") from None
        if loaded is not None and not isinstance(loaded, Mapping):
            raise LatencyTableError(
                f"latency table sidecar {mp}: expected a mapping, got {type(loaded).__name__}"
            )
        meta = dict(loaded or {})
    elif require_meta:
        raise LatencyTableError(f"latency table {csv_path} has no sidecar {mp.name}")
    return meta


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
            entries.append(LatencyEntry.from_columns(vals))
    except csv.Error as e:
        raise LatencyTableError(f"latency table {path}: not a valid CSV: {e}") from None
    return entries
