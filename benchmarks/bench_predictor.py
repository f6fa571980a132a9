"""Benchmark the latency predictor: table sum vs end-to-end latency of random derived nets.

Configuration (chosen to fit a 2-core CPU in a few minutes while keeping the op choice
visible in the latency): space ``crmef``, width C=32, input 64x64, batch 1, 1 CPU thread,
warm-up 3, 100 timed calls per unit and per net in 10 interleaved rounds. Steps:

1. profile every unit of the space at these settings (the table
   ``latency_tables/<fingerprint>-b1-64x64.csv``, rows merged, written atomically) -- the
   predictor always uses a table profiled with the same settings as the measurements;
2. sample 20 calibration + 30 validation genotypes (disjoint, seeded), build the derived nets
   and measure each end to end with the same harness (interleaved rounds);
3. for the ``median`` and the ``min`` statistic (the same statistic for unit rows and nets):
   raw MAPE / Kendall tau / share within +-10 %, then the affine calibration fitted on the
   calibration nets and the same metrics on the validation nets; the calibrations are stored
   in the table's sidecar;
4. write ``results/latency/bench_predictor-<table>.txt`` (this printout) plus per-statistic
   CSV / PNG / YAML reports, all atomically.

``--profile-times`` also times the quick profile (crmef + crmef-misaligned, C 16/32/64) into a
temporary folder and estimates the full default profile from a probe of every unit.

Usage::

    python benchmarks/bench_predictor.py [--channels 32] [--input-size 64 64] [--batch 1]
        [--threads 1] [--reps 100] [--rounds 10] [--n 30] [--calibrate 20] [--profile-times]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from nas.latency.profiler import (  # noqa: E402
    DEFAULT_CHANNELS,
    DEFAULT_CPU_MAX_SECONDS,
    DEFAULT_SPACES,
    ProfileSettings,
    estimate_profile,
    profile_spaces,
)
from nas.latency.timing import system_load  # noqa: E402
from nas.latency.validate import (  # noqa: E402
    analyse,
    measure_genotypes,
    split_genotypes,
    store_report_calibration,
    write_report,
)
from nas.space import load_space  # noqa: E402
from nas.utils import atomic_write_many  # noqa: E402

TARGET_WITHIN10, TARGET_TAU = 90.0, 0.9


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--space", default="crmef")
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--input-size", nargs=2, type=int, default=[64, 64])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=100)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--n", type=int, default=30, help="validation nets")
    p.add_argument("--calibrate", type=int, default=20, help="calibration nets (disjoint)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "latency_tables")
    p.add_argument("--results", type=Path, default=ROOT / "results" / "latency")
    p.add_argument("--profile-times", action="store_true", help="also time quick/full profiles")
    p.add_argument(
        "--profile-threads",
        type=int,
        default=None,
        help="CPU threads for --profile-times (default: torch's, as python -m nas.profile)",
    )
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def profile_times(args: argparse.Namespace, lines: list[str]) -> None:
    """Time the quick profile for real; estimate the full default one from a probe."""
    quick = ProfileSettings.quick_defaults(device=args.device, threads=args.profile_threads)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        rep = profile_spaces(
            DEFAULT_SPACES, DEFAULT_CHANNELS, quick, tmp, progress=not args.no_progress, log=None
        )
        dt = time.perf_counter() - t0
    lines.append(
        f"quick profile (python -m nas.profile --device {args.device} --quick: "
        f"{' + '.join(DEFAULT_SPACES)}, C {DEFAULT_CHANNELS}, batch 1, 64x64, 25 reps, "
        f"{quick.resolved_threads} thread(s)): {dt:.0f} s for {rep.profiled} units"
    )
    full = ProfileSettings(
        device=args.device, threads=args.profile_threads, max_seconds=DEFAULT_CPU_MAX_SECONDS
    )
    est = estimate_profile(DEFAULT_SPACES, DEFAULT_CHANNELS, full, progress=not args.no_progress)
    per_rep = sum(est.per_call_s.values())
    lines.append(
        f"full default profile (python -m nas.profile --device {args.device}: batch 16, "
        f"128x128, {full.resolved_threads} thread(s)): {est.units} units, one call of each "
        f"{per_rep:.1f} s (probe {est.probe_seconds:.0f} s)"
    )
    for reps in (1000, 100, 20):
        mins = est.seconds(reps, full.warmup) / 60
        lines.append(f"  --reps {reps:4d} --warmup {full.warmup}: ~{mins:.0f} min")
    mins = est.seconds(1000, full.warmup, full.max_seconds, full.min_reps) / 60
    lines.append(
        f"  the CPU default (--reps 1000 --warmup {full.warmup} --max-seconds "
        f"{full.max_seconds:g}): ~{mins:.0f} min"
    )
    budget = 30 * 60
    r = est.reps_for_budget(budget, 2)
    cap = est.max_seconds_for_budget(budget, 1000, 2)
    lines.append(f"  fits 30 min: --reps {r} --warmup 2 (uniform)")
    if cap is not None:
        lines.append(f"  or --reps 1000 --warmup 2 --max-seconds {cap:.2f} (per-unit time budget)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    space = load_space(args.space)
    H, W = args.input_size
    settings = ProfileSettings(
        device=args.device,
        batch=args.batch,
        input_size=(H, W),
        warmup=args.warmup,
        reps=args.reps,
        rounds=args.rounds,
        threads=args.threads,
        seed=args.seed,
    )
    lines = [
        f"bench_predictor: {space.name} C={args.channels}, {H}x{W}, batch {args.batch}, "
        f"{settings.resolved_threads} thread(s), {args.reps} reps / {args.warmup} warm-up / "
        f"{args.rounds} rounds, device {settings.fingerprint}",
        f"load average at start: {system_load()}",
    ]
    t0 = time.perf_counter()
    rep = profile_spaces(
        [space], [args.channels], settings, args.out, progress=not args.no_progress, log=None
    )
    lines.append(
        f"profiled {rep.profiled} units in {rep.seconds:.1f} s -> {rep.path} "
        f"({len(rep.table)} rows)"
    )
    table = rep.table
    genos = split_genotypes(space, args.n, args.calibrate, args.channels, args.seed)
    t1 = time.perf_counter()
    stats = measure_genotypes([g for _, g in genos], settings, args.seed, not args.no_progress)
    lines.append(
        f"measured {len(genos)} derived nets end to end in {time.perf_counter() - t1:.0f} s"
    )
    for statistic in ("median", "min"):
        report = analyse(
            table, space, args.channels, genos, stats, settings, statistic, seed=args.seed
        )
        notes: list[str] = []
        stored = store_report_calibration(table, report, save=False, log=notes.append)
        stem = f"bench_predictor-{table.name}-{space.name}-C{args.channels}-{statistic}"
        write_report(report, args.results, stem=stem)
        r, c = report.raw, report.calibrated
        cal = report.calibration
        lines.append(
            f"[{statistic:6s}] raw        MAPE {r['mape']:6.2f} %  tau {r['tau']:.3f}  "
            f"within 10 % {r['within10']:5.1f} %  (mean predicted/measured {r['ratio']:.3f})"
        )
        lines.append(
            f"[{statistic:6s}] calibrated MAPE {c['mape']:6.2f} %  tau {c['tau']:.3f}  "
            f"within 10 % {c['within10']:5.1f} %  (measured ~ {cal.a:.4f} * predicted "
            f"+ {cal.b:.4f} ms, fitted on {args.calibrate} other nets; "
            f"{'stored' if stored else 'NOT stored'})"
        )
        lines += [f"           {n}" for n in notes]
        lines.append(f"           per-net CSV: {report.paths['csv']}")
        hit = c["within10"] >= TARGET_WITHIN10 and c["tau"] >= TARGET_TAU
        lines.append(
            f"           targets (>= {TARGET_WITHIN10:.0f} % within 10 %, tau >= "
            f"{TARGET_TAU}) calibrated: {'met' if hit else 'NOT met'}"
        )
    table.save()
    lines.append(f"table and calibrations: {table.path} (+ .meta.yaml)")
    if args.profile_times:
        profile_times(args, lines)
    lines.append(f"load average at end: {system_load()}; total {time.perf_counter() - t0:.0f} s")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    out = args.results / f"bench_predictor-{table.name}.txt"
    atomic_write_many([(out, text)])
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
