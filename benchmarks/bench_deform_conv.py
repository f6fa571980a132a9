"""Benchmark :func:`nas.ops.deform_conv.deform_conv2d` against torchvision and ``F.conv2d``.

Shape: input (B, 64, 128, 128), weight (64, 64, 3, 3), padding 1, one offset group, random
small offsets, mask given. Timed in the same run, interleaved (so background load hits all
alike): the pure-PyTorch path, the dispatched call (torchvision's kernel on CUDA when it
imports, :mod:`nas.ops.deform_conv`), torchvision's kernel called directly (when it imports)
and conv2d of the same shape. The table reports median milliseconds and the ratios; on CUDA
``disp/torc`` is the dispatch's overhead over the kernel it calls (target <= 1.2x).

Usage::

    python benchmarks/bench_deform_conv.py [--device cpu] [--threads 2] [--reps N] [--batches 1,4]

The printed text is also written (atomically) to ``results/bench_deform_conv.txt``.

On a machine shared with other busy processes, multi-threaded timings of both ops suffer from
OpenMP workers busy-waiting (GNU OpenMP spins before sleeping), deform_conv2d (several parallel
regions per call) much more than conv2d (one). ``OMP_WAIT_POLICY=PASSIVE`` in the environment
avoids that; the header records its value and the load average.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from nas.latency.timing import sync  # noqa: E402
from nas.ops.deform_conv import (  # noqa: E402
    deform_backend,
    deform_backend_for,
    deform_conv2d,
)
from nas.utils import atomic_write_text  # noqa: E402

C, H, W, KS = 64, 128, 128, 3


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def time_interleaved(
    fns: dict[str, Callable[[], object]], device: torch.device, reps: int, warmup: int
) -> dict[str, list[float]]:
    """Wall times (ms) of each fn; the fns are interleaved rep by rep."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[k].append((time.perf_counter() - t0) * 1e3)
    return times


def make_inputs(B: int, device: torch.device, requires_grad: bool = False) -> dict:
    g = torch.Generator().manual_seed(B)
    x = torch.randn(B, C, H, W, generator=g)
    w = torch.randn(C, C, KS, KS, generator=g) * 0.05
    b = torch.randn(C, generator=g)
    off = torch.randn(B, 2 * KS * KS, H, W, generator=g) * 0.5
    mask = torch.rand(B, KS * KS, H, W, generator=g)
    t = dict(input=x, weight=w, bias=b, offset=off, mask=mask)
    t = {k: v.to(device).requires_grad_(requires_grad) for k, v in t.items()}
    return t


def _torchvision_deform() -> Callable[..., torch.Tensor] | None:
    try:
        from torchvision.ops import deform_conv2d as tv
    except Exception:  # torchvision absent or not importable beside this torch
        return None
    return tv


def candidates(t: dict, backward: bool) -> dict[str, Callable[[], object]]:
    """The calls compared: the pure path, the dispatched call (what the toolkit runs on this
    device), torchvision's kernel when it imports, and conv2d of the same shape."""

    def run(fn: Callable[[], torch.Tensor]) -> Callable[[], object]:
        if not backward:
            return fn

        def step() -> object:
            fn().sum().backward()
            return None

        return step

    def ours(backend: str) -> Callable[[], torch.Tensor]:
        def call() -> torch.Tensor:
            with deform_backend(backend):
                return deform_conv2d(
                    t["input"], t["offset"], t["weight"], t["bias"], padding=1, mask=t["mask"]
                )

        return call

    fns = {"pure": run(ours("torch")), "dispatch": run(ours("auto"))}
    tv = _torchvision_deform()
    if tv is not None:
        fns["torchvision"] = run(
            lambda: tv(t["input"], t["offset"], t["weight"], t["bias"], padding=1, mask=t["mask"])
        )
    # conv2d side: grads for input/weight/bias only (offset and mask have none)
    fns["conv2d"] = run(lambda: F.conv2d(t["input"], t["weight"], t["bias"], padding=1))
    return fns


def bench(B: int, device: torch.device, reps: int, backward: bool) -> dict[str, list[float]]:
    t = make_inputs(B, device, requires_grad=backward)
    fns = candidates(t, backward)
    if backward:
        return time_interleaved(fns, device, reps, warmup=1)
    with torch.inference_mode():
        return time_interleaved(fns, device, reps, warmup=2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=15, help="timed repetitions (forward)")
    ap.add_argument(
        "--bwd-reps", type=int, default=None, help="timed repetitions (fwd+bwd); default reps/3"
    )
    ap.add_argument("--batches", default="1,4", help="comma-separated batch sizes")
    ap.add_argument("--no-backward", action="store_true", help="skip the fwd+bwd timing")
    ap.add_argument("--out", default=str(ROOT / "results" / "bench_deform_conv.txt"))
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    batches = [int(b) for b in args.batches.split(",")]
    bwd_reps = args.bwd_reps or max(3, args.reps // 3)

    has_tv = _torchvision_deform() is not None
    cols = ["pure", "dispatch", *(["torchvision"] if has_tv else []), "conv2d"]
    ref = "torchvision" if has_tv else "conv2d"

    def row(B: int, name: str, r: dict[str, list[float]]) -> str:
        med = {k: statistics.median(v) for k, v in r.items()}
        ratios = f"{med['dispatch'] / med[ref]:>9.2f}x {med['pure'] / med[ref]:>9.2f}x"
        if has_tv:
            ratios += f" {med['dispatch'] / med['conv2d']:>9.2f}x"
        return f"{B:>3} {name:<8} " + " ".join(f"{med[k]:>11.2f}" for k in cols) + " " + ratios

    load0 = os.getloadavg() if hasattr(os, "getloadavg") else None
    lines = [
        "deform_conv2d (nas.ops.deform_conv): the pure-PyTorch path, the dispatched call "
        f"(backend on this device: {deform_backend_for(device)}), torchvision's kernel "
        f"({'imports' if has_tv else 'does not import here'}) and F.conv2d; same shape, same run",
        f"torch {torch.__version__}, device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
        + f", threads {torch.get_num_threads()}, cpu: {cpu_model()} ({os.cpu_count()} logical)",
        f"shape: input (B, {C}, {H}, {W}), weight ({C}, {C}, {KS}, {KS}), padding 1, "
        "1 offset group, offsets ~ N(0, 0.5^2), mask given",
        f"forward: torch.inference_mode, {args.reps} reps; fwd+bwd: out.sum().backward(), "
        f"{bwd_reps} reps (conv2d side: grads for input/weight/bias only)",
        "calls interleaved rep by rep; load average at start: "
        + ("n/a" if load0 is None else " ".join(f"{v:.2f}" for v in load0))
        + f"; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}",
        "",
        "median ms per call, then ratios of medians",
        f"{'B':>3} {'pass':<8} "
        + " ".join(f"{k:>11}" for k in cols)
        + f" {'disp/' + ref[:4]:>10} {'pure/' + ref[:4]:>10}"
        + (f" {'disp/conv':>10}" if has_tv else ""),
    ]
    print("\n".join(lines), flush=True)
    for B in batches:
        lines.append(row(B, "fwd", bench(B, device, args.reps, backward=False)))
        print(lines[-1], flush=True)
    if not args.no_backward:
        for B in batches:
            lines.append(row(B, "fwd+bwd", bench(B, device, bwd_reps, backward=True)))
            print(lines[-1], flush=True)
    if load0 is not None:
        lines.append("load average at end: " + " ".join(f"{v:.2f}" for v in os.getloadavg()))
        print(lines[-1])
    cmd_args = sys.argv[1:] if argv is None else argv
    lines.append(" ".join(["command: python benchmarks/bench_deform_conv.py", *cmd_args]))
    text = "\n".join(lines) + "\n"
    if args.out:
        atomic_write_text(Path(args.out), text)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
