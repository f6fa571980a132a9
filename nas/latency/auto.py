"""Tables that fill themselves: profile the rows a job needs on the local device.

A search (and so every sweep trial) and the export at its end need the latency of every unit
of the space's supernet at the latency input size. When the table of the *local* device lacks
some of those rows (or does not exist yet), :func:`ensure_table` times just those rows, says
what and how long, merges them into the table (atomically) and returns it;
``auto_profile=False`` (``--no-auto-profile``) raises the usual one-line error with the
profile command instead. A *foreign* device's table is never completed here: latencies do not
transfer between devices, so that stays an error naming the exact command to run on that
device.

New tables are profiled at batch 1 (the deployment setting) with :data:`AUTO_REPS` timed calls
per unit after :data:`AUTO_WARMUP` warm-up calls, at most :data:`AUTO_MAX_SECONDS` of timing
per unit (at least 5 calls): enough for a search's penalty, and a table made this way says so
in its sidecar; ``python -m nas.profile`` with the same batch and size re-times it with the
full settings. Rows added to an existing table use that table's recorded settings.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from nas.latency.fingerprint import resolve_device
from nas.latency.keys import MissingLatencyEntry, TableKey
from nas.latency.profiler import (
    DEFAULT_REPS,
    DEFAULT_WARMUP,
    ProfileSettings,
    collect_units,
    profile_spaces,
)
from nas.latency.table import LatencyTable
from nas.latency.table_io import LatencyTableNotFound
from nas.space import SearchSpace, load_space

AUTO_BATCH = 1
"""Batch of tables that a job creates for itself (the deployment setting)."""
AUTO_REPS = 100
AUTO_WARMUP = 3
AUTO_MAX_SECONDS = 5.0


def missing_keys(
    table: LatencyTable, spaces: Iterable[SearchSpace], input_size: tuple[int, int]
) -> list[TableKey]:
    """The rows the supernets of ``spaces`` (each at its own width) need at ``input_size``
    and ``table`` lacks (at the table's batch)."""
    spaces = list(spaces)
    need = {}
    for sp in spaces:
        need.update(collect_units([sp], [sp.arch.channels], input_size))
    batch = table.batch
    return [TableKey(*k, batch) for k in need if TableKey(*k, batch) not in table]


def _settings_of(table: LatencyTable, device: torch.device) -> ProfileSettings:
    m = table.meta
    return ProfileSettings(
        device=str(device),
        batch=int(m.get("batch", AUTO_BATCH)),
        input_size=tuple(m.get("input_size", (128, 128))),
        warmup=int(m.get("warmup", DEFAULT_WARMUP)),
        reps=int(m.get("reps", DEFAULT_REPS)),
        rounds=int(m.get("rounds", 1)),
        threads=m.get("threads"),
        max_seconds=m.get("max_seconds"),
        min_reps=int(m.get("min_reps", 5)),
        quick=bool(m.get("quick", False)),
        seed=int(m.get("seed", 0)),
    )


def ensure_table(
    spaces: Iterable[str | SearchSpace],
    input_size: tuple[int, int],
    device: str | torch.device | None = None,
    *,
    path: str | Path | None = None,
    latency_device: str | None = None,
    allow_foreign: bool = False,
    auto_profile: bool = True,
    directory: str | Path | None = None,
    log: Callable[[str], None] | None = print,
) -> LatencyTable:
    """The latency table for ``spaces`` at ``input_size``, completed on the local device.

    Args:
        spaces: search spaces (at the widths they carry) whose supernet rows are needed.
        input_size: (H, W) at which latency is predicted.
        device: the device the job runs on (None: CUDA when present, else CPU).
        path: an explicit table CSV (completed only if it was measured on this device).
        latency_device: the device whose table to use; another device than ``device`` is
            foreign and never profiled here.
        allow_foreign: accept another device's table (never completed).
        auto_profile: profile missing rows; False raises as before.
        directory: where tables live (default ``latency_tables/``).

    Raises:
        LatencyTableNotFound, ForeignTableError, MissingLatencyEntry: with the exact profile
            command, when rows are missing and cannot (or may not) be profiled here.
    """
    spaces = [load_space(s) for s in spaces]
    input_size = (int(input_size[0]), int(input_size[1]))
    run_dev = resolve_device(None if device is None else str(device))
    table_dev = resolve_device(latency_device) if latency_device else run_dev
    local = table_dev == run_dev
    say = log or (lambda s: None)
    load_kw = dict(path=path, device=str(table_dev), allow_foreign=allow_foreign)
    if path is None:
        load_kw.update(input_size=input_size, directory=directory)
    try:
        table = LatencyTable.load(**load_kw)
    except LatencyTableNotFound:
        if not (auto_profile and local and path is None):
            raise
        settings = ProfileSettings(
            device=str(run_dev),
            batch=AUTO_BATCH,
            input_size=input_size,
            reps=AUTO_REPS,
            warmup=AUTO_WARMUP,
            max_seconds=AUTO_MAX_SECONDS,
        )
        out = Path(directory) if directory is not None else _default_dir()
        say(
            f"no latency table for this device at {input_size[0]}x{input_size[1]}: profiling "
            f"{[s.name for s in spaces]} at batch {AUTO_BATCH} into "
            f"{out}/{settings.table_name}.csv "
            f"(--no-auto-profile to refuse)"
        )
        _profile(spaces, settings, out, say)
        return LatencyTable.load(**load_kw)
    missing = missing_keys(table, spaces, input_size)
    if not missing:
        return table
    settings = _settings_of(table, run_dev)
    fillable = (
        auto_profile
        and local
        and table.path is not None
        and tuple(settings.input_size) == input_size
        and table.device_fingerprint == settings.fingerprint
        and table.path.name == f"{settings.table_name}.csv"
    )
    if not fillable:
        k = missing[0]
        raise MissingLatencyEntry(
            table.missing_message(
                k, [s.name for s in spaces], sorted({s.arch.channels for s in spaces}), input_size
            )
            + ("" if auto_profile else " (auto-profiling is off: --no-auto-profile)"),
            k,
        )
    say(
        f"latency table {table.path.name} lacks {len(missing)} row(s) for "
        f"{[s.name for s in spaces]} at {input_size[0]}x{input_size[1]} "
        f"(e.g. {missing[0].unit_key.describe()}): profiling them (--no-auto-profile to refuse)"
    )
    _profile(spaces, settings, table.path.parent, say)
    return LatencyTable.read(table.path)


def _default_dir() -> Path:
    from nas.latency.table import default_table_dir

    return default_table_dir()


def _profile(
    spaces: list[SearchSpace],
    settings: ProfileSettings,
    out: Path,
    say: Callable[[str], None],
) -> None:
    """Profile the missing rows of ``spaces`` (each at its width) into ``out``."""
    t0 = time.perf_counter()
    by_width: dict[int, list[SearchSpace]] = {}
    for s in spaces:
        by_width.setdefault(s.arch.channels, []).append(s)
    n = 0
    for width, group in by_width.items():
        report = profile_spaces(
            group, [width], settings, out, only_missing=True, progress=False, log=None
        )
        n += report.profiled
    say(f"profiled {n} row(s) in {time.perf_counter() - t0:.1f} s")
