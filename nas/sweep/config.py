"""What a sweep study is (:class:`SweepConfig`, stored in the study) and what one worker
process does (:class:`WorkerOptions`), with the default study name and storage URL."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.config import ConfigError, from_mapping
from nas.runs import RUNS_DIR

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
    progress: bool = True


def default_study_name(sc: SweepConfig) -> str:
    return f"{'eta' if sc.mode == 'darts' else 'nsga2'}-{sc.preset}"


def default_storage(study: str, out_dir: str | Path = SWEEPS_DIR) -> str:
    """``sqlite:///<out_dir>/<study>.db`` (a relative path stays relative)."""
    return f"sqlite:///{(Path(out_dir) / f'{study}.db').as_posix()}"
