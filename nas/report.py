"""Reporting shared by evaluation, sweeps and plots: Pareto fronts, hypervolume, Markdown tables.

Everything that turns result rows into a verdict or a table lives here once:

* :func:`pareto_mask`: the non-dominated rows of (maximise quality, minimise cost), used for
  the evaluation trade-off plots (:mod:`nas.plot`), the MEFB figure and the sweep fronts;
* :func:`hypervolume_2d`: the area a front dominates, to compare fronts (sweeps);
* :func:`markdown_table`: a GitHub Markdown table of chosen DataFrame columns, with headers,
  per-column formatting and alignment (evaluation tables, sweep tables, the MEFB table);
* :func:`new_figure`: a matplotlib figure drawn off-screen (Agg) without touching pyplot's
  global backend or figure list, so library calls never change a user's matplotlib state;
* :func:`yaml_safe` and :func:`slug`: plain values for YAML sidecars, and file-name slugs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["hypervolume_2d", "markdown_table", "new_figure", "pareto_mask", "slug", "yaml_safe"]


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def pareto_mask(quality: Sequence[float], cost: Sequence[float]) -> list[bool]:
    """Non-dominated points of (maximise ``quality``, minimise ``cost``).

    A point is dominated when another is at least as good in both and strictly better in
    one. Points with a missing or non-finite value are never on the front; identical points
    are all on it.
    """
    pts = [
        (float(q), float(c)) if _finite(q) and _finite(c) else None for q, c in zip(quality, cost)
    ]
    out = []
    for i, p in enumerate(pts):
        if p is None:
            out.append(False)
            continue
        q, c = p
        dominated = any(
            o is not None and o[0] >= q and o[1] <= c and (o[0] > q or o[1] < c)
            for j, o in enumerate(pts)
            if j != i
        )
        out.append(not dominated)
    return out


def hypervolume_2d(
    quality: Sequence[float], cost: Sequence[float], ref: tuple[float, float]
) -> float:
    """Area (quality x cost) dominated by the points and bounded by ``ref = (quality_min,
    cost_max)``. Larger is better; comparable between fronts only with the same ``ref``."""
    pts = sorted((c, q) for q, c in zip(quality, cost) if q > ref[0] and c < ref[1])
    area, best = 0.0, ref[0]
    for i, (c, q) in enumerate(pts):
        best = max(best, q)
        nxt = pts[i + 1][0] if i + 1 < len(pts) else ref[1]
        area += (nxt - c) * (best - ref[0])
    return area


def default_cell(v: Any, column: str = "", floatfmt: str = "{:.4g}") -> str:
    """Empty for None/NaN, ``floatfmt`` for floats, ``str`` otherwise (``|`` escaped)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return floatfmt.format(v)
    return str(v).replace("|", "\\|")


def markdown_table(
    df: Any,
    columns: Sequence[str],
    headers: Mapping[str, str] | None = None,
    cell: Callable[[Any, str], str] = default_cell,
    right: Sequence[str] | None = None,
) -> str:
    """A GitHub Markdown table of ``df[columns]`` (a pandas DataFrame).

    Args:
        headers: column -> header text (default: the column name).
        cell: ``(value, column) -> text`` (default :func:`default_cell`).
        right: columns aligned right (default: none, ``---``).
    """
    headers = headers or {}
    right_set = set(right or ())
    lines = [
        "| " + " | ".join(headers.get(c, c) for c in columns) + " |",
        "|" + "|".join("---:" if c in right_set else "---" for c in columns) + "|",
    ]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(cell(r[c], c) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def yaml_safe(v: Any) -> Any:
    """``v`` with plain YAML types only: mappings and sequences recursed, NaN/inf as None,
    numpy and torch scalars as Python numbers, ``str`` subclasses (``torch.__version__``) as
    ``str``, anything else as its ``str``."""
    if isinstance(v, Mapping):
        return {str(k): yaml_safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [yaml_safe(x) for x in v]
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, str):
        return str(v)
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return float(v) if math.isfinite(v) else None
    if hasattr(v, "item") and getattr(v, "size", 1) in (1, None):
        return yaml_safe(v.item())
    return str(v)


def slug(text: str, max_len: int = 40) -> str:
    """Lower-case file-name slug of ``text`` (letters, digits, dots, dashes)."""
    t = re.sub(r"[^a-z0-9.]+", "-", str(text).lower()).strip("-")
    return t[:max_len].rstrip("-") or "x"


def new_figure(nrows: int = 1, ncols: int = 1, **kwargs: Any) -> tuple[Any, Any]:
    """``(figure, axes)`` like ``plt.subplots(nrows, ncols, **kwargs)``, on its own Agg
    canvas: nothing global changes (no ``matplotlib.use``, no pyplot figure to close)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    subplot_kw = {k: kwargs.pop(k) for k in ("squeeze", "sharex", "sharey") if k in kwargs}
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, **subplot_kw)
