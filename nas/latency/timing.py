"""Timing primitives of the latency profiler: the harness :func:`time_fn`, the summary
:class:`TimingStats`, thread pinning and checks for background load.

:func:`time_fn` times units for the tables (:mod:`nas.latency.profiler`) and whole networks
for the predictor check (:mod:`nas.latency.validate`), so both are comparable.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nas.accel import keep_freed_memory


@dataclass(frozen=True)
class TimingStats:
    """Summary of repeated timings, in milliseconds."""

    median_ms: float
    mean_ms: float
    std_ms: float
    p10_ms: float
    p90_ms: float
    min_ms: float
    n: int

    @classmethod
    def from_seconds(cls, samples: Sequence[float]) -> TimingStats:
        if not samples:
            raise ValueError("no timing samples")
        ms = sorted(1e3 * s for s in samples)
        return cls(
            median_ms=statistics.median(ms),
            mean_ms=statistics.fmean(ms),
            std_ms=statistics.pstdev(ms) if len(ms) > 1 else 0.0,
            p10_ms=_quantile(ms, 0.10),
            p90_ms=_quantile(ms, 0.90),
            min_ms=ms[0],
            n=len(ms),
        )


def _quantile(sorted_vals: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of an already sorted sequence (numpy's default)."""
    if len(sorted_vals) == 1:
        return sorted_vals[0]
    pos = q * (len(sorted_vals) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


def system_load() -> list[float] | None:
    """1/5/15-minute load averages (None where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def other_runnable(samples: int = 5, interval_s: float = 0.05) -> float | None:
    """Mean number of *other* runnable threads right now (``procs_running`` of /proc/stat,
    minus this one), or None where unavailable. Unlike the load average it does not lag."""
    vals = []
    for i in range(samples):
        try:
            with open("/proc/stat") as f:
                for line in f:
                    if line.startswith("procs_running"):
                        vals.append(int(line.split()[1]) - 1)
                        break
        except (OSError, ValueError, IndexError):
            return None
        if i + 1 < samples:
            time.sleep(interval_s)
    return sum(vals) / len(vals) if vals else None


def load_warning(threads: int, busy: float | None = None) -> str | None:
    """A warning when background load will distort CPU timings, else None.

    With ``threads`` intra-op threads on ``n`` CPUs, other runnable processes make the
    threads wait for each other at every parallel region (often milliseconds per op).
    ``busy``: other runnable processes (default: sampled now with :func:`other_runnable`).
    """
    n = os.cpu_count() or 1
    if busy is None:
        busy = other_runnable()
    if busy is None:
        load = system_load()
        busy = load[0] if load else None
    if busy is None or busy <= max(0.5, n - threads + 0.5):
        return None
    hint = "use --threads 1 and " if threads > 1 else "use "
    return (
        f"warning: ~{busy:.1f} other runnable process(es) on {n} CPU(s) while timing with "
        f"{threads} thread(s): timings will be inflated and noisy (multi-threaded ops suffer "
        f"most). Profile on an idle machine, or {hint}--statistic min for predictor checks."
    )


@contextlib.contextmanager
def pinned_threads(threads: int | None) -> Iterator[int]:
    """Set ``torch.set_num_threads(threads)`` for the block, restoring the old value."""
    old = torch.get_num_threads()
    n = old if threads is None else int(threads)
    if n != old:
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        if n != old:
            torch.set_num_threads(old)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA; no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(
    fn: Callable[[], Any],
    device: torch.device,
    reps: int,
    warmup: int = 0,
    max_seconds: float | None = None,
    min_reps: int = 1,
) -> list[float]:
    """Call ``fn`` ``warmup`` times untimed, then time up to ``reps`` calls (seconds each).

    With ``max_seconds``, timing stops once that much time was spent in timed calls (after at
    least ``min_reps``), and the warm-up stops after ``max_seconds / 2`` (after one call).

    CPU: ``time.perf_counter`` around each call. CUDA: ``torch.cuda.synchronize`` before and
    after each call, so the kernel time is inside the interval. Python's garbage collector
    is paused while timing (as ``timeit`` does). The allocator keeps freed memory
    (:func:`nas.accel.keep_freed_memory`), as in every configured run.
    """
    keep_freed_memory()
    t_w = time.perf_counter()
    for _ in range(warmup):
        fn()
        if max_seconds is not None:  # a time budget also caps the warm-up (>= 1 call)
            sync(device)
            if time.perf_counter() - t_w >= max_seconds / 2:
                break
    sync(device)
    samples: list[float] = []
    gc_was = gc.isenabled()
    gc.disable()
    try:
        spent = 0.0
        for _ in range(reps):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                t0 = time.perf_counter()
                fn()
                torch.cuda.synchronize(device)
            else:
                t0 = time.perf_counter()
                fn()
            dt = time.perf_counter() - t0
            samples.append(dt)
            spent += dt
            if max_seconds is not None and spent >= max_seconds and len(samples) >= min_reps:
                break
    finally:
        if gc_was:
            gc.enable()
    return samples
