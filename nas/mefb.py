"""MEFB's no-reference protocol: real exposure pairs at full resolution, beside MEFB's table.

``python -m nas.evaluate --protocol mefb --data ../shared/data/mefb --models ...`` runs
:func:`evaluate_folder`. The command's flags are parsed by :mod:`nas.evaluate`
(:func:`nas.evaluate.build_parser`), its body is :func:`nas.mefb_report.main_folder` (tables,
figure, files); this module holds the protocol (pairs, metrics, timing).

MEFB's no-reference evaluation on a folder of real pairs (:func:`evaluate_folder`)::

    python -m nas.evaluate --protocol mefb --data ../shared/data/mefb \
        --models mertens average results/runs/train-... --out results/mefb/eval

Every pair at full resolution (no crop; networks tiled through :func:`nas.tiling.fuse_pair`
only above ``--tile-above`` MP, default 1.0, so MEFB's pairs run whole); per pair MEF-SSIM and
Q^AB/F exactly as MEFB computes them (:func:`pair_metrics`: fused output quantised to 8 bits,
sources in MEFB's A, B order) plus PSNR/SSIM where the scene has a ``gt``; inference time per
pair and ms per megapixel on the device (one warm-up pair, CUDA synchronised), parameters and
the device fingerprint. Folder layouts (:mod:`nas.data.scenes`): MEFB
``<Scene>/<Scene>_A|_B.*``, ``<scene>/A|B.*`` (misaligned pairs), ``<scene>/under|over|gt.*``.
Output: ``mefb-<fingerprint>-<data>.csv`` (per model), ``...-pairs.csv`` (per pair), ``.md``
(our rows beside MEFB's published ones from ``<data>/mefb_table.json``, sorted by MEF-SSIM,
with a rank column), ``.meta.yaml`` and ``mef_ssim_vs_ms_per_mp.png`` (Pareto front marked).
``--max-pairs N`` / ``--scenes`` for quick runs, ``--save-fused DIR [--save-names S ...]`` to
write fused PNGs. A bad folder (an image without its partner, ...) is a one-line error, exit 2.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from nas.latency.timing import sync
from nas.lineup import (
    Log,
    check_trained,
    model_group,
    quiet,
    resolve_models,
)
from nas.models import ResolvedModel
from nas.report import yaml_safe

# --- the MEFB no-reference protocol (``--protocol mefb``) --------------------------------

MEFB_TABLE_FILE = "mefb_table.json"
"""File name of MEFB's published per-method means, looked for in the data folder."""
MEFB_SOURCE = "MEFB published"
DEFAULT_TILE_ABOVE_MP = 1.0
"""Networks run on the whole image up to this many megapixels, tiled above it."""
PAIR_COLUMNS: tuple[str, ...] = (
    "model",
    "scene",
    "layout",
    "height",
    "width",
    "megapixels",
    "tiled",
    "mef_ssim",
    "qabf",
    "psnr",
    "ssim",
    "time_ms",
    "ms_per_mp",
    "metrics_ms",
)
"""Columns of the per-pair CSV (``psnr``/``ssim`` NaN where the scene has no ``gt``)."""
SUMMARY_COLUMNS: tuple[str, ...] = (
    "name",
    "kind",
    "group",
    "trained",
    "mef_ssim",
    "qabf",
    "psnr",
    "ssim",
    "ms_per_mp",
    "time_ms",
    "params",
    "pairs",
    "megapixels",
    "tiled_pairs",
    "mefb_rank",
    "metrics_ms",
    "device",
    "source",
)
"""Columns of the per-model CSV of the MEFB protocol."""
PLOT_FILE = "mef_ssim_vs_ms_per_mp.png"


@dataclass
class FolderEval:
    """What :func:`evaluate_folder` measured.

    Attributes:
        summary: one row per model (:data:`SUMMARY_COLUMNS`).
        pairs: one row per (model, scene) (:data:`PAIR_COLUMNS`).
        published: MEFB's published rows (``name, mef_ssim, qabf, source``) or ``None``.
        meta: device, data, settings, timings (what ``<stem>.meta.yaml`` holds).
    """

    summary: pd.DataFrame
    pairs: pd.DataFrame
    published: pd.DataFrame | None
    meta: dict[str, Any]


def load_mefb_table(path: str | Path) -> pd.DataFrame:
    """MEFB's published means (``mefb_table.json``) as ``name, mef_ssim, qabf, source``.

    The file is ``{"source": str, "methods": {method: {"MEF_SSIM": float, "Qabf": float,
    ...}}}`` (MEFB's ``evaluationMetricsAverageImg.mat``: per method the mean over its 100
    pairs of 20 metrics). Rows keep the file's order.

    Raises:
        FileNotFoundError: no such file. ValueError: not that structure (names the key).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"MEFB table not found: '{p}'")
    try:
        doc = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"MEFB table '{p}' cannot be read: {type(e).__name__}: {e}") from None
    methods = doc.get("methods") if isinstance(doc, dict) else None
    if not isinstance(methods, dict) or not methods:
        raise ValueError(f"MEFB table '{p}' has no 'methods' mapping of method -> metrics")
    rows = []
    for name, m in methods.items():
        try:
            rows.append(
                {
                    "name": str(name),
                    "mef_ssim": float(m["MEF_SSIM"]),
                    "qabf": float(m["Qabf"]),
                    "source": MEFB_SOURCE,
                }
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(
                f"MEFB table '{p}': method {name!r} lacks a numeric MEF_SSIM / Qabf ({e})"
            ) from None
    return pd.DataFrame(rows, columns=["name", "mef_ssim", "qabf", "source"])


def quantize8(x: torch.Tensor) -> torch.Tensor:
    """``x`` clipped to [0, 1] and rounded to the nearest of 256 levels (half up), as writing
    it to an 8-bit file and reading it back would give."""
    return torch.floor(x.clamp(0.0, 1.0) * 255.0 + 0.5) / 255.0


def pair_metrics(
    fused: torch.Tensor, a: torch.Tensor, b: torch.Tensor, gt: torch.Tensor | None = None
) -> dict[str, float]:
    """MEFB's no-reference metrics of one fused pair (plus PSNR/SSIM when ``gt`` is given).

    All images ``(1, 3, H, W)`` in [0, 1] with ``min(H, W) >= 44`` (3 MEF-SSIM scales).

    * ``mef_ssim``: ``nas.metrics.mef_ssim(fused, [a, b], scales=3, quantize=True)`` -- MEFB's
      ``mef_ms_ssim`` (3 scales, weights 0.0448/0.2856/0.3001) on the fused image quantised
      to 8 bits as if saved (``quantize`` also rounds the sources, a no-op for 8-bit files);
    * ``qabf``: ``nas.metrics.qabf(fused, a, b, quantize=True)`` -- MEFB's ``metricsQabf``
      (its 255x scaling quirk reproduced; identical images score ~0.9753, not 1);
    * ``psnr``, ``ssim`` against ``gt`` (``nas.metrics.psnr`` / ``ssim``) of the 8-bit
      quantised fused image.

    Source order: MEFB passes (A, B), and so does this; both metrics are symmetric in the
    two sources (MEF-SSIM sums and maxes over them; Q^AB/F is ``sum(Q^AF gA + Q^BF gB) /
    sum(gA + gB)``), so the order does not change the value (the tests check it).

    Sources: ``a`` and ``b`` as read. The folder's pairs carry no reference-frame copy (real
    misaligned pairs, ``<scene>/A|B``, were not warped by this toolkit), so they are the
    sources :func:`nas.losses.fusion_sources` gives for them too; on data warped by
    :mod:`nas.data.misalign` the training loss, validation and ``nas.evaluate`` all score
    against the reference-frame copy instead.
    """
    from nas.metrics import mef_ssim, psnr, qabf, ssim

    H, W = fused.shape[-2:]
    if min(H, W) < 44:
        raise ValueError(
            f"image of {W}x{H} (W x H) is too small for MEFB's 3-scale MEF-SSIM "
            "(needs a smaller side >= 44 px)"
        )
    fused = fused.clamp(0.0, 1.0)
    out = {
        "mef_ssim": float(mef_ssim(fused, [a, b], scales=3, quantize=True)[0]),
        "qabf": float(qabf(fused, a, b, quantize=True)[0]),
        "psnr": float("nan"),
        "ssim": float("nan"),
    }
    if gt is not None:
        f8 = quantize8(fused)
        with torch.no_grad():
            out["psnr"] = float(psnr(f8, gt).double()[0])
            out["ssim"] = float(ssim(f8, gt).double()[0])
    return out


@contextlib.contextmanager
def _opencv_threads(n: int) -> Iterator[int | None]:
    """OpenCV's thread pool at ``n`` threads for the block (Mertens runs on it), restored."""
    try:
        import cv2
    except ImportError:  # pragma: no cover - a declared dependency
        yield None
        return
    old = cv2.getNumThreads()
    cv2.setNumThreads(int(n))
    try:
        yield int(n)
    finally:
        cv2.setNumThreads(old)


def _fuse_one(
    r: ResolvedModel,
    net: torch.nn.Module,
    under: torch.Tensor,
    over: torch.Tensor,
    dev: torch.device,
    tile_above_px: float,
    tile: int,
    overlap: int,
) -> tuple[torch.Tensor, bool]:
    """One pair through one model, whole or tiled (networks above ``tile_above_px`` only)."""
    from nas.tiling import fuse_pair

    if r.classical:
        return r.model.fuse(under, over), False
    H, W = under.shape[-2:]
    tiled = not r.pyramid_blend and tile > 0 and H * W > tile_above_px and max(H, W) > tile
    out = fuse_pair(net, under, over, tile if tiled else 0, overlap, device=dev)
    return out, tiled


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._#+-]+", "_", name.replace("/", "__")).strip("_") or "x"


@dataclass
class FolderSettings:
    """How :func:`evaluate_folder` evaluates a folder of pairs (checked on construction).

    Attributes:
        max_pairs: only the first N scenes (after ``scenes``).
        scenes: only these scene names (in this order).
        device: ``cpu``, ``cuda``, ``cuda:N``, ``auto``; None: CUDA when present.
        threads: CPU threads for torch and OpenCV (default: torch's current setting).
        tile_above_mp: tile networks on images above this many megapixels (0: always tile
            images larger than ``tile``; ``inf``: never).
        tile, overlap: tile side and overlap (None: :mod:`nas.tiling`'s 512 / 64).
        allow_untrained: evaluate untrained networks (flagged) instead of refusing them.
        channels: width of the registry models given by name that have one.
        mefb_table: MEFB's published table: None (``<data>/mefb_table.json`` if present),
            False (none) or a path.
        save_fused: write fused outputs as ``<save_fused>/<model>/<scene>.png`` (8-bit).
        save_names: only these scenes' outputs (default: all evaluated scenes).
        seed: torch seed before the models are built.
    """

    max_pairs: int | None = None
    scenes: Sequence[str] | None = None
    device: str | torch.device | None = None
    threads: int | None = None
    tile_above_mp: float = DEFAULT_TILE_ABOVE_MP
    tile: int | None = None
    overlap: int | None = None
    allow_untrained: bool = False
    channels: int | None = None
    mefb_table: str | Path | bool | None = None
    save_fused: str | Path | None = None
    save_names: Sequence[str] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        from nas.tiling import DEFAULT_OVERLAP, DEFAULT_TILE

        self.tile = DEFAULT_TILE if self.tile is None else int(self.tile)
        self.overlap = DEFAULT_OVERLAP if self.overlap is None else int(self.overlap)
        tile, overlap = self.tile, self.overlap
        if tile < 0 or overlap < 0 or (tile > 0 and overlap >= tile):
            raise ValueError(f"need tile >= 0 and 0 <= overlap < tile; got {tile}, {overlap}")
        if not (self.tile_above_mp >= 0):
            raise ValueError(f"tile_above_mp must be >= 0, got {self.tile_above_mp}")
        if self.max_pairs is not None and self.max_pairs < 1:
            raise ValueError(f"max_pairs must be >= 1, got {self.max_pairs}")

    @property
    def tile_above_px(self) -> float:
        """:attr:`tile_above_mp` in pixels."""
        return float(self.tile_above_mp) * 1e6

    def resolved_threads(self) -> int:
        """:attr:`threads`, or torch's current setting; at least 1 (else ValueError)."""
        n = torch.get_num_threads() if self.threads is None else int(self.threads)
        if n < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        return n


def evaluate_folder(
    refs: Sequence[str | Path | ResolvedModel],
    data: str | Path,
    settings: FolderSettings | None = None,
    *,
    model_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    log: Log | None = None,
    **fields: Any,
) -> FolderEval:
    """MEFB's no-reference protocol on a folder of exposure pairs (``--protocol mefb``).

    Every scene (:func:`nas.data.scenes.find_scenes`: MEFB ``<Scene>/<Scene>_A|_B.*``,
    ``<scene>/A|B.*`` or ``<scene>/under|over(|gt).*``) at full resolution, no crop. Each
    model fuses ``(under, over)`` -- the two images ordered by mean luminance -- on
    ``device``; networks run on the whole image up to ``tile_above_mp`` megapixels and through
    :func:`nas.tiling.fuse_pair`'s tiling above it; classical methods always whole. Per pair:
    :func:`pair_metrics` (MEF-SSIM and Q^AB/F as MEFB computes them, with the sources in file
    order A, B; PSNR/SSIM where a ``gt`` exists) and the inference time (``time_ms``: the
    fusion call alone, inputs already on the device, ``cuda.synchronize`` before and after on
    CUDA; not the metrics, timed apart as ``metrics_ms``). One warm-up pair (the first) runs
    through every model untimed first. ``ms_per_mp`` per model = total time / total
    megapixels.

    Reproducible: the scenes are taken in natural name order, models built after
    ``torch.manual_seed(seed)`` (untrained registry nets get the same weights every run),
    torch and OpenCV pinned to ``threads`` threads; the metrics are deterministic float64.

    Args:
        refs: model references (``mertens``, ``average``, registry names, runs, files).
        data: the folder.
        settings: how (default :class:`FolderSettings`); ``fields`` (its field names:
            ``max_pairs``, ``scenes``, ``device``, ``threads``, ``tile_above_mp``, ``tile``,
            ``overlap``, ``allow_untrained``, ``channels``, ``mefb_table``, ``save_fused``,
            ``save_names``, ``seed``) override it.
        model_kwargs: as :func:`nas.evaluate.evaluate_models`.
        log: progress messages.

    Raises:
        ModelRefError, UntrainedModelError, ValueError (bad folder, a missing partner naming
        the file, a scene too small, unknown names, bad settings), FileNotFoundError,
        PairSizeError.
    """
    from nas.accel import configure_device
    from nas.flops import count_params
    from nas.latency import device_info, resolve_device
    from nas.latency.timing import pinned_threads

    s = dataclasses.replace(settings or FolderSettings(), **fields)
    log = log or quiet
    if str(data) == "synthetic":
        raise ValueError("the mefb protocol needs --data FOLDER of exposure pairs")
    root = Path(data)
    dev = resolve_device(None if str(s.device) == "auto" else s.device)
    n_threads = s.resolved_threads()
    n_found, chosen, save_set = _choose_scenes(root, s)
    table_path = _published_table_path(root, s.mefb_table)
    published = load_mefb_table(table_path) if table_path is not None else None

    torch.manual_seed(s.seed)
    models = resolve_models(refs, s.channels, model_kwargs)
    untrained = check_trained(models, s.allow_untrained, log)
    configure_device(dev)  # the allocator and cuDNN settings every timed run uses
    nets = [r.module().to(dev).eval() for r in models]
    params = [0 if r.classical else int(count_params(net)) for r, net in zip(models, nets)]
    t_start = time.perf_counter()
    with pinned_threads(n_threads), _opencv_threads(n_threads), torch.inference_mode():
        run = _evaluate_pairs(models, nets, chosen, dev, s, save_set, log)
    timing = {
        "sync": "torch.cuda.synchronize before and after" if dev.type == "cuda" else None,
        "warmup_seconds": round(run.warm_s, 3),
        "threads": n_threads,
        "seconds_total": round(time.perf_counter() - t_start, 2),
    }
    pairs = pd.DataFrame(run.rows, columns=list(PAIR_COLUMNS))
    info = device_info(dev, n_threads)
    summary = _summary_frame(models, params, pairs, published, info["device_fingerprint"])
    meta = _folder_meta(data, s, info, chosen, n_found, pairs, timing, table_path, published)
    meta.update(
        seed=s.seed,
        untrained=untrained,
        saved_fused=run.saved,
        models={
            r.name: {"source": r.source, "arch": yaml_safe(r.arch), "params": n}
            for r, n in zip(models, params)
        },
    )
    return FolderEval(summary, pairs, published, meta)


def _choose_scenes(root: Path, s: FolderSettings) -> tuple[int, list[Any], set[str] | None]:
    """``(scenes found, scenes evaluated, names whose fused output is saved or None)``."""
    from nas.data.scenes import find_scenes, select_scenes

    found = find_scenes(root)
    chosen = select_scenes(found, s.scenes) if s.scenes else list(found)
    if s.max_pairs is not None:
        chosen = chosen[: s.max_pairs]
    save_set: set[str] | None = None
    if s.save_names and s.save_fused is None:
        raise ValueError("save_names (--save-names) needs save_fused (--save-fused DIR)")
    if s.save_fused is not None:
        names = {scene.name for scene in chosen}
        save_set = set(s.save_names) if s.save_names else names
        unknown = sorted(save_set - names)
        if unknown:
            raise ValueError(f"--save-names {unknown} are not among the evaluated scenes")
    return len(found), chosen, save_set


def _published_table_path(root: Path, mefb_table: str | Path | bool | None) -> Path | None:
    """MEFB's published table to read: ``mefb_table``, else ``<root>/mefb_table.json`` when
    it exists (``mefb_table`` None), or None (``mefb_table`` False)."""
    if mefb_table is None:
        auto = root / MEFB_TABLE_FILE
        return auto if auto.is_file() else None
    if mefb_table is not False:
        return Path(str(mefb_table))
    return None


# --- timing: every pair through every model ------------------------------------------------


@dataclass
class _PairRun:
    """What :func:`_evaluate_pairs` produced: per-pair rows, saved files, warm-up seconds."""

    rows: list[dict[str, Any]]
    saved: list[str]
    warm_s: float


def _evaluate_pairs(
    models: Sequence[ResolvedModel],
    nets: Sequence[torch.nn.Module],
    chosen: Sequence[Any],
    dev: torch.device,
    s: FolderSettings,
    save_set: set[str] | None,
    log: Log,
) -> _PairRun:
    """Every scene through every model: one :data:`PAIR_COLUMNS` row per (model, scene), after
    one untimed warm-up pass of the first scene through every model."""
    from nas.data.scenes import load_scene

    run = _PairRun([], [], 0.0)
    for i, scene in enumerate(chosen):
        sc = load_scene(scene)
        a, b = sc["a"][None].to(dev), sc["b"][None].to(dev)  # (1, 3, H, W) in file order
        u, o = (a, b) if sc["under"] is sc["a"] else (b, a)
        gt = sc["gt"][None].to(dev) if "gt" in sc else None
        H, W = a.shape[-2:]
        if i == 0:  # one untimed warm-up pair through every model
            t_w = time.perf_counter()
            for r, net in zip(models, nets):
                _fuse_one(r, net, u, o, dev, s.tile_above_px, s.tile, s.overlap)
            sync(dev)
            run.warm_s = time.perf_counter() - t_w
        parts = []
        for r, net in zip(models, nets):
            fused, tiled, dt = _timed_fusion(r, net, u, o, dev, s, scene.name)
            fused = fused.float().clamp(0.0, 1.0)
            m, dm = _timed_metrics(fused, a, b, gt, dev, scene.name)
            if save_set is not None and scene.name in save_set:
                run.saved.append(_save_fused(fused, scene, r.name, s.save_fused))
            mp = H * W / 1e6
            run.rows.append(
                {
                    "model": r.name,
                    "scene": scene.name,
                    "layout": scene.layout,
                    "height": int(H),
                    "width": int(W),
                    "megapixels": mp,
                    "tiled": bool(tiled),
                    **m,
                    "time_ms": dt * 1e3,
                    "ms_per_mp": dt * 1e3 / mp,
                    "metrics_ms": dm * 1e3,
                }
            )
            parts.append(f"{r.name} {m['mef_ssim']:.4f}/{m['qabf']:.4f} {dt * 1e3:.0f} ms")
        log(f"[{i + 1}/{len(chosen)}] {scene.name} {W}x{H}: " + "; ".join(parts))
    return run


def _timed_fusion(
    r: ResolvedModel,
    net: torch.nn.Module,
    under: torch.Tensor,
    over: torch.Tensor,
    dev: torch.device,
    s: FolderSettings,
    scene: str,
) -> tuple[torch.Tensor, bool, float]:
    """``(fused (1, 3, H, W), tiled, seconds)`` of one fusion call, timed alone (the device
    synchronised before and after); a failure names the model and the scene."""
    sync(dev)
    t0 = time.perf_counter()
    try:
        fused, tiled = _fuse_one(r, net, under, over, dev, s.tile_above_px, s.tile, s.overlap)
        sync(dev)
    except Exception as e:  # noqa: BLE001 - name the model and scene
        H, W = under.shape[-2:]
        raise RuntimeError(
            f"model {r.name} failed on scene '{scene}' ({W}x{H}): {type(e).__name__}: {e}"
        ) from e
    return fused, tiled, time.perf_counter() - t0


def _timed_metrics(
    fused: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    gt: torch.Tensor | None,
    dev: torch.device,
    scene: str,
) -> tuple[dict[str, float], float]:
    """:func:`pair_metrics` of one fused ``(1, 3, H, W)`` image and the seconds they took."""
    t1 = time.perf_counter()
    try:
        m = pair_metrics(fused, a, b, gt)
    except ValueError as e:
        raise ValueError(f"scene '{scene}': {e}") from None
    sync(dev)
    return m, time.perf_counter() - t1


def _save_fused(fused: torch.Tensor, scene: Any, model: str, folder: str | Path | None) -> str:
    """Write ``fused`` ``(1, 3, H, W)`` as ``<folder>/<model>/<scene>.png``; returns the path
    (the scene's own images are protected from being overwritten)."""
    from nas.data.io import save_image

    target = Path(str(folder)) / _safe_name(model) / f"{_safe_name(scene.name)}.png"
    protected = [scene.a, scene.b] + ([scene.gt] if scene.gt else [])
    save_image(fused[0], target, protected=protected)
    return str(target)


# --- summary: one row per model, and what meta.yaml says -----------------------------------


def _summary_frame(
    models: Sequence[ResolvedModel],
    params: Sequence[int],
    pairs: pd.DataFrame,
    published: pd.DataFrame | None,
    fingerprint: str,
) -> pd.DataFrame:
    """One :data:`SUMMARY_COLUMNS` row per model from its per-pair rows (means; ``ms_per_mp``
    = total time / total megapixels; ``mefb_rank`` among MEFB's published methods)."""
    has_gt = bool(pairs["psnr"].notna().any())
    summary_rows = []
    for r, n_par in zip(models, params):
        sub = pairs[pairs["model"] == r.name]
        mef = float(sub["mef_ssim"].mean())
        rank = pd.NA
        if published is not None:
            rank = 1 + int((published["mef_ssim"] > mef).sum())
        summary_rows.append(
            {
                "name": r.name,
                "kind": (r.arch or {}).get("kind", "?"),
                "group": model_group(r),
                "trained": bool(r.trained),
                "mef_ssim": mef,
                "qabf": float(sub["qabf"].mean()),
                "psnr": float(sub["psnr"].mean()) if has_gt else float("nan"),
                "ssim": float(sub["ssim"].mean()) if has_gt else float("nan"),
                "ms_per_mp": float(sub["time_ms"].sum() / sub["megapixels"].sum()),
                "time_ms": float(sub["time_ms"].mean()),
                "params": n_par,
                "pairs": len(sub),
                "megapixels": float(sub["megapixels"].sum()),
                "tiled_pairs": int(sub["tiled"].sum()),
                "mefb_rank": rank,
                "metrics_ms": float(sub["metrics_ms"].mean()),
                "device": fingerprint,
                "source": r.source,
            }
        )
    summary = pd.DataFrame(summary_rows, columns=list(SUMMARY_COLUMNS))
    summary["mefb_rank"] = summary["mefb_rank"].astype("Int64")
    return summary


def _folder_meta(
    data: str | Path,
    s: FolderSettings,
    info: dict[str, Any],
    chosen: Sequence[Any],
    n_found: int,
    pairs: pd.DataFrame,
    timing: dict[str, Any],
    table_path: Path | None,
    published: pd.DataFrame | None,
) -> dict[str, Any]:
    """What ``<stem>.meta.yaml`` says about the device, data, metrics, timing, tiling and
    MEFB's table (``timing``: ``sync``, ``warmup_seconds``, ``threads``, ``seconds_total``)."""
    gt_pairs = int(pairs.loc[pairs["psnr"].notna(), "scene"].nunique())
    return {
        "tool": "python -m nas.evaluate --protocol mefb",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "device": info,
        "torch": torch.__version__,
        "opencv": opencv_version(),
        "data": {
            "spec": str(data),
            "scenes_found": n_found,
            "pairs": len(chosen),
            "subset": len(chosen) < n_found,
            "max_pairs": s.max_pairs,
            "layouts": sorted({scene.layout for scene in chosen}),
            "ground_truth_pairs": gt_pairs,
            "megapixels_total": round(sum(h * w for h, w in pair_sizes(pairs)) / 1e6, 4),
            "full_resolution": True,
        },
        "metrics": {
            "mef_ssim": "nas.metrics.mef_ssim(fused, [A, B], scales=3, quantize=True): MEFB's "
            "mef_ms_ssim on the fused image quantised to 8 bits",
            "qabf": "nas.metrics.qabf(fused, A, B, quantize=True): MEFB's metricsQabf",
            "psnr_ssim": "nas.metrics.psnr / ssim of the 8-bit quantised fused image against "
            "gt (scenes with gt only)",
            "source_order": "A, B in file order as MEFB; both metrics are symmetric in them",
            "network_input": "(under, over) = the pair ordered by mean luminance",
        },
        "timing": {
            "what": "the fusion call only (inputs on the device; metrics timed apart)",
            "sync": timing["sync"],
            "warmup": "one pair (the first) through every model, untimed",
            "warmup_seconds": timing["warmup_seconds"],
            "ms_per_mp": "total time / total megapixels per model",
            "threads": timing["threads"],
            "opencv_threads": timing["threads"],
            "seconds_total": timing["seconds_total"],
        },
        "tiling": {
            "above_megapixels": s.tile_above_mp,
            "tile": s.tile,
            "overlap": s.overlap,
            "how": "nas.fuse.fuse_pair (networks only; classical methods run whole)",
        },
        "published": {
            "table": str(table_path) if table_path is not None else None,
            "methods": 0 if published is None else len(published),
            "note": "MEFB's means over its 100 pairs, computed by its MATLAB code",
        },
    }


def merge_folder_evals(results: Sequence[FolderEval], jobs: int = 1) -> FolderEval:
    """One evaluation from several :func:`evaluate_folder` runs of *disjoint* model sets on
    the same pairs with the same settings (e.g. models evaluated side by side in separate
    processes, one thread each, as ``benchmarks/mefb.py --jobs 2`` does).

    Rows are concatenated in the given order; ``meta`` is the first run's, with the models of
    all runs, ``timing.seconds_total`` the longest run's and ``timing.jobs`` = ``jobs``, the
    number of runs that were timed at the same time.

    Raises:
        ValueError: the runs covered different pairs, used different settings (device,
            threads, tiling) or share a model name.
    """
    if not results:
        raise ValueError("merge_folder_evals needs at least one evaluation")
    first = results[0]
    scenes = set(first.pairs["scene"])
    names: list[str] = []
    for k, r in enumerate(results):
        if set(r.pairs["scene"]) != scenes:
            raise ValueError(f"evaluation {k} covered other pairs than evaluation 0")
        for key in ("device", "tiling"):
            if r.meta[key] != first.meta[key]:
                raise ValueError(f"evaluation {k} used other {key} settings than evaluation 0")
        if r.meta["timing"]["threads"] != first.meta["timing"]["threads"]:
            raise ValueError(f"evaluation {k} used another thread count than evaluation 0")
        names += list(r.summary["name"])
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"a model was evaluated twice: {dup}")
    meta = json.loads(json.dumps(first.meta, default=str))
    meta["models"] = {k: v for r in results for k, v in r.meta["models"].items()}
    meta["untrained"] = [n for r in results for n in r.meta.get("untrained", [])]
    meta["saved_fused"] = [f for r in results for f in r.meta.get("saved_fused", [])]
    meta["timing"]["seconds_total"] = max(r.meta["timing"]["seconds_total"] for r in results)
    meta["timing"]["jobs"] = int(jobs)
    summary = pd.concat([r.summary for r in results], ignore_index=True)
    summary["mefb_rank"] = summary["mefb_rank"].astype("Int64")
    pairs = pd.concat([r.pairs for r in results], ignore_index=True)
    return FolderEval(summary, pairs, first.published, meta)


def pair_sizes(pairs: pd.DataFrame) -> list[tuple[int, int]]:
    first = pairs.drop_duplicates("scene")
    return list(zip(first["height"].astype(int), first["width"].astype(int)))


def opencv_version() -> str | None:
    try:
        import cv2
    except ImportError:  # pragma: no cover
        return None
    return str(cv2.__version__)
