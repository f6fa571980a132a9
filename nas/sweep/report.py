"""Results of studies: the trials table, fronts on one latency axis (optionally re-timed back
to back), the hypervolume summary, the Markdown table and the front figure."""

from __future__ import annotations

import math
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from nas.config import ConfigError
from nas.report import hypervolume_2d, markdown_table, pareto_mask
from nas.sweep.config import CONFIG_ATTR, default_storage
from nas.sweep.study import make_storage
from nas.utils import parse_size


def trials_frame(study: optuna.Study, name: str | None = None) -> Any:
    """Every complete trial of ``study`` as a DataFrame, with a ``pareto`` flag.

    Columns: study, mode, trial, eta, beta1, beta2, quality (objective 1), quality_metric
    (``psnr`` in dB with ground truth, ``mef_ssim`` without), latency_ms (objective 2),
    measured_ms, predicted_ms, genotype, supernet_quality, derived_quality, cached (NSGA-II: a
    re-proposed genotype whose score was reused), wall_s, latency_input, genotype_yaml,
    run_dir, device, pareto.
    """
    import pandas as pd

    cfg = study.user_attrs.get(CONFIG_ATTR, {})
    raw = study.trials_dataframe(attrs=("number", "values", "params", "user_attrs", "state"))
    if len(raw):
        raw = raw[raw["state"] == TrialState.COMPLETE.name].reset_index(drop=True)
    values = [c for c in raw.columns if c.startswith("values")]  # named by the metric names

    def col(name: str, default: Any = None) -> Any:
        if name in raw:
            return raw[name].where(raw[name].notna(), default)
        return pd.Series([default] * len(raw), index=raw.index, dtype=object)

    df = pd.DataFrame(
        {
            "study": name or study.study_name,
            "mode": cfg.get("mode", "?"),
            "trial": col("number"),
            "eta": col("params_eta"),
            "beta1": col("params_beta1"),
            "beta2": col("params_beta2"),
            "quality": raw[values[0]].astype(float) if values else col("values"),
            "quality_metric": col("user_attrs_quality_metric", "psnr"),
            "latency_ms": raw[values[1]].astype(float) if values else col("values"),
            "measured_ms": col("user_attrs_measured_ms"),
            "predicted_ms": col("user_attrs_predicted_ms"),
            "genotype": col("user_attrs_genotype", ""),
            "supernet_quality": col("user_attrs_supernet_quality"),
            "derived_quality": col("user_attrs_derived_quality"),
            "cached": col("user_attrs_cached_from").notna(),
            "wall_s": col("user_attrs_wall_s"),
            "latency_input": col("user_attrs_latency_input"),
            "genotype_yaml": col("user_attrs_genotype_yaml", ""),
            "run_dir": col("user_attrs_run_dir", ""),
            "device": col("user_attrs_device", ""),
        },
        index=raw.index,
    )
    df["pareto"] = pareto_mask(df["quality"].tolist(), df["latency_ms"].tolist())
    return df


_POINT_COLS = [
    "study",
    "mode",
    "trial",
    "quality",
    "quality_metric",
    "ms",
    "pareto",
    "label",
    "wall_s",
    "cached",
    "genotype",
]


def remeasure(
    frames: Mapping[str, Any],
    device: str = "cpu",
    reps: int = 50,
    rounds: int = 5,
    threads: int | None = None,
    statistic: str = "median",
) -> dict[str, Any]:
    """Re-time every distinct genotype of ``frames`` in this process, round-robin.

    Trials measure their net when they finish, under whatever else runs then; for a figure
    that compares studies, time all their nets here back to back, interleaved over
    ``rounds`` passes (:func:`nas.latency.profiler.measure_networks`, batch 1, each trial's
    latency input size). Returns copies of the frames with ``measured_ms`` replaced (the
    trial-time value kept as ``trial_measured_ms``).
    """
    from nas.genotype import Genotype, build
    from nas.latency.profiler import ProfileSettings, measure_networks

    groups: dict[tuple[int, int], list[str]] = {}
    for df in frames.values():
        for y, size in zip(df["genotype_yaml"], df["latency_input"]):
            if y and size and y not in groups.setdefault(parse_size(size), []):
                groups[parse_size(size)].append(y)
    timings: dict[tuple[tuple[int, int], str], float] = {}
    for size, texts in groups.items():
        nets = [build(Genotype.from_yaml_text(y)) for y in texts]
        settings = ProfileSettings(
            device=device,
            batch=1,
            input_size=size,
            warmup=3,
            reps=reps,
            rounds=rounds,
            threads=threads,
        )
        for y, st in zip(texts, measure_networks(nets, settings)):
            timings[(size, y)] = float(getattr(st, f"{statistic}_ms"))
    out = {}
    for name, df in frames.items():
        d = df.copy()
        d["trial_measured_ms"] = d["measured_ms"]
        d["measured_ms"] = [
            timings.get((parse_size(s), y)) if y and s else None
            for y, s in zip(d["genotype_yaml"], d["latency_input"])
        ]
        out[name] = d
    return out


def front_data(frames: Mapping[str, Any], x: str = "measured_ms") -> tuple[Any, Any]:
    """Points and per-study summary of several studies on one latency axis (tested).

    Args:
        frames: ``{study: trials_frame(...)}``.
        x: latency column (``measured_ms``: the same measurement for both modes, the default;
            ``latency_ms``: each study's own objective).

    Returns:
        ``(points, summary)``: points with columns study, mode, trial, quality,
        quality_metric, ms, pareto (non-dominated *within its study* on this axis), label,
        wall_s, cached, genotype;
        summary with, per study, trials, trained (not reused), Pareto size, best quality,
        fastest ms, total wall-clock and wall-clock per trained trial, and the hypervolume
        w.r.t. a reference point shared by all studies (worst quality, slowest ms x 1.05).
    """
    import pandas as pd

    parts = []
    for name, df in frames.items():
        if df is None or len(df) == 0:
            continue
        d = df.copy()
        d["study"] = name
        d["ms"] = d[x].astype(float) if x in d else d["latency_ms"].astype(float)
        d = d[d["ms"].notna() & d["quality"].notna()]
        d["pareto"] = pareto_mask(d["quality"].tolist(), d["ms"].tolist())
        d["label"] = [
            f"eta={e:g}" if isinstance(e, (int, float)) and not math.isnan(e) else f"t{n}"
            for e, n in zip(d["eta"], d["trial"])
        ]
        for col, default in (
            ("cached", False),
            ("genotype", ""),
            ("wall_s", None),
            ("quality_metric", "psnr"),
        ):
            if col not in d:
                d[col] = default
        parts.append(d[_POINT_COLS])
    cols = _POINT_COLS
    points = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)
    rows = []
    if len(points):
        ref = (float(points["quality"].min()) - 1e-9, float(points["ms"].max()) * 1.05)
        for name, d in points.groupby("study", sort=False):
            front = d[d["pareto"]]
            wall = pd.to_numeric(d["wall_s"], errors="coerce")
            trained = d[~d["cached"].astype(bool)] if "cached" in d else d
            rows.append(
                {
                    "study": name,
                    "mode": d["mode"].iloc[0],
                    "trials": len(d),
                    "trained": len(trained),
                    "pareto": len(front.drop_duplicates(["quality", "ms"])),  # distinct points
                    "best_quality": float(d["quality"].max()),
                    "fastest_ms": float(d["ms"].min()),
                    "wall_s_total": float(wall.sum()),
                    "wall_s_per_trained": float(wall.sum()) / max(len(trained), 1),
                    "hypervolume": hypervolume_2d(front["quality"], front["ms"], ref),
                }
            )
    return points, pd.DataFrame(rows)


def _merged_label(labels: Any) -> str:
    """``["eta=0.5", "eta=0.25"]`` -> ``"eta=0.25,0.5"``; other labels joined by commas."""
    labels = [str(x) for x in labels]
    if all(lab.startswith("eta=") for lab in labels):
        values = sorted((lab.removeprefix("eta=") for lab in labels), key=float)
        return "eta=" + ",".join(values)
    return ",".join(labels)


def front_rows(points: Any) -> Any:
    """Each study's distinct front points, trials that coincide merged (labels joined)."""
    import pandas as pd

    rows = []
    front = points[points["pareto"]].sort_values(["study", "ms"])
    for (study, ms, ps), g in front.groupby(["study", "ms", "quality"], sort=False):
        rows.append(
            {
                "study": study,
                "label": _merged_label(g["label"]),
                "quality": ps,
                "ms": ms,
                "genotype": g["genotype"].iloc[0],
            }
        )
    return pd.DataFrame(rows, columns=["study", "label", "quality", "ms", "genotype"])


def quality_label(points: Any) -> str:
    """Axis label of the quality objective of ``points`` (its ``quality_metric`` column)."""
    metrics = sorted(set(points["quality_metric"])) if "quality_metric" in points else ["psnr"]
    names = {"psnr": "validation PSNR (dB)", "mef_ssim": "validation MEF-SSIM"}
    return " / ".join(names.get(m, m) for m in metrics)


def draw_fronts(points: Any, path: str | Path, title: str = "", xlabel: str = "") -> Path:
    """Scatter every study's trials, join each study's Pareto front; write ``path``."""
    from nas.report import new_figure

    fig, ax = new_figure(figsize=(6.4, 4.4))
    for i, (name, d) in enumerate(points.groupby("study", sort=False)):
        color = f"C{i}"
        mode = d["mode"].iloc[0]
        ax.scatter(d["ms"], d["quality"], s=18, alpha=0.45, color=color)
        f = d[d["pareto"]].sort_values("ms")
        ax.plot(f["ms"], f["quality"], "o-", color=color, label=f"{name} ({mode}, {len(d)} trials)")
        if mode == "darts":  # one label per point: "eta=0.25,0.5" when trials coincide
            for (ms, ps), g in f.groupby(["ms", "quality"], sort=False):
                ax.annotate(
                    _merged_label(g["label"]),
                    (ms, ps),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
    ax.set_xlabel(xlabel or "latency (ms, measured, batch 1)")
    ax.set_ylabel(quality_label(points))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    return path


HEADERS = {
    "quality": "quality",
    "latency_ms": "latency ms (objective)",
    "measured_ms": "measured ms",
    "predicted_ms": "predicted ms",
    "pareto_mark": "Pareto",
    "wall_s": "wall s",
}


def pareto_columns(mode: str, extra: Sequence[str] = ()) -> list[str]:
    """Columns of the printed table (``extra``: beta1/beta2 when the study sweeps them)."""
    if mode == "darts":
        return [
            "eta",
            *extra,
            "quality",
            "measured_ms",
            "predicted_ms",
            "pareto_mark",
            "genotype",
            "trial",
            "wall_s",
        ]
    return ["trial", "quality", "latency_ms", "measured_ms", "genotype", "wall_s"]


def write_report(
    study: optuna.Study, out_dir: str | Path, compare: Sequence[str] = (), storage: str = ""
) -> dict[str, Any]:
    """Print the Pareto table; write ``<study>.csv``, ``.md`` and ``.png`` under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = study.study_name
    df = trials_frame(study)
    mode = study.user_attrs.get(CONFIG_ATTR, {}).get("mode", "darts")
    df["pareto_mark"] = ["*" if v else "" for v in df["pareto"]]
    if mode == "darts":  # the whole curve, by eta; '*' marks the Pareto front
        keys = [k for k in ("eta", "beta1", "beta2") if df[k].notna().any()]
        table = df.sort_values(keys) if len(df) else df
        title = "Trials by eta ('*': on the Pareto front; maximise PSNR, minimise latency)"
    else:  # one row per distinct genotype on the front
        table = df[df["pareto"]].sort_values("latency_ms").drop_duplicates("genotype")
        evaluated_n = int((~df["cached"]).sum()) if len(df) else 0
        title = (
            f"Pareto front: {len(table)} genotypes, of {len(df)} trials ({evaluated_n} trained, "
            "the rest re-proposed and reused; maximise PSNR, minimise latency)"
        )
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    counts = {s: states.count(s) for s in sorted(set(states))}
    device = sorted(set(df["device"])) if len(df) else []
    head = (
        f"study {name} ({mode}): trials {counts}; device {', '.join(device) or '?'}; "
        f"wall-clock per trial {df['wall_s'].astype(float).mean():.1f} s, "
        f"total {df['wall_s'].astype(float).sum():.0f} s"
        if len(df)
        else f"study {name} ({mode}): no complete trial yet ({counts})"
    )
    cols = pareto_columns(mode, [k for k in ("beta1", "beta2") if df[k].notna().any()])
    headers = {**HEADERS, "quality": quality_label(df).removeprefix("validation ")}
    md = f"{head}\n\n{title}:\n\n" + markdown_table(table, cols, headers)
    df.drop(columns=["pareto_mark", "genotype_yaml"]).to_csv(out / f"{name}.csv", index=False)
    (out / f"{name}.md").write_text(md)
    print(md, flush=True)
    frames = {name: df}
    for other in compare:
        try:
            frames[other] = load_frame(other, storage or default_storage(other, out))
        except (KeyError, ConfigError) as e:
            print(f"note: --compare {other}: {e}", file=sys.stderr)
    points, summary = front_data(frames)
    png = None
    if len(points):
        png = draw_fronts(points, out / f"{'-vs-'.join(frames)}.png", title=_plot_title(df))
    return {"csv": out / f"{name}.csv", "md": out / f"{name}.md", "png": png, "summary": summary}


def _plot_title(df: Any) -> str:
    dev = ", ".join(sorted(set(df["device"]))) if len(df) else ""
    return f"latency-accuracy trade-off ({dev}; {socket.gethostname()})"


def load_frame(study: str, storage: str) -> Any:
    """:func:`trials_frame` of an existing study (KeyError when there is none)."""
    st = make_storage(storage, heartbeat=None)
    return trials_frame(optuna.load_study(study_name=study, storage=st), study)
