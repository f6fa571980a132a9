"""Workers: the Optuna objective (parameters stored, pick lock released, trial run), one
worker's loop until the study is done, and local worker processes."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.sweep.config import SweepConfig, WorkerOptions
from nas.sweep.nsga2 import evaluated, run_nsga2_trial
from nas.sweep.study import (
    StudyLock,
    duplicate_of,
    pending,
    quiet_experimental,
    requeue_failed,
)
from nas.sweep.trials import TrialContext, run_darts_trial


def make_objective(ctx: TrialContext, release: Callable[[], None]) -> Callable:
    """The Optuna objective: store the parameters, release the pick lock, run the trial."""
    sc = ctx.sc

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        try:
            if sc.mode == "nsga2":
                space = sc.space_obj()
                params: dict[str, Any] = {
                    s: trial.suggest_categorical(s, list(space.candidates[s])) for s in space.slots
                }
            elif sc.is_grid:
                grid = sc.grid()
                params = {k: trial.suggest_categorical(k, v) for k, v in grid.items()}
            else:
                lo, hi = sc.eta_range  # type: ignore[misc]
                params = {"eta": trial.suggest_float("eta", lo, hi)}
                for k in ("beta1", "beta2"):
                    values = getattr(sc, k)
                    if len(values) > 1:
                        params[k] = trial.suggest_categorical(k, values)
            dup = duplicate_of(trial.study, trial.number, params, sc)
        finally:
            release()  # parameters are stored: other workers may pick now
        if dup is not None:
            raise optuna.TrialPruned(f"grid point already taken by trial {dup}")
        worker = f"{socket.gethostname()}:{os.getpid()}"
        if sc.mode == "nsga2":
            seen = evaluated(trial.study, params, trial.number)
            if seen is not None:  # the sampler proposed a genotype already scored: reuse it
                for k, v in seen.user_attrs.items():
                    trial.set_user_attr(k, v)
                trial.set_user_attr("cached_from", seen.number)
                trial.set_user_attr("wall_s", 0.0)
                trial.set_user_attr("worker", worker)
                return tuple(seen.values)  # type: ignore[return-value]
        attrs = dict(trial.user_attrs)

        def set_attr(k: str, v: Any) -> None:
            trial.set_user_attr(k, v)

        tctx = dataclasses.replace(ctx, set_attr=set_attr, user_attrs=attrs)
        trial.set_user_attr("worker", worker)
        if sc.mode == "nsga2":
            out = run_nsga2_trial(trial.number, params, tctx)
        else:
            out = run_darts_trial(trial.number, params, tctx)
        for k, v in out["attrs"].items():
            trial.set_user_attr(k, v)
        return tuple(out["values"])  # type: ignore[return-value]

    return objective


def load_table(sc: SweepConfig, opts: WorkerOptions, required: bool) -> Any:
    """This device's latency table (None when there is none and it is not ``required``)."""
    from nas.latency import LatencyTable
    from nas.latency.table_io import LatencyTableNotFound
    from nas.utils import resolve_device

    cfg = sc.search_config(
        eta=0.0, latency_table=opts.latency_table, allow_foreign_table=opts.allow_foreign_table
    )
    device = cfg.latency_device or str(resolve_device(opts.device))
    try:
        return LatencyTable.load(
            path=cfg.latency_table, device=device, allow_foreign=cfg.allow_foreign_table
        )
    except LatencyTableNotFound:
        if required:
            raise
        return None


def run_worker(study: optuna.Study, sc: SweepConfig, opts: WorkerOptions, log: Any = None) -> dict:
    """Run trials of ``study`` until nothing is left (or this worker's ``n_trials``).

    Returns ``{"ran": n, "failed": [trial numbers]}``. Grid mode: ``opts.n_trials`` caps the
    trials of this process; sampled modes: it is the study's budget of complete trials.
    ``opts.time_budget`` (seconds): start no trial after that much wall-clock (the running
    one finishes), e.g. to give NSGA-II the wall-clock an eta sweep took.
    """
    t_start = time.perf_counter()
    log = log or (lambda msg: print(msg, flush=True))
    table = None
    if sc.mode == "nsga2":
        table = load_table(sc, opts, required=False)
        if table is None:
            log("note: no latency table for this device: NSGA-II minimises measured latency")
    elif sc.eta_range is not None or any(e > 0 for e in sc.etas):
        load_table(sc, opts, required=True)  # fail now, with the profile command, not per trial
    ctx = TrialContext(sc, opts, table)
    lock = StudyLock(opts.storage)
    cap = opts.n_trials if sc.is_grid else None
    ran, failed, streak, first, said_wait = 0, [], 0, True, False
    while cap is None or ran < cap:
        if opts.time_budget is not None and time.perf_counter() - t_start >= opts.time_budget:
            log(f"time budget of {opts.time_budget:g} s spent: no new trial")
            break
        lock.acquire()
        try:
            with quiet_experimental():
                optuna.storages.fail_stale_trials(study)
            if first:
                again = requeue_failed(study, sc)
                if again:
                    log(f"re-queued failed trial(s) {again}")
                first = False
            state = pending(study, sc, opts.n_trials)
        except BaseException:
            lock.release()
            raise
        if state != "run":
            lock.release()
            if state == "done" or not opts.wait:
                break
            if not said_wait:
                running = [t.number for t in study.get_trials(states=(TrialState.RUNNING,))]
                log(f"waiting for running trial(s) {running} (other workers, or stale ones)")
                said_wait = True
            time.sleep(max(1.0, opts.heartbeat / 2))
            continue
        said_wait = False
        finished: list[FrozenTrial] = []
        try:
            study.optimize(
                make_objective(ctx, lock.release),
                n_trials=1,
                catch=(Exception,),
                callbacks=[_collect(finished)],
                gc_after_trial=True,
            )
        finally:
            lock.release()
        ran += 1
        if any(t.state == TrialState.FAIL for t in finished):
            failed += [t.number for t in finished if t.state == TrialState.FAIL]
            streak += 1
            if streak >= opts.max_failures:
                log(f"stopping: {streak} failed trials in a row (see the errors above)")
                break
        else:
            streak = 0
    return {"ran": ran, "failed": failed}


def _collect(out: list[FrozenTrial]) -> Callable[[optuna.Study, FrozenTrial], None]:
    """An Optuna callback appending each finished trial to ``out``."""

    def callback(_study: optuna.Study, trial: FrozenTrial) -> None:
        out.append(trial)

    return callback


def spawn_workers(opts: WorkerOptions, extra: Sequence[str] = ()) -> dict[int, int]:
    """Start ``opts.n_workers`` local worker processes on the study and wait for all.

    Returns:
        ``{worker index: exit status}`` of every worker (``--worker-index`` numbering; a
        negative status is the signal that ended it).
    """
    procs = []
    for i in range(opts.n_workers):
        argv = [
            sys.executable,
            "-m",
            "nas.sweep",
            "--study",
            opts.study,
            "--storage",
            opts.storage,
            "--runs-dir",
            opts.runs_dir,
            "--out",
            opts.out_dir,
            "--device",
            opts.device,
            *(["--threads", str(opts.threads)] if opts.threads else []),
            "--heartbeat",
            str(opts.heartbeat),
            "--grace",
            str(opts.grace),
            "--worker-index",
            str(opts.worker_index + i),
            "--n-workers",
            "1",
            "--no-report",
            *([] if opts.progress else ["--no-progress"]),
            *extra,
        ]
        if opts.n_trials is not None:
            argv += ["--n-trials", str(opts.n_trials)]
        if opts.latency_table:
            argv += ["--latency-table", opts.latency_table]
        if opts.allow_foreign_table:
            argv += ["--allow-foreign-table"]
        if opts.time_budget is not None:
            argv += ["--time-budget", str(opts.time_budget)]
        procs.append(subprocess.Popen(argv))
    return {opts.worker_index + i: p.wait() for i, p in enumerate(procs)}
