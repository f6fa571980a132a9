"""The measurements of one comparison: quality over a data split, size and arithmetic, and
the latency a device's table predicts.

:func:`nas.evaluate.evaluate_models` runs them over the models of a comparison
(:mod:`nas.lineup`) and measures latency end to end (:func:`nas.latency.measure_networks`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from nas.lineup import Log, is_derived, quiet
from nas.models import ResolvedModel


def eval_dataset(
    data: str | Path,
    split: str,
    crop: int | None,
    misaligned: bool,
    seed: int,
    max_images: int | None,
) -> torch.utils.data.Dataset:
    from nas.data import build_dataset

    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be >= 1, got {max_images}")
    ds = build_dataset(data, split, crop, misaligned, seed)
    n = len(ds)  # type: ignore[arg-type]
    if n == 0:
        raise ValueError(f"data {str(data)!r}, split {split!r}: no images")
    if max_images is not None and max_images < n:
        ds = torch.utils.data.Subset(ds, range(max_images))
    return ds


def measure_quality(
    models: Sequence[ResolvedModel],
    dataset: torch.utils.data.Dataset,
    device: torch.device,
    batch_size: int = 4,
    log: Log = quiet,
) -> tuple[list[dict[str, float]], int, bool]:
    """Mean metrics per model over ``dataset`` (each batch loaded once, run through every model).

    The networks fuse the batch's ``"under"`` and ``"over"``; the source-based metrics
    (MEF-SSIM, Q^AB/F) score the fusion against :func:`nas.losses.fusion_sources`, i.e. the
    reference-frame copy of an input that misaligned data warped (``"under_aligned"``), the
    same images the training loss (:class:`nas.losses.MEFSSIMLoss`) and the run's validation
    (:func:`nas.engine.validation_scores`) score against.

    Returns:
        ``(per-model {metric: mean}, number of images, whether the data had ground truth)``.
    """
    from nas.data import make_loader
    from nas.losses import fusion_sources
    from nas.metrics import compute_all

    loader = make_loader(dataset, batch_size, shuffle=False)
    sums: list[dict[str, float]] = [{} for _ in models]
    n_img = 0
    has_gt = True
    nets = [r.module().to(device).eval() for r in models]
    with torch.inference_mode():
        for bi, batch in enumerate(loader):
            under = batch["under"].to(device)
            over = batch["over"].to(device)
            gt = batch.get("gt")
            has_gt = has_gt and gt is not None
            gt = gt.to(device) if gt is not None else None
            src_u, src_o = (t.to(device).float() for t in fusion_sources(batch))
            b = int(under.shape[0])
            for r, net, acc in zip(models, nets, sums):
                try:
                    fused = net(under, over).float().clamp(0, 1)
                except Exception as e:  # noqa: BLE001 - name the model and images
                    names = batch.get("name", [])
                    raise RuntimeError(
                        f"model {r.name} failed on images {list(names)[:4]} of shape "
                        f"{tuple(under.shape)}: {type(e).__name__}: {e}"
                    ) from e
                m = compute_all(fused, src_u, src_o, gt.float() if has_gt else None)
                for k, v in m.items():
                    acc[k] = acc.get(k, 0.0) + v * b
            n_img += b
            log(f"  quality: batch {bi + 1}/{len(loader)} ({n_img} images)")
    if n_img == 0:
        raise ValueError("the evaluation data yielded no images")
    means = [{k: v / n_img for k, v in acc.items()} for acc in sums]
    if not has_gt:  # a batch without GT drops reference metrics for all
        ref = {"psnr", "ssim", "ms_ssim", "fsim", "lpips"}
        means = [{k: v for k, v in m.items() if k not in ref} for m in means]
    return means, n_img, has_gt


def measure_size(resolved: ResolvedModel, size: int) -> tuple[dict[str, float], str | None]:
    """``{params, macs, flops}`` per image at ``size`` x ``size``; a counter that fails gives
    NaN and a reason. A classical method (:mod:`nas.classical`) has 0 parameters and no
    MACs/FLOPs count (NaN: the counters only see torch ops)."""
    from nas.flops import size_report

    if resolved.classical:
        return {"params": 0.0, "macs": float("nan"), "flops": float("nan")}, None
    return size_report(resolved.model, (size, size))


def load_latency_table(
    device: torch.device,
    threads: int,
    batch: int,
    size: int,
    path: str | Path | None,
    allow_foreign: bool,
) -> tuple[Any, str | None]:
    """This device's latency table for ``batch`` (preferably profiled at ``size``), or the
    reason there is none."""
    from nas.latency import LatencyTable, LatencyTableError

    try:
        if path is not None:
            table = LatencyTable.load(path=path, device=str(device), allow_foreign=allow_foreign)
            if table.batch != batch:
                return None, (
                    f"latency table {path} is at batch {table.batch}, the measurement at batch "
                    f"{batch}; profile one with --batch {batch}"
                )
            return table, None
        kw = dict(device=str(device), allow_foreign=allow_foreign, threads=threads, batch=batch)
        try:
            return LatencyTable.load(input_size=(size, size), **kw), None
        except LatencyTableError as exact:
            try:  # a table at another input size may still hold the rows this size needs
                other = LatencyTable.load(**kw)
            except LatencyTableError:
                return None, str(exact)
            return other, (
                f"no table profiled at {size}x{size}; using {other.path} (profiled at "
                f"{other.meta.get('input_size')}), whose rows may not cover this size. {exact}"
            )
    except LatencyTableError as e:
        return None, str(e)


def predict_all(
    models: Sequence[ResolvedModel],
    table: Any,
    size: int,
) -> tuple[list[float], dict[str, str]]:
    from nas.latency import MissingLatencyEntry, predict

    preds: list[float] = []
    reasons: dict[str, str] = {}
    for r in models:
        if not is_derived(r.model):
            preds.append(float("nan"))
            continue
        try:
            net = r.model.to("cpu")
            target = r.genotype if r.genotype is not None else net
            preds.append(float(predict(target, (size, size), table)))
        except (MissingLatencyEntry, KeyError, ValueError) as e:
            preds.append(float("nan"))
            reasons[r.name] = str(e).strip("'\"")
    return preds, reasons


# --- the library entry point -------------------------------------------------------------
