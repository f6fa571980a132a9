"""``python -m nas.search``: latency-penalised differentiable architecture search (CRMEF §III-B).

Bi-level optimisation of ``min_alpha L_val(alpha; w*(alpha)) + eta * R(alpha; LAT)`` with the
weights ``w`` trained on the training split, alternating one architecture step on a
validation batch and one weight step on a training batch (DARTS). The latency term ``R`` is
the supernet's expected latency under softmax(alpha), read from this device's latency table
(:mod:`nas.latency`), normalised so that eta means the same trade-off on every device:

    R(alpha) = E_alpha[LAT] / E_uniform[LAT]        (1.0 = the uniform-alpha supernet)
    objective = L_val + eta * L_ref * R(alpha)

where ``L_ref`` is the validation loss at the end of the weight warm-up (``latency_scale:
loss``, the default; ``none`` drops it). With ``L_ref`` eta reads as "a 100 % latency
reduction is worth eta x the current loss", independent of the device *and* of the loss's
scale. This is ``latency_penalty: normalised`` (the default).

``latency_penalty: paper`` is the CRMEF paper's Eq. 5-6 as written:

    objective = L_val + eta * sum_slots sum_o softmax(alpha)_o * LAT(o)     (LAT in ms)

summed over every searched slot instance, in milliseconds of the table (batch and input size
of the table; fixed parts and calibration left out). This is the form whose eta values the
paper reports (0.5 "Ours", 1 "Ours*", with its GPU table at batch 16 and 128 x 128); the
same eta is a different trade-off on another device or input size, and on a slow device
any eta > 0 outweighs the loss (use ``normalised`` there).

``latency_penalty: log`` grades by ratios (``log(E[LAT] / T_ref)``, FBNet / ProxylessNAS):
use it when the space spans orders of magnitude (spaces with a searched processing scale).
``abs`` (TuNAS) and ``hinge`` take a target ``target_ms`` (``--target-ms``): ``abs`` lands
the net at the target, ``hinge`` only keeps it under.

Latency is predicted at ``latency_input`` (``--latency-input H W``, e.g. the deployment size
1024 768; default: the training crop). When this device's table lacks rows for it, they are
profiled first (``auto_profile``, ``--no-auto-profile`` to refuse; see
:mod:`nas.latency.auto`).

Defaults follow the paper where it speaks (weights: SGD, cosine decay from 3e-4; alpha: Adam
1e-4; 10 warm-up epochs of weights only; L_Int (L1) as train and val loss).

Loss: ``loss: l1`` (the paper's L_Int, needs ground truth) or any :func:`nas.losses.build_loss`
name; on real sequences without ground truth use ``loss: mef-ssim`` (the no-reference
objective), which is then both the weight step's loss and the architecture step's L_val.

Collapse watch: each epoch logs how many slots a parameter-free op (``skip``) wins; the
paper's remedy (warm-up before alpha moves) is the default, and ``max_skip`` (P-DARTS'
rule) caps the number of skip ops at derivation, replacing the least confident ones by
their best weighted op.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nas.accel import autocast, channels_last_for, check_amp, configure_device, to_memory_format
from nas.architect import Architect, alpha_diagnostics, alpha_softmax
from nas.cli import add_table_args, add_training_args, run_config_command
from nas.config import to_dict
from nas.derive import derive_genotype, derive_run, load_search_run, predicted_latency  # noqa: F401 - re-exported
from nas.engine import Batch, Engine, validation_scores
from nas.latency.keys import MissingLatencyEntry
from nas.losses import build_loss, build_objective, check_loss_data, set_loss_epoch
from nas.plot import alpha_frame, draw_alpha_heatmap
from nas.runs import RunConfig, RunDir
from nas.space import SearchSpace, load_space
from nas.supernet import Supernet, make_supernet
from nas.utils import parse_size, resolve_device, seed_everything


@dataclass
class SearchConfig(RunConfig):
    """Settings of a search run (YAML keys = these fields and
    :class:`nas.runs.RunConfig`'s)."""

    space: str = "crmef"
    channels: int | None = None
    latency_device: str | None = None
    latency_table: str | None = None
    allow_foreign_table: bool = False
    latency_input: list[int] | None = None
    auto_profile: bool = True
    eta: float = 0.5
    latency_penalty: str = "normalised"
    target_ms: float | None = None
    latency_scale: str = "loss"
    loss: str = "l1"
    warmup_epochs: int = 10
    order: str = "first"
    w_lr: float = 3e-4
    w_lr_min: float = 0.0
    w_momentum: float = 0.9
    w_weight_decay: float = 3e-4
    w_optimizer: str = "sgd"
    a_lr: float = 1e-4
    a_weight_decay: float = 1e-3
    amp: str = "off"
    max_skip: int | None = None

    def __post_init__(self) -> None:
        if self.order not in ("first", "second"):
            raise ValueError(f"order must be 'first' or 'second', got {self.order!r}")
        if self.w_optimizer not in ("sgd", "adam"):
            raise ValueError(f"w_optimizer must be 'sgd' or 'adam', got {self.w_optimizer!r}")
        if self.order == "second" and self.w_optimizer != "sgd":
            raise ValueError("order: second unrolls an SGD step; it needs w_optimizer: sgd")
        if self.latency_scale not in ("loss", "none"):
            raise ValueError(f"latency_scale must be 'loss' or 'none', got {self.latency_scale!r}")
        if self.eta < 0:
            raise ValueError(f"eta must be >= 0, got {self.eta}")
        from nas.latency.predict import PENALTY_FORMS, TARGET_FORMS

        if self.latency_penalty not in PENALTY_FORMS:
            raise ValueError(
                f"latency_penalty must be one of {PENALTY_FORMS}, got {self.latency_penalty!r}"
            )
        if self.latency_penalty in TARGET_FORMS and not (self.target_ms or 0) > 0:
            raise ValueError(
                f"latency_penalty {self.latency_penalty!r} needs target_ms > 0 (--target-ms)"
            )
        if self.latency_input is not None:
            try:
                size = parse_size(self.latency_input)
            except ValueError:
                size = (0, 0)
            if min(size) < 4:
                raise ValueError(f"latency_input must be H W (>= 4), got {self.latency_input!r}")
            self.latency_input = list(size)
        from nas.losses import list_losses

        check_amp(self.amp)
        if self.loss not in list_losses():
            raise ValueError(f"loss must be one of {list_losses()}, got {self.loss!r}")


_TINY: dict[str, Any] = dict(
    space="tiny",
    epochs=6,
    warmup_epochs=2,
    batch=4,
    crop=48,
    samples_per_epoch=32,
    eval_batches=2,
    w_lr=0.05,
    w_lr_min=0.005,
    a_lr=3e-2,
    latency_input=[64, 64],
)
PRESETS: dict[str, dict[str, Any]] = {
    # seconds on 2 CPU cores: the demo's and CI's search
    "tiny": _TINY,
    # minutes on 2 CPU cores: the eta-sweep benchmark (tiny's steps, the crmef space at C=16)
    "small": {
        **_TINY,
        **dict(space="crmef", channels=16, epochs=12, warmup_epochs=3, crop=64),
        **dict(samples_per_epoch=64, eval_batches=4, a_lr=1e-2),
    },
}


class SearchTask:
    """One bi-level DARTS step per batch; see the module docstring.

    The architecture step is :attr:`architect`'s (:class:`nas.architect.Architect`); this
    task adds the weight step, the latency term and the engine protocol around it.
    """

    def __init__(
        self,
        supernet: Supernet,
        cfg: SearchConfig,
        penalty: Any,
        device: torch.device,
        eval_batches: list[Batch],
    ) -> None:
        configure_device(device)
        self.channels_last = channels_last_for(cfg.channels_last, device)
        self.net = to_memory_format(supernet.to(device), self.channels_last)
        self.cfg = cfg
        self.penalty = penalty
        self.device = device
        self.eval_batches = eval_batches
        if cfg.w_optimizer == "adam":  # objectives of small magnitude (mef-ssim) need it
            self.w_opt: torch.optim.Optimizer = torch.optim.Adam(
                supernet.weight_parameters(), lr=cfg.w_lr, weight_decay=cfg.w_weight_decay
            )
        else:  # DARTS' weight optimiser
            self.w_opt = torch.optim.SGD(
                supernet.weight_parameters(),
                lr=cfg.w_lr,
                momentum=cfg.w_momentum,
                weight_decay=cfg.w_weight_decay,
            )
        self.w_sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.w_opt, T_max=max(cfg.epochs, 1), eta_min=cfg.w_lr_min
        )
        self.architect = Architect(
            self.net, cfg, lambda b: self._task_loss(b), lambda: self._latency_term()
        )
        self.criterion = build_objective(
            cfg.loss, cfg.loss_args, cfg.teacher, cfg.teacher_epochs
        ).to(device)
        self.loss_ref: float | None = None
        self._last_penalty = float("nan")

    # --- losses ------------------------------------------------------------------------
    def _task_loss(self, batch: Batch) -> torch.Tensor:
        return self.criterion(self.net(batch["under"], batch["over"]), batch)

    def _weight_loss(self, batch: Batch) -> torch.Tensor:
        """The weight step's loss, under bf16 autocast with ``amp: bf16`` (returned in fp32)."""
        with autocast(self.device, self.cfg.amp):
            return self._task_loss(batch).float()

    def _latency_term(self) -> torch.Tensor:
        if self.cfg.eta == 0 or self.penalty is None:
            return torch.zeros((), device=self.device)
        paper = self.cfg.latency_penalty == "paper"
        scale = self.loss_ref if self.cfg.latency_scale == "loss" and not paper else 1.0
        r = self.penalty()
        self._last_penalty = float(r.detach())
        return self.cfg.eta * float(scale) * r

    # --- engine protocol ---------------------------------------------------------------
    def needs_val_batch(self, epoch: int) -> bool:
        return epoch >= self.cfg.warmup_epochs

    def train_step(self, batch: Batch, val_batch: Batch | None, epoch: int) -> dict[str, float]:
        """An architecture step on ``val_batch`` (fp32, with the latency term) when given, then
        a weight step on ``batch`` (bf16 autocast with ``amp: bf16``)."""
        self.net.train()
        set_loss_epoch(self.criterion, epoch)
        logs: dict[str, float] = {}
        batch = to_memory_format(batch, self.channels_last)
        if val_batch is not None:
            val_batch = to_memory_format(val_batch, self.channels_last)
            if self.loss_ref is None:  # no warm-up: take the first validation loss
                with torch.no_grad():
                    self.loss_ref = float(self._task_loss(val_batch))
            logs["val_loss"] = self.architect.step(batch, val_batch, self.w_opt)
        self.w_opt.zero_grad(set_to_none=True)
        loss = self._weight_loss(batch)
        loss.backward(inputs=self.net.weight_parameters())
        torch.nn.utils.clip_grad_norm_(self.net.weight_parameters(), self.cfg.grad_clip)
        self.w_opt.step()
        logs["train_loss"] = float(loss.detach())
        return logs

    def _unrolled_arch_grads(self, batch: Batch, val_batch: Batch) -> float:
        """Second-order DARTS alpha gradient (:meth:`nas.architect.Architect.unrolled_grads`)."""
        return self.architect.unrolled_grads(batch, val_batch, self.w_opt)

    @property
    def a_opt(self) -> torch.optim.Optimizer:
        """The architecture optimiser (Adam on the alphas, owned by :attr:`architect`)."""
        return self.architect.optimizer

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Supernet loss (the search objective) on the fixed evaluation batches (validation
        split), with PSNR where the data have ground truth and MEF-SSIM where they have not."""
        return validation_scores(self.net, self.criterion, self.eval_batches, self.device, "eval_")

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        self.w_sched.step()
        row: dict[str, Any] = self.evaluate()
        if epoch < self.cfg.warmup_epochs:
            self.loss_ref = row["eval_loss"]
        row["loss_ref"] = self.loss_ref if self.loss_ref is not None else float("nan")
        if self.penalty is not None:
            with torch.no_grad():
                row["latency_penalty"] = float(self.penalty())
                row["expected_ms"] = float(self.penalty.expected_ms())
        row.update(alpha_diagnostics(self.net, self.cfg.max_skip))
        return row

    def after_checkpoint(self, run: RunDir, epoch: int, row: dict[str, Any]) -> None:
        g = derive_genotype(self.net, self.cfg.max_skip)
        g.to_yaml(run.path / "genotypes" / f"epoch_{epoch + 1:03d}.yaml")
        g.to_yaml(run.path / "genotype.yaml")
        draw_alpha_heatmap(
            alpha_frame(alpha_softmax(self.net)),
            run.path / "alphas.png",
            title=f"{run.path.name}: softmax(alpha), epoch {epoch + 1}",
        )

    def progress(self) -> dict[str, Any]:
        return {"lat": self._last_penalty}

    def state_dict(self) -> dict[str, Any]:
        return {
            "supernet": self.net.state_dict(),
            "w_opt": self.w_opt.state_dict(),
            "w_sched": self.w_sched.state_dict(),
            "a_opt": self.a_opt.state_dict(),
            "loss_ref": self.loss_ref,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["supernet"])
        self.w_opt.load_state_dict(state["w_opt"])
        self.w_sched.load_state_dict(state["w_sched"])
        self.a_opt.load_state_dict(state["a_opt"])
        self.loss_ref = state["loss_ref"]


def build_space(cfg: SearchConfig) -> SearchSpace:
    space = load_space(cfg.space)
    return space.with_channels(cfg.channels) if cfg.channels else space


def latency_size(cfg: SearchConfig) -> tuple[int, int]:
    """The input size (H, W) at which a search predicts latency: ``latency_input`` or the crop."""
    if cfg.latency_input:
        return int(cfg.latency_input[0]), int(cfg.latency_input[1])
    return cfg.crop, cfg.crop


def load_search_table(
    cfg: SearchConfig, device: str | torch.device | None = None, space: SearchSpace | None = None
) -> Any:
    """The latency table a search uses: ``latency_table`` if given, else the table of
    ``latency_device`` (default: ``device``) at :func:`latency_size`; rows the space's supernet
    needs are profiled first on the local device (unless ``auto_profile`` is off)."""
    from nas.latency.auto import ensure_table

    return ensure_table(
        [space or build_space(cfg)],
        latency_size(cfg),
        device,
        path=cfg.latency_table,
        latency_device=cfg.latency_device,
        allow_foreign=cfg.allow_foreign_table,
        auto_profile=cfg.auto_profile,
    )


def make_penalty(cfg: SearchConfig, supernet: Supernet, device: torch.device) -> Any:
    """The latency penalty (``cfg.latency_penalty`` form) of ``supernet`` from the table."""
    if cfg.eta == 0 and cfg.latency_table is None:
        return None
    from nas.latency import LatencyPenalty

    table = load_search_table(cfg, device, supernet.space)
    return LatencyPenalty(
        supernet, table, latency_size(cfg), form=cfg.latency_penalty, target_ms=cfg.target_ms
    )


def run_search(cfg: SearchConfig, resume: bool = False, progress: bool = True) -> Path:
    """Run (or resume) a search; returns the run folder."""
    from nas.data import build_dataset, eval_batches, make_loader

    device = resolve_device(cfg.device)
    space = build_space(cfg)
    name = cfg.run_name or RunDir.new_name(f"search-{space.name}-eta{cfg.eta:g}")
    run = RunDir(Path(cfg.runs_dir) / name, resume=resume)
    if not resume:
        run.save_config({**to_dict(cfg), "run_name": name, "kind": "search"})
        (run.path / "space.yaml").write_text(_yaml(space.to_dict()))
    seed_everything(cfg.seed)
    supernet = make_supernet(space)
    penalty = make_penalty(cfg, supernet, device)
    mis = space.arch.misaligned
    data_kw = dict(length=cfg.samples_per_epoch, max_side=cfg.max_side, cache=cfg.cache)
    train = build_dataset(cfg.data, "train", cfg.crop, mis, cfg.seed, **data_kw)
    val = build_dataset(cfg.data, "val", cfg.crop, mis, cfg.seed, **data_kw)
    # the architecture steps see random crops of the val scenes; the logged eval, fixed ones
    val_arch = build_dataset(cfg.data, "val", cfg.crop, mis, cfg.seed, augment=True, **data_kw)
    train_loader = make_loader(
        train, cfg.batch, shuffle=True, seed=cfg.seed, drop_last=True, num_workers=cfg.num_workers
    )
    val_loader = make_loader(
        val_arch,
        cfg.batch,
        shuffle=True,
        seed=cfg.seed + 1,
        drop_last=True,
        num_workers=cfg.num_workers,
    )
    fixed = eval_batches(val, cfg.batch, cfg.eval_batches, cfg.seed)
    check_loss_data(build_loss(cfg.loss, **(cfg.loss_args or {})), fixed[:1], cfg.loss, cfg.data)
    task = SearchTask(supernet, cfg, penalty, device, fixed)
    engine = Engine(run, task, train_loader, cfg.epochs, val_loader, cfg.steps_per_epoch, progress)
    engine.fit(resume=resume)
    derive_run(run.path, supernet=task.net)
    return run.path


def _yaml(data: Any) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m nas.search",
        description="Latency-penalised differentiable architecture search (CRMEF).",
    )
    p.add_argument("--preset", choices=sorted(PRESETS), help="named small configurations")
    p.add_argument(
        "--eta",
        type=float,
        help="latency trade-off; with --latency-penalty paper the paper's 0.5 ('Ours') and 1 "
        "('Ours*')",
    )
    p.add_argument("--space", help="search space YAML or shipped name (crmef, crmef-misaligned)")
    p.add_argument(
        "--latency-device",
        dest="latency_device",
        help="search for another device's latency table (e.g. cuda on a CPU)",
    )
    add_table_args(p, from_config=True)
    p.add_argument(
        "--latency-input",
        dest="latency_input",
        type=int,
        nargs="+",
        metavar="H [W]",
        help="input size H W the latency is predicted at, e.g. the deployment size 1024 768 "
        "(default: --crop)",
    )
    p.add_argument(
        "--latency-penalty",
        dest="latency_penalty",
        choices=["normalised", "paper", "log", "abs", "hinge"],
        help="'paper': eta x alpha-weighted slot latencies in ms (the paper's Eq. 5-6, whose "
        "eta values 0.5/1 it reports); 'normalised' (default): eta x L_ref x E[LAT]/E_uniform"
        "[LAT], the same trade-off on every device; 'log': eta x L_ref x log(E[LAT]/T_ref) "
        "(FBNet/ProxylessNAS, relative); 'abs': eta x L_ref x |E[LAT]/T0 - 1| (TuNAS) and "
        "'hinge': eta x L_ref x max(0, E[LAT]/T0 - 1), both around --target-ms T0",
    )
    p.add_argument(
        "--target-ms",
        dest="target_ms",
        type=float,
        help="target latency T0 in ms of the abs and hinge penalties (and the log's reference)",
    )
    p.add_argument(
        "--no-auto-profile",
        dest="auto_profile",
        action="store_false",
        default=None,
        help="fail instead of profiling latency-table rows this device's table lacks",
    )
    p.add_argument(
        "--loss", help="train and val objective: l1 (needs ground truth, default) or mef-ssim"
    )
    p.add_argument("--warmup-epochs", dest="warmup_epochs", type=int)
    p.add_argument("--channels", type=int, choices=[8, 16, 32, 64])
    p.add_argument("--order", choices=["first", "second"])
    p.add_argument("--max-skip", dest="max_skip", type=int)
    p.add_argument(
        "--amp",
        choices=["off", "bf16"],
        help="bf16 autocast for the weight step (the alpha step and latency stay fp32)",
    )
    add_training_args(p, "SearchConfig")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code, path = run_config_command(
        SearchConfig,
        PRESETS,
        run_search,
        args,
        (ValueError, FileNotFoundError, RuntimeError, MissingLatencyEntry),
    )
    if code:
        return code
    print(f"search finished: {path}")
    print((path / "genotype.yaml").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
