"""Benchmark: supernet forward+backward time and peak memory, and one search step.

For each width (C = 16, 32) and space (crmef, crmef-misaligned): a supernet training step
(forward + backward of the L1 loss) at batch 4, 64x64, median over reps, and the peak
resident memory of a fresh process doing it (``ru_maxrss``, so each configuration runs in its
own subprocess). Then a full bi-level search step (alpha step on a validation batch + weight
step) at the default search configuration (crmef, C = 32, batch 8, 128x128), from which the
time of a default search epoch (``samples_per_epoch / batch`` steps) is extrapolated.

    python benchmarks/bench_supernet.py [--reps 5] [--threads 2]

Writes ``results/bench_supernet.txt``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

_CHILD = r"""
import json, resource, sys, time, statistics
import torch, torch.nn.functional as F
from nas.supernet import Supernet
from nas.space import load_space
space, mode = sys.argv[1], sys.argv[6]
C, B, S, reps = (int(a) for a in sys.argv[2:6])
torch.manual_seed(0)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
net = Supernet(load_space(space).with_channels(C))
batch = {k: torch.rand(B, 3, S, S) for k in ("under", "over", "gt")}
times = []
if mode == "step":
    from nas.search import SearchConfig, SearchTask
    task = SearchTask(net, SearchConfig(eta=0.0), None, torch.device("cpu"), [])
    task.loss_ref = 0.1
    for _ in range(reps + 1):
        t0 = time.perf_counter(); task.train_step(batch, dict(batch), epoch=99)
        times.append(time.perf_counter() - t0)
else:
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        net.zero_grad(set_to_none=True)
        F.l1_loss(net(batch["under"], batch["over"]), batch["gt"]).backward()
        times.append(time.perf_counter() - t0)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("BENCH " + json.dumps({"ms": 1e3 * statistics.median(times[1:]),
      "peak_mb": peak / 1024, "model_mb": base / 1024,
      "params": sum(p.numel() for p in net.parameters())}))
"""


def run(space: str, C: int, B: int, S: int, reps: int, mode: str, threads: int) -> dict:
    env = {"OMP_NUM_THREADS": str(threads), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, space, str(C), str(B), str(S), str(reps), mode],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.rsplit("BENCH ", 1)[1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args(argv)
    lines = [
        f"supernet benchmark: torch {torch.__version__}, {args.threads} threads, CPU: {_cpu()}",
        "",
        "forward+backward (L1 loss) at batch 4, 64x64; median of reps; peak RSS of the process",
        f"{'space':18} {'C':>3} {'params':>10} {'ms/step':>9} {'peak MB':>8}",
    ]
    t0 = time.perf_counter()
    for space in ("crmef", "crmef-misaligned"):
        for C in (16, 32):
            r = run(space, C, 4, 64, args.reps, "fwdbwd", args.threads)
            lines.append(
                f"{space:18} {C:>3} {r['params']:>10,} {r['ms']:>9.1f} {r['peak_mb']:>8.0f}"
            )
    r = run("crmef", 32, 8, 128, max(2, args.reps // 2), "step", args.threads)
    steps = 256 // 8
    lines += [
        "",
        "one bi-level search step (alpha step on a val batch + weight step), default search",
        "configuration (crmef, C=32, batch 8, 128x128, first order):",
        f"  {r['ms'] / 1e3:.2f} s/step, peak RSS {r['peak_mb']:.0f} MB -> a default epoch "
        f"({steps} steps of 256 samples) ~ {steps * r['ms'] / 6e4:.1f} min on this CPU",
        "",
        f"total benchmark time {time.perf_counter() - t0:.0f} s",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "results" / "bench_supernet.txt"
    from nas.utils import atomic_write_text

    atomic_write_text(out, text)
    return 0


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
