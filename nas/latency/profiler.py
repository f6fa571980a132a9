"""The latency profiler: time every distinct unit of a search space on its own.

For each space and width the supernet is built (``space.with_channels(C)``) and traced at the
input size (:func:`~nas.latency.trace.trace_units`), which yields every candidate op at the
shapes of every slot (full, 1/2 and 1/4 scale) and every fixed unit. Each distinct key
``(op, C_in, C_out, H, W, stride)`` is then timed alone: a deep copy of the module in eval
mode under ``torch.inference_mode()``, random inputs of the traced shapes with the batch
replaced by the profiling batch, ``warmup`` untimed calls, then ``reps`` timed calls
(``time.perf_counter`` around each call; on CUDA with ``torch.cuda.synchronize()`` before and
after). Median, mean, std, p10, p90 and the count are stored (ms).

The same harness (:func:`time_fn`) measures whole networks end to end for the predictor check
(:mod:`nas.latency.validate`), so a table entry and a network measurement are comparable.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import nas
from nas.latency.fingerprint import (
    DEFAULT_BATCH,
    DEFAULT_INPUT_SIZE,
    QUICK_BATCH,
    QUICK_INPUT_SIZE,
    device_fingerprint,
    device_info,
    now_iso,
    resolve_device,
    resolve_dtype,
    table_name,
)
from nas.latency.keys import LatencyEntry, TableKey, format_shapes
from nas.latency.table import LatencyTable, default_table_dir
from nas.latency.table_io import LatencyTableNotFound
from nas.latency.timing import (
    TimingStats,
    load_warning,
    other_runnable,
    pinned_threads,
    system_load,
    time_fn,
)
from nas.latency.trace import UnitCall, UnitKey, trace_units
from nas.ops.deform_conv import deform_backend_for
from nas.space import SearchSpace, load_space
from nas.supernet import Supernet

DEFAULT_SPACES: tuple[str, ...] = ("crmef", "crmef-misaligned")
DEFAULT_CHANNELS: tuple[int, ...] = (16, 32, 64)
DEFAULT_REPS = 1000
"""Repetitions per unit by default: the CRMEF paper's 1000 (see ``ProfileSettings``)."""
DEFAULT_WARMUP = 10
DEFAULT_CPU_MAX_SECONDS = 10.0
"""Per-unit time budget of ``python -m nas.profile --device cpu`` when ``--reps`` is not given:
cheap units still get 1000 reps; the full CPU table takes ~30 min on 2 cores (instead of
~12 h for 1000 reps of the batch-16 deformable convolutions)."""
QUICK_REPS = 25
QUICK_WARMUP = 3
CPU_BATCH = 1
"""Batch of ``python -m nas.profile --device cpu`` without ``--batch``: one image, as a CPU
fuses photos (the paper's batch 16 is its GPU setting)."""
CPU_REPS = 100
"""Timed calls per unit on CPU without ``--reps`` (capped by :data:`CPU_MAX_SECONDS`)."""
CPU_WARMUP = 3
CPU_MAX_SECONDS = 1.0
"""Per-unit time budget on CPU without ``--reps``/``--max-seconds``: with batch 1 at
128x128 the default table (crmef + crmef-misaligned, C 16/32/64) and ``--validate 20`` take
minutes on 2 cores, not hours (README, "The pipeline")."""


@dataclass(frozen=True)
class ProfileSettings:
    """How units (and whole networks) are timed; recorded in the table's sidecar.

    Attributes:
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        batch: batch size of the timed inputs (the paper: 16).
        input_size: (H, W) of the network input; units run at the scales the trace gives.
        warmup: untimed calls before timing each unit (per round after the first: 1).
        reps: timed calls per unit (the paper: 1000).
        rounds: split the reps into this many passes over all units, so that slow drifts of
            background load hit every unit alike (1 = time each unit in one go).
        threads: CPU threads (``torch.set_num_threads``); None = torch's current setting.
        dtype: ``float32`` (default), ``float16`` or ``bfloat16``.
        max_seconds: optional time budget per unit: stop after ``reps`` calls or once this
            many seconds of timed calls are spent (at least ``min_reps`` calls).
        min_reps: lower bound on timed calls when ``max_seconds`` cuts a unit short.
        quick: a quick table (few repetitions); changes the table name (``-quick``).
        seed: seed of the random inputs.
    """

    device: str = "cpu"
    batch: int = DEFAULT_BATCH
    input_size: tuple[int, int] = DEFAULT_INPUT_SIZE
    warmup: int = DEFAULT_WARMUP
    reps: int = DEFAULT_REPS
    rounds: int = 1
    threads: int | None = None
    dtype: str = "float32"
    max_seconds: float | None = None
    min_reps: int = 5
    quick: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch < 1 or self.reps < 1 or self.warmup < 0 or self.rounds < 1:
            raise ValueError(
                f"need batch >= 1, reps >= 1, warmup >= 0, rounds >= 1; got batch={self.batch}, "
                f"reps={self.reps}, warmup={self.warmup}, rounds={self.rounds}"
            )
        if len(self.input_size) != 2 or min(self.input_size) < 4:
            raise ValueError(f"input_size must be (H, W) >= 4, got {self.input_size}")
        resolve_dtype(self.dtype)

    @classmethod
    def quick_defaults(cls, **overrides: Any) -> ProfileSettings:
        """Settings of ``--quick``: batch 1, 64x64, 25 reps, 3 warm-up calls."""
        base = dict(
            batch=QUICK_BATCH,
            input_size=QUICK_INPUT_SIZE,
            reps=QUICK_REPS,
            warmup=QUICK_WARMUP,
            quick=True,
        )
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)

    @property
    def torch_device(self) -> torch.device:
        return resolve_device(self.device)

    @property
    def resolved_threads(self) -> int:
        return torch.get_num_threads() if self.threads is None else int(self.threads)

    @property
    def fingerprint(self) -> str:
        return device_fingerprint(self.torch_device, self.resolved_threads, self.dtype)

    @property
    def table_name(self) -> str:
        return table_name(self.fingerprint, self.batch, self.input_size, self.quick)

    def meta(self) -> dict[str, Any]:
        """Sidecar fields: device description plus these settings."""
        info = device_info(self.torch_device, self.resolved_threads, self.dtype)
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["device"] = str(self.torch_device)
        d["threads"] = self.resolved_threads
        d.pop("dtype")
        info.update(d)
        # which deformable kernel the timed units ran (torchvision's on CUDA when present)
        info["deform_backend"] = deform_backend_for(self.torch_device)
        info["timer"] = (
            "cuda.synchronize + perf_counter per call"
            if self.torch_device.type == "cuda"
            else "perf_counter per call"
        )
        info["statistic"] = "median_ms is the latency used for prediction (by default)"
        info["tool"] = f"nas {nas.__version__}"
        info["date"] = now_iso()
        info["loadavg_start"] = system_load()
        return info


def unit_inputs(
    call: UnitCall,
    batch: int,
    device: torch.device,
    dtype: torch.dtype,
    generator: torch.Generator | None = None,
) -> tuple[tuple[Tensor | None, ...], dict[str, Tensor]]:
    """Random inputs in [0, 1) of the traced shapes with dim 0 replaced by ``batch``."""

    def rnd(shape: tuple[int, ...]) -> Tensor:
        t = torch.rand((batch, *shape[1:]), generator=generator, dtype=torch.float32)
        return t.to(device=device, dtype=dtype)

    args = tuple(None if s is None else rnd(s) for s in call.in_shapes)
    kwargs = {k: rnd(s) for k, s in call.kw_shapes}
    return args, kwargs


def prepare_unit(call: UnitCall, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """A deep copy of the traced unit, on ``device`` in ``dtype``, eval mode, no grads."""
    m = copy.deepcopy(call.module).to(device=device, dtype=dtype).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def collect_units(
    spaces: Iterable[str | SearchSpace],
    channels: Iterable[int],
    input_size: tuple[int, int],
    keys: set[UnitKey] | None = None,
) -> dict[UnitKey, UnitCall]:
    """Every distinct unit key of the supernets of ``spaces`` x ``channels`` at ``input_size``
    (a space with ``choices``: of every variant, see :meth:`~nas.space.SearchSpace.expand`).

    The first traced call of each key is kept (it carries the module and input shapes).
    ``keys``, when given, restricts the result to those keys.
    """
    found: dict[UnitKey, UnitCall] = {}
    for sp in spaces:
        for variant in load_space(sp).expand(channels):
            net = Supernet(variant).eval()
            for call in trace_units(net, input_size, batch=1):
                if keys is None or call.key in keys:
                    found.setdefault(call.key, call)
    return found


def describe_call(call: UnitCall, batch: int) -> str:
    k = call.key
    return f"{k.op} {k.C_in}->{k.C_out} {batch}x{k.H}x{k.W}" + (
        f" s{k.stride}" if k.stride != 1 else ""
    )


def _entry(call: UnitCall, batch: int, samples: Sequence[float]) -> LatencyEntry:
    st = TimingStats.from_seconds(samples)
    shapes = format_shapes(
        [None if s is None else (batch, *s[1:]) for s in call.in_shapes]
        + [(batch, *s[1:]) for _, s in call.kw_shapes]
    )
    return LatencyEntry(TableKey(*call.key, batch), **asdict(st), shapes=shapes)


def profile_units(
    units: Mapping[UnitKey, UnitCall] | Iterable[UnitCall],
    settings: ProfileSettings,
    progress: bool = True,
    on_entry: Callable[[LatencyEntry], None] | None = None,
) -> list[LatencyEntry]:
    """Time each unit alone (see the module docstring); one :class:`LatencyEntry` per unit.

    With ``settings.rounds > 1`` the units are visited round-robin, each round timing
    ``reps / rounds`` calls after a full warm-up (first round) or one warm-up call.
    ``on_entry`` is called with each finished entry (checkpointing).
    """
    calls = list(units.values()) if isinstance(units, Mapping) else list(units)
    device = settings.torch_device
    dtype = resolve_dtype(settings.dtype)
    rounds = settings.rounds
    reps_per_round = [
        settings.reps // rounds + (1 if r < settings.reps % rounds else 0) for r in range(rounds)
    ]
    budget = None if settings.max_seconds is None else settings.max_seconds / rounds
    samples: dict[int, list[float]] = {i: [] for i in range(len(calls))}
    entries: list[LatencyEntry] = []
    gen = torch.Generator().manual_seed(settings.seed)
    bar = _progress(len(calls) * rounds, progress, desc=f"profiling ({device.type})")
    try:
        with pinned_threads(settings.threads), torch.inference_mode():
            modules = [prepare_unit(c, device, dtype) for c in calls]
            for r in range(rounds):
                for i, call in enumerate(calls):
                    if reps_per_round[r] == 0:
                        continue
                    if bar is not None:
                        bar.set_postfix_str(describe_call(call, settings.batch), refresh=False)
                    args, kwargs = unit_inputs(call, settings.batch, device, dtype, gen)
                    m = modules[i]
                    samples[i] += time_fn(
                        lambda m=m, a=args, k=kwargs: m(*a, **k),
                        device,
                        reps_per_round[r],
                        warmup=settings.warmup if r == 0 else min(1, settings.warmup),
                        max_seconds=budget,
                        min_reps=max(1, math.ceil(settings.min_reps / rounds)),
                    )
                    del args, kwargs
                    if r == rounds - 1:
                        e = _entry(call, settings.batch, samples[i])
                        entries.append(e)
                        if on_entry is not None:
                            on_entry(e)
                    if bar is not None:
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return entries


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="unit", dynamic_ncols=True, leave=True)


@dataclass
class ProfileReport:
    """What :func:`profile_spaces` did: the table, how many units, how long."""

    table: LatencyTable
    path: Path | None
    profiled: int
    reused: int
    seconds: float
    per_unit_seconds: dict[UnitKey, float] = field(default_factory=dict)


def table_path(out_dir: str | Path, settings: ProfileSettings) -> Path:
    return Path(out_dir) / f"{settings.table_name}.csv"


def partial_path(out_dir: str | Path, settings: ProfileSettings) -> Path:
    """Checkpoint of an unfinished profile run (``--resume`` continues from it)."""
    return Path(out_dir) / f".{settings.table_name}.partial.csv"


def _settings_match(meta: Mapping[str, Any], settings: ProfileSettings) -> bool:
    want = settings.meta()
    keys = ("device_fingerprint", "batch", "input_size", "warmup", "reps", "rounds", "quick")
    return all(meta.get(k) == want.get(k) for k in keys)


def profile_spaces(
    spaces: Iterable[str | SearchSpace] = DEFAULT_SPACES,
    channels: Iterable[int] = DEFAULT_CHANNELS,
    settings: ProfileSettings | None = None,
    out_dir: str | Path | None = "default",
    *,
    only_missing: bool = False,
    resume: bool = False,
    progress: bool = True,
    checkpoint_every_s: float = 30.0,
    log: Callable[[str], None] | None = print,
) -> ProfileReport:
    """Profile every unit of ``spaces`` x ``channels`` and merge the rows into the table.

    The existing table at ``out_dir/<table name>.csv`` is loaded *first*: if it is corrupt,
    :class:`~nas.latency.table.LatencyTableError` is raised before any timing and the file is
    left untouched. New rows replace old rows with the same key; the table and its sidecar
    are written atomically at the end (``out_dir=None``: nothing is written). While running,
    finished rows are checkpointed to a hidden ``.partial.csv`` beside it, which ``resume``
    reuses (when the settings match) and which is removed after the final write.
    ``out_dir="default"`` is :func:`~nas.latency.table.default_table_dir` (``$NAS_TABLES_DIR``,
    else ``./latency_tables``).

    Args:
        only_missing: time only keys the existing table lacks.
        resume: reuse the rows of an interrupted run's checkpoint.
    """
    settings = settings or ProfileSettings()
    spaces = [load_space(s) for s in spaces]
    channels = [int(c) for c in channels]
    say = log or (lambda s: None)
    t_start = time.perf_counter()
    if isinstance(out_dir, str) and out_dir == "default":
        out_dir = default_table_dir()
    path = table_path(out_dir, settings) if out_dir is not None else None
    table = LatencyTable(meta={})
    if path is not None:
        try:
            table = LatencyTable.read(path)
        except LatencyTableNotFound:
            pass
    with pinned_threads(settings.threads):
        units = collect_units(spaces, channels, settings.input_size)
    batch = settings.batch
    have = {e.key.unit_key for e in table if e.key.batch == batch} if only_missing else set()
    ckpt = partial_path(out_dir, settings) if out_dir is not None else None
    done = _resumed_rows(ckpt, settings, say) if resume else {}
    todo = {k: c for k, c in units.items() if k not in have and k not in done}
    say(
        f"{len(units)} distinct units in {[s.name for s in spaces]} x C={channels} at "
        f"{settings.input_size[0]}x{settings.input_size[1]}; timing {len(todo)} "
        f"(batch {batch}, {settings.reps} reps, {settings.warmup} warm-up, "
        f"{settings.resolved_threads} thread(s), {settings.torch_device})"
    )
    busy = other_runnable()
    if settings.torch_device.type == "cpu":
        warn = load_warning(settings.resolved_threads, busy)
        if warn:
            say(warn)
    meta = _merged_meta(settings, table.meta, spaces, channels, busy)
    saver = _Checkpointer(LatencyTable(done.values(), meta), ckpt, checkpoint_every_s)
    try:
        new = profile_units(todo, settings, progress=progress, on_entry=saver.on_entry)
    except BaseException:
        if saver.save():
            say(
                f"interrupted: {len(saver.table)} finished unit(s) saved to {ckpt}; the table "
                f"itself is unchanged. Continue with the same command plus --resume"
            )
        raise
    if "calibration" in meta and new:
        # the calibration was fitted against the old rows; keep it but say so
        say("note: existing calibration kept; re-run --validate to refit it on the new rows")
    existed = len(table) > 0
    if new or done or not existed:
        table.update([*done.values(), *new])
        table.meta = {
            **meta,
            "rows": len(table),
            "loadavg_end": system_load(),
            "other_runnable_end": other_runnable(),
        }
    if path is not None and (new or done or not existed):
        table.save(path)
        saver.remove()
    return ProfileReport(
        table=table,
        path=path,
        profiled=len(new),
        reused=len(done),
        seconds=time.perf_counter() - t_start,
        per_unit_seconds=saver.per_unit,
    )


def _resumed_rows(
    ckpt: Path | None, settings: ProfileSettings, say: Callable[[str], None]
) -> dict[UnitKey, LatencyEntry]:
    """The rows of an interrupted run's checkpoint ``ckpt`` (none when there is none, or when
    it was made with other settings), by unit key, at ``settings.batch``."""
    if ckpt is None or not ckpt.exists():
        return {}
    part = LatencyTable.read(ckpt)
    if not _settings_match(part.meta, settings):
        say(f"not resuming from {ckpt}: it was made with other settings")
        return {}
    done = {e.key.unit_key: e for e in part if e.key.batch == settings.batch}
    say(f"resuming: {len(done)} unit(s) reused from {ckpt}")
    return done


def _merged_meta(
    settings: ProfileSettings,
    old: Mapping[str, Any],
    spaces: Sequence[SearchSpace],
    channels: Sequence[int],
    busy: Any,
) -> dict[str, Any]:
    """The table's metadata after this run: ``settings``' plus the spaces and channels of the
    existing table (``old``) and this run's; its calibration and creation date kept."""
    meta = settings.meta()
    meta["other_runnable_start"] = busy
    meta["spaces"] = sorted({*old.get("spaces", []), *(s.name for s in spaces)})
    meta["channels"] = sorted({*old.get("channels", []), *channels})
    if "calibration" in old:
        meta["calibration"] = old["calibration"]
    if "created" in old:
        meta["created"] = old["created"]
    return meta


class _Checkpointer:
    """The rows a profile run has finished, saved to its ``.partial.csv`` as it goes.

    :meth:`on_entry` (the ``on_entry`` callback of :func:`profile_units`) adds a row, records
    how long its unit took since the previous one, and saves the rows when ``every_s``
    seconds have passed since the last save; :meth:`save` saves them now (on interruption),
    :meth:`remove` deletes the checkpoint and its sidecar (after the final table is written).

    Args:
        table: the rows so far (those reused by ``--resume``) and the metadata to save.
        path: the checkpoint file; None: nothing is saved.
        every_s: the least number of seconds between two saves by :meth:`on_entry`.
    """

    def __init__(self, table: LatencyTable, path: Path | None, every_s: float) -> None:
        self.table = table
        self.path = path
        self.every_s = every_s
        self.last_save = time.perf_counter()
        self.per_unit: dict[UnitKey, float] = {}
        self.last_entry = time.perf_counter()

    def on_entry(self, e: LatencyEntry) -> None:
        now = time.perf_counter()
        self.per_unit[e.key.unit_key] = now - self.last_entry
        self.last_entry = now
        self.table.update([e])
        if self.path is not None and now - self.last_save >= self.every_s:
            self.table.save(self.path)
            self.last_save = now

    def save(self) -> bool:
        """Save the rows now if there are any (and a path); whether it saved."""
        if self.path is None or not len(self.table):
            return False
        self.table.save(self.path)
        return True

    def remove(self) -> None:
        """Delete the checkpoint file and its ``.meta.yaml`` sidecar, if there."""
        if self.path is None:
            return
        self.path.unlink(missing_ok=True)
        meta = self.path.with_name(self.path.name[: -len(".csv")] + ".meta.yaml")
        meta.unlink(missing_ok=True)


def synthetic_table(
    spaces: Iterable[str | SearchSpace],
    channels: Iterable[int],
    input_size: tuple[int, int],
    batch: int = 1,
    ms_per_gmac: float = 20.0,
    overhead_ms: float = 0.01,
    device_fingerprint: str | None = None,
) -> LatencyTable:
    """A table without timing: latency = overhead + MACs-proportional cost (for tests).

    The MACs of a unit are approximated by ``parameters x output pixels`` (exact for
    convolutions, a rough stand-in for the rest); ``batch`` scales the cost linearly.
    """
    rows: dict[tuple, float] = {}
    for sp in spaces:
        for variant in load_space(sp).expand(channels):
            net = Supernet(variant)
            for call in trace_units(net, input_size, batch=1):
                params = sum(p.numel() for p in call.module.parameters())
                out_px = max((s[-1] * s[-2] for s in call.out_shapes if len(s) >= 2), default=0)
                in_el = sum(math.prod(s) for s in call.in_shapes if s is not None)
                macs = batch * (params * out_px + in_el)
                rows[(*call.key, batch)] = overhead_ms + ms_per_gmac * macs / 1e9
    meta = {
        "source": "synthetic (MACs model, not measured)",
        "input_size": list(input_size),
        "spaces": sorted({load_space(s).name for s in spaces}),
    }
    return LatencyTable.from_rows(
        rows, batch=batch, meta=meta, device_fingerprint=device_fingerprint
    )


def measure_networks(
    nets: Sequence[nn.Module],
    settings: ProfileSettings,
    progress: bool = False,
    desc: str = "measuring",
) -> list[TimingStats]:
    """End-to-end latency of each ``net(under, over)`` with the unit harness's settings.

    Same batch, input size, threads, dtype, warm-up, reps, eval mode and inference mode as
    :func:`profile_units`; with ``rounds > 1`` the nets are measured round-robin.
    """
    device = settings.torch_device
    dtype = resolve_dtype(settings.dtype)
    H, W = settings.input_size
    rounds = settings.rounds
    reps_per_round = [
        settings.reps // rounds + (1 if r < settings.reps % rounds else 0) for r in range(rounds)
    ]
    budget = None if settings.max_seconds is None else settings.max_seconds / rounds
    gen = torch.Generator().manual_seed(settings.seed)
    samples: list[list[float]] = [[] for _ in nets]
    bar = _progress(len(nets) * rounds, progress, desc=desc)
    try:
        with pinned_threads(settings.threads), torch.inference_mode():
            prepared = []
            for net in nets:
                n = copy.deepcopy(net).to(device=device, dtype=dtype).eval()
                for p in n.parameters():
                    p.requires_grad_(False)
                prepared.append(n)
            for r in range(rounds):
                for i, net in enumerate(prepared):
                    if reps_per_round[r] == 0:
                        continue
                    x = [
                        torch.rand(settings.batch, 3, H, W, generator=gen).to(device, dtype)
                        for _ in range(2)
                    ]
                    samples[i] += time_fn(
                        lambda net=net, x=x: net(*x),
                        device,
                        reps_per_round[r],
                        warmup=settings.warmup if r == 0 else min(1, settings.warmup),
                        max_seconds=budget,
                        min_reps=max(1, math.ceil(settings.min_reps / rounds)),
                    )
                    if bar is not None:
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return [TimingStats.from_seconds(s) for s in samples]


@dataclass(frozen=True)
class ProfileEstimate:
    """Per-call time of every unit (from a few probe calls) and what a full run would cost."""

    per_call_s: Mapping[UnitKey, float]
    probe_seconds: float

    @property
    def units(self) -> int:
        return len(self.per_call_s)

    def seconds(
        self,
        reps: int,
        warmup: int,
        max_seconds: float | None = None,
        min_reps: int = 5,
    ) -> float:
        """Predicted wall time of timing every unit with these settings (one round)."""
        total = 0.0
        for t in self.per_call_s.values():
            if t <= 0:
                continue
            if max_seconds is None:
                total += (warmup + reps) * t
                continue
            warm = min(warmup, max(1, math.ceil(max_seconds / 2 / t))) if warmup else 0
            timed = min(reps, max(min_reps, math.ceil(max_seconds / t)))
            total += (warm + timed) * t
        return total

    def reps_for_budget(self, budget_s: float, warmup: int) -> int:
        """The largest uniform ``reps`` (no time cap) whose run fits in ``budget_s``."""
        per_rep = sum(self.per_call_s.values())
        if per_rep <= 0:
            return DEFAULT_REPS
        return max(0, int(budget_s / per_rep - warmup))

    def max_seconds_for_budget(
        self, budget_s: float, reps: int, warmup: int, min_reps: int = 5
    ) -> float | None:
        """The largest per-unit time cap whose run (``reps`` max) fits in ``budget_s``."""
        if self.seconds(reps, warmup) <= budget_s:
            return None
        lo, hi = 0.0, 3600.0
        for _ in range(50):
            mid = (lo + hi) / 2
            if self.seconds(reps, warmup, mid, min_reps) <= budget_s:
                lo = mid
            else:
                hi = mid
        return lo


def estimate_profile(
    spaces: Iterable[str | SearchSpace],
    channels: Iterable[int],
    settings: ProfileSettings,
    probe_reps: int = 2,
    progress: bool = True,
) -> ProfileEstimate:
    """Time every unit of a profile run with 1 warm-up + ``probe_reps`` calls (median)."""
    t0 = time.perf_counter()
    with pinned_threads(settings.threads):
        units = collect_units(spaces, channels, settings.input_size)
    probe = replace(settings, reps=probe_reps, warmup=1, rounds=1, max_seconds=None)
    entries = profile_units(units, probe, progress=progress)
    per_call = {e.key.unit_key: e.median_ms / 1e3 for e in entries}
    return ProfileEstimate(per_call, time.perf_counter() - t0)
