"""``python -m nas.evaluate --models RUN_OR_NAME ...``: one comparison table of fusion networks.

For every model (a registry name, a genotype.yaml, a search or training run folder or a model
``.pt``; see :mod:`nas.models`) one row with

* **quality** on one split of one data set: PSNR, SSIM, MS-SSIM, FSIM (only when the data has
  ground truth), MEF-SSIM and Q^AB/F (always; computed from the two inputs), each the mean
  over all evaluated images (:func:`nas.metrics.compute_all`, outputs clamped to [0, 1]);
* **size and arithmetic** at the latency resolution, per image (batch 1): parameters, MACs
  counted by thop (:func:`nas.flops.count_macs_thop`) and FLOPs counted by torch's
  ``FlopCounterMode`` with bilinear interpolation and deformable sampling included
  (:func:`nas.flops.count_flops`);
* **measured latency** (ms, median; p10 and p90 too) at ``latency_size`` x ``latency_size``
  and ``latency_batch``, with the profiler's harness (:func:`nas.latency.measure_networks`:
  eval mode, ``torch.inference_mode()``, pinned threads, warm-up, ``time_fn``). All models are
  measured in the same run, interleaved in ``rounds`` passes over all models, so background
  load drifts affect every model alike;
* **speed-up** of each model against the fastest *baseline* of the same run (the registry
  models that are not ``crmef-*``: MEF-CL, FFMEF, LCNDR, HyperP_MB): ``latency(fastest
  baseline) / latency(model)``, so the fastest baseline has 1.0 and larger is faster;
* for derived networks (genotypes, the CRMEF nets) the **predicted latency** from this
  device's latency table (:func:`nas.latency.predict`), when a table at this batch with rows
  at this resolution exists; otherwise empty, with the reason in ``meta.yaml``.

Example (trained runs of two baselines and two searched nets, CPU, 128x128, batch 1)::

    python -m nas.evaluate --models results/runs/train-ffmef-* results/runs/train-mef-cl-* \
        results/runs/train-search-eta0.5 results/runs/train-search-eta1 --device cpu

Untrained models (registry names, genotype files, a search run's inherited weights) are
refused unless ``allow_untrained`` / ``--allow-untrained``: their quality numbers say nothing
about the architecture. Allowed, they are flagged (column ``trained``, a warning, a note under
the Markdown table).

Output (atomic writes): ``results/eval/<name>/eval-<device-fingerprint>-<data>.csv`` and
``.md`` plus ``meta.yaml`` (device, torch version, data spec, split, crop, number of images,
latency resolution, batch, warm-up, repetitions, rounds, threads, table used, notes). The
Markdown table is printed.

Classical methods (``mertens``, ``average``: :mod:`nas.classical`) are accepted by name beside
the networks: they need no training (never "untrained"), have 0 parameters and no MACs/FLOPs
count (empty), group ``classical``, and their latency is measured by the same harness
(through a parameter-free ``nn.Module`` adapter).

MEFB protocol: ``--protocol mefb`` hands over to :mod:`nas.mefb` (no-reference evaluation of
real pair folders at full resolution, beside MEFB's published table).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
import typing
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml

from nas import report
from nas.cli import add_device, add_progress, add_table_args
from nas.latency.keys import MissingLatencyEntry
from nas.lineup import (
    BASELINE_GROUP,
    CLASSICAL_GROUP,
    Log,
    UntrainedModelError,
    check_trained,
    default_out_dir,
    genotype_text,
    model_group,
    quiet,
    resolve_models,
    search_eta,
)
from nas.measure import (
    eval_dataset,
    load_latency_table,
    measure_quality,
    measure_size,
    predict_all,
)
from nas.models import ModelRefError, ResolvedModel
from nas.report import slug, yaml_safe
from nas.utils import atomic_write_text

__all__ = [
    "BASELINE_GROUP",
    "CLASSICAL_GROUP",
    "QUALITY_COLUMNS",
    "UntrainedModelError",
    "default_out_dir",
    "eval_file_stem",
    "evaluate_models",
    "main",
    "markdown_table",
    "model_group",
    "search_eta",
    "settings_from_args",
    "write_eval",
]

QUALITY_COLUMNS: tuple[str, ...] = ("psnr", "ssim", "ms_ssim", "fsim", "mef_ssim", "qabf")
"""Metric columns of the table (``nas.metrics`` names); the reference ones are NaN without GT."""
COLUMNS: tuple[str, ...] = (
    "name",
    "kind",
    "group",
    "trained",
    "eta",
    *QUALITY_COLUMNS,
    "params",
    "macs",
    "flops",
    "latency_ms",
    "latency_p10_ms",
    "latency_p90_ms",
    "predicted_ms",
    "speedup",
    "images",
    "genotype",
    "source",
)
_MD_COLUMNS: tuple[tuple[str, str], ...] = (
    ("name", "model"),
    ("kind", "kind"),
    ("trained", "trained"),
    ("psnr", "PSNR"),
    ("ssim", "SSIM"),
    ("fsim", "FSIM"),
    ("mef_ssim", "MEF-SSIM"),
    ("qabf", "Q^AB/F"),
    ("params", "params"),
    ("macs", "MACs (G)"),
    ("flops", "FLOPs (G)"),
    ("latency_ms", "latency (ms)"),
    ("predicted_ms", "predicted (ms)"),
    ("speedup", "speed-up"),
)


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """What one evaluation measures, and how (the CLI's flags; :func:`evaluate_models`).

    Attributes:
        data: ``"synthetic"`` or a data path (:func:`nas.data.build_dataset`).
        split: ``train``, ``val``, ``test`` or ``all``.
        crop: central crop size of the evaluated images; ``None``: full images (then one
            image per batch, as full images differ in size).
        max_images: evaluate at most this many images (the first ones, in order).
        batch_size: images per forward pass for the quality metrics.
        misaligned: warp one input by a random homography (misaligned evaluation data); the
            networks get the warped input, MEF-SSIM and Q^AB/F score against its
            reference-frame copy (:func:`nas.losses.fusion_sources`), as training does.
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:N``; quality and
            latency run on it.
        latency_size, latency_batch: input ``(latency_batch, 3, S, S)`` of the latency
            measurement; params, MACs and FLOPs are counted per image at ``S x S``.
        reps: timed calls per model in total, split over ``rounds`` interleaved passes.
        warmup: untimed calls per model before its first round (1 before later rounds).
        threads: CPU threads during the measurement (default: torch's current setting).
        allow_untrained: evaluate untrained models (flagged) instead of refusing them.
        latency_table, allow_foreign_table: an explicit table for the predicted latency, and
            accepting another device's table.
        seed: data seed (crop positions, synthetic exposures, homographies).
        channels: width of the registry models given by name that have one.
    """

    data: str | Path = "synthetic"
    split: str = "test"
    crop: int | None = 128
    max_images: int | None = None
    batch_size: int = 4
    misaligned: bool = False
    device: str | torch.device | None = "auto"
    latency_size: int = 128
    latency_batch: int = 1
    reps: int = 50
    rounds: int = 5
    warmup: int = 5
    threads: int | None = None
    allow_untrained: bool = False
    latency_table: str | Path | None = None
    allow_foreign_table: bool = False
    seed: int = 0
    channels: int | None = None

    def __post_init__(self) -> None:
        from nas.data.base import check_split

        check_split(self.split)
        if self.crop is not None and self.crop < 1:
            raise ValueError(f"crop must be >= 1 (or None for full images), got {self.crop}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.reps < 1 or self.rounds < 1 or self.warmup < 0:
            raise ValueError(
                f"need reps >= 1, rounds >= 1, warmup >= 0; got {self.reps}, {self.rounds}, "
                f"{self.warmup}"
            )
        if self.latency_size < 4 or self.latency_batch < 1:
            raise ValueError(
                f"need latency_size >= 4 and latency_batch >= 1, got {self.latency_size}, "
                f"{self.latency_batch}"
            )
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")

    @property
    def quality_batch(self) -> int:
        return self.batch_size if self.crop is not None else 1


def evaluate_models(
    refs: Sequence[str | Path | ResolvedModel],
    settings: EvalSettings | None = None,
    *,
    model_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    log: Log | None = None,
    **fields: Any,
) -> pd.DataFrame:
    """Evaluate models on quality, size, FLOPs and latency in one run (module docstring).

    Args:
        refs: model references (:func:`nas.models.resolve_model`) or resolved models.
        settings: what to measure and how (default :class:`EvalSettings`); ``fields``
            (:class:`EvalSettings` field names) override it.
        model_kwargs: ``{registry name: {keyword: value}}`` for registry models given by name.
        log: progress messages (e.g. ``print``); None: silent.

    Returns:
        One row per model with the columns of :data:`COLUMNS` (metric columns that do not
        apply are NaN). ``df.attrs["meta"]`` describes the run (what ``meta.yaml`` holds).

    Raises:
        ModelRefError: unknown model reference. UntrainedModelError: untrained model without
        ``allow_untrained``. ValueError / FileNotFoundError: bad data or settings.
    """
    from nas.data import describe_spec
    from nas.latency import ProfileSettings, measure_networks, resolve_device

    s = dataclasses.replace(settings or EvalSettings(), **fields)
    log = log or quiet
    data_kind = describe_spec(s.data)  # FileNotFoundError / ValueError for a bad path
    dev = resolve_device(None if str(s.device) == "auto" else s.device)
    n_threads = torch.get_num_threads() if s.threads is None else int(s.threads)
    models = resolve_models(refs, s.channels, model_kwargs)
    untrained = check_trained(models, s.allow_untrained, log)
    t_start = time.perf_counter()

    # 1) params / MACs / FLOPs (CPU, per image at the latency resolution)
    sizes, notes = [], {}
    for r in models:
        log(f"counting params/MACs/FLOPs: {r.name}")
        size, problem = measure_size(r, s.latency_size)
        sizes.append(size)
        if problem:
            notes[r.name] = problem

    # 2) quality on the chosen split
    ds = eval_dataset(s.data, s.split, s.crop, s.misaligned, s.seed, s.max_images)
    log(f"quality: {len(ds)} image(s) of {s.data} ({data_kind}, split {s.split})")  # type: ignore[arg-type]
    quality, n_img, has_gt = measure_quality(models, ds, dev, s.quality_batch, log)

    # 3) measured latency, all models interleaved in the same run
    profile = ProfileSettings(
        device=str(dev),
        batch=s.latency_batch,
        input_size=(s.latency_size, s.latency_size),
        warmup=s.warmup,
        reps=s.reps,
        rounds=min(s.rounds, s.reps),
        threads=n_threads,
        seed=s.seed,
    )
    log(
        f"latency: {len(models)} model(s), {s.latency_batch}x3x{s.latency_size}x"
        f"{s.latency_size}, {s.reps} reps in {profile.rounds} rounds, {s.warmup} warm-up, "
        f"{n_threads} thread(s)"
    )
    stats = measure_networks([r.module() for r in models], profile)

    # 4) predicted latency of derived nets from this device's table
    table, table_note = load_latency_table(
        dev, n_threads, s.latency_batch, s.latency_size, s.latency_table, s.allow_foreign_table
    )
    if table is not None:
        preds, pred_reasons = predict_all(models, table, s.latency_size)
    else:
        preds, pred_reasons = [float("nan")] * len(models), {}

    df = _result_frame(models, quality, sizes, stats, preds, n_img)
    base_names, fastest = _add_speedup(df)
    meta = _meta(s, dev, n_threads, profile, data_kind, n_img, has_gt)
    meta["speedup"] = {
        "definition": "latency_ms(fastest baseline) / latency_ms(model); > 1 is faster",
        "baselines": base_names,
        "reference": fastest,
        "note": None if fastest else "no baseline (non-crmef registry model) evaluated",
    }
    meta["predicted_latency"] = {
        "table": str(table.path) if table is not None and table.path else None,
        "table_device": table.device_fingerprint if table is not None else None,
        "reason": table_note,
        "not_predicted": pred_reasons,
        "note": "only derived nets (genotypes, crmef-*) are predicted",
    }
    meta["untrained"] = untrained
    meta["size_notes"] = notes
    meta["models"] = {r.name: {"source": r.source, "arch": yaml_safe(r.arch)} for r in models}
    meta["latency"]["seconds_total"] = round(time.perf_counter() - t_start, 2)
    df.attrs["meta"] = meta
    return df


def _result_frame(
    models: Sequence[ResolvedModel],
    quality: Sequence[Mapping[str, float]],
    sizes: Sequence[Mapping[str, Any]],
    stats: Sequence[Any],
    preds: Sequence[float],
    n_img: int,
) -> pd.DataFrame:
    """One :data:`COLUMNS` row per model (``speedup`` still NaN) from the measurements:
    quality metrics, size counts (``Int64``, ``<NA>`` where a counter failed), measured
    latency statistics and the predicted latency."""
    rows = []
    for r, q, size, st, pr in zip(models, quality, sizes, stats, preds):
        row: dict[str, Any] = {
            "name": r.name,
            "kind": (r.arch or {}).get("kind", "?"),
            "group": model_group(r),
            "trained": bool(r.trained),
            "eta": search_eta(r),
        }
        row.update({k: q.get(k, float("nan")) for k in QUALITY_COLUMNS})
        row.update(size)
        row.update(
            latency_ms=st.median_ms,
            latency_p10_ms=st.p10_ms,
            latency_p90_ms=st.p90_ms,
            predicted_ms=pr,
            images=n_img,
            genotype=genotype_text(r),
            source=r.source,
        )
        rows.append(row)
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    for c in ("params", "macs", "flops", "images"):
        df[c] = df[c].round().astype("Int64")  # counts; <NA> where a counter failed
    return df


def _add_speedup(df: pd.DataFrame) -> tuple[list[str], str | None]:
    """Fill ``df["speedup"]``: the fastest baseline's latency / each model's (NaN without a
    baseline). Returns the baselines' names and the fastest one's (None without one)."""
    base = df[df["group"] == BASELINE_GROUP]
    if not len(base):
        df["speedup"] = float("nan")
        return [], None
    i = base["latency_ms"].idxmin()
    df["speedup"] = float(df.loc[i, "latency_ms"]) / df["latency_ms"]
    return [str(n) for n in base["name"]], str(df.loc[i, "name"])


def _meta(
    s: EvalSettings,
    dev: torch.device,
    n_threads: int,
    profile: Any,
    data_kind: str,
    n_img: int,
    has_gt: bool,
) -> dict[str, Any]:
    """What ``meta.yaml`` says about the run's data, sizes and latency measurement."""
    from nas.latency import device_info

    return {
        "tool": "python -m nas.evaluate",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "device": device_info(dev, n_threads),
        "torch": torch.__version__,
        "data": {
            "spec": str(s.data),
            "kind": data_kind,
            "split": s.split,
            "crop": s.crop,
            "full_images": s.crop is None,
            "misaligned": bool(s.misaligned),
            "seed": s.seed,
            "images": n_img,
            "max_images": s.max_images,
            "ground_truth": bool(has_gt),
            "quality_batch": s.quality_batch,
            "metrics": "batch means weighted by batch size = mean over all images; outputs "
            "clamped to [0, 1]"
            + ("" if has_gt else "; no ground truth: PSNR/SSIM/MS-SSIM/FSIM left empty"),
        },
        "size": {
            "resolution": [s.latency_size, s.latency_size],
            "batch": 1,
            "macs": "thop (modules only), multiply-accumulates per image",
            "flops": "torch FlopCounterMode + bilinear interpolation + deformable sampling, "
            "per image (2 FLOPs per MAC)",
        },
        "latency": {
            "resolution": [s.latency_size, s.latency_size],
            "batch": s.latency_batch,
            "reps": s.reps,
            "rounds": profile.rounds,
            "warmup": s.warmup,
            "threads": n_threads,
            "dtype": "float32",
            "statistic": "median over all reps (p10, p90 also given), ms per batch",
            "harness": "nas.latency.measure_networks: eval(), torch.inference_mode(), pinned "
            "threads, warm-up, time_fn (perf_counter per call"
            + (", cuda.synchronize around it)" if dev.type == "cuda" else ")")
            + "; all models interleaved round by round in the same run",
            "seconds_total": None,
        },
    }


# --- output ------------------------------------------------------------------------------


def data_slug(meta: Mapping[str, Any]) -> str:
    """``synthetic-test-c128`` / ``<folder>-test-full`` (+ ``-mis``, ``-n<max_images>``)."""
    d = meta["data"]
    spec = str(d["spec"])
    name = "synthetic" if d["kind"] == "synthetic" else slug(Path(spec).name or spec)
    parts = [name, str(d["split"]), "full" if d["crop"] is None else f"c{d['crop']}"]
    if d.get("misaligned"):
        parts.append("mis")
    if d.get("max_images"):
        parts.append(f"n{d['images']}")
    return "-".join(parts)


def eval_file_stem(meta: Mapping[str, Any]) -> str:
    """``eval-<device-fingerprint>-<data>-s<latency size>-b<latency batch>``."""
    lat = meta["latency"]
    fp = meta["device"]["device_fingerprint"]
    return f"eval-{fp}-{data_slug(meta)}-s{lat['resolution'][0]}-b{lat['batch']}"


def _fmt(v: Any, col: str) -> str:
    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return ""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if col == "trained":
        return "yes" if bool(v) else "**NO**"
    if col == "params":
        return f"{int(v):,}"
    if col in ("macs", "flops"):
        return f"{float(v) / 1e9:.3f}"
    if col in ("latency_ms", "predicted_ms"):
        return f"{float(v):.2f}" if float(v) < 100 else f"{float(v):.1f}"
    if col == "speedup":
        return f"{float(v):.2f}x"
    if col == "psnr":
        return f"{float(v):.2f}"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v).replace("|", "\\|")


def markdown_table(df: pd.DataFrame) -> str:
    """The table as GitHub Markdown (selected columns, units in the headers) with a caption
    line from ``df.attrs["meta"]`` and a note on untrained models."""
    cols = [(c, h) for c, h in _MD_COLUMNS if c in df.columns]
    if "psnr" in df.columns and df["psnr"].isna().all():
        cols = [(c, h) for c, h in cols if c not in ("psnr", "ssim", "fsim")]
    if "predicted_ms" in df.columns and df["predicted_ms"].isna().all():
        cols = [(c, h) for c, h in cols if c != "predicted_ms"]
    names = [c for c, _ in cols]
    grid = report.markdown_table(
        df, names, dict(cols), _fmt, right=[c for c in names if c not in ("name", "kind")]
    )
    meta = df.attrs.get("meta") or {}
    out = []
    if meta:
        d, lat = meta["data"], meta["latency"]
        crop = "full images" if d["crop"] is None else f"{d['crop']}x{d['crop']} crops"
        out.append(
            f"Device `{meta['device']['device_fingerprint']}` ({meta['device'].get('device_name')}"
            f"), torch {meta['torch']}. Quality: {d['images']} image(s) of `{d['spec']}` "
            f"({d['kind']}, split {d['split']}, {crop}"
            + (", misaligned" if d.get("misaligned") else "")
            + f"). Latency: median of {lat['reps']} reps ({lat['rounds']} interleaved rounds, "
            f"{lat['warmup']} warm-up) at batch {lat['batch']} x "
            f"{lat['resolution'][0]}x{lat['resolution'][1]}, {lat['threads']} thread(s); "
            f"params/MACs/FLOPs per image at that resolution."
        )
        ref = meta.get("speedup", {}).get("reference")
        out.append(
            f"Speed-up: latency of the fastest baseline ({ref}) / latency of the model."
            if ref
            else "Speed-up: no baseline in this run."
        )
        out.append("")
    out.append(grid.rstrip("\n"))
    if "trained" in df.columns and not df["trained"].all():
        bad = ", ".join(df.loc[~df["trained"].astype(bool), "name"])
        out += [
            "",
            f"**UNTRAINED: {bad}** -- random weights, quality numbers are meaningless.",
        ]
    return "\n".join(out) + "\n"


def write_eval(df: pd.DataFrame, out_dir: str | Path, argv: Sequence[str] | None = None) -> dict:
    """Write ``<stem>.csv``, ``<stem>.md`` and ``meta.yaml`` atomically into ``out_dir``.

    Returns:
        ``{"csv": Path, "md": Path, "meta": Path}``.
    """
    out = Path(out_dir)
    meta = dict(df.attrs.get("meta") or {})
    if argv is not None:
        meta["command"] = "python -m nas.evaluate " + " ".join(argv)
    stem = eval_file_stem(meta) if meta else "eval"
    meta["files"] = {"csv": f"{stem}.csv", "md": f"{stem}.md"}
    flat = df.copy()
    flat.attrs = {}
    texts = {  # everything serialised before anything is written
        "csv": (out / f"{stem}.csv", flat.to_csv(index=False)),
        "md": (out / f"{stem}.md", markdown_table(df)),
        "meta": (out / "meta.yaml", yaml.safe_dump(yaml_safe(meta), sort_keys=False)),
    }
    return {k: atomic_write_text(path, text) for k, (path, text) in texts.items()}


# --- CLI ---------------------------------------------------------------------------------


_SETTINGS_FLAGS: dict[str, dict[str, Any]] = {
    "data": {"help": "'synthetic' or a data path"},
    "split": {"choices": ["train", "val", "test", "all"]},
    "max_images": {"help": "evaluate at most N images"},
    "batch_size": {"flag": "--batch", "help": "images per batch for quality"},
    "misaligned": {"help": "misaligned evaluation data"},
    "reps": {"help": "timed calls per model (all rounds)"},
    "rounds": {"help": "interleaved passes over all models"},
    "warmup": {"help": "untimed calls per model"},
    "threads": {"help": "CPU threads while timing (default: torch's)"},
    "allow_untrained": {"help": "evaluate untrained models (flagged) instead of refusing them"},
    "channels": {"help": "width of crmef-* registry models"},
}
"""Per :class:`EvalSettings` field, what its option has beyond what the field gives (the flag
``--<field-name>``, type and default): another flag name (``flag``), ``help``, ``choices``."""


def _scalar_type(hint: Any) -> type:
    """``bool``, ``int``, ``float`` or ``str``: the option type of a field annotated ``hint``
    (``int | None`` -> ``int``, ``str | Path`` -> ``str``)."""
    kinds = [t for t in (typing.get_args(hint) or (hint,)) if t is not type(None)]
    for kind in (bool, int, float):
        if kind in kinds:
            return kind
    return str


def add_settings_args(p: argparse.ArgumentParser) -> None:
    """One option per :class:`EvalSettings` field, its default the field's: ``--<name>``
    (``_`` as ``-``; ``--batch`` for ``batch_size``), ``store_true`` for booleans; ``crop``
    with its alternative ``--full`` (full images), ``device`` by :func:`nas.cli.add_device`,
    ``latency_table`` / ``allow_foreign_table`` by :func:`nas.cli.add_table_args`.
    :func:`settings_from_args` reads them back."""
    hints = typing.get_type_hints(EvalSettings)
    for f in dataclasses.fields(EvalSettings):
        if f.name == "crop":
            g = p.add_mutually_exclusive_group()
            g.add_argument(
                "--crop",
                type=int,
                default=f.default,
                help=f"central crop size (default {f.default})",
            )
            g.add_argument("--full", action="store_true", help="full images (one per batch)")
        elif f.name == "device":
            add_device(p)
        elif f.name == "latency_table":
            add_table_args(p, "table CSV for the predicted latency")
        elif f.name != "allow_foreign_table":  # added with latency_table
            kw = dict(_SETTINGS_FLAGS.get(f.name, {}))
            flag = kw.pop("flag", "--" + f.name.replace("_", "-"))
            kind = _scalar_type(hints[f.name])
            if kind is bool:
                kw["action"] = "store_true"
            elif kind is not str:
                kw["type"] = kind
            p.add_argument(flag, dest=f.name, default=f.default, **kw)


def settings_from_args(args: argparse.Namespace) -> EvalSettings:
    """The :class:`EvalSettings` of options added by :func:`add_settings_args`."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(EvalSettings)}
    values["crop"] = None if args.full else args.crop
    return EvalSettings(**values)


def build_parser() -> argparse.ArgumentParser:
    from nas.mefb import DEFAULT_TILE_ABOVE_MP, MEFB_TABLE_FILE

    p = argparse.ArgumentParser(
        prog="python -m nas.evaluate",
        description="Quality, params/MACs/FLOPs and measured latency of fusion networks, "
        "one table from one run.",
    )
    p.add_argument(
        "--models",
        nargs="+",
        required=True,
        metavar="RUN_OR_NAME",
        help="registry names, genotype .yaml, search/training run folders or model .pt files",
    )
    add_settings_args(p)
    p.add_argument("--out", help="output folder (default: results/eval/<model names>)")
    add_progress(p, "--quiet")
    m = p.add_argument_group(
        "--protocol mefb",
        "MEFB's no-reference protocol on a folder of pairs (MEFB <Scene>/<Scene>_A|_B.*, "
        "<scene>/A|B.*, <scene>/under|over(|gt).*): every pair at full resolution, MEF-SSIM "
        "and Q^AB/F as MEFB computes them (+ PSNR/SSIM where gt exists), time per megapixel; "
        "--crop/--full/--split/--batch/--misaligned/--latency-*/--reps/--rounds/--warmup do "
        "not apply",
    )
    m.add_argument(
        "--protocol",
        choices=["table", "mefb"],
        default="table",
        help="table (default: quality on crops + params/FLOPs/latency) or mefb",
    )
    m.add_argument("--max-pairs", dest="max_pairs", type=int, help="only the first N pairs")
    m.add_argument("--scenes", nargs="+", metavar="NAME", help="only these scenes")
    m.add_argument(
        "--tile-above",
        dest="tile_above",
        type=float,
        default=DEFAULT_TILE_ABOVE_MP,
        metavar="MP",
        help=f"tile networks on images above this many megapixels (default "
        f"{DEFAULT_TILE_ABOVE_MP:g}; MEFB's largest is 0.97)",
    )
    m.add_argument("--tile", type=int, help="tile side in pixels (default: nas.fuse's 512)")
    m.add_argument("--overlap", type=int, help="tile overlap in pixels (default: 64)")
    m.add_argument(
        "--mefb-table",
        dest="mefb_table",
        help=f"MEFB's published table (default: DATA/{MEFB_TABLE_FILE} when present)",
    )
    m.add_argument(
        "--save-fused", dest="save_fused", metavar="DIR", help="write fused outputs as PNG"
    )
    m.add_argument(
        "--save-names",
        dest="save_names",
        nargs="+",
        metavar="SCENE",
        help="only these scenes' fused outputs (default: all)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)

    def log(msg: str) -> None:
        if not args.no_progress or msg.startswith("WARNING"):
            print(msg, file=sys.stderr, flush=True)

    if args.protocol == "mefb":
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="WARNING: untrained")
                from nas.mefb_report import main_folder

                return main_folder(args, argv, log)
        except (
            ModelRefError,
            ValueError,
            FileNotFoundError,
            RuntimeError,
            MissingLatencyEntry,
        ) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="WARNING: untrained")
            settings = settings_from_args(args)
            df = evaluate_models(args.models, settings, log=log)
        out = Path(args.out) if args.out else default_out_dir(list(df["name"]))
        paths = write_eval(df, out, argv)
    except (ModelRefError, ValueError, FileNotFoundError, RuntimeError, MissingLatencyEntry) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown_table(df))
    print(f"wrote {paths['csv']}, {paths['md'].name}, {paths['meta'].name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
