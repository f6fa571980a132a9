"""Which input sizes one exported pyramid / fast net takes, and what it costs against eager.

Exports a model with ``torch.export`` (and to ONNX when ``onnx``, ``onnxscript`` and
``onnxruntime`` are installed: ``pip install .[export] onnxruntime``) at a deployment size,
through ``nas.export``'s checked path, then runs each file at other sizes: each either matches
the eager model or is refused (another pyramid shape). With ``--time``, the eager model, the
exported program, the ONNX Runtime session and OpenCV's Mertens (default weights) are timed in
turns at the deployment size, one thread each (median over ``--rounds`` x ``--reps`` calls).

    python benchmarks/export_sizes.py --model results/mefb/models/searched-fast-eta0.03.pt \
        --input-size 768 1024 --time --out results/export/fast-eta0.03-768x1024.md
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor

from nas import export
from nas.accel import keep_freed_memory
from nas.mefb import _opencv_threads
from nas.models import resolve_model
from nas.report import markdown_table
from nas.utils import atomic_write_text

SIZES = ((514, 700), (600, 800), (767, 1023), (1000, 1000), (512, 768), (1080, 1920))
Runner = Callable[[Tensor, Tensor], Tensor]


def _onnx_runner(path: Path) -> Runner:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(u: Tensor, o: Tensor) -> Tensor:
        feeds = dict(zip(names, (u.numpy(), o.numpy())))
        return torch.from_numpy(session.run(None, feeds)[0])

    return run


def _exported(model: str, size: tuple[int, int], tmp: Path) -> tuple[dict[str, Runner], str]:
    """The model's torch.export program (and ONNX session when possible), with check lines."""
    runners: dict[str, Runner] = {}
    notes = []
    fmts = ["torch-export"]
    if all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime")):
        fmts.append("onnx")
    for fmt in fmts:
        out = tmp / f"net{export.SUFFIXES[fmt]}"
        t0 = time.perf_counter()
        report = export.export_model(model, fmt, out, input_size=size)
        secs = time.perf_counter() - t0
        if not report["ok"]:
            raise SystemExit(f"error: {report['error']}")
        checks = "; ".join(
            f"{'x'.join(map(str, c['shape']))}: {c['max_abs_diff']:.2g}" for c in report["checks"]
        )
        notes.append(f"{fmt} ({report.get('exporter', 'torch.export')}): {secs:.0f} s, {checks}")
        if fmt == "torch-export":
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="No complete tensor found")
                runners["torch.export"] = torch.export.load(out).module()
        else:
            runners["onnxruntime"] = _onnx_runner(out)
    return runners, "; ".join(notes)


def _try(run: Runner, ref: Tensor, u: Tensor, o: Tensor) -> str:
    try:
        return f"{(run(u, o) - ref).abs().max().item():.2g}"
    except Exception as e:  # noqa: BLE001 - a refused size is a result here
        return "refused: " + " ".join(str(e).split())[:80]


def _timings(runners: dict[str, Runner], shape: tuple[int, ...], reps: int, rounds: int) -> dict:
    u, o = export.check_pair_inputs(shape)
    times: dict[str, list[float]] = {k: [] for k in runners}
    with torch.no_grad(), _opencv_threads(1):
        for run in runners.values():
            run(u, o)
        for _ in range(rounds):
            for name, run in runners.items():
                for _ in range(reps):
                    t = time.perf_counter()
                    run(u, o)
                    times[name].append((time.perf_counter() - t) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--input-size", type=int, nargs=2, default=(768, 1024), metavar=("H", "W"))
    p.add_argument("--sizes", type=int, nargs="+", help="H W pairs to try (default: a set)")
    p.add_argument("--time", action="store_true", help="time eager, exported files, Mertens")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    keep_freed_memory()
    H, W = args.input_size
    sizes = SIZES if not args.sizes else tuple(zip(args.sizes[::2], args.sizes[1::2]))
    with tempfile.TemporaryDirectory() as tmp:
        runners, notes = _exported(args.model, (H, W), Path(tmp))
        eager = resolve_model(args.model).model.eval()
        rows = []
        for h, w in sizes:
            u, o = export.check_pair_inputs((1, 3, h, w), seed=h + w)
            with torch.no_grad():
                ref = eager(u, o)
                rows.append(
                    {"size": f"{h} x {w}"} | {k: _try(r, ref, u, o) for k, r in runners.items()}
                )
        lines = [
            f"# `{args.model}` exported at {H} x {W}",
            "",
            f"`python benchmarks/export_sizes.py --model {args.model} --input-size {H} {W}"
            f"{' --time' if args.time else ''}`. Exports and their checks: {notes}.",
            "",
            "Max abs difference from the eager model at other sizes (one graph per pyramid shape):",
            "",
            markdown_table(pd.DataFrame(rows), list(rows[0])),
        ]
        if args.time:
            mertens = resolve_model("mertens-default", allow_classical=True).model
            ms = _timings(
                {"eager": eager, **runners, "mertens-default": mertens},
                (1, 3, H, W),
                args.reps,
                args.rounds,
            )
            cells = [
                {"runs": k, "ms": f"{v:.1f}", "vs eager": f"{v / ms['eager']:.2f}x"}
                for k, v in ms.items()
            ]
            lines += [
                "",
                f"Time per pair at {H} x {W}, one thread, in turns (median of "
                f"{args.rounds} x {args.reps} calls):",
                "",
                markdown_table(pd.DataFrame(cells), list(cells[0])),
            ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        atomic_write_text(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
