"""Which input sizes one exported pyramid / fast net takes, and what it costs against eager.

Exports a model with ``torch.export`` at a deployment size (``nas.export``'s checked path), then
runs the program at other sizes: each either matches the eager model or is refused by a guard
(another pyramid shape). With ``--time``, the exported module and the eager model are timed in
turns at the deployment size (median of ``--rounds`` x ``--reps`` calls, one thread).

    python benchmarks/export_sizes.py --model results/mefb/models/searched-fast-eta0.03.pt \
        --input-size 768 1024 --out results/export/fast-eta0.03-768x1024.md
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd
import torch

from nas import export
from nas.accel import keep_freed_memory
from nas.models import resolve_model
from nas.report import markdown_table
from nas.utils import atomic_write_text

SIZES = ((514, 700), (600, 800), (767, 1023), (1000, 1000), (512, 768), (1080, 1920))


def _median_ms(fn, u, o, reps: int, rounds: int) -> float:
    times = []
    with torch.no_grad():
        fn(u, o)
        for _ in range(rounds * reps):
            t = time.perf_counter()
            fn(u, o)
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--input-size", type=int, nargs=2, default=(768, 1024), metavar=("H", "W"))
    p.add_argument("--sizes", type=int, nargs="+", help="H W pairs to try (default: a set)")
    p.add_argument("--time", action="store_true", help="time exported vs eager")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    keep_freed_memory()
    sizes = SIZES if not args.sizes else tuple(zip(args.sizes[::2], args.sizes[1::2]))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "net.pt2"
        t0 = time.perf_counter()
        report = export.export_model(
            args.model, "torch-export", out, input_size=tuple(args.input_size)
        )
        export_s = time.perf_counter() - t0
        if not report["ok"]:
            print(f"error: {report['error']}")
            return 1
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="No complete tensor found")
            program = torch.export.load(out).module()
    eager = resolve_model(args.model).model.eval()
    rows = []
    for h, w in sizes:
        u, o = export.check_pair_inputs((1, 3, h, w), seed=h + w)
        with torch.no_grad():
            try:
                diff = (program(u, o) - eager(u, o)).abs().max().item()
                rows.append({"size": f"{h} x {w}", "runs": "yes", "max abs diff": f"{diff:.2g}"})
            except Exception as e:  # noqa: BLE001 - a refused size is a result here
                reason = " ".join(str(e).split())[:90]
                rows.append({"size": f"{h} x {w}", "runs": "refused", "max abs diff": reason})
    H, W = args.input_size
    checks = "; ".join(
        f"{'x'.join(map(str, c['shape']))}: {c['max_abs_diff']:.2g}" for c in report["checks"]
    )
    lines = [
        f"# `{args.model}` exported at {H} x {W}",
        "",
        f"`python benchmarks/export_sizes.py --model {args.model} --input-size {H} {W}"
        f"{' --time' if args.time else ''}`; export and check took {export_s:.0f} s; checks: "
        + checks,
        "",
        markdown_table(pd.DataFrame(rows), list(rows[0])),
    ]
    if args.time:
        u, o = export.check_pair_inputs((1, 3, H, W))
        ms = {"eager": [], "exported": []}
        for _ in range(args.rounds):
            ms["eager"].append(_median_ms(eager, u, o, args.reps, 1))
            ms["exported"].append(_median_ms(program, u, o, args.reps, 1))
        e, x = statistics.median(ms["eager"]), statistics.median(ms["exported"])
        lines += [
            "",
            f"At {H} x {W}, one thread: eager {e:.1f} ms, exported {x:.1f} ms ({x / e:.2f}x).",
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        atomic_write_text(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
