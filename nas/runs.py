"""Run folders: ``results/runs/<name>/`` with config, per-epoch metrics and checkpoints.

Layout of a run::

    config.yaml          the resolved configuration (defaults <- preset <- file <- flags)
    metrics.csv          one row per finished epoch
    checkpoints/last.pt  the last complete epoch (written atomically)
    checkpoints/best.pt  retraining: the best validation epoch
    ...                  what the task writes (genotypes/, genotype.yaml, export.yaml, ...)

Every file is written atomically, so a run killed at any moment (``kill -9`` during a
checkpoint write included) keeps its last complete checkpoint and can be resumed.
"""

from __future__ import annotations

import argparse
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


def add_photo_args(p: argparse.ArgumentParser) -> None:
    """``--max-side`` and ``--cache``: how a run reads real photos (search and train)."""
    p.add_argument(
        "--max-side", dest="max_side", type=int, help="downscale real photos to this long side"
    )
    p.add_argument(
        "--cache",
        action="store_true",
        default=None,
        help="keep decoded real photos in memory (sequences data)",
    )
