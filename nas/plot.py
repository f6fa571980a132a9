"""Plots: alpha heatmaps of a search (like CRMEF's Fig. 11).

Each plot has a data function (tested, returns plain data / DataFrames) and a drawing function
(matplotlib, Agg backend, PNG and optionally PDF).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd


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

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    slots = list(dict.fromkeys(frame["slot"]))
    width = max(frame.groupby("slot").size())
    fig, ax = plt.subplots(figsize=(1.25 * width + 1.8, 0.55 * len(slots) + 1.0))
    cmap = plt.get_cmap("viridis")
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
    plt.close(fig)
    return written
