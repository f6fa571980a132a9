"""``python -m nas.train --arch RUN_OR_NAME``: retrain a derived net or a fixed baseline.

The same :class:`~nas.engine.Engine` as the search (not a copy) drives a
:class:`TrainTask`: Adam with cosine annealing (1e-4 -> 1e-10, CRMEF §IV-A-3), flips and
90-degree rotations, per-epoch validation metrics, best (by validation PSNR) and last
checkpoints, resume after a kill. The best checkpoint is the one with the highest validation
PSNR where the data have ground truth, else the highest validation MEF-SSIM (real sequences).

Losses: ``--loss paper`` (default) trains each model with its own paper's loss (CRMEF's
L_Int + 0.75 L_Gra + 0.05 L_Dis for derived nets and the CRMEF genotypes, MEF-CL's, FFMEF's,
LCNDR's, HyperP_MB's for the baselines); ``--loss crmef`` (or any name of
:func:`nas.losses.build_loss`) trains every architecture with the same loss, so a comparison
can separate the architecture from the training recipe. The adversarial term trains a
PatchGAN critic with WGAN-GP, one critic step per generator step.

Several GPUs or machines: ``torchrun --nproc-per-node K -m nas.train ...`` trains with
DistributedDataParallel (:mod:`nas.distributed`); ``--batch`` stays the global batch
(``B / K`` per rank), rank 0 logs and writes the run folder.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nas import distributed
from nas.accel import channels_last_for, configure_device, to_memory_format
from nas.cli import add_training_args, run_config_command
from nas.config import to_dict
from nas.engine import Batch, Engine, validation_scores
from nas.losses import (
    LossArgumentError,
    UnknownLossError,
    build_loss,
    build_objective,
    check_loss_data,
    loss_for_model,
    set_loss_epoch,
)
from nas.models import build_arch, resolve_model
from nas.runs import RunConfig, RunDir, RunError
from nas.utils import resolve_device, seed_everything


@dataclass
class TrainConfig(RunConfig):
    """Settings of a training run (YAML keys = these fields and
    :class:`nas.runs.RunConfig`'s)."""

    arch: str = "crmef-general"
    channels: int | None = None
    init: str = "scratch"
    loss: str = "paper"
    beta1: float = 0.75
    beta2: float = 0.05
    misaligned: bool | None = None
    epochs: int = 100
    eval_batches: int = 8
    lr: float = 1e-4
    lr_min: float = 1e-10
    critic_lr: float = 1e-4

    def __post_init__(self) -> None:
        if self.init not in ("scratch", "inherit"):
            raise ValueError(f"init must be 'scratch' or 'inherit', got {self.init!r}")


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        epochs=3, batch=4, crop=48, samples_per_epoch=32, eval_batches=2, lr=2e-3, lr_min=1e-5
    ),
    "small": dict(
        epochs=10, batch=4, crop=64, samples_per_epoch=96, eval_batches=4, lr=1e-3, lr_min=1e-6
    ),
}


def loss_name(cfg: TrainConfig, model_name: str, is_registry: bool) -> str:
    if cfg.loss != "paper":
        return cfg.loss
    return loss_for_model(model_name) if is_registry else "crmef"


def make_loss(name: str, cfg: TrainConfig) -> torch.nn.Module:
    """The run's objective (``loss_args`` and the teacher warm-up of the config applied)."""
    if name == "crmef":
        critic = "patchgan" if cfg.beta2 > 0 else None
        if cfg.teacher is not None and cfg.teacher_epochs > 0:
            raise ValueError("a teacher warm-up needs a loss without a critic (e.g. mef-ssim, l1)")
        args = {"beta1": cfg.beta1, "beta2": cfg.beta2, "critic": critic, **(cfg.loss_args or {})}
        return build_loss("crmef", **args)
    return build_objective(name, cfg.loss_args, cfg.teacher, cfg.teacher_epochs)


class TrainTask:
    """Supervised (or the baselines' unsupervised) training of one fusion network."""

    def __init__(
        self,
        model: torch.nn.Module,
        arch: dict[str, Any],
        loss: torch.nn.Module,
        cfg: TrainConfig,
        device: torch.device,
        eval_batches: list[Batch],
        env: distributed.DistEnv | None = None,
    ) -> None:
        configure_device(device)
        self.channels_last = channels_last_for(cfg.channels_last, device)
        self.model = to_memory_format(model.to(device), self.channels_last)
        # the module that trains: DDP around ``model`` under torchrun, else ``model`` itself
        self.train_model = distributed.wrap_model(self.model, env) if env else self.model
        self.arch = arch
        self.loss = loss.to(device)
        self.cfg = cfg
        self.device = device
        self.eval_batches = eval_batches
        # frozen parameters (the authors' discarded layers) neither train nor get gradients
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(self.params, lr=cfg.lr)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.opt, T_max=max(cfg.epochs, 1), eta_min=cfg.lr_min
        )
        adversarial = getattr(loss, "adversarial", None)
        self.critic = adversarial.critic if adversarial is not None else None
        self.critic_opt = (
            torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr, betas=(0.5, 0.9))
            if self.critic is not None
            else None
        )
        # the best checkpoint's validation score and which metric it is: "val_psnr" (data
        # with ground truth) or "val_mef_ssim" (real sequences without)
        self.best_score = -float("inf")
        self.best_metric: str | None = None

    def needs_val_batch(self, epoch: int) -> bool:
        return False

    def train_step(self, batch: Batch, val_batch: Batch | None, epoch: int) -> dict[str, float]:
        self.model.train()
        set_loss_epoch(self.loss, epoch)
        logs: dict[str, float] = {}
        batch = to_memory_format(batch, self.channels_last)
        fused = self.train_model(batch["under"], batch["over"])
        if self.critic is not None:
            self.critic_opt.zero_grad(set_to_none=True)
            c_loss = self.loss.critic_loss(fused.detach(), batch)
            c_loss.backward()
            distributed.average_gradients(self.critic.parameters())  # no-op in one process
            self.critic_opt.step()
            logs["critic_loss"] = float(c_loss.detach())
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(fused, batch)
        loss.backward(inputs=self.params)
        torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.opt.step()
        logs["train_loss"] = float(loss.detach())
        return logs

    def evaluate(self) -> dict[str, float]:
        """Validation loss and PSNR/SSIM (data with ground truth) or MEF-SSIM (without)."""
        return validation_scores(self.model, self.loss, self.eval_batches, self.device)

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        row: dict[str, Any] = {"lr": self.opt.param_groups[0]["lr"]}
        self.sched.step()
        if self.eval_batches and distributed.is_main():
            row.update(self.evaluate())
        return row

    def after_checkpoint(self, run: RunDir, epoch: int, row: dict[str, Any]) -> None:
        """Save ``best`` when the validation score beats :attr:`best_score` (PSNR where the
        data have ground truth, else MEF-SSIM; :attr:`best_metric` names it)."""
        key = "val_psnr" if "val_psnr" in row else "val_mef_ssim"
        score = row.get(key, -float("inf"))
        if score > self.best_score:
            self.best_score, self.best_metric = score, key
            run.save_checkpoint(
                {
                    "epoch": epoch,
                    key: score,
                    "task": {"model": self.model.state_dict(), "arch": self.arch},
                },
                "best",
            )

    def progress(self) -> dict[str, Any]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        state = {
            "model": self.model.state_dict(),
            "arch": self.arch,
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
            "best_score": self.best_score,
            "best_metric": self.best_metric,
        }
        if self.critic is not None:
            state["critic"] = self.critic.state_dict()
            state["critic_opt"] = self.critic_opt.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        if "best_score" in state:
            self.best_score, self.best_metric = state["best_score"], state.get("best_metric")
        else:  # checkpoints written before the rename: "best_psnr" held either metric
            self.best_score, self.best_metric = state["best_psnr"], None
        if self.critic is not None:
            self.critic.load_state_dict(state["critic"])
            self.critic_opt.load_state_dict(state["critic_opt"])


def run_train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> Path:
    """Train (or resume); returns the run folder.

    Under ``torchrun`` (``WORLD_SIZE > 1``) every rank calls this: DDP, a shard of each
    global batch per rank, rank 0 alone writes the run folder (see :mod:`nas.distributed`).
    """
    env = distributed.setup(resolve_device(cfg.device))  # torchrun: join the process group
    try:
        path = _run_train(cfg, env, resume, progress)
    except BaseException:
        if env.distributed:
            distributed.cleanup(barrier=False)
        raise
    if env.distributed:
        distributed.cleanup()
    return path


def _run_train(cfg: TrainConfig, env: distributed.DistEnv, resume: bool, progress: bool) -> Path:
    from nas.baselines import width_kwargs
    from nas.data import build_dataset, eval_batches

    device = env.device
    seed_everything(cfg.seed)
    # --channels sets the width of the CRMEF registry models only (baselines keep their papers')
    resolved = resolve_model(cfg.arch, **width_kwargs(cfg.arch, cfg.channels))
    is_registry = resolved.arch["kind"] == "registry"
    model = resolved.model
    if cfg.init == "scratch" and not is_registry:
        model, _ = build_arch(resolved.arch)  # fresh weights for a genotype
    lname = loss_name(cfg, resolved.name, is_registry)
    loss = make_loss(lname, cfg)
    safe = resolved.name.replace("/", "_")
    name = distributed.broadcast_object(cfg.run_name or RunDir.new_name(f"train-{safe}-{lname}"))
    run, error = None, None
    if env.is_main:
        try:
            run = RunDir(Path(cfg.runs_dir) / name, resume=resume)
        except RunError as e:
            error = str(e)
    error = distributed.broadcast_object(error)  # torchrun: every rank stops, none hangs
    if error:
        raise RunError(error)
    if run is None:  # other ranks only read the folder rank 0 made
        run = RunDir(Path(cfg.runs_dir) / name, resume=True)
    if not resume and env.is_main:
        run.save_config(
            {
                **to_dict(cfg),
                "run_name": name,
                "kind": "train",
                "model": resolved.name,
                "arch_record": resolved.arch,
                "loss_name": lname,
                "loss_dropped_terms": list(getattr(loss, "dropped_terms", ())),
            }
        )
    dropped = getattr(loss, "dropped_terms", ())
    if dropped and env.is_main:
        print(
            f"note: loss {lname!r} runs without {', '.join(dropped)} "
            f"({loss.describe() if hasattr(loss, 'describe') else ''})",
            file=sys.stderr,
        )
    mis = cfg.misaligned
    if mis is None:
        mis = resolved.misaligned
    data_kw = dict(length=cfg.samples_per_epoch, max_side=cfg.max_side, cache=cfg.cache)
    train = build_dataset(cfg.data, "train", cfg.crop, mis, cfg.seed, **data_kw)
    val = build_dataset(cfg.data, "val", cfg.crop, mis, cfg.seed, **data_kw)
    # the global batch cfg.batch, cut into equal per-rank shards under torchrun
    loader = distributed.make_sharded_loader(
        train, cfg.batch, env, shuffle=True, seed=cfg.seed, num_workers=cfg.num_workers
    )
    fixed = eval_batches(val, cfg.batch, cfg.eval_batches, cfg.seed)
    check_loss_data(loss, fixed[:1], lname, cfg.data)
    task = TrainTask(model, resolved.arch, loss, cfg, device, fixed, env)
    Engine(run, task, loader, cfg.epochs, None, cfg.steps_per_epoch, progress).fit(resume=resume)
    return run.path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m nas.train", description=__doc__.split("\n")[0])
    p.add_argument(
        "--model",
        "--arch",
        dest="arch",
        help="registry name, genotype.yaml, search run or model file (--arch: older name)",
    )
    p.add_argument("--preset", choices=sorted(PRESETS))
    p.add_argument("--loss", help="'paper' (each model's own), 'crmef', or a loss name")
    p.add_argument("--channels", type=int, help="width of crmef-* registry models")
    p.add_argument(
        "--init",
        choices=["scratch", "inherit"],
        help="genotypes: fresh weights (default) or the search's inherited ones",
    )
    p.add_argument("--lr", type=float)
    add_training_args(p, "TrainConfig")
    return p


USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,  # ConfigError, ModelRefError, GenotypeError, bad data or settings
    FileNotFoundError,
    RunError,
    UnknownLossError,
    LossArgumentError,
)
"""The mistakes of the person running ``python -m nas.train`` (a bad config value or key, a
missing file, a bad model reference, an existing or missing run folder, an unknown loss or
loss argument): one line on stderr, exit 2. Anything else (a ``RuntimeError`` from a shape
mismatch, a stray ``KeyError`` or ``TypeError``) is a bug and keeps its traceback."""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code, path = run_config_command(TrainConfig, PRESETS, run_train, args, USER_ERRORS)
    if code:
        return code
    print(f"training finished: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
