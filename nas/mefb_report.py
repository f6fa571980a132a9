"""MEFB's tables and figure: our rows ranked beside MEFB's published ones, the Markdown
table, the MEF-SSIM-versus-time plot, the files of a folder evaluation, and the CLI body of
``python -m nas.evaluate --protocol mefb`` (:func:`main_folder`).

The protocol itself (the pairs, the metrics as MEFB computes them, timing) is :mod:`nas.mefb`.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from nas.lineup import CLASSICAL_GROUP, EVAL_DIR, Log, default_out_dir
from nas.mefb import (
    MEFB_SOURCE,
    PLOT_FILE,
    FolderEval,
    evaluate_folder,
)
from nas.report import slug, yaml_safe
from nas.utils import atomic_write_text


def ranked_table(result: FolderEval) -> pd.DataFrame:
    """Our rows and MEFB's published rows in one table sorted by MEF-SSIM (best first), with
    a 1-based ``rank`` column: ``rank, name, source, mef_ssim, qabf, psnr, ssim, ms_per_mp,
    params, trained``. Our rows have ``source`` "this run"; published ones no timing."""
    ours = result.summary.assign(source="this run")[
        ["name", "source", "mef_ssim", "qabf", "psnr", "ssim", "ms_per_mp", "params", "trained"]
    ]
    frames = [ours]
    if result.published is not None and len(result.published):
        pub = result.published.assign(
            psnr=float("nan"), ssim=float("nan"), ms_per_mp=float("nan"), params=pd.NA
        )
        pub["trained"] = True
        frames.append(pub[list(ours.columns)])
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else ours.copy()
    df = df.sort_values("mef_ssim", ascending=False, kind="stable").reset_index(drop=True)
    df.insert(0, "rank", range(1, len(df) + 1))
    return df


def _fmt_cell(v: Any, col: str) -> str:
    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return ""
    if col == "params":
        return f"{int(v):,}"
    if col == "ms_per_mp":
        return f"{float(v):.2f}" if float(v) < 100 else f"{float(v):.0f}"
    if col == "psnr":
        return f"{float(v):.2f}"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v).replace("|", "\\|")


def folder_markdown(result: FolderEval) -> str:
    """The ranked table (:func:`ranked_table`) as Markdown, with a caption saying the device,
    data, metric definitions and timing, and a line per model giving its rank among MEFB's
    published methods."""
    df = ranked_table(result)
    meta = result.meta
    cols = [
        ("rank", "rank"),
        ("name", "method"),
        ("source", "source"),
        ("mef_ssim", "MEF-SSIM"),
        ("qabf", "Q^AB/F"),
        ("psnr", "PSNR"),
        ("ssim", "SSIM"),
        ("ms_per_mp", "ms/MP"),
        ("params", "params"),
    ]
    if df["psnr"].isna().all():
        cols = [(c, h) for c, h in cols if c not in ("psnr", "ssim")]
    d, t = meta["data"], meta["timing"]
    dv = meta["device"]
    subset = f" (a subset: {d['pairs']} of {d['scenes_found']} scenes)" if d.get("subset") else ""
    out = [
        f"MEFB no-reference protocol: {d['pairs']} pair(s) of `{d['spec']}`{subset} at full "
        f"resolution ({d['megapixels_total']:.2f} MP in total), device "
        f"`{dv['device_fingerprint']}` ({dv.get('device_name')}), torch {meta['torch']}, "
        f"OpenCV {meta.get('opencv')}, {t['threads']} thread(s)"
        + (
            f" per model, {t['jobs']} models timed at a time (one process each)"
            if t.get("jobs", 1) > 1
            else ""
        )
        + ". MEF-SSIM = MEFB's 3-scale "
        "mef_ms_ssim and Q^AB/F = MEFB's metricsQabf (nas.metrics, fused output quantised to "
        "8 bits); ms/MP = inference time only (no metrics; one warm-up pair first) / "
        "megapixels. Networks run whole up to "
        f"{meta['tiling']['above_megapixels']:g} MP, tiled above.",
    ]
    if result.published is not None:
        out.append(
            f"Rows marked '{MEFB_SOURCE}': MEFB's means over its 100 pairs (its MATLAB code; "
            "no timing)"
            + (
                "; this run covers fewer pairs, so the comparison is indicative only."
                if d["pairs"] != 100 or d.get("subset")
                else "."
            )
        )
    out.append("")
    out.append("| " + " | ".join(h for _, h in cols) + " |")
    out.append("|" + "|".join("---" if c in ("name", "source") else "---:" for c, _ in cols) + "|")
    for _, row in df.iterrows():
        cells = [_fmt_cell(row[c], c) for c, _ in cols]
        if row["source"] == "this run":
            cells[1] = f"**{cells[1]}**"
        out.append("| " + " | ".join(cells) + " |")
    if result.published is not None:
        n_pub = len(result.published)
        out.append("")
        for _, r in result.summary.iterrows():
            out.append(
                f"- {r['name']}: MEF-SSIM {r['mef_ssim']:.4f} would rank {int(r['mefb_rank'])} "
                f"among MEFB's {n_pub} published methods (plus itself)."
            )
    bad = [str(n) for n, tr in zip(result.summary["name"], result.summary["trained"]) if not tr]
    if bad:
        out += ["", f"**UNTRAINED: {', '.join(bad)}** -- random weights, quality is meaningless."]
    return "\n".join(out) + "\n"


def speed_quality_frame(
    summary: pd.DataFrame, published: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Data of the MEF-SSIM vs ms-per-megapixel plot: our models only (MEFB published no
    timing), columns ``name, group, ms_per_mp, mef_ssim, is_pareto`` (lower ms/MP and higher
    MEF-SSIM dominate; :func:`nas.plot.pareto_front`). ``attrs["published"]`` holds MEFB's
    rows as ``[(name, mef_ssim), ...]`` best first (empty without a table)."""
    from nas.plot import pareto_front

    df = summary[["name", "group", "ms_per_mp", "mef_ssim"]].copy().reset_index(drop=True)
    df["ms_per_mp"] = pd.to_numeric(df["ms_per_mp"], errors="coerce")
    df.loc[~(df["ms_per_mp"] > 0), "ms_per_mp"] = float("nan")  # log axis: positive only
    df["is_pareto"] = pareto_front(df, "ms_per_mp", "mef_ssim")
    pub: list[tuple[str, float]] = []
    if published is not None and len(published):
        p = published.sort_values("mef_ssim", ascending=False)
        pub = [(str(n), float(v)) for n, v in zip(p["name"], p["mef_ssim"])]
    df.attrs["published"] = pub
    return df


def draw_speed_quality(
    frame: pd.DataFrame, path: str | Path, title: str = "", caption: str = ""
) -> Path:
    """Draw :func:`speed_quality_frame`: MEF-SSIM against ms per megapixel (log x), one
    labelled point per model, the Pareto front circled and joined, MEFB's published methods
    as ticks on the right edge and the best one as a dashed line across. Uses matplotlib's
    object API with the Agg canvas (no pyplot, no global backend switch). Returns the PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from nas.plot import GROUP_STYLE, _save_figure, finish_axes, mark_pareto_front

    fig = Figure(figsize=(6.4, 4.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    data = frame[np.isfinite(frame["ms_per_mp"]) & np.isfinite(frame["mef_ssim"])]
    style = {**GROUP_STYLE, CLASSICAL_GROUP: ("tab:orange", "P")}
    for group, sub in data.groupby("group", sort=False):
        color, marker = style.get(str(group), ("tab:gray", "o"))
        ax.scatter(sub["ms_per_mp"], sub["mef_ssim"], c=color, marker=marker, s=42, zorder=3)
        ax.scatter([], [], c=color, marker=marker, label=str(group))
    mark_pareto_front(ax, data, "ms_per_mp", "mef_ssim")
    for _, r in data.iterrows():
        ax.annotate(
            str(r["name"]),
            (r["ms_per_mp"], r["mef_ssim"]),
            textcoords="offset points",
            xytext=(5, 4),
            fontsize=7,
        )
    pub = frame.attrs.get("published") or []
    for _, v in pub:
        ax.axhline(v, xmin=0.965, xmax=1.0, color="dimgray", lw=0.8, zorder=1)
    if pub:
        best_name, best = pub[0]
        ax.axhline(
            best,
            color="tab:gray",
            ls=":",
            lw=1.0,
            zorder=1,
            label=f"best MEFB published ({best_name} {best:.4f}); ticks: all {len(pub)}",
        )
    if len(data):
        ax.set_xscale("log")
        ax.margins(x=0.15)  # room for the labels and the tick strip on the right
    ax.set_xlabel("inference time per megapixel (ms/MP, log), lower is better")
    ax.set_ylabel("MEF-SSIM (MEFB), higher is better")
    finish_axes(fig, ax, title, caption)
    return _save_figure(fig, path, ("png",))[0]


def folder_file_stem(meta: Mapping[str, Any]) -> str:
    """``mefb-<device fingerprint>-<data folder>[-n<pairs>]``."""
    d = meta["data"]
    spec = str(d["spec"])
    name = slug(Path(spec).name or spec)
    tail = f"-n{d['pairs']}" if d.get("subset") else ""
    return f"mefb-{meta['device']['device_fingerprint']}-{name}{tail}"


def write_folder_eval(
    result: FolderEval, out_dir: str | Path, argv: Sequence[str] | None = None, plot: bool = True
) -> dict[str, Path]:
    """Write ``<stem>.csv`` (per model), ``<stem>-pairs.csv``, ``<stem>.md``,
    ``<stem>.meta.yaml`` and :data:`PLOT_FILE` into ``out_dir`` (atomic writes).

    Returns:
        ``{"csv", "pairs", "md", "meta"[, "plot"]}`` -> paths.
    """
    out = Path(out_dir)
    meta = dict(result.meta)
    if argv is not None:
        meta["command"] = "python -m nas.evaluate " + " ".join(argv)
    stem = folder_file_stem(meta)
    meta["files"] = {
        "csv": f"{stem}.csv",
        "pairs": f"{stem}-pairs.csv",
        "md": f"{stem}.md",
        "plot": PLOT_FILE if plot else None,
    }
    texts = {
        "csv": (out / f"{stem}.csv", result.summary.to_csv(index=False)),
        "pairs": (out / f"{stem}-pairs.csv", result.pairs.to_csv(index=False)),
        "md": (out / f"{stem}.md", folder_markdown(result)),
        "meta": (out / f"{stem}.meta.yaml", yaml.safe_dump(yaml_safe(meta), sort_keys=False)),
    }
    paths = {k: atomic_write_text(p, text) for k, (p, text) in texts.items()}
    if plot:
        d = meta["data"]
        caption = (
            f"{d['pairs']} pair(s) of {d['spec']}, full resolution; device "
            f"{meta['device']['device_fingerprint']}"
        )
        paths["plot"] = draw_speed_quality(
            speed_quality_frame(result.summary, result.published),
            out / PLOT_FILE,
            title="MEF-SSIM vs time per megapixel",
            caption=caption,
        )
    return paths


def main_folder(args: argparse.Namespace, argv: list[str], log: Log) -> int:
    if args.data == "synthetic":
        raise ValueError("--protocol mefb needs --data FOLDER (e.g. ../shared/data/mefb)")
    result = evaluate_folder(
        args.models,
        args.data,
        max_pairs=args.max_pairs,
        scenes=args.scenes,
        device=args.device,
        threads=args.threads,
        tile_above_mp=args.tile_above,
        tile=args.tile,
        overlap=args.overlap,
        allow_untrained=args.allow_untrained,
        channels=args.channels,
        mefb_table=args.mefb_table,
        save_fused=args.save_fused,
        save_names=args.save_names,
        seed=args.seed,
        log=log,
    )
    names = list(result.summary["name"])
    out = Path(args.out) if args.out else EVAL_DIR / "mefb" / default_out_dir(names).name
    paths = write_folder_eval(result, out, argv)
    print(folder_markdown(result))
    print(
        f"wrote {paths['csv']}, {paths['pairs'].name}, {paths['md'].name}, "
        f"{paths['meta'].name}, {paths['plot'].name} "
        f"({result.meta['timing']['seconds_total']:.1f} s)"
    )
    return 0
