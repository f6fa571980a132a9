"""The one training engine: epochs, steps, logging, atomic checkpoints, resume, NaN guard.

Search and retraining differ only in their :class:`Task` (what one step does, what an epoch
ends with); the loop around them is this module's :class:`Engine`, shared by both.

Determinism and resume: data order and content depend on ``(seed, epoch)`` only (the loaders
of :mod:`nas.data` reseed per epoch), and every checkpoint holds the task state (models,
optimisers, schedulers) and the RNG states. A run resumed from the checkpoint of epoch ``e``
therefore continues exactly as the uninterrupted run would have from epoch ``e + 1``.

Data-parallel runs (``torchrun``, :mod:`nas.distributed`): every rank runs the loop; each
step's scalar logs are averaged over the ranks, and only rank 0 writes metrics, checkpoints
and per-epoch outputs and prints. In one process nothing changes.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterator
from typing import Any, Protocol

import torch
from tqdm import tqdm

from nas.distributed import is_main, reduce_logs
from nas.losses import fusion_sources
from nas.metrics import mef_ssim, psnr, ssim
from nas.runs import RunDir
from nas.utils import rng_state, set_rng_state

Batch = dict[str, Any]


@torch.no_grad()
def validation_scores(
    model: torch.nn.Module,
    criterion: torch.nn.Module,
    batches: list[Batch],
    device: torch.device,
    prefix: str = "val_",
) -> dict[str, float]:
    """Mean loss of ``model`` on ``batches`` (``<prefix>loss``) plus a quality score:
    ``<prefix>psnr`` and ``<prefix>ssim`` when the batches hold ``"gt"``, otherwise
    ``<prefix>mef_ssim`` (3 scales, MEFB's computation, against under and over in the
    reference frame: :func:`nas.losses.fusion_sources`).

    Shared by the search (the supernet) and the retraining (checkpoint selection).
    """
    model.eval()
    sums: dict[str, float] = {}
    n = 0
    for b in batches:
        b = {k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()}
        y = model(b["under"], b["over"])
        k = len(y)
        red = getattr(criterion, "reduction", "mean")
        loss = criterion(y, b)
        loss = loss.sum() if red == "none" else loss * (1 if red == "sum" else k)
        scores = {"loss": float(loss)}
        if "gt" in b:
            scores["psnr"] = float(psnr(y, b["gt"]).clamp(max=100).sum())
            scores["ssim"] = float(ssim(y, b["gt"]).sum())
        else:
            scores["mef_ssim"] = float(mef_ssim(y, fusion_sources(b)).sum())
        for key, v in scores.items():
            sums[key] = sums.get(key, 0.0) + v
        n += k
    return {f"{prefix}{key}": v / max(n, 1) for key, v in sums.items()}


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; the run stopped and its last good checkpoint is kept."""


class Task(Protocol):
    """What a run does; the :class:`Engine` drives it."""

    device: torch.device

    def needs_val_batch(self, epoch: int) -> bool:
        """Whether :meth:`train_step` wants a validation batch this epoch (bi-level search)."""
        ...

    def train_step(self, batch: Batch, val_batch: Batch | None, epoch: int) -> dict[str, float]:
        """One optimisation step; returns scalar logs (losses must be finite)."""
        ...

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        """Scheduler steps, validation, per-epoch logs."""
        ...

    def after_checkpoint(self, run: RunDir, epoch: int, row: dict[str, Any]) -> None:
        """Per-epoch outputs written next to the checkpoint (genotype, best weights, ...) and
        the task state they update (the best score). Called after the epoch's metrics are
        written and *before* its ``last.pt``, so that ``last.pt`` holds that state (a resumed
        run knows the best score so far); a run stopped in between redoes the epoch."""
        ...

    def progress(self) -> dict[str, Any]:
        """Short fields for the progress bar."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {
        k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()
    }


class Engine:
    """Runs ``task`` for ``epochs`` epochs over ``train_loader``.

    Args:
        run: the run folder (metrics, checkpoints).
        task: the :class:`Task`.
        train_loader: an epoch-aware loader (``set_epoch``), e.g. :func:`nas.data.make_loader`.
        epochs: total epochs.
        val_loader: batches for the task's validation steps (cycled, one iterator per pass,
            never rebuilt per step).
        steps_per_epoch: cap on steps per epoch (None: the whole loader).
        progress: show a progress bar.
    """

    def __init__(
        self,
        run: RunDir,
        task: Task,
        train_loader: Any,
        epochs: int,
        val_loader: Any | None = None,
        steps_per_epoch: int | None = None,
        progress: bool = True,
    ) -> None:
        self.run = run
        self.task = task
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.progress = progress and sys.stderr.isatty() and is_main()
        self._val_iter: Iterator | None = None
        self._val_epoch = 0

    def _next_val(self) -> Batch:
        assert self.val_loader is not None, "task asked for a validation batch but none given"
        for _ in range(2):
            if self._val_iter is None:
                _set_epoch(self.val_loader, self._val_epoch)
                self._val_epoch += 1
                self._val_iter = iter(self.val_loader)
            try:
                return next(self._val_iter)
            except StopIteration:
                self._val_iter = None
        raise RuntimeError("the validation loader yields no batches")

    def _resume(self) -> tuple[int, list[dict[str, Any]]]:
        ckpt = self.run.load_checkpoint("last", map_location=self.task.device)
        if ckpt is None:
            return 0, []
        self.task.load_state_dict(ckpt["task"])
        set_rng_state(ckpt["rng"])
        self._val_epoch = ckpt.get("val_epoch", 0)
        epoch = int(ckpt["epoch"]) + 1
        rows = [r for r in self.run.read_metrics() if int(r["epoch"]) < epoch]
        return epoch, rows

    def fit(self, resume: bool = False) -> list[dict[str, Any]]:
        """Train to ``epochs``; returns the per-epoch rows (also in ``metrics.csv``)."""
        start, rows = self._resume() if resume else (0, [])
        for epoch in range(start, self.epochs):
            t0 = time.perf_counter()
            self._val_iter = None
            _set_epoch(self.train_loader, epoch)
            sums: dict[str, float] = {}
            n = 0
            total = len(self.train_loader)
            if self.steps_per_epoch:
                total = min(total, self.steps_per_epoch)
            bar = tqdm(
                total=total,
                desc=f"epoch {epoch + 1}/{self.epochs}",
                disable=not self.progress,
                leave=False,
            )
            for step, batch in enumerate(self.train_loader):
                if step >= total:
                    break
                val = None
                if self.task.needs_val_batch(epoch):
                    val = to_device(self._next_val(), self.task.device)
                logs = self.task.train_step(to_device(batch, self.task.device), val, epoch)
                logs = reduce_logs(logs)  # mean over ranks (identity in one process)
                bad = {k: v for k, v in logs.items() if not math.isfinite(v)}
                if bad:
                    last = self.run.checkpoint_path("last")
                    kept = f"last good checkpoint kept at {last}"
                    if not last.exists():
                        kept = "no checkpoint was written yet"
                    raise NonFiniteLossError(
                        f"epoch {epoch + 1}, step {step + 1}: non-finite {bad}; stopping "
                        f"({kept}). Lower the learning rate or check the data."
                    )
                for k, v in logs.items():
                    sums[k] = sums.get(k, 0.0) + v
                n += 1
                bar.set_postfix(
                    {k: f"{v:.4g}" for k, v in {**logs, **self.task.progress()}.items()}
                )
                bar.update()
            bar.close()
            row: dict[str, Any] = {"epoch": epoch, **{k: v / max(n, 1) for k, v in sums.items()}}
            row.update(self.task.end_epoch(epoch))
            row["epoch_seconds"] = round(time.perf_counter() - t0, 3)
            rows.append(row)
            if not is_main():  # data-parallel: rank 0 alone writes
                continue
            self.run.write_metrics(rows)
            # the hook first: it updates task state (the best score) that last.pt must hold
            self.task.after_checkpoint(self.run, epoch, row)
            self.run.save_checkpoint(
                {
                    "epoch": epoch,
                    "task": self.task.state_dict(),
                    "rng": rng_state(),
                    "val_epoch": self._val_epoch,
                }
            )
            print(_summary(row, self.epochs), flush=True)
        return rows


def _set_epoch(loader: Any, epoch: int) -> None:
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)


def _summary(row: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {row['epoch'] + 1}/{epochs}"]
    for k, v in row.items():
        if k == "epoch" or k.startswith("w:"):
            continue
        parts.append(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}")
    return "  ".join(parts)
