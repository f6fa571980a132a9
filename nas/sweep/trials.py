"""One DARTS-mode trial: a latency-penalised search at the trial's eta (resumed when its worker
died), its derived net's quality with inherited weights, an optional short retrain, and the
derived net's latency measured on this device."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nas.runs import Run
from nas.sweep.config import SweepConfig, WorkerOptions
from nas.utils import parse_size, size_text


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

    from nas.latency.timing import TimingStats, pinned_threads, time_fn

    dev = torch.device(device)
    g = torch.Generator().manual_seed(0)
    H, W = parse_size(size)
    x = [torch.rand(1, 3, H, W, generator=g).to(dev) for _ in range(2)]
    with pinned_threads(threads), torch.inference_mode():
        m = copy.deepcopy(net).to(dev).eval()
        samples = time_fn(lambda: m(*x), dev, reps, warmup=warmup)
    return TimingStats.from_seconds(samples)


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


QUALITY_METRICS = ("psnr", "mef_ssim")
"""The quality objective: PSNR (dB) where the data has ground truth, else MEF-SSIM (MEFB's
computation against the two exposures), as the engine's validation scores them."""


@torch.no_grad()
def derived_quality(
    run_dir: Path, cfg: Any, device: torch.device | str = "cpu"
) -> tuple[float, str]:
    """``(value, metric)`` of a search run's derived net with its inherited weights
    (``derived_init.pt``) on the search's evaluation batches (:func:`nas.data.eval_batches`:
    validation split, same crop, seed and count), scored as the engine scores validation
    (:func:`nas.engine.validation_scores`): PSNR with ground truth, MEF-SSIM without."""
    from nas.data import build_dataset, eval_batches
    from nas.engine import validation_scores
    from nas.losses import build_loss
    from nas.models import load_model_file

    dev = torch.device(device)
    net = load_model_file(run_dir / "derived_init.pt").model.to(dev).eval()
    mis = bool(net.arch.misaligned)
    val = build_dataset(cfg.data, "val", cfg.crop, mis, cfg.seed, length=cfg.samples_per_epoch)
    batches = eval_batches(val, cfg.batch, cfg.eval_batches, cfg.seed)
    scores = validation_scores(net, build_loss(cfg.loss).to(dev), batches, dev, prefix="")
    metric = next(m for m in QUALITY_METRICS if m in scores)
    return float(scores[metric]), metric


def best_val_quality(run_dir: Path) -> tuple[float, str]:
    """``(best value, metric)`` of a training run's logged validation quality (``val_psnr``,
    else ``val_mef_ssim``)."""
    rows = Run.load(run_dir).metrics()
    for metric in QUALITY_METRICS:
        vals = [float(r[f"val_{metric}"]) for r in rows if r.get(f"val_{metric}") not in (None, "")]
        if vals:
            return max(vals), metric
    raise RuntimeError(f"{run_dir} logged no validation quality (val_psnr or val_mef_ssim)")


def _resumable(run_dir: str | None) -> Path | None:
    if not run_dir:
        return None
    run = Run.find(run_dir)
    return run.path if run is not None and run.checkpoint("last") is not None else None


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
    """Search at ``params["eta"]`` (+ retrain); returns ``{"values": [quality, ms], "attrs":
    ...}``.

    A trial re-queued after its worker died finds its run folder in ``ctx.user_attrs`` and
    resumes it from the last checkpoint.
    """
    from nas.genotype import build
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
    run = run_search(cfg, resume=prev is not None, progress=opts.progress)
    record = Run.load(run)
    g = record.genotype()
    export = record.export_report()
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
        "supernet_quality": _supernet_quality(record.metrics()[-1]),
    }
    attrs.update(_latency_attrs(sc, build(g), size, device))
    quality, attrs["quality_metric"] = derived_quality(run, cfg, device)
    attrs["derived_quality"] = quality
    attrs["quality_source"] = "derived net, inherited weights"
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
        tr = run_train(tcfg, resume=prev_t is not None, progress=opts.progress)
        attrs["retrain_dir"] = str(tr)
        quality, attrs["quality_metric"] = best_val_quality(tr)
        attrs["retrain_quality"] = quality
        attrs["quality_source"] = f"retrain ({sc.retrain_epochs} epochs, crmef loss), best val"
    attrs["wall_s"] = round(time.perf_counter() - t0, 2)
    return {"values": [quality, attrs["measured_ms"]], "attrs": attrs}


def _supernet_quality(row: dict[str, Any]) -> float | None:
    """The supernet's own evaluation quality in its last metrics row."""
    for metric in QUALITY_METRICS:
        if row.get(f"eval_{metric}") not in (None, ""):
            return float(row[f"eval_{metric}"])
    return None
