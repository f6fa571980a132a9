"""Benchmark: does a larger eta give a faster derived net? (CRMEF Table VIII, on this CPU)

Searches with eta in {0, 0.5, 1, 5} on the synthetic data (same seed, same budget: the
``small`` search preset, crmef space at C=16, 64x64 latency input), exports each derived net,
then measures every derived net's latency on this machine in ONE interleaved run
(:func:`nas.evaluate.evaluate_models`, the profiler's timing harness) together with its
validation PSNR with the weights inherited from the supernet. Prints and records:

* per eta: genotype, table-predicted ms, measured ms, validation PSNR, search seconds per
  epoch and peak resident memory of the search process;
* whether measured latency falls as eta rises, and the eta=0 / eta=1 latency ratio (target
  >= 2x; the paper's Table VIII reports 2.2-3.0x on its GPU).

    python benchmarks/eta_sweep.py [--etas 0 0.5 1 5] [--preset small] [--threads 2]
        [--channels 32] [--epochs N] [--out results/eta_sweep_c32]

Outputs go to ``results/eta_sweep/`` (CSV, Markdown, the run folders' genotypes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nas.evaluate import evaluate_models  # noqa: E402
from nas.runs import RunDir  # noqa: E402
from nas.search import PRESETS  # noqa: E402
from nas.utils import atomic_write_text  # noqa: E402

_CHILD = """
import json, resource, sys, time
from nas import search
t0 = time.perf_counter()
rc = search.main(sys.argv[1:])
print("BENCH " + json.dumps({"rc": rc, "seconds": time.perf_counter() - t0,
      "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def ensure_table(preset: dict, threads: int) -> None:
    """Profile the rows this preset's search needs (only missing ones) at batch 1."""
    size = str(preset["latency_input"])
    cmd = [
        sys.executable,
        "-m",
        "nas.profile",
        "--device",
        "cpu",
        "--space",
        preset["space"],
        "--channels",
        str(preset["channels"]),
        "--input-size",
        size,
        size,
        "--batch",
        "1",
        "--threads",
        str(threads),
        "--reps",
        "100",
        "--warmup",
        "5",
        "--rounds",
        "5",
        "--only-missing",
        "--no-progress",
    ]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def run_search(eta: float, preset: str, runs: Path, threads: int, extra: list[str]) -> dict:
    name = f"eta{eta:g}"
    args = [
        "--preset",
        preset,
        "--eta",
        str(eta),
        "--run-name",
        name,
        "--runs-dir",
        str(runs),
        "--device",
        "cpu",
        "--no-progress",
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    print(f"$ python -m nas.search {' '.join(args)}", flush=True)
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise RuntimeError(f"search eta={eta} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    stats = json.loads(out.stdout.rsplit("BENCH ", 1)[1])
    rows = RunDir(runs / name, resume=True).read_metrics()
    stats["s_per_epoch"] = sum(r["epoch_seconds"] for r in rows) / len(rows)
    stats["run"] = str(runs / name)
    return stats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--etas", type=float, nargs="+", default=[0.0, 0.5, 1.0, 5.0])
    p.add_argument("--preset", default="small", choices=sorted(PRESETS))
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--out", type=Path, default=ROOT / "results" / "eta_sweep")
    p.add_argument("--reps", type=int, default=60)
    p.add_argument("--channels", type=int, help="override the preset's width")
    p.add_argument("--epochs", type=int, help="override the preset's search epochs")
    args = p.parse_args(argv)
    preset = dict(PRESETS[args.preset])
    extra: list[str] = []
    for key in ("channels", "epochs"):
        if getattr(args, key) is not None:
            preset[key] = getattr(args, key)
            extra += [f"--{key}", str(getattr(args, key))]
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    ensure_table(preset, args.threads)
    runs = args.out / "runs"
    stats = {eta: run_search(eta, args.preset, runs, args.threads, extra) for eta in args.etas}
    size = preset["latency_input"]
    df = evaluate_models(
        [stats[e]["run"] for e in args.etas],
        split="val",
        crop=preset["crop"],
        max_images=16,
        device="cpu",
        latency_size=size,
        reps=args.reps,
        rounds=6,
        warmup=5,
        threads=args.threads,
        allow_untrained=True,
    )
    table = pd.DataFrame(
        {
            "eta": args.etas,
            "genotype": df["genotype"].tolist(),
            "predicted_ms": df["predicted_ms"].round(3).tolist(),
            "measured_ms": df["latency_ms"].round(3).tolist(),
            "val_psnr": df["psnr"].round(2).tolist(),
            "params": df["params"].tolist(),
            "search_s_per_epoch": [round(stats[e]["s_per_epoch"], 1) for e in args.etas],
            "search_peak_rss_mb": [round(stats[e]["maxrss_mb"]) for e in args.etas],
        }
    )
    ms = table["measured_ms"].tolist()
    falls = all(b <= a * 1.05 for a, b in zip(ms, ms[1:]))
    ratio = None
    if 0.0 in args.etas and 1.0 in args.etas:
        ratio = ms[args.etas.index(0.0)] / ms[args.etas.index(1.0)]
    lines = [
        f"# eta sweep ({args.preset} preset: space {preset['space']}, C={preset['channels']}, "
        f"{preset['epochs']} epochs, latency at {size}x{size}, batch 1, {args.threads} threads)",
        "",
        f"device: {df.attrs.get('meta', {}).get('device_fingerprint', 'cpu')}, "
        f"torch {torch.__version__}; PSNR: derived nets with inherited supernet weights on "
        f"{int(df['images'].iloc[0])} synthetic validation crops",
        "",
        table.to_markdown(index=False) if _has_tabulate() else table.to_string(index=False),
        "",
        f"measured latency non-increasing in eta (5% noise allowance): {falls}",
        f"eta=0 / eta=1 measured latency ratio: {ratio:.2f}x (target >= 2x)" if ratio else "",
        f"total benchmark time: {time.perf_counter() - t0:.0f} s",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "eta_sweep.md", text)
    atomic_write_text(args.out / "eta_sweep.csv", table.to_csv(index=False))
    return 0


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    raise SystemExit(main())
