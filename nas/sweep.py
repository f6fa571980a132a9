"""``python -m nas.sweep``: Optuna studies over the search's trade-off, and a black-box baseline.

Draw the latency-accuracy curve by sweeping eta, compare the gradient search with a black-box
one, on one machine or many::

    python -m nas.sweep --eta 0 0.25 0.5 1 2 --preset tiny          # a grid over eta
    python -m nas.sweep --eta-range 0 2 --n-trials 12 --sampler tpe  # sampled eta
    python -m nas.sweep --eta 0 0.5 1 --retrain-epochs 5 --beta1 0.5 0.75   # + short retrain
    python -m nas.sweep --mode nsga2 --n-trials 24 --proxy-epochs 2    # NSGA-II over genotypes
    python -m nas.sweep plot --studies eta-tiny nsga2-tiny             # both fronts, one figure
    python -m nas.sweep report --study eta-tiny                        # the Pareto table again

**DARTS mode** (default): one trial = one latency-penalised search (:func:`nas.search.run_search`)
at the trial's eta, optionally followed by a short retrain of the derived genotype
(:func:`nas.train.run_train`, ``--loss crmef`` with the trial's beta1/beta2). Eta values
given with ``--eta`` (and ``--beta1``/``--beta2`` lists) form a grid
(:class:`optuna.samplers.GridSampler`); ``--eta-range LO HI`` samples eta with TPE
(``--sampler tpe``) or NSGA-II.

**NSGA-II mode** (``--mode nsga2``): the black-box baseline. A trial samples a genotype
directly from the same search space (one categorical parameter per slot,
:class:`optuna.samplers.NSGAIISampler`) and scores it by a short proxy training
(``run_train`` for ``--proxy-epochs`` epochs, crmef loss) and its latency predicted by this
device's table (measured when there is no table).

Objectives (both modes, ``directions=["maximize", "minimize"]``):

1. validation PSNR (dB): the retrain's (or proxy training's) best ``val_psnr``; without a
   retrain, the derived network *with the weights it inherits from the supernet*, evaluated
   on the search's validation batches (the supernet's own ``eval_psnr`` is kept as a user
   attribute);
2. latency (ms): DARTS mode: the derived network **measured** on this device (the profiler's
   :func:`~nas.latency.profiler.time_fn` harness, batch 1, the search's latency input size,
   median of ``--latency-reps`` calls); NSGA-II mode: table-predicted. Both modes store the
   measured and predicted latency as user attributes, and the plot uses the measured one for
   both fronts.

Each trial stores ``run_dir`` (the run folder), ``genotype``, ``predicted_ms``,
``measured_ms``, ``wall_s`` (wall-clock of the trial) and more in its user attributes.

**Storage, workers, resume.** Studies live in an RDB (:class:`optuna.storages.RDBStorage`):
by default the SQLite file ``results/sweeps/<study>.db`` (embedded, one machine); any
SQLAlchemy URL (``postgresql://...``, ``mysql+pymysql://...``) for many machines. Workers
record a heartbeat (``--heartbeat`` seconds); a trial whose worker died is marked FAILED once
its heartbeat is older than ``--grace`` seconds (:func:`optuna.storages.fail_stale_trials`)
and re-queued with the same parameters and run folder, and the next worker *resumes* that
run from its last checkpoint. Re-running the same command continues the study: complete
grid points are skipped, failed ones re-queued. ``--n-workers K`` starts K local worker
processes; workers started separately (``python -m nas.sweep --study NAME --storage URL``,
on any machine) join the same study, and read its settings from the study itself. With
SQLite, workers of one machine serialise the step that picks the next trial with a file
lock next to the database, so no grid point runs twice.

Outputs: ``results/sweeps/<study>.csv`` (every complete trial, ``pareto`` flag),
``<study>.md`` (the Pareto table), ``<study>.png`` (the front, plus ``--compare`` studies).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
import yaml
from optuna.trial import FrozenTrial, TrialState

from nas.config import ConfigError, from_mapping, to_dict
from nas.latency.table import MissingLatencyEntry
from nas.runs import RUNS_DIR, RunDir
from nas.utils import parse_size, size_text

SWEEPS_DIR = Path("results") / "sweeps"
DEFAULT_ETAS: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0)
DEFAULT_SAMPLED_TRIALS = 16
MODES = ("darts", "nsga2")
SAMPLERS = ("tpe", "nsga2")
DIRECTIONS = ("maximize", "minimize")  # PSNR, latency
CONFIG_ATTR = "sweep_config"


# --- settings --------------------------------------------------------------------------------


@dataclass
class SweepConfig:
    """What a study *is*: stored in the study (user attribute ``sweep_config``).

    Workers that join a study read it from there; a command that names different settings
    for an existing study is refused (the message lists the differences).

    Attributes:
        mode: ``darts`` (trials are searches) or ``nsga2`` (trials are sampled genotypes).
        preset: ``nas.search`` / ``nas.train`` preset the trials start from (tiny, small).
        eta: grid of eta values (DARTS mode; empty: :data:`DEFAULT_ETAS`).
        eta_range: ``[lo, hi]``: sample eta instead of a grid.
        sampler: sampler for ``eta_range``: ``tpe`` or ``nsga2``.
        beta1, beta2: CRMEF loss weights of the retrain (grid axes / categorical choices in
            DARTS mode; at most one value each in NSGA-II mode, for the proxy training).
        retrain_epochs: DARTS mode: retrain the derived net this many epochs (0: no retrain).
        proxy_epochs: NSGA-II mode: epochs of the proxy training of each genotype.
        population: NSGA-II population size (default from the trial budget).
        space, channels: NSGA-II mode: the search space (default: the preset's).
        latency_reps, latency_warmup: timed / untimed calls of the latency measurement.
        latency_threads: CPU threads while measuring (None: torch's current setting).
        latency_statistic: ``median`` (default), ``min``, ``p10`` or ``mean`` of the timed
            calls (``min`` is the robust choice on a loaded machine).
        search: overrides of :class:`nas.search.SearchConfig` fields (e.g. ``epochs``).
        train: overrides of :class:`nas.train.TrainConfig` fields (retrain / proxy training).
        seed: seed of the samplers and of every run.
    """

    mode: str = "darts"
    preset: str = "tiny"
    eta: list[float] = field(default_factory=list)
    eta_range: list[float] | None = None
    sampler: str = "tpe"
    beta1: list[float] = field(default_factory=list)
    beta2: list[float] = field(default_factory=list)
    retrain_epochs: int = 0
    proxy_epochs: int = 2
    population: int | None = None
    space: str | None = None
    channels: int | None = None
    latency_reps: int = 10
    latency_warmup: int = 2
    latency_threads: int | None = None
    latency_statistic: str = "median"
    search: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        from nas.search import PRESETS

        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {list(MODES)}, got {self.mode!r}")
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown preset {self.preset!r}; valid presets: {sorted(PRESETS)}")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"sampler must be one of {list(SAMPLERS)}, got {self.sampler!r}")
        self.eta = [float(e) for e in self.eta]
        if self.mode == "darts":
            if self.eta and self.eta_range is not None:
                raise ConfigError("give either --eta values (a grid) or --eta-range, not both")
            if any(e < 0 for e in self.eta) or len(set(self.eta)) != len(self.eta):
                raise ConfigError(f"eta values must be >= 0 and distinct, got {self.eta}")
            if self.eta_range is not None:
                lo, hi = (float(v) for v in self.eta_range)
                if not 0 <= lo < hi:
                    raise ConfigError(f"--eta-range needs 0 <= LO < HI, got {self.eta_range}")
                self.eta_range = [lo, hi]
            if (self.beta1 or self.beta2) and self.retrain_epochs <= 0:
                raise ConfigError("--beta1/--beta2 weight the retrain's loss: add --retrain-epochs")
        else:
            if self.eta or self.eta_range is not None:
                raise ConfigError("--eta/--eta-range belong to the DARTS mode, not --mode nsga2")
            if len(self.beta1) > 1 or len(self.beta2) > 1:
                raise ConfigError("--mode nsga2 takes at most one --beta1 and one --beta2 value")
            if self.proxy_epochs < 1:
                raise ConfigError(f"--proxy-epochs must be >= 1, got {self.proxy_epochs}")
        if self.latency_statistic not in ("median", "min", "p10", "mean"):
            raise ConfigError(
                "latency_statistic must be median, min, p10 or mean, "
                f"got {self.latency_statistic!r}"
            )
        if self.retrain_epochs < 0 or self.latency_reps < 1 or self.latency_warmup < 0:
            raise ConfigError("retrain_epochs >= 0, latency_reps >= 1, latency_warmup >= 0")
        # validate the overrides now (unknown keys list the valid ones)
        self.search_config(eta=0.0)
        self.train_config(arch="crmef-general", epochs=1)

    # -- what the trials run ---------------------------------------------------------------
    @property
    def is_grid(self) -> bool:
        return self.mode == "darts" and self.eta_range is None

    @property
    def etas(self) -> list[float]:
        """The eta grid (:data:`DEFAULT_ETAS` when none was given)."""
        return list(self.eta) if self.eta else list(DEFAULT_ETAS)

    def grid(self) -> dict[str, list[float]]:
        """GridSampler search space: eta (and the beta lists when given)."""
        space: dict[str, list[float]] = {"eta": self.etas}
        if self.beta1:
            space["beta1"] = [float(b) for b in self.beta1]
        if self.beta2:
            space["beta2"] = [float(b) for b in self.beta2]
        return space

    def search_config(self, eta: float, **kw: Any) -> Any:
        """:class:`nas.search.SearchConfig`: defaults <- preset <- ``search`` <- eta, ``kw``."""
        from nas.search import PRESETS, SearchConfig

        cfg = from_mapping(SearchConfig, PRESETS[self.preset], f"preset {self.preset!r}")
        cfg = from_mapping(SearchConfig, self.search, "sweep search settings", cfg)
        values = {"eta": eta, "seed": self.seed, **{k: v for k, v in kw.items() if v is not None}}
        return from_mapping(SearchConfig, values, "sweep", cfg)

    def train_config(self, arch: str, epochs: int, **kw: Any) -> Any:
        """:class:`nas.train.TrainConfig` of a retrain / proxy training (crmef loss)."""
        from nas.train import PRESETS, TrainConfig

        cfg = from_mapping(TrainConfig, PRESETS[self.preset], f"preset {self.preset!r}")
        base = {"loss": "crmef", "seed": self.seed}
        if self.beta1:
            base["beta1"] = self.beta1[0]
        if self.beta2:
            base["beta2"] = self.beta2[0]
        cfg = from_mapping(TrainConfig, base, "sweep", cfg)
        cfg = from_mapping(TrainConfig, self.train, "sweep train settings", cfg)
        values = {"arch": arch, "epochs": epochs, **{k: v for k, v in kw.items() if v is not None}}
        return from_mapping(TrainConfig, values, "sweep", cfg)

    def space_obj(self) -> Any:
        """NSGA-II mode: the search space the genotypes are sampled from."""
        from nas.space import load_space

        base = self.search_config(eta=0.0)
        space = load_space(self.space or base.space)
        channels = self.channels or (base.channels if not self.space else None)
        return space.with_channels(channels) if channels else space

    def latency_input(self) -> tuple[int, int]:
        """Input size (H, W) the latency is measured / predicted at: the search's."""
        from nas.search import latency_size

        return latency_size(self.search_config(eta=0.0))


@dataclass
class WorkerOptions:
    """Per-process settings (not part of the study): where, on what, how long."""

    study: str
    storage: str
    runs_dir: str = str(RUNS_DIR)
    out_dir: str = str(SWEEPS_DIR)
    n_trials: int | None = None
    n_workers: int = 1
    worker_index: int = 0
    heartbeat: int = 20
    grace: int = 60
    device: str = "auto"
    threads: int | None = None
    latency_table: str | None = None
    allow_foreign_table: bool = False
    wait: bool = True
    max_failures: int = 3
    time_budget: float | None = None


def default_study_name(sc: SweepConfig) -> str:
    return f"{'eta' if sc.mode == 'darts' else 'nsga2'}-{sc.preset}"


def default_storage(study: str, out_dir: str | Path = SWEEPS_DIR) -> str:
    """``sqlite:///<out_dir>/<study>.db`` (a relative path stays relative)."""
    return f"sqlite:///{(Path(out_dir) / f'{study}.db').as_posix()}"


# --- storage, lock, study --------------------------------------------------------------------


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
        with _quiet_experimental():
            retry = retry_cls(max_retry=3)
        kwargs = {
            "heartbeat_interval": int(heartbeat),
            "grace_period": int(grace or 2 * heartbeat),
            cb_name: retry,
        }
    with _quiet_experimental():
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)


def _init_params(cls: type) -> set[str]:
    import inspect

    return set(inspect.signature(cls.__init__).parameters)


@contextlib.contextmanager
def _quiet_experimental() -> Iterator[None]:
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
    with _quiet_experimental():
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
        with _quiet_experimental():
            study.set_metric_names(["psnr_db", "latency_ms"])
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


def evaluated(study: optuna.Study, params: Mapping[str, Any], number: int) -> FrozenTrial | None:
    """A complete trial (not ``number``) with the same parameters, or None.

    NSGA-II proposes genotypes it has already evaluated (small spaces, converged
    populations); their scores are reused instead of training them again.
    """
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.number != number and t.params == dict(params) and "cached_from" not in t.user_attrs:
            return t
    return None


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


# --- one trial -------------------------------------------------------------------------------


def time_net(
    net: torch.nn.Module,
    size: int | tuple[int, int],
    device: torch.device | str = "cpu",
    reps: int = 10,
    warmup: int = 2,
    threads: int | None = None,
) -> Any:
    """Latency statistics (:class:`~nas.latency.profiler.TimingStats`, ms) of
    ``net(under, over)`` at batch 1, ``size`` (H, W; one number: square).

    The profiler's harness (:func:`nas.latency.profiler.time_fn`: CUDA synchronised,
    garbage collector paused), eval and inference mode, random inputs in [0, 1).
    """
    import copy

    from nas.latency.profiler import TimingStats, pinned_threads, time_fn

    dev = torch.device(device)
    g = torch.Generator().manual_seed(0)
    H, W = parse_size(size)
    x = [torch.rand(1, 3, H, W, generator=g).to(dev) for _ in range(2)]
    with pinned_threads(threads), torch.inference_mode():
        m = copy.deepcopy(net).to(dev).eval()
        samples = time_fn(lambda: m(*x), dev, reps, warmup=warmup)
    return TimingStats.from_seconds(samples)


def measure_ms(
    net: torch.nn.Module,
    size: int | tuple[int, int],
    device: torch.device | str = "cpu",
    reps: int = 10,
    warmup: int = 2,
    threads: int | None = None,
    statistic: str = "median",
) -> float:
    """One latency figure (ms, ``statistic`` of :func:`time_net`'s timings)."""
    return float(getattr(time_net(net, size, device, reps, warmup, threads), f"{statistic}_ms"))


def _latency_attrs(
    sc: SweepConfig, net: torch.nn.Module, size: tuple[int, int], device: Any
) -> dict:
    stats = time_net(net, size, device, sc.latency_reps, sc.latency_warmup, sc.latency_threads)
    return {
        "measured_ms": float(getattr(stats, f"{sc.latency_statistic}_ms")),
        "measured_median_ms": stats.median_ms,
        "measured_min_ms": stats.min_ms,
        "latency_statistic": sc.latency_statistic,
        "latency_threads": sc.latency_threads or torch.get_num_threads(),
    }


@torch.no_grad()
def derived_psnr(run_dir: Path, cfg: Any, device: torch.device | str = "cpu") -> float:
    """PSNR (dB) of a search run's derived net with its inherited weights (``derived_init.pt``)
    on the search's evaluation batches (validation split, same crop, seed and count)."""
    from nas.data import build_dataset, make_loader
    from nas.metrics import psnr
    from nas.models import load_model_file

    dev = torch.device(device)
    net = load_model_file(run_dir / "derived_init.pt").model.to(dev).eval()
    mis = bool(net.arch.misaligned)
    val = build_dataset(cfg.data, "val", cfg.crop, mis, cfg.seed, length=cfg.samples_per_epoch)
    loader = make_loader(val, cfg.batch, shuffle=False, seed=cfg.seed + 2)
    total, n = 0.0, 0
    for _, b in zip(range(cfg.eval_batches), loader):
        y = net(b["under"].to(dev), b["over"].to(dev))
        total += float(psnr(y, b["gt"].to(dev)).clamp(max=100).sum())
        n += len(b["gt"])
    return total / max(n, 1)


def best_val_psnr(run_dir: Path) -> float:
    rows = RunDir(run_dir, resume=True).read_metrics()
    vals = [float(r["val_psnr"]) for r in rows if r.get("val_psnr") not in (None, "")]
    if not vals:
        raise RuntimeError(f"{run_dir} logged no val_psnr (data without ground truth?)")
    return max(vals)


def _resumable(run_dir: str | None) -> Path | None:
    if not run_dir:
        return None
    p = Path(run_dir)
    ok = (p / "checkpoints" / "last.pt").is_file() and (p / "config.yaml").is_file()
    return p if ok else None


def _genotype_str(g: Any) -> str:
    return " ".join(op for _, op in g.ops)


@dataclass
class TrialContext:
    """What a trial needs besides its parameters."""

    sc: SweepConfig
    opts: WorkerOptions
    table: Any = None  # LatencyTable or None
    set_attr: Callable[[str, Any], None] = lambda k, v: None
    user_attrs: Mapping[str, Any] = field(default_factory=dict)


def run_darts_trial(number: int, params: Mapping[str, float], ctx: TrialContext) -> dict:
    """Search at ``params["eta"]`` (+ retrain); returns ``{"values": [psnr, ms], "attrs": ...}``.

    A trial re-queued after its worker died finds its run folder in ``ctx.user_attrs`` and
    resumes it from the last checkpoint.
    """
    from nas.genotype import Genotype, build
    from nas.search import latency_size, run_search
    from nas.train import run_train
    from nas.utils import resolve_device

    sc, opts = ctx.sc, ctx.opts
    t0 = time.perf_counter()
    eta = float(params["eta"])
    study = opts.study
    prev = _resumable(ctx.user_attrs.get("run_dir"))
    name = prev.name if prev else f"{study}-t{number:03d}-eta{eta:g}"
    runs_dir = str(prev.parent) if prev else opts.runs_dir
    cfg = sc.search_config(
        eta,
        run_name=name,
        runs_dir=runs_dir,
        device=opts.device,
        latency_table=opts.latency_table,
        allow_foreign_table=opts.allow_foreign_table or None,
    )
    ctx.set_attr("run_dir", str(Path(runs_dir) / name))
    run = run_search(cfg, resume=prev is not None, progress=False)
    g = Genotype.from_yaml(run / "genotype.yaml")
    export = yaml.safe_load((run / "export.yaml").read_text()) or {}
    device = resolve_device(cfg.device)
    size = latency_size(cfg)
    attrs: dict[str, Any] = {
        "run_dir": str(run),
        "genotype": _genotype_str(g),
        "genotype_yaml": g.to_yaml(),
        "predicted_ms": export.get("predicted_ms"),
        "latency_table": export.get("table"),
        "params": export.get("params"),
        "latency_input": size_text(size),
        "device": str(device),
        "host": socket.gethostname(),
        "supernet_psnr": float(RunDir(run, resume=True).read_metrics()[-1]["eval_psnr"]),
    }
    attrs.update(_latency_attrs(sc, build(g), size, device))
    attrs["derived_psnr"] = derived_psnr(run, cfg, device)
    psnr = attrs["derived_psnr"]
    attrs["psnr_source"] = "derived net, inherited weights"
    if sc.retrain_epochs > 0:
        prev_t = _resumable(ctx.user_attrs.get("retrain_dir"))
        tname = prev_t.name if prev_t else f"{name}-retrain"
        tcfg = sc.train_config(
            str(run),
            sc.retrain_epochs,
            beta1=params.get("beta1"),
            beta2=params.get("beta2"),
            run_name=tname,
            runs_dir=runs_dir,
            device=opts.device,
        )
        ctx.set_attr("retrain_dir", str(Path(runs_dir) / tname))
        tr = run_train(tcfg, resume=prev_t is not None, progress=False)
        attrs["retrain_dir"] = str(tr)
        attrs["retrain_psnr"] = best_val_psnr(tr)
        psnr = attrs["retrain_psnr"]
        attrs["psnr_source"] = f"retrain ({sc.retrain_epochs} epochs, crmef loss), best val"
    attrs["wall_s"] = round(time.perf_counter() - t0, 2)
    return {"values": [psnr, attrs["measured_ms"]], "attrs": attrs}


def run_nsga2_trial(number: int, choice: Mapping[str, str], ctx: TrialContext) -> dict:
    """Proxy-train the genotype ``choice`` (slot -> op); returns values (PSNR, latency ms).

    The latency objective is the table prediction when this worker has a table, else the
    measurement; both are stored as user attributes.
    """
    from nas.genotype import Genotype, build
    from nas.latency import predict
    from nas.train import run_train
    from nas.utils import resolve_device

    sc, opts = ctx.sc, ctx.opts
    t0 = time.perf_counter()
    space = sc.space_obj()
    g = Genotype(space.name, space.arch, tuple((s, choice[s]) for s in space.slots))
    prev = _resumable(ctx.user_attrs.get("run_dir"))
    name = prev.name if prev else f"{opts.study}-t{number:03d}"
    runs_dir = Path(prev.parent) if prev else Path(opts.runs_dir)
    arch_file = runs_dir / name / "genotype.yaml"
    g.to_yaml(arch_file)
    ctx.set_attr("run_dir", str(runs_dir / name))
    tcfg = sc.train_config(
        str(arch_file), sc.proxy_epochs, run_name=name, runs_dir=str(runs_dir), device=opts.device
    )
    run = run_train(tcfg, resume=prev is not None, progress=False)
    device = resolve_device(opts.device)
    size = sc.latency_input()
    attrs: dict[str, Any] = {
        "run_dir": str(run),
        "genotype": _genotype_str(g),
        "genotype_yaml": g.to_yaml(),
        "latency_input": size_text(size),
        "device": str(device),
        "host": socket.gethostname(),
        "psnr_source": f"proxy training ({sc.proxy_epochs} epochs, crmef loss), best val",
    }
    attrs["proxy_psnr"] = best_val_psnr(run)
    attrs.update(_latency_attrs(sc, build(g), size, device))
    attrs["predicted_ms"] = None
    if ctx.table is not None:
        attrs["predicted_ms"] = float(predict(g, size, ctx.table))
        attrs["latency_table"] = ctx.table.name
    attrs["latency_source"] = "table" if attrs["predicted_ms"] is not None else "measured"
    latency = attrs["predicted_ms"] if attrs["predicted_ms"] is not None else attrs["measured_ms"]
    attrs["wall_s"] = round(time.perf_counter() - t0, 2)
    return {"values": [attrs["proxy_psnr"], latency], "attrs": attrs}


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


# --- workers ---------------------------------------------------------------------------------


def load_table(sc: SweepConfig, opts: WorkerOptions, required: bool) -> Any:
    """This device's latency table (None when there is none and it is not ``required``)."""
    from nas.latency import LatencyTable
    from nas.latency.table import LatencyTableNotFound
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
            with _quiet_experimental():
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


def spawn_workers(opts: WorkerOptions, extra: Sequence[str] = ()) -> int:
    """Start ``opts.n_workers`` local worker processes on the study; wait; worst exit code."""
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
            "--out-dir",
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
    codes = [p.wait() for p in procs]
    return max(codes) if codes else 0


# --- results: tables, fronts, plot -----------------------------------------------------------


def trials_frame(study: optuna.Study, name: str | None = None) -> Any:
    """Every complete trial of ``study`` as a DataFrame, with a ``pareto`` flag.

    Columns: study, mode, trial, eta, beta1, beta2, psnr (objective 1), latency_ms
    (objective 2), measured_ms, predicted_ms, genotype, supernet_psnr, derived_psnr, cached
    (NSGA-II: a re-proposed genotype whose score was reused), wall_s, latency_input,
    genotype_yaml, run_dir, device, pareto.
    """
    import pandas as pd

    cfg = study.user_attrs.get(CONFIG_ATTR, {})
    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        u = t.user_attrs
        rows.append(
            {
                "study": name or study.study_name,
                "mode": cfg.get("mode", "?"),
                "trial": t.number,
                "eta": t.params.get("eta"),
                "beta1": t.params.get("beta1"),
                "beta2": t.params.get("beta2"),
                "psnr": float(t.values[0]),
                "latency_ms": float(t.values[1]),
                "measured_ms": u.get("measured_ms"),
                "predicted_ms": u.get("predicted_ms"),
                "genotype": u.get("genotype", ""),
                "supernet_psnr": u.get("supernet_psnr"),
                "derived_psnr": u.get("derived_psnr"),
                "cached": "cached_from" in u,
                "wall_s": u.get("wall_s"),
                "latency_input": u.get("latency_input"),
                "genotype_yaml": u.get("genotype_yaml", ""),
                "run_dir": u.get("run_dir", ""),
                "device": u.get("device", ""),
            }
        )
    cols = [
        "study",
        "mode",
        "trial",
        "eta",
        "beta1",
        "beta2",
        "psnr",
        "latency_ms",
        "measured_ms",
        "predicted_ms",
        "genotype",
        "supernet_psnr",
        "derived_psnr",
        "cached",
        "wall_s",
        "latency_input",
        "genotype_yaml",
        "run_dir",
        "device",
    ]
    df = pd.DataFrame(rows, columns=cols)
    df["pareto"] = pareto_mask(df["psnr"].tolist(), df["latency_ms"].tolist())
    return df


def pareto_mask(psnr: Sequence[float], ms: Sequence[float]) -> list[bool]:
    """Non-dominated points of (maximise ``psnr``, minimise ``ms``)."""
    pts = list(zip(psnr, ms))
    out = []
    for i, (p, m) in enumerate(pts):
        dominated = any(
            (q >= p and n <= m) and (q > p or n < m) for j, (q, n) in enumerate(pts) if j != i
        )
        out.append(not dominated)
    return out


def hypervolume_2d(psnr: Sequence[float], ms: Sequence[float], ref: tuple[float, float]) -> float:
    """Area (dB x ms) dominated by the points and bounded by ``ref = (psnr_min, ms_max)``.

    Larger is better; comparable between fronts only with the same ``ref``.
    """
    pts = sorted((m, p) for p, m in zip(psnr, ms) if p > ref[0] and m < ref[1])
    area, best = 0.0, ref[0]
    for i, (m, p) in enumerate(pts):
        best = max(best, p)
        nxt = pts[i + 1][0] if i + 1 < len(pts) else ref[1]
        area += (nxt - m) * (best - ref[0])
    return area


_POINT_COLS = [
    "study",
    "mode",
    "trial",
    "psnr",
    "ms",
    "pareto",
    "label",
    "wall_s",
    "cached",
    "genotype",
]


def remeasure(
    frames: Mapping[str, Any],
    device: str = "cpu",
    reps: int = 50,
    rounds: int = 5,
    threads: int | None = None,
    statistic: str = "median",
) -> dict[str, Any]:
    """Re-time every distinct genotype of ``frames`` in this process, round-robin.

    Trials measure their net when they finish, under whatever else runs then; for a figure
    that compares studies, time all their nets here back to back, interleaved over
    ``rounds`` passes (:func:`nas.latency.profiler.measure_networks`, batch 1, each trial's
    latency input size). Returns copies of the frames with ``measured_ms`` replaced (the
    trial-time value kept as ``trial_measured_ms``).
    """
    from nas.genotype import Genotype, build
    from nas.latency.profiler import ProfileSettings, measure_networks

    groups: dict[tuple[int, int], list[str]] = {}
    for df in frames.values():
        for y, size in zip(df["genotype_yaml"], df["latency_input"]):
            if y and size and y not in groups.setdefault(parse_size(size), []):
                groups[parse_size(size)].append(y)
    timings: dict[tuple[tuple[int, int], str], float] = {}
    for size, texts in groups.items():
        nets = [build(Genotype.from_yaml_text(y)) for y in texts]
        settings = ProfileSettings(
            device=device,
            batch=1,
            input_size=size,
            warmup=3,
            reps=reps,
            rounds=rounds,
            threads=threads,
        )
        for y, st in zip(texts, measure_networks(nets, settings)):
            timings[(size, y)] = float(getattr(st, f"{statistic}_ms"))
    out = {}
    for name, df in frames.items():
        d = df.copy()
        d["trial_measured_ms"] = d["measured_ms"]
        d["measured_ms"] = [
            timings.get((parse_size(s), y)) if y and s else None
            for y, s in zip(d["genotype_yaml"], d["latency_input"])
        ]
        out[name] = d
    return out


def front_data(frames: Mapping[str, Any], x: str = "measured_ms") -> tuple[Any, Any]:
    """Points and per-study summary of several studies on one latency axis (tested).

    Args:
        frames: ``{study: trials_frame(...)}``.
        x: latency column (``measured_ms``: the same measurement for both modes, the default;
            ``latency_ms``: each study's own objective).

    Returns:
        ``(points, summary)``: points with columns study, mode, trial, psnr, ms, pareto
        (non-dominated *within its study* on this axis), label, wall_s, cached, genotype;
        summary with, per study, trials, trained (not reused), Pareto size, best PSNR,
        fastest ms, total wall-clock and wall-clock per trained trial, and the hypervolume
        w.r.t. a reference point shared by all studies (worst PSNR, slowest ms x 1.05).
    """
    import pandas as pd

    parts = []
    for name, df in frames.items():
        if df is None or len(df) == 0:
            continue
        d = df.copy()
        d["study"] = name
        d["ms"] = d[x].astype(float) if x in d else d["latency_ms"].astype(float)
        d = d[d["ms"].notna() & d["psnr"].notna()]
        d["pareto"] = pareto_mask(d["psnr"].tolist(), d["ms"].tolist())
        d["label"] = [
            f"eta={e:g}" if isinstance(e, (int, float)) and not math.isnan(e) else f"t{n}"
            for e, n in zip(d["eta"], d["trial"])
        ]
        for col, default in (("cached", False), ("genotype", ""), ("wall_s", None)):
            if col not in d:
                d[col] = default
        parts.append(d[_POINT_COLS])
    cols = _POINT_COLS
    points = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)
    rows = []
    if len(points):
        ref = (float(points["psnr"].min()) - 1e-9, float(points["ms"].max()) * 1.05)
        for name, d in points.groupby("study", sort=False):
            front = d[d["pareto"]]
            wall = pd.to_numeric(d["wall_s"], errors="coerce")
            trained = d[~d["cached"].astype(bool)] if "cached" in d else d
            rows.append(
                {
                    "study": name,
                    "mode": d["mode"].iloc[0],
                    "trials": len(d),
                    "trained": len(trained),
                    "pareto": len(front.drop_duplicates(["psnr", "ms"])),  # distinct points
                    "best_psnr": float(d["psnr"].max()),
                    "fastest_ms": float(d["ms"].min()),
                    "wall_s_total": float(wall.sum()),
                    "wall_s_per_trained": float(wall.sum()) / max(len(trained), 1),
                    "hypervolume": hypervolume_2d(front["psnr"], front["ms"], ref),
                }
            )
    return points, pd.DataFrame(rows)


def _merged_label(labels: Any) -> str:
    """``["eta=0.5", "eta=0.25"]`` -> ``"eta=0.25,0.5"``; other labels joined by commas."""
    labels = [str(x) for x in labels]
    if all(lab.startswith("eta=") for lab in labels):
        values = sorted((lab.removeprefix("eta=") for lab in labels), key=float)
        return "eta=" + ",".join(values)
    return ",".join(labels)


def front_rows(points: Any) -> Any:
    """Each study's distinct front points, trials that coincide merged (labels joined)."""
    import pandas as pd

    rows = []
    front = points[points["pareto"]].sort_values(["study", "ms"])
    for (study, ms, ps), g in front.groupby(["study", "ms", "psnr"], sort=False):
        rows.append(
            {
                "study": study,
                "label": _merged_label(g["label"]),
                "psnr": ps,
                "ms": ms,
                "genotype": g["genotype"].iloc[0],
            }
        )
    return pd.DataFrame(rows, columns=["study", "label", "psnr", "ms", "genotype"])


def draw_fronts(points: Any, path: str | Path, title: str = "", xlabel: str = "") -> Path:
    """Scatter every study's trials, join each study's Pareto front; write ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for i, (name, d) in enumerate(points.groupby("study", sort=False)):
        color = f"C{i}"
        mode = d["mode"].iloc[0]
        ax.scatter(d["ms"], d["psnr"], s=18, alpha=0.45, color=color)
        f = d[d["pareto"]].sort_values("ms")
        ax.plot(f["ms"], f["psnr"], "o-", color=color, label=f"{name} ({mode}, {len(d)} trials)")
        if mode == "darts":  # one label per point: "eta=0.25,0.5" when trials coincide
            for (ms, ps), g in f.groupby(["ms", "psnr"], sort=False):
                ax.annotate(
                    _merged_label(g["label"]),
                    (ms, ps),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
    ax.set_xlabel(xlabel or "latency (ms, measured, batch 1)")
    ax.set_ylabel("validation PSNR (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


HEADERS = {
    "psnr": "PSNR (dB)",
    "latency_ms": "latency ms (objective)",
    "measured_ms": "measured ms",
    "predicted_ms": "predicted ms",
    "pareto_mark": "Pareto",
    "wall_s": "wall s",
}


def markdown_table(
    df: Any,
    columns: Sequence[str],
    floatfmt: str = "{:.4g}",
    headers: Mapping[str, str] | None = None,
) -> str:
    """A GitHub Markdown table of ``df[columns]`` (no extra dependency)."""
    headers = HEADERS if headers is None else headers

    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        if isinstance(v, float):
            return floatfmt.format(v)
        return str(v).replace("|", "\\|")

    names = [headers.get(c, c) for c in columns]
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(columns)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(cell(r[c]) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def pareto_columns(mode: str, extra: Sequence[str] = ()) -> list[str]:
    """Columns of the printed table (``extra``: beta1/beta2 when the study sweeps them)."""
    if mode == "darts":
        return [
            "eta",
            *extra,
            "psnr",
            "measured_ms",
            "predicted_ms",
            "pareto_mark",
            "genotype",
            "trial",
            "wall_s",
        ]
    return ["trial", "psnr", "latency_ms", "measured_ms", "genotype", "wall_s"]


def write_report(
    study: optuna.Study, out_dir: str | Path, compare: Sequence[str] = (), storage: str = ""
) -> dict[str, Any]:
    """Print the Pareto table; write ``<study>.csv``, ``.md`` and ``.png`` under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = study.study_name
    df = trials_frame(study)
    mode = study.user_attrs.get(CONFIG_ATTR, {}).get("mode", "darts")
    df["pareto_mark"] = ["*" if v else "" for v in df["pareto"]]
    if mode == "darts":  # the whole curve, by eta; '*' marks the Pareto front
        keys = [k for k in ("eta", "beta1", "beta2") if df[k].notna().any()]
        table = df.sort_values(keys) if len(df) else df
        title = "Trials by eta ('*': on the Pareto front; maximise PSNR, minimise latency)"
    else:  # one row per distinct genotype on the front
        table = df[df["pareto"]].sort_values("latency_ms").drop_duplicates("genotype")
        evaluated_n = int((~df["cached"]).sum()) if len(df) else 0
        title = (
            f"Pareto front: {len(table)} genotypes, of {len(df)} trials ({evaluated_n} trained, "
            "the rest re-proposed and reused; maximise PSNR, minimise latency)"
        )
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    counts = {s: states.count(s) for s in sorted(set(states))}
    device = sorted(set(df["device"])) if len(df) else []
    head = (
        f"study {name} ({mode}): trials {counts}; device {', '.join(device) or '?'}; "
        f"wall-clock per trial {df['wall_s'].astype(float).mean():.1f} s, "
        f"total {df['wall_s'].astype(float).sum():.0f} s"
        if len(df)
        else f"study {name} ({mode}): no complete trial yet ({counts})"
    )
    cols = pareto_columns(mode, [k for k in ("beta1", "beta2") if df[k].notna().any()])
    md = f"{head}\n\n{title}:\n\n" + markdown_table(table, cols)
    df.drop(columns=["pareto_mark", "genotype_yaml"]).to_csv(out / f"{name}.csv", index=False)
    (out / f"{name}.md").write_text(md)
    print(md, flush=True)
    frames = {name: df}
    for other in compare:
        try:
            frames[other] = load_frame(other, storage or default_storage(other, out))
        except (KeyError, ConfigError) as e:
            print(f"note: --compare {other}: {e}", file=sys.stderr)
    points, summary = front_data(frames)
    png = None
    if len(points):
        png = draw_fronts(points, out / f"{'-vs-'.join(frames)}.png", title=_plot_title(df))
    return {"csv": out / f"{name}.csv", "md": out / f"{name}.md", "png": png, "summary": summary}


def _plot_title(df: Any) -> str:
    dev = ", ".join(sorted(set(df["device"]))) if len(df) else ""
    return f"latency-accuracy trade-off ({dev}; {socket.gethostname()})"


def load_frame(study: str, storage: str) -> Any:
    """:func:`trials_frame` of an existing study (KeyError when there is none)."""
    st = make_storage(storage, heartbeat=None)
    return trials_frame(optuna.load_study(study_name=study, storage=st), study)


# --- command line ----------------------------------------------------------------------------


def _kv(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    return k.strip(), yaml.safe_load(v)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m nas.sweep",
        description="Optuna sweeps: eta grid / range over the DARTS search, or NSGA-II over "
        "genotypes. Subcommands: 'plot --studies A B', 'report --study A'.",
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
        type=_kv,
        nargs="+",
        metavar="KEY=VALUE",
        help="search settings (SearchConfig fields), e.g. --set epochs=4 crop=32",
    )
    s.add_argument(
        "--train-set",
        dest="train_set",
        type=_kv,
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
    w.add_argument("--device", default="auto")
    w.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads of this worker (default: torch's); part of the latency "
        "table's device fingerprint, so profile the table with the same --threads",
    )
    w.add_argument("--latency-table", dest="latency_table")
    w.add_argument("--allow-foreign-table", dest="allow_foreign_table", action="store_true")
    w.add_argument("--runs-dir", dest="runs_dir", default=str(RUNS_DIR))
    w.add_argument("--out-dir", dest="out_dir", default=str(SWEEPS_DIR))
    w.add_argument("--compare", nargs="+", default=[], help="studies drawn on the same plot")
    w.add_argument(
        "--time-budget",
        dest="time_budget",
        type=float,
        help="seconds: start no trial after this much wall-clock (equal-compute comparisons)",
    )
    w.add_argument("--no-wait", dest="wait", action="store_false", help="do not wait for others")
    w.add_argument("--no-report", dest="report", action="store_false")
    return p


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`SweepConfig` keys the command line named."""
    keys = {f.name for f in dataclasses.fields(SweepConfig)}
    given = {k: v for k, v in vars(args).items() if k in keys and v is not None}
    if args.search_set:
        given["search"] = dict(args.search_set)
    if args.train_set:
        given["train"] = dict(args.train_set)
    return given


def _plot_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m nas.sweep plot")
    p.add_argument("--studies", nargs="+", required=True)
    p.add_argument("--storage", nargs="+", help="one URL for all studies, or one per study")
    p.add_argument("--out-dir", default=str(SWEEPS_DIR))
    p.add_argument("--out", help="figure path (default <out-dir>/<A>-vs-<B>.png)")
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
    p.add_argument("--device", default="cpu", help="--remeasure: device")
    p.add_argument("--statistic", default="median", choices=["median", "min", "p10", "mean"])
    args = p.parse_args(argv)
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
        frames = remeasure(
            frames, args.device, args.reps, args.rounds, args.threads, args.statistic
        )
        xlabel = (
            f"latency (ms, re-measured: {args.statistic} of {args.reps} calls in "
            f"{args.rounds} rounds, batch 1, {args.device})"
        )
    points, summary = front_data(frames, x=args.x)
    if not len(points):
        print("error: no complete trials in these studies", file=sys.stderr)
        return 2
    out = Path(args.out or Path(args.out_dir) / f"{'-vs-'.join(args.studies)}.png")
    draw_fronts(points, out, xlabel=xlabel, title=args.title)
    text = markdown_table(summary, list(summary.columns), "{:.4g}", headers={})
    text += "\nFronts:\n\n" + markdown_table(
        front_rows(points), ["study", "label", "psnr", "ms", "genotype"], "{:.4g}", headers={}
    )
    print(text)
    md = out.with_suffix(".md")
    md.write_text(text)
    points.to_csv(out.with_suffix(".csv"), index=False)
    print(f"wrote {out}, {md} and {out.with_suffix('.csv')}")
    return 0


def _report_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m nas.sweep report")
    p.add_argument("--study", required=True)
    p.add_argument("--storage")
    p.add_argument("--out-dir", default=str(SWEEPS_DIR))
    p.add_argument("--compare", nargs="+", default=[])
    args = p.parse_args(argv)
    url = args.storage or default_storage(args.study, args.out_dir)
    try:
        study = optuna.load_study(study_name=args.study, storage=make_storage(url, None))
    except KeyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_report(study, args.out_dir, args.compare, args.storage or "")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "plot":
        return _plot_main(argv[1:])
    if argv and argv[0] == "report":
        return _report_main(argv[1:])
    args = build_parser().parse_args(argv)
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
        )
        lock = StudyLock(url)
        with lock.held():  # one creator; a new SQLite file gets its tables once
            storage = make_storage(url, opts.heartbeat, opts.grace)
            study, sc = open_study(
                name, storage, None if joining else given, args.n_trials, args.worker_index
            )
        print(f"study {name} on {url}: {yaml.safe_dump(to_dict(sc), sort_keys=False)}", end="")
        failed: list[int] = []
        if opts.n_workers > 1:
            code = spawn_workers(opts)
            if code:
                print(f"a worker exited with status {code}", file=sys.stderr)
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
