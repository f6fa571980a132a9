"""Benchmark: CPU time to synthesise a training batch (16 x 3 x 128 x 128 by default).

Measures, median over ``--reps`` batches after ``--warmup`` batches:

* ``aligned``: a batch from ``make_loader(SyntheticPairs(...), num_workers=0)``: random
  photo crop, flips/rotations, exposure synthesis, collation;
* ``misaligned``: the same with ``misaligned=True`` (homography warp + valid mask);
* ``synth only``: the batched formation model alone (:func:`synthesize_pair`) on a ready
  ``(B, 3, H, W)`` tensor, with 1 intra-op thread and with torch's default count.

Usage::

    python benchmarks/bench_data.py [--reps 30] [--batch 16] [--crop 128] \
        [--out results/bench_data.txt]

Prints the table and writes it atomically to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

try:
    import nas  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas.data import SyntheticPairs, make_loader, synthesize_pair  # noqa: E402


def _time_loader(misaligned: bool, batch: int, crop: int, reps: int, warmup: int) -> list[float]:
    ds = SyntheticPairs(
        split="train", crop=crop, length=batch * (reps + warmup), misaligned=misaligned, seed=0
    )
    it = iter(make_loader(ds, batch_size=batch, shuffle=True, seed=0, num_workers=0))
    times = []
    for i in range(reps + warmup):
        t0 = time.perf_counter()
        b = next(it)
        dt = time.perf_counter() - t0
        assert b["under"].shape == (batch, 3, crop, crop)
        if i >= warmup:
            times.append(dt * 1e3)
    return times


def _time_synth(batch: int, crop: int, reps: int, warmup: int, threads: int) -> list[float]:
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(batch, 3, crop, crop, generator=g)
    times = []
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for i in range(reps + warmup):
            t0 = time.perf_counter()
            synthesize_pair(gt, g)
            dt = time.perf_counter() - t0
            if i >= warmup:
                times.append(dt * 1e3)
    finally:
        torch.set_num_threads(old)
    return times


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--out", type=Path, default=Path("results/bench_data.txt"))
    a = p.parse_args(argv)

    rows = [
        ("aligned (loader)", _time_loader(False, a.batch, a.crop, a.reps, a.warmup)),
        ("misaligned (loader)", _time_loader(True, a.batch, a.crop, a.reps, a.warmup)),
    ]
    nthreads = torch.get_num_threads()
    for n in sorted({1, nthreads}):
        rows.append(
            (f"synth only, {n} thr", _time_synth(a.batch, a.crop, a.reps, a.warmup, threads=n))
        )
    lines = [
        f"# bench_data: synthetic MEF batch of {a.batch} x 3 x {a.crop} x {a.crop} on CPU",
        f"# torch {torch.__version__}, python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
        f"num_workers=0, reps={a.reps} (after {a.warmup} warm-up), "
        f"load average {os.getloadavg()[0]:.2f}",
        "# loader cases build samples and collate with 1 intra-op thread (nas.data.base)",
        f"# {time.strftime('%Y-%m-%d %H:%M:%S')}  command: python benchmarks/bench_data.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        f"{'case':<22} {'median_ms':>10} {'min_ms':>8} {'max_ms':>8} {'ms/sample':>10}",
    ]
    for name, t in rows:
        med = statistics.median(t)
        lines.append(
            f"{name:<22} {med:>10.2f} {min(t):>8.2f} {max(t):>8.2f} {med / a.batch:>10.3f}"
        )
    text = "\n".join(lines) + "\n"
    print(text, end="")
    _write_atomic(a.out, text)
    return text


if __name__ == "__main__":
    main()
