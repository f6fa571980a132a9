"""Benchmark: inference latency of every registry network and derived nets, per speed setting.

Each model (all learned registry models at their default widths, plus any ``--model``
references: genotype files, search or training runs, model files) runs ``net(under, over)``
at batch ``--batch`` and ``--size H W`` (default 1 x 1024x768, the deployment size) under:

* ``eager``: contiguous NCHW, eval + inference mode (what the latency tables time);
* ``channels_last``: NHWC memory format (:func:`nas.accel.prepare_inference`'s CUDA default);
* ``compile``: ``torch.compile`` on top of the default format (``reduce-overhead`` mode, i.e.
  CUDA graphs, on CUDA). Its compile time is reported apart; only the calls after warm-up are
  timed.

All variants of one model are timed in the same run, interleaved round by round. The report
gives median milliseconds and each variant's speed-up over ``eager``; a setting is worth
turning on where it helps by more than the run-to-run noise (see the spread column).

    python benchmarks/bench_inference.py --device cuda
    python benchmarks/bench_inference.py --device cpu --size 256 256 --variants eager channels_last

Writes ``results/inference/<device>-b<batch>-<H>x<W>.md`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from nas.accel import prepare_inference, to_memory_format  # noqa: E402
from nas.baselines import list_models  # noqa: E402
from nas.latency.timing import time_fn  # noqa: E402
from nas.models import resolve_model  # noqa: E402
from nas.utils import atomic_write_text, resolve_device  # noqa: E402

VARIANTS = ("eager", "channels_last", "compile")


def prepared(model: torch.nn.Module, variant: str, device: torch.device) -> tuple:
    """(callable model, whether its inputs go channels_last)."""
    import copy

    m = copy.deepcopy(model)
    if variant == "eager":
        return prepare_inference(m, device, channels_last=False), False
    if variant == "channels_last":
        return prepare_inference(m, device, channels_last=True), True
    cl = device.type == "cuda"
    return prepare_inference(m, device, channels_last=cl, compile=True), cl


def bench_model(
    model: torch.nn.Module,
    variants: list[str],
    device: torch.device,
    size: tuple[int, int],
    batch: int,
    reps: int,
    rounds: int,
    warmup: int,
) -> dict[str, dict[str, float]]:
    """Per variant: median / p10 / p90 ms and the first call's seconds (compile time)."""
    g = torch.Generator().manual_seed(0)
    x = [torch.rand(batch, 3, *size, generator=g).to(device) for _ in range(2)]
    runs = {}
    first: dict[str, float] = {}
    with torch.inference_mode():
        for v in variants:
            m, cl = prepared(model, v, device)
            xi = [to_memory_format(t, cl) for t in x]
            t0 = time.perf_counter()
            m(*xi)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            first[v] = time.perf_counter() - t0
            runs[v] = (m, xi)
        samples: dict[str, list[float]] = {v: [] for v in variants}
        per_round = max(1, reps // rounds)
        for r in range(rounds):
            for v, (m, xi) in runs.items():
                samples[v] += time_fn(
                    lambda m=m, xi=xi: m(*xi), device, per_round, warmup=warmup if r == 0 else 1
                )
    out = {}
    for v, s in samples.items():
        q = statistics.quantiles([1e3 * t for t in s], n=10) if len(s) > 1 else [1e3 * s[0]] * 9
        out[v] = {
            "ms": 1e3 * statistics.median(s),
            "p10": q[0],
            "p90": q[-1],
            "first_s": first[v],
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--size", type=int, nargs=2, default=[768, 1024], metavar=("H", "W"))
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--models", nargs="*", default=None, help="default: every registry network")
    p.add_argument("--model", action="append", default=[], help="extra model reference")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--reps", type=int, default=20, help="timed calls per model and variant")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    size = (args.size[0], args.size[1])
    names = list_models(kind="network") if args.models is None else args.models
    refs = [*names, *args.model]
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    lines = [
        f"# Inference latency at batch {args.batch}, {size[0]}x{size[1]} (H x W)",
        "",
        f"device {device} ({dev_name}), torch {torch.__version__}, {torch.get_num_threads()} "
        f"CPU threads; median of {args.reps} calls in {args.rounds} interleaved rounds after "
        f"{args.warmup} warm-up calls; command: `python benchmarks/bench_inference.py "
        + " ".join(sys.argv[1:] if argv is None else argv)
        + "`",
        "",
        "| model | params | "
        + " | ".join(f"{v} ms (p10-p90)" for v in args.variants)
        + " | "
        + " | ".join(f"{v} speed-up" for v in args.variants[1:])
        + " | first call s |",
        "|---|---:|" + "---:|" * (2 * len(args.variants) - 1) + "---|",
    ]
    for ref in refs:
        resolved = resolve_model(ref)
        model = resolved.model
        params = sum(p.numel() for p in model.parameters())
        r = bench_model(
            model, args.variants, device, size, args.batch, args.reps, args.rounds, args.warmup
        )
        base = r[args.variants[0]]["ms"]
        cells = [f"{r[v]['ms']:.2f} ({r[v]['p10']:.2f}-{r[v]['p90']:.2f})" for v in args.variants]
        gains = [f"{base / r[v]['ms']:.2f}x" for v in args.variants[1:]]
        first = ", ".join(f"{v} {r[v]['first_s']:.1f}" for v in args.variants)
        lines.append(
            f"| {resolved.name} | {params:,} | " + " | ".join(cells + gains) + f" | {first} |"
        )
        print(lines[-1], flush=True)
    out = args.out or (
        ROOT / "results" / "inference" / f"{device.type}-b{args.batch}-{size[0]}x{size[1]}.md"
    )
    atomic_write_text(out, "\n".join(lines) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
