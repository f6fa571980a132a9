"""Plots: alpha heatmaps of a search (like CRMEF's Fig. 11), latency-accuracy trade-offs.

Each plot has a data function (tested, returns plain data / DataFrames) and a drawing function
(matplotlib, Agg backend, PNG and optionally PDF)::

    python -m nas.plot tradeoff results/eval/<name>/eval-<device>-<data>.csv   # latency vs PSNR
    python -m nas.plot params   results/eval/<name>/eval-<device>-<data>.csv   # params vs PSNR
    python -m nas.plot alphas   results/runs/<search run>                      # alpha heatmap

* :func:`alpha_frame` / :func:`weights_from_row` -> :func:`draw_alpha_heatmap`;
* :func:`tradeoff_frame` / :func:`params_frame` (with :func:`pareto_front`) ->
  :func:`draw_tradeoff`. MEF-SSIM replaces PSNR where the table has no PSNR (data without
  ground truth).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from nas.report import pareto_mask


def alpha_frame(weights: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """Long table of architecture weights: columns slot, op, weight, chosen (argmax per slot).

    Args:
        weights: ``{slot: {op: softmax weight}}`` in forward order.
    """
    rows = []
    for slot, ops in weights.items():
        best = max(ops, key=ops.__getitem__)
        rows += [
            {"slot": slot, "op": op, "weight": float(w), "chosen": op == best}
            for op, w in ops.items()
        ]
    return pd.DataFrame(rows, columns=["slot", "op", "weight", "chosen"])


def weights_from_row(row: Mapping[str, object]) -> dict[str, dict[str, float]]:
    """Parse the ``w:<slot>:<op>`` columns of a search's metrics row into nested weights."""
    out: dict[str, dict[str, float]] = {}
    for key, value in row.items():
        if isinstance(key, str) and key.startswith("w:"):
            _, slot, op = key.split(":", 2)
            out.setdefault(slot, {})[op] = float(value)  # type: ignore[arg-type]
    return out


def draw_alpha_heatmap(
    frame: pd.DataFrame,
    path: str | Path,
    title: str = "",
    formats: Sequence[str] = ("png",),
) -> list[Path]:
    """One row per slot, one cell per candidate (labelled with its op), chosen op boxed red."""
    import matplotlib
    from matplotlib.patches import Rectangle

    from nas.report import new_figure

    slots = list(dict.fromkeys(frame["slot"]))
    width = max(frame.groupby("slot").size())
    fig, ax = new_figure(figsize=(1.25 * width + 1.8, 0.55 * len(slots) + 1.0))
    cmap = matplotlib.colormaps["viridis"]
    for r, slot in enumerate(slots):
        sub = frame[frame["slot"] == slot].reset_index(drop=True)
        for c, item in sub.iterrows():
            w = float(item["weight"])
            ax.add_patch(Rectangle((c, r), 1, 1, color=cmap(w)))
            ax.text(
                c + 0.5,
                r + 0.5,
                f"{item['op']}\n{w:.2f}",
                ha="center",
                va="center",
                fontsize=6.5,
                color="white" if w < 0.6 else "black",
            )
            if item["chosen"]:
                ax.add_patch(
                    Rectangle(
                        (c + 0.03, r + 0.03), 0.94, 0.94, fill=False, edgecolor="red", linewidth=2
                    )
                )
    ax.set_xlim(0, width)
    ax.set_ylim(len(slots), 0)
    ax.set_yticks([i + 0.5 for i in range(len(slots))], slots, fontsize=8)
    ax.set_xticks([])
    ax.set_title(title or "softmax(alpha) per slot", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        out = path.with_suffix(f".{fmt}")
        fig.savefig(out, dpi=130)
        written.append(out)
    return written


def alpha_trajectories(metrics: pd.DataFrame) -> pd.DataFrame:
    """Long table (epoch, slot, op, weight) of softmax(alpha) over a search's epochs, from the
    ``w:<slot>:<op>`` columns of its ``metrics.csv`` (one row per epoch)."""
    cols = [c for c in metrics.columns if isinstance(c, str) and c.startswith("w:")]
    if not cols:
        raise PlotInputError("no 'w:<slot>:<op>' columns: not the metrics of a search run")
    long = metrics[["epoch", *cols]].melt(id_vars="epoch", var_name="key", value_name="weight")
    parts = long["key"].str.split(":", n=2, expand=True)
    return pd.DataFrame(
        {
            "epoch": long["epoch"].astype(int) + 1,
            "slot": parts[1],
            "op": parts[2],
            "weight": long["weight"].astype(float),
        }
    )


def draw_alpha_trajectories(
    frame: pd.DataFrame, path: str | Path, title: str = "", warmup_epochs: int = 0
) -> Path:
    """One panel per slot: each candidate's softmax weight against the epoch (the warm-up,
    when alpha does not move, shaded). ``frame`` as :func:`alpha_trajectories` returns."""
    from nas.report import new_figure

    slots = list(dict.fromkeys(frame["slot"]))
    ncol = min(4, len(slots))
    nrow = -(-len(slots) // ncol)
    fig, axes = new_figure(nrow, ncol, figsize=(3.2 * ncol, 2.4 * nrow), squeeze=False)
    for ax, slot in zip(axes.flat, slots):
        sub = frame[frame["slot"] == slot]
        for op, g in sub.groupby("op", sort=False):
            ax.plot(g["epoch"], g["weight"], marker=".", linewidth=1.2, label=op)
        if warmup_epochs:
            ax.axvspan(0.5, warmup_epochs + 0.5, color="0.9", zorder=0)
        ax.set_title(slot, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, ncol=2)
    for ax in list(axes.flat)[len(slots) :]:
        ax.axis("off")
    fig.suptitle(title or "softmax(alpha) per slot over the search", fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    written = _save_figure(fig, path, ("png",))[0]
    return written


# --- evaluation tables: latency / params vs quality -------------------------------------

GROUP_STYLE: dict[str, tuple[str, str]] = {
    "baseline": ("tab:blue", "s"),
    "crmef": ("tab:green", "D"),
    "searched": ("tab:red", "o"),
    "derived": ("tab:purple", "^"),
}


class PlotInputError(ValueError):
    """A table or run folder cannot be plotted; the message names the file and the problem."""


def pareto_front(
    df: pd.DataFrame,
    x: str,
    y: str,
    minimize_x: bool = True,
    maximize_y: bool = True,
) -> pd.Series:
    """Boolean mask (aligned with ``df.index``) of the rows no other row dominates.

    A row is dominated when another row is at least as good in both ``x`` and ``y`` and
    strictly better in one (default: lower ``x``, higher ``y``). Rows with a NaN in ``x`` or
    ``y`` are never on the front; identical points are all on it.
    """
    for c in (x, y):
        if c not in df.columns:
            raise KeyError(f"column {c!r} not in the table (columns: {list(df.columns)})")
    xs = pd.to_numeric(df[x], errors="coerce").to_numpy(dtype=float)
    ys = pd.to_numeric(df[y], errors="coerce").to_numpy(dtype=float)
    if not minimize_x:
        xs = -xs
    if not maximize_y:
        ys = -ys
    mask = pareto_mask(ys.tolist(), xs.tolist())
    return pd.Series(mask, index=df.index, name="is_pareto")


def quality_column(eval_df: pd.DataFrame) -> str:
    """``psnr`` when the table has PSNR values (data with ground truth), else ``mef_ssim``."""
    if "psnr" in eval_df.columns and pd.to_numeric(eval_df["psnr"], errors="coerce").notna().any():
        return "psnr"
    if "mef_ssim" in eval_df.columns:
        return "mef_ssim"
    raise PlotInputError(
        f"the table has neither a psnr nor a mef_ssim column (columns: {list(eval_df.columns)})"
    )


def _infer_group(name: str, eta: float) -> str:
    """A table without a ``group`` column: the registry's group of a registered name, else
    ``searched`` when the table gives an eta, else ``derived``."""
    from nas.baselines import registry_info

    info = registry_info(name)
    if info is not None:
        return info.group
    return "searched" if np.isfinite(eta) else "derived"


def _scatter_frame(eval_df: pd.DataFrame, x: str, quality: str | None) -> pd.DataFrame:
    if "name" not in eval_df.columns or x not in eval_df.columns:
        raise PlotInputError(
            f"the table needs columns 'name' and {x!r} (columns: {list(eval_df.columns)})"
        )
    q = quality or quality_column(eval_df)
    if q not in eval_df.columns:
        raise PlotInputError(f"quality column {q!r} not in the table")
    out = pd.DataFrame(
        {
            "name": eval_df["name"].astype(str),
            x: pd.to_numeric(eval_df[x], errors="coerce").astype(float),
            "quality": pd.to_numeric(eval_df[q], errors="coerce").astype(float),
        },
        index=eval_df.index,
    )
    eta = (
        pd.to_numeric(eval_df["eta"], errors="coerce").astype(float)
        if "eta" in eval_df.columns
        else pd.Series(np.nan, index=eval_df.index)
    )
    out["eta"] = eta.tolist()
    if "group" in eval_df.columns:
        groups = eval_df["group"].astype(str).tolist()
        out["group"] = [
            "searched" if g == "derived" and np.isfinite(e) else g
            for g, e in zip(groups, out["eta"])
        ]
    else:
        out["group"] = [_infer_group(n, e) for n, e in zip(out["name"], out["eta"])]
    out["is_pareto"] = pareto_front(out, x, "quality")
    out = out[["name", x, "quality", "is_pareto", "eta", "group"]].reset_index(drop=True)
    out.attrs["quality"] = q
    return out


def tradeoff_frame(eval_df: pd.DataFrame, quality: str | None = None) -> pd.DataFrame:
    """Latency-accuracy data of an evaluation table (:mod:`nas.evaluate`).

    Args:
        eval_df: the eval CSV as a DataFrame (columns ``name``, ``latency_ms``, ``psnr`` and/or
            ``mef_ssim``; ``eta``, ``group``, ``kind`` used when present).
        quality: the quality column (default: :func:`quality_column`).

    Returns:
        Columns ``name, latency_ms, quality, is_pareto, eta, group``: ``is_pareto`` marks the
        front of lower latency and higher quality; ``eta`` is the search's trade-off weight
        (the table's ``eta`` column, which :mod:`nas.evaluate` reads from each model's search
        run; NaN without it); ``group`` is the table's, else the registry's for registered
        names, else ``searched`` (eta known) or ``derived``.
        ``attrs["quality"]`` names the quality column.
    """
    return _scatter_frame(eval_df, "latency_ms", quality)


def params_frame(eval_df: pd.DataFrame, quality: str | None = None) -> pd.DataFrame:
    """Like :func:`tradeoff_frame` with ``params`` instead of ``latency_ms`` (fewer is better)."""
    return _scatter_frame(eval_df, "params", quality)


def read_eval_csv(path: str | Path) -> pd.DataFrame:
    """An evaluation table written by ``python -m nas.evaluate``; clear errors otherwise."""
    p = Path(path)
    if not p.is_file():
        raise PlotInputError(f"evaluation table {p} does not exist")
    try:
        df = pd.read_csv(p)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise PlotInputError(f"evaluation table {p} cannot be read as CSV: {e}") from None
    if df.empty:
        raise PlotInputError(f"evaluation table {p} has no rows")
    return df


def _eval_caption(csv_path: Path) -> str:
    """``device, data, latency settings`` from the ``meta.yaml`` next to an eval CSV."""
    meta_file = csv_path.parent / "meta.yaml"
    try:
        meta = yaml.safe_load(meta_file.read_text()) if meta_file.is_file() else None
        lat, data = meta["latency"], meta["data"]
        crop = "full" if data["crop"] is None else f"{data['crop']}px crops"
        return (
            f"{meta['device']['device_fingerprint']} | batch {lat['batch']} x "
            f"{lat['resolution'][0]}x{lat['resolution'][1]} | {data['spec']} {data['split']} "
            f"({data['images']} images, {crop})"
        )
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return ""


_LABELS = {
    "psnr": "PSNR (dB)",
    "mef_ssim": "MEF-SSIM",
    "ssim": "SSIM",
    "fsim": "FSIM",
    "qabf": "Q^AB/F",
    "latency_ms": "measured latency (ms, median)",
    "params": "parameters",
}
_SHORT = {"latency_ms": "latency", "params": "parameters", "psnr": "PSNR", "mef_ssim": "MEF-SSIM"}


def mark_pareto_front(ax: Any, data: pd.DataFrame, x: str, y: str) -> None:
    """Circle the rows of ``data`` whose ``is_pareto`` is true and join them by a dashed step
    (sorted by ``x``); nothing when there is no such row."""
    front = data[data["is_pareto"]].sort_values(x)
    if not len(front):
        return
    ax.scatter(
        front[x],
        front[y],
        s=170,
        facecolors="none",
        edgecolors="black",
        linewidths=1.1,
        zorder=4,
        label="Pareto front",
    )
    if len(front) >= 2:
        ax.step(front[x], front[y], where="post", color="black", ls="--", lw=0.8)


def finish_axes(fig: Any, ax: Any, title: str = "", caption: str = "") -> None:
    """Grid, legend, title and a small grey caption line under a trade-off plot."""
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    if title:
        ax.set_title(title, fontsize=9)
    if caption:
        fig.text(0.01, 0.005, caption, fontsize=6, color="dimgray", ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.03 if caption else 0, 1, 1))


def _save_figure(fig: Any, path: str | Path, formats: Sequence[str]) -> list[Path]:
    from nas.utils import atomic_write

    base = Path(path)
    if base.suffix.lower() in (".png", ".pdf", ".svg"):
        base = base.with_suffix("")
    written = []
    for fmt in formats:
        out = base.parent / f"{base.name}.{fmt}"
        atomic_write(out, lambda f, fmt=fmt: fig.savefig(f, format=fmt, dpi=150))
        written.append(out)
    return written


def draw_tradeoff(
    frame: pd.DataFrame,
    path: str | Path,
    x: str = "latency_ms",
    title: str = "",
    caption: str = "",
    formats: Sequence[str] = ("png", "pdf"),
    log_x: bool | None = None,
) -> list[Path]:
    """Scatter of ``frame`` (from :func:`tradeoff_frame` / :func:`params_frame`).

    Each model is a labelled point coloured by group; the searched nets are joined by a line
    in eta order; the Pareto front is circled and drawn as a dashed staircase.

    Args:
        frame: columns ``name, <x>, quality, is_pareto, eta, group``.
        path: output path; the suffix is replaced by each of ``formats``.
        x: the x column (``latency_ms`` or ``params``).
        log_x: logarithmic x axis (default: when the x values span more than 20x).

    Returns:
        The written files.
    """
    from nas.report import new_figure

    q = frame.attrs.get("quality", "quality")
    data = frame[np.isfinite(frame[x]) & np.isfinite(frame["quality"])]
    fig, ax = new_figure(figsize=(6.4, 4.6))
    for group, sub in data.groupby("group", sort=False):
        color, marker = GROUP_STYLE.get(str(group), ("tab:gray", "o"))
        ax.scatter(sub[x], sub["quality"], c=color, marker=marker, s=42, label=group, zorder=3)
    searched = data[np.isfinite(data["eta"])].sort_values("eta")
    if len(searched) >= 2:
        ax.plot(
            searched[x],
            searched["quality"],
            color=GROUP_STYLE["searched"][0],
            lw=1.2,
            alpha=0.7,
            zorder=2,
            label="searched, eta order",
        )
    mark_pareto_front(ax, data, x, "quality")
    for _, r in data.iterrows():
        label = r["name"] + (f" (eta={r['eta']:g})" if np.isfinite(r["eta"]) else "")
        ax.annotate(
            label,
            (r[x], r["quality"]),
            textcoords="offset points",
            xytext=(5, 4),
            fontsize=7,
        )
    xs = data[x][data[x] > 0]
    if log_x is None:
        log_x = len(xs) >= 2 and float(xs.max()) / float(xs.min()) > 20
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(_LABELS.get(x, x) + ", lower is better")
    ax.set_ylabel(_LABELS.get(q, q) + ", higher is better")
    finish_axes(fig, ax, title, caption)
    return _save_figure(fig, path, formats)


def run_alpha_frame(run: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The alpha weights of a search run's last ``metrics.csv`` row, as :func:`alpha_frame`.

    Returns:
        ``(frame, last row)``.
    """
    p = Path(run)
    metrics = p / "metrics.csv"
    if not metrics.is_file():
        raise PlotInputError(f"{p} is not a search run folder: {metrics} does not exist")
    try:
        df = pd.read_csv(metrics)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise PlotInputError(f"{metrics} cannot be read as CSV: {e}") from None
    if df.empty:
        raise PlotInputError(f"{metrics} has no rows yet (no finished epoch)")
    row = df.iloc[-1].to_dict()
    weights = weights_from_row(row)
    if not weights:
        raise PlotInputError(
            f"{metrics} has no 'w:<slot>:<op>' columns: is {p} a search run (not a training run)?"
        )
    return alpha_frame(weights), row


# --- CLI ---------------------------------------------------------------------------------


def _default_out(csv_path: Path, kind: str) -> Path:
    return csv_path.with_name(f"{csv_path.stem}-{kind}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m nas.plot",
        description="Latency-accuracy and params-accuracy plots of an evaluation table, "
        "alpha heatmaps of a search run (PNG and PDF).",
    )
    sub = p.add_subparsers(dest="command", required=True)
    for name, what in (
        ("tradeoff", "measured latency vs PSNR (MEF-SSIM without ground truth)"),
        ("params", "parameters vs PSNR (MEF-SSIM without ground truth)"),
    ):
        s = sub.add_parser(name, help=what, description=what)
        s.add_argument("eval_csv", metavar="EVAL_CSV", help="a CSV from python -m nas.evaluate")
        s.add_argument("--out", help="output path without suffix (default: next to the CSV)")
        s.add_argument(
            "--quality", help="quality column (default: psnr, else mef_ssim)", default=None
        )
        s.add_argument("--log-x", dest="log_x", action="store_true", default=None)
        s.add_argument("--formats", nargs="+", default=["png", "pdf"])
    s = sub.add_parser("alphas", help="alpha heatmap of a search run (last metrics row)")
    s.add_argument("run", metavar="RUN", help="a search run folder")
    s.add_argument("--out", help="output path without suffix (default: RUN/alphas-last)")
    s.add_argument("--formats", nargs="+", default=["png", "pdf"])
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        bad = [f for f in args.formats if f not in ("png", "pdf", "svg")]
        if bad:
            raise PlotInputError(f"unsupported format(s) {bad}; use png, pdf or svg")
        if args.command == "alphas":
            run = Path(args.run)
            frame, row = run_alpha_frame(run)
            epoch = row.get("epoch")
            title = f"{run.name}: softmax(alpha)" + (
                f", epoch {epoch}" if epoch is not None else ""
            )
            out = Path(args.out) if args.out else run / "alphas-last"
            written = draw_alpha_heatmap(frame, out, title=title, formats=args.formats)
        else:
            csv_path = Path(args.eval_csv)
            df = read_eval_csv(csv_path)
            make = tradeoff_frame if args.command == "tradeoff" else params_frame
            untrained = 0
            if "trained" in df.columns:
                untrained = int((~df["trained"].astype(str).str.lower().isin(["true", "1"])).sum())
            frame = make(df, args.quality)
            x = "latency_ms" if args.command == "tradeoff" else "params"
            out = Path(args.out) if args.out else _default_out(csv_path, args.command)
            written = draw_tradeoff(
                frame,
                out,
                x=x,
                title=f"{_SHORT[x]} vs {_SHORT.get(frame.attrs['quality'], 'quality')}"
                + (f" ({untrained} untrained: quality meaningless)" if untrained else ""),
                caption=_eval_caption(csv_path),
                formats=args.formats,
                log_x=args.log_x,
            )
    except (PlotInputError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for w in written:
        print(f"wrote {w}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
