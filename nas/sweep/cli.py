"""``python -m nas.sweep``: run a study (the default), ``plot`` fronts, or ``report`` a study."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import optuna
import torch
import yaml

from nas.cli import add_device, add_progress, add_table_args, parse_set
from nas.config import ConfigError, from_mapping, to_dict
from nas.latency.keys import MissingLatencyEntry
from nas.report import markdown_table
from nas.runs import RUNS_DIR
from nas.sweep.config import (
    MODES,
    SAMPLERS,
    SWEEPS_DIR,
    SweepConfig,
    WorkerOptions,
    default_storage,
    default_study_name,
)
from nas.sweep.report import (
    draw_fronts,
    front_data,
    front_rows,
    load_frame,
    remeasure,
    write_report,
)
from nas.sweep.study import StudyLock, make_storage, open_study
from nas.sweep.worker import run_worker, spawn_workers
from nas.utils import resolve_device


def _add_sweeps_dir(p: Any, flag: str, what: str) -> None:
    """The folder of the studies (``--out-dir``: its older name)."""
    p.add_argument(
        flag, "--out-dir", dest="out_dir", default=str(SWEEPS_DIR), help=f"{what} ({SWEEPS_DIR})"
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m nas.sweep",
        description="Optuna sweeps: eta grid / range over the DARTS search, or NSGA-II over "
        "genotypes. Without a subcommand: run (or join) a study. Subcommands: 'plot --studies "
        "A B', 'report --study A'.",
    )
    p.add_argument(
        "--config", help="YAML file of study settings (keys = SweepConfig fields; flags win)"
    )
    s = p.add_argument_group("study (stored in the study; joining workers may leave these out)")
    s.add_argument("--mode", choices=MODES, help="darts (default): trials are searches")
    s.add_argument("--preset", help="search/train preset of the trials (tiny, small)")
    s.add_argument("--eta", type=float, nargs="+", help="grid of eta values")
    s.add_argument("--eta-range", dest="eta_range", type=float, nargs=2, metavar=("LO", "HI"))
    s.add_argument("--sampler", choices=SAMPLERS, help="sampler for --eta-range (default tpe)")
    s.add_argument("--beta1", type=float, nargs="+", help="retrain loss weight(s) of L_Gra")
    s.add_argument("--beta2", type=float, nargs="+", help="retrain loss weight(s) of L_Dis")
    s.add_argument("--retrain-epochs", dest="retrain_epochs", type=int)
    s.add_argument("--proxy-epochs", dest="proxy_epochs", type=int, help="nsga2 proxy training")
    s.add_argument("--population", type=int, help="NSGA-II population size")
    s.add_argument("--space", help="nsga2: search space (default: the preset's)")
    s.add_argument("--channels", type=int, help="nsga2: width of the sampled genotypes")
    s.add_argument("--latency-reps", dest="latency_reps", type=int)
    s.add_argument("--latency-warmup", dest="latency_warmup", type=int)
    s.add_argument("--latency-threads", dest="latency_threads", type=int)
    s.add_argument(
        "--latency-statistic",
        dest="latency_statistic",
        choices=["median", "min", "p10", "mean"],
        help="statistic of the timed calls (default median; min: robust to background load)",
    )
    s.add_argument("--seed", type=int)
    s.add_argument(
        "--set",
        dest="search_set",
        type=parse_set,
        nargs="+",
        metavar="KEY=VALUE",
        help="search settings (SearchConfig fields), e.g. --set epochs=4 crop=32",
    )
    s.add_argument(
        "--train-set",
        dest="train_set",
        type=parse_set,
        nargs="+",
        metavar="KEY=VALUE",
        help="retrain / proxy-training settings (TrainConfig fields)",
    )
    w = p.add_argument_group("this worker")
    w.add_argument("--study", help="study name (default eta-<preset> / nsga2-<preset>)")
    w.add_argument("--storage", help="RDB URL (default sqlite:///<out-dir>/<study>.db)")
    w.add_argument(
        "--n-trials",
        dest="n_trials",
        type=int,
        help="sampled modes: the study's trial budget (default 16); grid: cap for this process",
    )
    w.add_argument("--n-workers", dest="n_workers", type=int, default=1, help="local processes")
    w.add_argument("--worker-index", dest="worker_index", type=int, default=0)
    w.add_argument("--heartbeat", type=int, default=20, help="seconds between heartbeats")
    w.add_argument("--grace", type=int, default=60, help="seconds until a silent trial fails")
    add_device(w)
    w.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads of this worker (default: torch's); part of the latency "
        "table's device fingerprint, so profile the table with the same --threads",
    )
    add_table_args(w)
    w.add_argument("--runs-dir", dest="runs_dir", default=str(RUNS_DIR))
    _add_sweeps_dir(w, "--out", "folder of the study databases and reports")
    w.add_argument("--compare", nargs="+", default=[], help="studies drawn on the same plot")
    w.add_argument(
        "--time-budget",
        dest="time_budget",
        type=float,
        help="seconds: start no trial after this much wall-clock (equal-compute comparisons)",
    )
    w.add_argument("--no-wait", dest="wait", action="store_false", help="do not wait for others")
    w.add_argument("--no-report", dest="report", action="store_false")
    add_progress(w)
    sub = p.add_subparsers(dest="command", metavar="{plot,report}")
    _add_plot_parser(sub)
    _add_report_parser(sub)
    return p


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`SweepConfig` keys the command line named."""
    keys = {f.name for f in dataclasses.fields(SweepConfig)}
    given: dict[str, Any] = {}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        data = yaml.safe_load(path.read_text()) or {}
        given.update(dataclasses.asdict(from_mapping(SweepConfig, data, str(path))))
        given = {k: v for k, v in given.items() if k in data}
    given.update({k: v for k, v in vars(args).items() if k in keys and v is not None})
    if args.search_set:
        given["search"] = dict(args.search_set)
    if args.train_set:
        given["train"] = dict(args.train_set)
    return given


def _add_plot_parser(sub: Any) -> None:
    p = sub.add_parser("plot", help="draw several studies' fronts on one latency axis")
    p.add_argument("--studies", nargs="+", required=True)
    p.add_argument("--storage", nargs="+", help="one URL for all studies, or one per study")
    _add_sweeps_dir(p, "--dir", "folder of the study databases")
    p.add_argument("--out", help="figure path (default <dir>/<A>-vs-<B>.png)")
    p.add_argument("--x", default="measured_ms", choices=["measured_ms", "latency_ms"])
    p.add_argument("--title", default="", help="figure title")
    p.add_argument(
        "--remeasure",
        action="store_true",
        help="re-time every genotype here, back to back (fair latencies across studies)",
    )
    p.add_argument("--reps", type=int, default=50, help="--remeasure: timed calls per net")
    p.add_argument("--rounds", type=int, default=5, help="--remeasure: round-robin passes")
    p.add_argument("--threads", type=int, help="--remeasure: CPU threads")
    add_device(p)
    p.add_argument("--statistic", default="median", choices=["median", "min", "p10", "mean"])


def _plot(args: argparse.Namespace) -> int:
    urls = args.storage or [default_storage(s, args.out_dir) for s in args.studies]
    if len(urls) == 1:
        urls = urls * len(args.studies)
    if len(urls) != len(args.studies):
        print("error: give one --storage, or one per study", file=sys.stderr)
        return 2
    try:
        frames = {s: load_frame(s, u) for s, u in zip(args.studies, urls)}
    except KeyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    xlabel = "" if args.x == "measured_ms" else "latency objective (ms)"
    if args.remeasure:
        device = str(resolve_device(args.device))
        frames = remeasure(frames, device, args.reps, args.rounds, args.threads, args.statistic)
        xlabel = (
            f"latency (ms, re-measured: {args.statistic} of {args.reps} calls in "
            f"{args.rounds} rounds, batch 1, {device})"
        )
    points, summary = front_data(frames, x=args.x)
    if not len(points):
        print("error: no complete trials in these studies", file=sys.stderr)
        return 2
    out = Path(args.out or Path(args.out_dir) / f"{'-vs-'.join(args.studies)}.png")
    draw_fronts(points, out, xlabel=xlabel, title=args.title)
    text = markdown_table(summary, list(summary.columns))
    text += "\nFronts:\n\n" + markdown_table(
        front_rows(points), ["study", "label", "quality", "ms", "genotype"]
    )
    print(text)
    md = out.with_suffix(".md")
    md.write_text(text)
    points.to_csv(out.with_suffix(".csv"), index=False)
    print(f"wrote {out}, {md} and {out.with_suffix('.csv')}")
    return 0


def _add_report_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="print and write a study's Pareto table and figure again")
    p.add_argument("--study", required=True)
    p.add_argument("--storage")
    _add_sweeps_dir(p, "--out", "folder of the study database and its report")
    p.add_argument("--compare", nargs="+", default=[])


def _report(args: argparse.Namespace) -> int:
    url = args.storage or default_storage(args.study, args.out_dir)
    try:
        study = optuna.load_study(study_name=args.study, storage=make_storage(url, None))
    except KeyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_report(study, args.out_dir, args.compare, args.storage or "")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command; the exit status is 0 when every trial of this process (or every
    spawned worker, ``--n-workers K``) succeeded, 1 when one failed (named on stderr), 2 for
    a usage error."""
    args = build_parser().parse_args(argv)
    if args.command == "plot":
        return _plot(args)
    if args.command == "report":
        return _report(args)
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        given = given_settings(args)
        joining = args.study is not None and not given
        name = args.study or default_study_name(from_mapping(SweepConfig, given, "command line"))
        url = args.storage or default_storage(name, args.out_dir)
        opts = WorkerOptions(
            study=name,
            storage=url,
            runs_dir=args.runs_dir,
            out_dir=args.out_dir,
            n_trials=args.n_trials,
            n_workers=max(1, args.n_workers),
            worker_index=args.worker_index,
            heartbeat=args.heartbeat,
            grace=args.grace,
            device=args.device,
            threads=args.threads,
            latency_table=args.latency_table,
            allow_foreign_table=args.allow_foreign_table,
            wait=args.wait,
            time_budget=args.time_budget,
            progress=not args.no_progress,
        )
        lock = StudyLock(url)
        with lock.held():  # one creator; a new SQLite file gets its tables once
            storage = make_storage(url, opts.heartbeat, opts.grace)
            study, sc = open_study(
                name, storage, None if joining else given, args.n_trials, args.worker_index
            )
        print(f"study {name} on {url}: {yaml.safe_dump(to_dict(sc), sort_keys=False)}", end="")
        failed: list[int] = []  # trial numbers (one worker) or worker indices (spawned)
        if opts.n_workers > 1:
            codes = spawn_workers(opts)
            failed = sorted(i for i, c in codes.items() if c != 0)
            for i in failed:
                print(
                    f"worker {i} of study {name} exited with status {codes[i]} (see its "
                    "output above; re-run the command to retry)",
                    file=sys.stderr,
                )
        else:
            result = run_worker(study, sc, opts)
            failed = result["failed"]
            if failed:
                print(f"failed trial(s): {failed} (re-run the command to retry)", file=sys.stderr)
        if args.report:
            write_report(study, args.out_dir, args.compare, args.storage or "")
    except (ConfigError, ValueError, FileNotFoundError, MissingLatencyEntry) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(threads)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
