"""Run folders: ``results/runs/<name>/`` with config, per-epoch metrics and checkpoints.

Layout of a run::

    config.yaml          the resolved configuration (defaults <- preset <- file <- flags)
    metrics.csv          one row per finished epoch
    checkpoints/last.pt  the last complete epoch (written atomically)
    checkpoints/best.pt  retraining: the best validation epoch
    ...                  what the task writes (genotypes/, genotype.yaml, export.yaml, ...)

Every file is written atomically, so a run killed at any moment (``kill -9`` during a
checkpoint write included) keeps its last complete checkpoint and can be resumed.

:class:`RunDir` writes and reads a run folder; :class:`Run` is the typed record of a finished
or running one (kind, resolved config, eta, space, genotype, latency size, paths); its
evaluation batches come from :func:`nas.data.eval_batches` with its config. Everything that
asks "what is this run?" (evaluation, the sweep, export, plots) asks :meth:`Run.load` or
:meth:`Run.origin_of`, never the run's name or its folders directly.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import time
from pathlib import Path
from typing import Any, TypeVar

import torch
import yaml

from nas.config import from_mapping
from nas.utils import atomic_torch_save, atomic_write_text

T = TypeVar("T")

RUNS_DIR = Path("results") / "runs"


@dataclasses.dataclass
class RunConfig:
    """The settings every training loop shares (search and retraining; YAML keys).

    Attributes:
        data: ``synthetic`` (the bundled photos) or a data path (:func:`nas.data.build_dataset`).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        epochs, batch, crop, samples_per_epoch: the loop (random crops of ``crop`` pixels).
        max_side, cache: how real photos are read (downscaled, kept in memory).
        steps_per_epoch: cap on the steps of an epoch (None: the whole loader).
        eval_batches: fixed evaluation batches (:func:`nas.data.eval_batches`).
        grad_clip: gradient-norm clip of the weight step.
        channels_last: memory format (None: on for CUDA, off on CPU; :mod:`nas.accel`).
        loss_args: keyword arguments of the loss (its constructor's, e.g. ``{mean_weight:
            0.1}`` for ``mef-ssim``; :func:`nas.losses.build_loss`).
        teacher, teacher_epochs: distillation warm-up: L1 to the teacher's fusion
            (``mertens``) for the first ``teacher_epochs`` epochs, then the loss
            (:class:`nas.losses.TeacherWarmup`).
        seed, num_workers, run_name, runs_dir: seeding, loader workers, the run folder.
    """

    data: str = "synthetic"
    device: str = "auto"
    epochs: int = 50
    batch: int = 8
    crop: int = 128
    samples_per_epoch: int = 256
    max_side: int | None = None
    cache: bool = False
    steps_per_epoch: int | None = None
    eval_batches: int = 4
    grad_clip: float = 5.0
    channels_last: bool | None = None
    loss_args: dict[str, Any] | None = None
    teacher: str | None = None
    teacher_epochs: int = 0
    seed: int = 0
    num_workers: int = 0
    run_name: str | None = None
    runs_dir: str = str(RUNS_DIR)


class RunError(RuntimeError):
    """A run folder cannot be created, resumed or read; the message names the path."""


class RunDir:
    """One run folder.

    Args:
        path: the folder. ``resume=False`` refuses a folder that already holds a checkpoint
            (so a good run is never overwritten by accident); ``resume=True`` requires it
            to exist.
    """

    def __init__(self, path: str | Path, resume: bool = False) -> None:
        self.path = Path(path)
        if resume:
            if not self.path.is_dir():
                raise RunError(f"cannot resume: run folder {self.path} does not exist")
        elif (self.path / "checkpoints").exists() and any((self.path / "checkpoints").iterdir()):
            raise RunError(
                f"run folder {self.path} already holds checkpoints; pass --resume to continue "
                "it or choose another --run-name"
            )
        self.path.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def new_name(prefix: str) -> str:
        return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"

    # --- config ------------------------------------------------------------------------
    def save_config(self, config: dict[str, Any]) -> None:
        atomic_write_text(self.path / "config.yaml", yaml.safe_dump(config, sort_keys=False))

    def load_config(self) -> dict[str, Any]:
        p = self.path / "config.yaml"
        if not p.is_file():
            raise RunError(f"{p} is missing: is {self.path} a run folder?")
        return yaml.safe_load(p.read_text()) or {}

    # --- metrics -----------------------------------------------------------------------
    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.csv"

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Rewrite ``metrics.csv`` with ``rows`` (columns: the union, in first-seen order)."""
        columns: list[str] = []
        for row in rows:
            columns += [k for k in row if k not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.metrics_path, buf.getvalue())

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.is_file():
            return []
        with self.metrics_path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        return [{k: _parse(v) for k, v in row.items()} for row in rows]

    # --- checkpoints -------------------------------------------------------------------
    def checkpoint_path(self, name: str = "last") -> Path:
        return self.path / "checkpoints" / f"{name}.pt"

    def save_checkpoint(self, state: dict[str, Any], name: str = "last") -> Path:
        return atomic_torch_save(state, self.checkpoint_path(name))

    def load_checkpoint(self, name: str = "last", map_location: Any = "cpu") -> dict | None:
        """The checkpoint ``name``, or None when there is none; a corrupt file is an error."""
        p = self.checkpoint_path(name)
        if not p.is_file():
            return None
        try:
            return torch.load(p, map_location=map_location, weights_only=False)
        except Exception as e:  # noqa: BLE001 - torch raises many kinds for a bad file
            raise RunError(f"checkpoint {p} cannot be read ({type(e).__name__}: {e})") from None


@dataclasses.dataclass(frozen=True)
class Run:
    """What a run folder is: its kind and resolved settings, and what it produced.

    Attributes:
        path: the run folder.
        kind: ``"search"`` or ``"train"`` (``config.yaml``'s ``kind``).
        config: the resolved configuration as saved (plain YAML values).
    """

    path: Path
    kind: str
    config: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path) -> Run:
        """The run at ``path``; :class:`RunError` naming the file when it is not a run."""
        p = Path(path)
        cfg = _read_yaml(p / "config.yaml")
        if cfg is None:
            raise RunError(f"{p / 'config.yaml'} is missing or unreadable: is {p} a run folder?")
        kind = str(cfg.get("kind", ""))
        if kind not in RUN_KINDS:
            raise RunError(f"{p / 'config.yaml'}: kind {kind!r} is not one of {RUN_KINDS}")
        return cls(p, kind, cfg)

    @classmethod
    def find(cls, path: str | Path) -> Run | None:
        """:meth:`load`, or None when ``path`` is not a run folder."""
        try:
            return cls.load(path)
        except RunError:
            return None

    @classmethod
    def origin_of(cls, source: str | Path, _depth: int = 0) -> Run | None:
        """The search run a model reference comes from, or None.

        Follows a search run folder, a file inside one (``genotype.yaml``,
        ``genotypes/epoch_*.yaml``, ``derived_init.pt``), a training run (or one of its
        checkpoints) whose ``arch`` is one of those (a relative ``arch`` is taken relative to
        the working directory).
        """
        if _depth > 3 or not source:
            return None
        p = Path(str(source))
        if p.is_dir():
            folders = [p.parent] if p.name == "checkpoints" else [p]
        elif p.is_file() and p.parent.name == "checkpoints":
            folders = [p.parent.parent]
        else:
            folders = [p.parent, p.parent.parent]
        for folder in folders:
            run = cls.find(folder)
            if run is None:
                continue
            if run.kind == "search":
                return run
            arch = run.config.get("arch")
            return cls.origin_of(arch, _depth + 1) if arch else None
        return None

    def config_as(self, cls: type[T]) -> T:
        """The saved configuration as the dataclass ``cls`` (keys it does not know, such as
        ``kind`` and ``run_name``, are left out)."""
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        data = {k: v for k, v in self.config.items() if k in known}
        return from_mapping(cls, data, str(self.path / "config.yaml"))

    # --- what the run is ----------------------------------------------------------------
    @property
    def name(self) -> str:
        return str(self.config.get("run_name") or self.path.name)

    @property
    def eta(self) -> float | None:
        """A search's latency trade-off (a training run: its search's, when known)."""
        run = self if self.kind == "search" else Run.origin_of(self.config.get("arch", ""))
        value = None if run is None else run.config.get("eta")
        try:
            return None if value is None else float(value)
        except (TypeError, ValueError):
            return None

    @property
    def space(self) -> str | None:
        """A search's space (name or file as given)."""
        return self.config.get("space") if self.kind == "search" else None

    @property
    def latency_size(self) -> tuple[int, int]:
        """(H, W) at which the run predicts latency: ``latency_input``, else the crop."""
        from nas.utils import parse_size

        return parse_size(self.config.get("latency_input") or self.config.get("crop") or 128)

    # --- what the run wrote --------------------------------------------------------------
    @property
    def genotype_path(self) -> Path | None:
        p = self.path / "genotype.yaml"
        return p if p.is_file() else None

    def genotype(self) -> Any:
        """The derived :class:`~nas.genotype.Genotype` of a search (None before it exists)."""
        from nas.genotype import Genotype

        p = self.genotype_path
        return None if p is None else Genotype.from_yaml(p)

    def export_report(self) -> dict[str, Any]:
        """A search's ``export.yaml`` (size, predicted latency), ``{}`` before it exists."""
        return _read_yaml(self.path / "export.yaml") or {}

    def checkpoint(self, name: str = "last") -> Path | None:
        p = self.path / "checkpoints" / f"{name}.pt"
        return p if p.is_file() else None

    def metrics(self) -> list[dict[str, Any]]:
        return RunDir(self.path, resume=True).read_metrics()


RUN_KINDS = ("search", "train")


def _read_yaml(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def resume_config(cls: type[T], args: Any) -> T | None:
    """With ``--resume``: the saved ``config.yaml`` of run ``args.run_name`` as a ``cls``.

    CLI flags given next to ``--resume`` are applied on top by :func:`nas.config.resolve`
    (e.g. ``--epochs`` to extend a run). Without ``--resume``: None.
    """
    if not getattr(args, "resume", False):
        return None
    if not args.run_name:
        raise ValueError("--resume needs --run-name (the run folder to continue)")
    run = RunDir(Path(args.runs_dir or cls().runs_dir) / args.run_name, resume=True)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    saved = {k: v for k, v in run.load_config().items() if k in fields}
    return from_mapping(cls, saved, str(run.path / "config.yaml"))


def _parse(value: str) -> Any:
    for cast in (int, float):
        try:
            return cast(value)
        except (TypeError, ValueError):
            pass
    return value
