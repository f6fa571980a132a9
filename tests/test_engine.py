"""The training engine's checkpoint order: ``last.pt`` holds the state the per-epoch hook
updates (the best score), so a resumed run compares against the true best so far."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from nas.engine import Engine
from nas.runs import RunDir


class _ScriptedTask:
    """A task whose validation score per epoch is given; ``after_checkpoint`` keeps the best
    score and writes ``best.pt`` when it improves (as :class:`nas.train.TrainTask` does)."""

    device = torch.device("cpu")

    def __init__(self, scores: list[float]) -> None:
        self.scores = scores
        self.best_score = -math.inf
        self.best_epoch: int | None = None

    def needs_val_batch(self, epoch: int) -> bool:
        return False

    def train_step(self, batch: dict, val_batch: dict | None, epoch: int) -> dict[str, float]:
        return {"train_loss": float(batch["x"].sum())}

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        return {"val_score": self.scores[epoch]}

    def after_checkpoint(self, run: RunDir, epoch: int, row: dict[str, Any]) -> None:
        if row["val_score"] > self.best_score:
            self.best_score, self.best_epoch = row["val_score"], epoch
            run.save_checkpoint({"epoch": epoch, "val_score": row["val_score"]}, "best")

    def progress(self) -> dict[str, Any]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"best_score": self.best_score, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_score, self.best_epoch = state["best_score"], state["best_epoch"]


def _fit(path: Path, scores: list[float], epochs: int, resume: bool = False) -> _ScriptedTask:
    task = _ScriptedTask(scores)
    loader = [{"x": torch.zeros(1)}, {"x": torch.ones(1)}]
    Engine(RunDir(path, resume=resume), task, loader, epochs, progress=False).fit(resume=resume)
    return task


def test_last_checkpoint_holds_the_best_score_of_its_epoch(tmp_path: Path) -> None:
    """``last.pt`` of epoch 1 holds epoch 1's improvement of the best score (the old order
    saved ``last.pt`` before the hook: it held epoch 0's)."""
    _fit(tmp_path / "run", [1.0, 3.0], epochs=2)
    last = RunDir(tmp_path / "run", resume=True).load_checkpoint("last")
    assert last["epoch"] == 1
    assert last["task"] == {"best_score": 3.0, "best_epoch": 1}


def test_resumed_run_keeps_the_true_best(tmp_path: Path) -> None:
    """Resumed after epoch 1 (best 3.0 there), a worse epoch 2 (2.0) does not replace
    ``best.pt``; with a stale best score (1.0) in ``last.pt`` it did."""
    scores = [1.0, 3.0, 2.0]
    _fit(tmp_path / "run", scores, epochs=2)
    task = _fit(tmp_path / "run", scores, epochs=3, resume=True)
    assert (task.best_score, task.best_epoch) == (3.0, 1)
    best = RunDir(tmp_path / "run", resume=True).load_checkpoint("best")
    assert best == {"epoch": 1, "val_score": 3.0}
    last = RunDir(tmp_path / "run", resume=True).load_checkpoint("last")
    assert last["epoch"] == 2 and last["task"]["best_score"] == 3.0
