"""Storage, the pick lock and the study: an Optuna RDB storage with heartbeats and stale-trial
retry, the sampler of each mode, creating or joining a study with its stored settings, and
the grid bookkeeping (what is left, failed points re-queued, duplicate points refused)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.config import ConfigError, from_mapping, to_dict
from nas.sweep.config import (
    CONFIG_ATTR,
    DEFAULT_SAMPLED_TRIALS,
    DIRECTIONS,
    SweepConfig,
)


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL (None for other URLs or in-memory)."""
    if not url.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url

    db = make_url(url).database
    return Path(db) if db and db != ":memory:" else None


class StudyLock:
    """Serialises "pick the next trial" among the workers of one machine (SQLite studies).

    An ``fcntl`` lock on ``<db>.lock``; released by the OS if the process dies. Server RDBs
    need none: their row locks make Optuna's state changes atomic. :meth:`release` is
    idempotent, so the objective can release the lock as soon as its parameters are stored.
    """

    def __init__(self, url: str) -> None:
        db = sqlite_path(url)
        self.path = None if db is None else db.with_name(db.name + ".lock")
        self._fh: Any = None

    def acquire(self) -> None:
        if self.path is None or self._fh is not None:
            return
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no cross-process lock
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")  # held until release()
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        self._fh = fh

    def release(self) -> None:
        if self._fh is None:
            return
        import fcntl

        fh, self._fh = self._fh, None
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        fh.close()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()


def make_storage(url: str, heartbeat: int | None = 20, grace: int | None = 60) -> Any:
    """An :class:`~optuna.storages.RDBStorage` with a heartbeat and stale-trial retry.

    A trial whose heartbeat is older than ``grace`` seconds is failed (by the next worker
    that looks) and re-queued once more with its parameters and user attributes (its run
    folder, which the next worker resumes), at most 3 times.
    """
    db = sqlite_path(url)
    engine_kwargs: dict[str, Any] = {}
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs["connect_args"] = {"timeout": 300}
    kwargs: dict[str, Any] = {}
    if heartbeat:
        retry_cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
        retry_cls = retry_cls or optuna.storages.RetryFailedTrialCallback
        cb_name = (
            "heartbeat_stale_trial_callback"
            if "heartbeat_stale_trial_callback" in _init_params(optuna.storages.RDBStorage)
            else "failed_trial_callback"
        )
        with quiet_experimental():
            retry = retry_cls(max_retry=3)
        kwargs = {
            "heartbeat_interval": int(heartbeat),
            "grace_period": int(grace or 2 * heartbeat),
            cb_name: retry,
        }
    with quiet_experimental():
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)


def _init_params(cls: type) -> set[str]:
    import inspect

    return set(inspect.signature(cls.__init__).parameters)


@contextlib.contextmanager
def quiet_experimental() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def make_sampler(sc: SweepConfig, n_trials: int | None, worker_index: int = 0) -> Any:
    """Grid (eta values), TPE / NSGA-II (eta range) or NSGA-II over genotypes.

    The grid's order is seeded by ``sc.seed`` alone (every worker must agree on it); the
    other samplers by ``sc.seed + worker_index`` (workers must not draw the same points).
    """
    if sc.is_grid:
        return optuna.samplers.GridSampler(sc.grid(), seed=sc.seed)
    seed = sc.seed + 1000 * worker_index
    if sc.mode == "nsga2" or sc.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=population(sc, n_trials), seed=seed)
    with quiet_experimental():
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=4)


def population(sc: SweepConfig, n_trials: int | None) -> int:
    """NSGA-II population: ``sc.population`` or about a quarter of the budget (4..20)."""
    if sc.population:
        return max(2, int(sc.population))
    return max(4, min(20, (n_trials or DEFAULT_SAMPLED_TRIALS) // 4))


def open_study(
    name: str,
    storage: Any,
    given: Mapping[str, Any] | None,
    n_trials: int | None = None,
    worker_index: int = 0,
) -> tuple[optuna.Study, SweepConfig]:
    """Create or join the study ``name``; returns it and its :class:`SweepConfig`.

    Args:
        name: study name.
        storage: an RDB storage (:func:`make_storage`).
        given: settings the command line named (keys of :class:`SweepConfig`); for a new
            study they define it (with defaults for the rest), for an existing one they must
            equal what it was created with. None: join an existing study as it is.
    """
    names = set(optuna.study.get_all_study_names(storage))
    given = dict(given or {})
    if name in names:
        probe = optuna.load_study(study_name=name, storage=storage)
        stored = probe.user_attrs.get(CONFIG_ATTR)
        if stored is None:
            raise ConfigError(f"study {name!r} exists but was not made by nas.sweep")
        sc = from_mapping(SweepConfig, stored, f"study {name!r}")
        diff = _differences(sc, given)
        if diff:
            raise ConfigError(
                f"study {name!r} was created with other settings ({'; '.join(diff)}); leave "
                "those flags out to join it, or choose another --study"
            )
    else:
        sc = from_mapping(SweepConfig, given, "command line")
        if sc.population is None and (sc.mode == "nsga2" or sc.sampler == "nsga2"):
            # fixed at creation: every worker must evolve the same population size
            sc = dataclasses.replace(sc, population=population(sc, n_trials))
    sampler = make_sampler(sc, n_trials, worker_index)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=sampler,
        directions=list(DIRECTIONS),
        load_if_exists=True,
    )
    if CONFIG_ATTR not in study.user_attrs:
        study.set_user_attr(CONFIG_ATTR, to_dict(sc))
        with quiet_experimental():
            study.set_metric_names(["quality", "latency_ms"])
    return study, sc


def _differences(sc: SweepConfig, given: Mapping[str, Any]) -> list[str]:
    """``key: stored -> given`` for given settings that differ from the study's."""
    probe = from_mapping(SweepConfig, {**to_dict(sc), **given}, "command line")
    a, b = to_dict(sc), to_dict(probe)
    return [f"{k}: {a[k]!r} (study) vs {b[k]!r} (command)" for k in a if a[k] != b[k]]


# --- what is left to do ----------------------------------------------------------------------


def point_of(trial: FrozenTrial, sc: SweepConfig) -> tuple[float, ...] | None:
    """The grid point a trial evaluates (None before its parameters are stored)."""
    names = sorted(sc.grid())
    if not all(n in trial.params for n in names):
        return None
    return tuple(float(trial.params[n]) for n in names)


def grid_points(sc: SweepConfig) -> set[tuple[float, ...]]:
    import itertools

    space = sc.grid()
    names = sorted(space)
    return {tuple(float(v) for v in p) for p in itertools.product(*(space[n] for n in names))}


def pending(study: optuna.Study, sc: SweepConfig, n_trials: int | None) -> str:
    """``"run"`` (a trial can start), ``"wait"`` (others are running) or ``"done"``.

    Grid: a queued trial, or a grid point no trial has touched, can start. Sampled modes:
    until ``n_trials`` trials are complete, running or queued (failed ones do not count).
    """
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    if TrialState.WAITING in states:
        return "run"
    if sc.is_grid:
        touched = {point_of(t, sc) for t in trials}
        if grid_points(sc) - touched:
            return "run"
    else:
        budget = n_trials or DEFAULT_SAMPLED_TRIALS
        live = sum(s in (TrialState.COMPLETE, TrialState.RUNNING) for s in states)
        if live < budget:
            return "run"
    return "wait" if TrialState.RUNNING in states else "done"


def requeue_failed(study: optuna.Study, sc: SweepConfig) -> list[int]:
    """Grid: queue again every point whose trials all failed (same parameters, run folder).

    Returns the numbers of the failed trials that were re-queued.
    """
    if not sc.is_grid:
        return []
    by_point: dict[tuple[float, ...], list[FrozenTrial]] = {}
    for t in study.get_trials(deepcopy=False):
        p = point_of(t, sc)
        if p is not None:
            by_point.setdefault(p, []).append(t)
    done: list[int] = []
    for ts in by_point.values():
        if any(t.state not in (TrialState.FAIL,) for t in ts):
            continue  # complete, running, queued or a pruned duplicate: nothing to redo
        last = max(ts, key=lambda t: t.number)
        keep = {k: v for k, v in last.system_attrs.items() if k in ("grid_id", "search_space")}
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.WAITING,
                params=last.params,
                distributions=last.distributions,
                user_attrs=last.user_attrs,
                system_attrs={**keep, "failed_trial": last.number},
            )
        )
        done.append(last.number)
    return done


def duplicate_of(
    study: optuna.Study, number: int, params: Mapping[str, Any], sc: SweepConfig
) -> int | None:
    """Grid: another trial that completed, or runs with a lower number, the same point.

    A safety net: with the pick lock (SQLite) or row locks (server RDBs) it finds none.
    """
    if not sc.is_grid:
        return None
    me = tuple(float(params[n]) for n in sorted(sc.grid()))
    for t in study.get_trials(deepcopy=False):
        if t.number == number or point_of(t, sc) != me:
            continue
        if t.state == TrialState.COMPLETE or (
            t.state in (TrialState.RUNNING, TrialState.WAITING) and t.number < number
        ):
            return t.number
    return None
