"""Per-device latency look-up tables: ``python -m nas.profile``.

Profile (default: crmef + crmef-misaligned, channels 16/32/64, 128x128 scales)::

    python -m nas.profile --device cpu                # batch 1, 100 reps, <= 1 s per unit
    python -m nas.profile --device cuda               # batch 16, 1000 reps (the paper's)
    python -m nas.profile --device cpu --quick        # ~1 min; a separate -quick table
    python -m nas.profile --device cpu --estimate     # how long would this run take?

writes ``latency_tables/<fingerprint>[-b<batch>-<H>x<W>][-quick].csv`` plus ``.meta.yaml``
(see :mod:`nas.latency`). Re-profiling merges rows into the existing table; ``--resume``
continues an interrupted run. On CPU the defaults are sized for a CPU: batch 1, 100 reps and a
1 s per-unit time budget (``--max-seconds``); the paper's GPU settings (batch 16, 1000 reps)
would take hours on 2 cores. ``--batch 16 --reps 1000`` asks for them explicitly.

Check the additive predictor against end-to-end measurements of random derived nets::

    python -m nas.profile --device cpu --space crmef --channels 32 --batch 1 \
        --input-size 64 64 --threads 1 --reps 50 --rounds 5 --warmup 3 \
        --validate 30 --calibrate 20 --statistic min

(uses, and if needed first completes, the table these settings name; measures with that
table's recorded settings; fits a calibration on 20 other nets and stores it in the sidecar;
writes ``results/latency/validate-*.csv|png|yaml``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nas.cli import add_device, add_progress, add_table_args
from nas.latency.fingerprint import DEFAULT_BATCH, DEFAULT_INPUT_SIZE, resolve_device
from nas.latency.keys import MissingLatencyEntry
from nas.latency.profiler import (
    CPU_BATCH,
    CPU_MAX_SECONDS,
    CPU_REPS,
    CPU_WARMUP,
    DEFAULT_CHANNELS,
    DEFAULT_REPS,
    DEFAULT_SPACES,
    DEFAULT_WARMUP,
    ProfileSettings,
    estimate_profile,
    profile_spaces,
)
from nas.latency.table import LatencyTable
from nas.latency.table_io import LatencyTableError
from nas.latency.validate import RESULTS_DIR, settings_from_table, validate_predictor
from nas.space import load_space

VALIDATE_ROUNDS = 5
"""Interleaved rounds for the end-to-end measurements of ``--validate`` (at least)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m nas.profile",
        description="Build the per-device latency look-up table (and check the predictor).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n", 2)[2],
    )
    add_device(p)
    p.add_argument(
        "--space",
        nargs="+",
        default=None,
        help=f"search spaces (name or YAML path); default {' '.join(DEFAULT_SPACES)} "
        "(with --validate: crmef)",
    )
    p.add_argument(
        "--channels",
        nargs="+",
        type=int,
        default=None,
        help="widths to profile; default 16 32 64 (with --validate: the space's width)",
    )
    p.add_argument(
        "--input-size",
        nargs=2,
        type=int,
        metavar=("H", "W"),
        default=None,
        help=f"network input size; default {DEFAULT_INPUT_SIZE[0]} {DEFAULT_INPUT_SIZE[1]} "
        "(quick: 64 64)",
    )
    p.add_argument(
        "--batch",
        type=int,
        default=None,
        help=f"default {DEFAULT_BATCH} on a GPU (the paper's), {CPU_BATCH} on CPU and with --quick",
    )
    p.add_argument(
        "--reps",
        type=int,
        default=None,
        help=f"timed calls per unit; default {DEFAULT_REPS} on a GPU, {CPU_REPS} on CPU",
    )
    p.add_argument(
        "--warmup", type=int, default=None, help=f"default {DEFAULT_WARMUP} ({CPU_WARMUP} on CPU)"
    )
    p.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="time budget per unit: stop after --reps calls or this many seconds of timed "
        f"calls (>= --min-reps calls). Default on CPU without --reps: {CPU_MAX_SECONDS:g}; "
        "0: no budget",
    )
    p.add_argument(
        "--min-reps", type=int, default=5, help="fewest timed calls under --max-seconds (5)"
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="split the reps into this many round-robin passes over all units (default 1; "
        f"with --validate the nets are measured in max(table's, {VALIDATE_ROUNDS}) rounds, so "
        "that a burst of background load cannot hit only the last nets)",
    )
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument(
        "--dtype", default="float32", choices=["float32", "float16", "bfloat16"], help="float32"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="few reps (25, 3 warm-up), batch 1, 64x64 (a minute or two on 2 cores); "
        "written as a separate -quick table",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="table folder (default: $NAS_TABLES_DIR, else ./latency_tables)",
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--only-missing", action="store_true", help="time only units the table lacks")
    p.add_argument(
        "--estimate",
        action="store_true",
        help="probe each unit briefly and print how long the run would take",
    )
    p.add_argument("--budget-minutes", type=float, default=30.0, help="for --estimate (30)")
    p.add_argument(
        "--validate",
        type=int,
        default=None,
        metavar="N",
        help="check the predictor on N random derived nets instead of profiling",
    )
    p.add_argument(
        "--calibrate",
        type=int,
        default=20,
        metavar="M",
        help="with --validate: M more random nets (disjoint) to fit the calibration "
        "(default 20; 0: none)",
    )
    p.add_argument(
        "--statistic",
        default="median",
        choices=["median", "mean", "p10", "min"],
        help="with --validate: statistic of unit rows and net timings compared (default "
        "median; min: robust to background load)",
    )
    p.add_argument("--seed", type=int, default=0, help="inputs and sampled genotypes (0)")
    p.add_argument(
        "--results", type=Path, default=RESULTS_DIR, help="validation outputs (results/latency)"
    )
    add_table_args(p, "explicit table CSV to validate", aliases=("--table",))
    add_progress(p)
    return p


def settings_from_args(args: argparse.Namespace) -> ProfileSettings:
    """Profiling settings from CLI flags (``--quick`` supplies its own defaults)."""
    given = dict(
        device=str(resolve_device(args.device)),
        batch=args.batch,
        input_size=tuple(args.input_size) if args.input_size else None,
        reps=args.reps,
        warmup=args.warmup,
        rounds=args.rounds,
        threads=args.threads,
        dtype=args.dtype,
        max_seconds=args.max_seconds,
        min_reps=args.min_reps,
        seed=args.seed,
    )
    cpu_sized = given["device"].startswith("cpu") and not args.quick
    if cpu_sized:
        # a CPU fuses one photo at a time: batch 1, fewer reps, a per-unit time budget
        for key, value in (("batch", CPU_BATCH), ("warmup", CPU_WARMUP)):
            given[key] = value if given[key] is None else given[key]
    if args.max_seconds is not None and args.max_seconds <= 0:
        given["max_seconds"] = None  # --max-seconds 0: no per-unit budget
    elif args.max_seconds is None and args.reps is None and cpu_sized:
        given["reps"], given["max_seconds"] = CPU_REPS, CPU_MAX_SECONDS
    if args.quick:
        return ProfileSettings.quick_defaults(**given)
    return ProfileSettings(**{k: v for k, v in given.items() if v is not None})


def run_estimate(args: argparse.Namespace, settings: ProfileSettings) -> int:
    spaces = args.space or list(DEFAULT_SPACES)
    channels = args.channels or list(DEFAULT_CHANNELS)
    est = estimate_profile(spaces, channels, settings, progress=not args.no_progress)
    budget = 60 * args.budget_minutes
    s = settings
    full = est.seconds(s.reps, s.warmup, s.max_seconds, s.min_reps)
    reps_fit = est.reps_for_budget(budget, s.warmup)
    cap = est.max_seconds_for_budget(budget, s.reps, s.warmup, s.min_reps)
    print(
        f"{est.units} units; one call of each takes {sum(est.per_call_s.values()):.2f} s in "
        f"total (probe: {est.probe_seconds:.0f} s). Most expensive (s per call):"
    )
    for k, t in sorted(est.per_call_s.items(), key=lambda kv: -kv[1])[:8]:
        print(f"  {t:8.3f}  {k.describe()}")
    budget_txt = f", {s.max_seconds:g} s/unit budget" if s.max_seconds else ""
    print(f"this run ({s.reps} reps, {s.warmup} warm-up{budget_txt}): ~{full / 60:.1f} min")
    if full <= budget:
        print(f"fits in {args.budget_minutes:g} min as is")
    else:
        cap_txt = f" or --reps {s.reps} --max-seconds {cap:.2f}" if cap else ""
        print(f"to fit {args.budget_minutes:g} min: --reps {reps_fit} --warmup {s.warmup}{cap_txt}")
    return 0


def run_validate(args: argparse.Namespace, settings: ProfileSettings) -> int:
    spaces = args.space or ["crmef"]
    if args.latency_table is not None:
        table = LatencyTable.load(
            args.latency_table,
            device=settings.device,
            allow_foreign=args.allow_foreign_table,
            threads=settings.threads,
            dtype=settings.dtype,
        )
    else:
        # complete (or create) the table these settings name, then use its recorded settings
        channels_needed = args.channels or sorted({load_space(s).arch.channels for s in spaces})
        rep = profile_spaces(
            spaces,
            channels_needed,
            settings,
            args.out,
            only_missing=True,
            progress=not args.no_progress,
        )
        table = rep.table
    rounds = args.rounds or max(VALIDATE_ROUNDS, int(table.meta.get("rounds") or 1))
    vsettings = settings_from_table(table, device=settings.device, rounds=rounds)
    for sp in spaces:
        space = load_space(sp)
        for C in args.channels or [space.arch.channels]:
            report = validate_predictor(
                table,
                space,
                args.validate,
                settings=vsettings,
                channels=C,
                n_calibration=args.calibrate,
                seed=args.seed,
                statistic=args.statistic,
                out_dir=args.results,
                progress=not args.no_progress,
            )
            print(report.summary())
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.out is None:
        from nas.latency.table import default_table_dir

        args.out = default_table_dir()
    try:
        settings = settings_from_args(args)
        if args.validate is not None:
            if args.validate < 1:
                raise ValueError("--validate N needs N >= 1")
            return run_validate(args, settings)
        spaces = args.space or list(DEFAULT_SPACES)
        channels = args.channels or list(DEFAULT_CHANNELS)
        if args.estimate:
            return run_estimate(args, settings)
        rep = profile_spaces(
            spaces,
            channels,
            settings,
            args.out,
            only_missing=args.only_missing,
            resume=args.resume,
            progress=not args.no_progress,
        )
        print(
            f"profiled {rep.profiled} unit(s) (reused {rep.reused}) in {rep.seconds:.1f} s; "
            f"table {rep.path} has {len(rep.table)} rows"
        )
        return 0
    except (LatencyTableError, MissingLatencyEntry, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
