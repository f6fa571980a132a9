"""Benchmark: one bi-level search step per speed setting, step time and peak memory.

One first-order DARTS step of :class:`nas.search.SearchTask` (an alpha step on a validation
batch, then a weight step on a training batch; the latency term is left out, it is a dot
product) for each variant, in the same run on the same device:

* ``fp32``: contiguous NCHW, fp32 (the CPU default);
* ``channels_last``: NHWC memory format (the CUDA default);
* ``bf16``: bf16 autocast for the weight step (``amp: bf16``), NCHW;
* ``bf16+channels_last``: both.

Every variant starts from the same supernet weights and sees the same batches. Reports the
median step time (CUDA: synchronised) over ``--steps`` after ``--warmup`` steps, the ratio to
``fp32``, and the peak memory: allocated GPU memory on CUDA (``max_memory_allocated``), the
process's peak resident set on CPU (cumulative, so only the first variant's figure is its own).

    python benchmarks/bench_search_step.py --device cuda              # the issue's setting
    python benchmarks/bench_search_step.py --device cpu --batch 2 --crop 64 --steps 3

Writes ``results/search_step/<device>.md`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from nas.accel import peak_memory_mb, reset_peak_memory  # noqa: E402
from nas.latency.timing import sync  # noqa: E402
from nas.search import SearchConfig, SearchTask  # noqa: E402
from nas.space import load_space  # noqa: E402
from nas.supernet import Supernet  # noqa: E402
from nas.utils import atomic_write_text, resolve_device  # noqa: E402

VARIANTS: dict[str, dict[str, object]] = {
    "fp32": dict(amp="off", channels_last=False),
    "channels_last": dict(amp="off", channels_last=True),
    "bf16": dict(amp="bf16", channels_last=False),
    "bf16+channels_last": dict(amp="bf16", channels_last=True),
}


def step_times(
    variant: str,
    space: str,
    channels: int,
    batch: int,
    crop: int,
    steps: int,
    warmup: int,
    device: torch.device,
) -> tuple[list[float], float | None]:
    """Seconds per search step of ``variant`` and the peak memory (MiB; None on CPU)."""
    torch.manual_seed(0)
    net = Supernet(load_space(space).with_channels(channels))
    cfg = SearchConfig(eta=0.0, **VARIANTS[variant])  # type: ignore[arg-type]
    task = SearchTask(net, cfg, None, device, [])
    task.loss_ref = 0.1
    g = torch.Generator().manual_seed(1)

    def make() -> dict[str, torch.Tensor]:
        keys = ("under", "over", "gt")
        return {k: torch.rand(batch, 3, crop, crop, generator=g).to(device) for k in keys}

    data = [(make(), make()) for _ in range(2)]
    reset_peak_memory(device)
    times: list[float] = []
    for i in range(warmup + steps):
        b, v = data[i % 2]
        sync(device)
        t0 = time.perf_counter()
        task.train_step(b, v, epoch=10**6)
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times, peak_memory_mb(device)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--space", default="crmef")
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per variant")
    p.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    p.add_argument("--out", type=Path, help="report file (default: results/search_step/<dev>.md)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    lines = [
        f"# One search step: {args.space}, C={args.channels}, batch {args.batch}, "
        f"{args.crop}x{args.crop}, first order",
        "",
        f"device {device} ({name}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads; median of {args.steps} steps after "
        f"{args.warmup} warm-up steps; command: `python benchmarks/bench_search_step.py "
        + " ".join(sys.argv[1:] if argv is None else argv)
        + "`",
        "",
        f"| variant | s/step (median) | speed-up vs {args.variants[0]} | peak memory |",
        "|---|---:|---:|---:|",
    ]
    base: float | None = None
    for v in args.variants:
        times, peak = step_times(
            v, args.space, args.channels, args.batch, args.crop, args.steps, args.warmup, device
        )
        med = statistics.median(times)
        base = base if base is not None else med
        if peak is None:
            peak_text = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB RSS"
        else:
            peak_text = f"{peak:,.0f} MiB GPU"
        lines.append(f"| {v} | {med:.4f} | {base / med:.2f}x | {peak_text} |")
        print(lines[-1], flush=True)
    out = args.out or ROOT / "results" / "search_step" / f"{device.type}.md"
    atomic_write_text(out, "\n".join(lines) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
