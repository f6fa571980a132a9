"""Predictor check: does the additive table predict whole-network latency?

Random genotypes are sampled from a space (seeded). Each derived network
(:func:`nas.genotype.build`) is measured end to end with the profiler's harness (same batch,
threads, dtype, warm-up, reps, eval mode, ``inference_mode``) and compared with
:func:`nas.latency.predict.predict`. Reported per net: predicted (raw sum of unit latencies,
and calibrated) vs measured; over the validation nets: MAPE, Kendall's tau and the share
within +-10 %.

The raw sum misses what happens *between* units (the residual adds of the detail module,
Python dispatch of the container modules, the input check) and what differs when a unit runs
among others (caches, allocator). That bias is modelled by an affine fit
``measured ~ a * predicted + b`` on a separate *calibration* set of random nets, disjoint
from the validation nets; the fit is stored in the table's sidecar (``calibration:``, one
entry per width / module kind / input size / batch) and applied by ``predict`` unless
``calibrated=False``. Both raw and calibrated metrics are reported. A fit whose slope is
outside [0.5, 2] or that is worse than the raw sum on the validation nets is not stored
(:meth:`~nas.latency.table.Calibration.problems`).

The statistic compared (``median`` by default, or ``mean``/``p10``/``min``) is the same for the
unit rows and for the nets. On a machine with background load use ``min``: the median of a
network that runs for tens of milliseconds absorbs interference that the median of a
sub-millisecond unit escapes, so medians then disagree for reasons that are not the model's.
"""

from __future__ import annotations

import io
import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from nas.genotype import Genotype, build
from nas.latency.fingerprint import now_iso
from nas.latency.predict import predict
from nas.latency.profiler import ProfileSettings, TimingStats, measure_networks
from nas.latency.table import Calibration, LatencyTable, calibration_scope
from nas.space import SearchSpace, load_space
from nas.utils import atomic_write, atomic_write_text

RESULTS_DIR = Path("results") / "latency"


def sample_genotypes(
    space: SearchSpace | str,
    n: int,
    seed: int = 0,
    channels: int | None = None,
    exclude: Iterable[Genotype] = (),
) -> list[Genotype]:
    """``n`` distinct random genotypes of ``space`` (uniform op per slot and, for a space with
    ``choices``, a uniform variant), reproducible.

    Raises ``ValueError`` when the space has fewer than ``n`` genotypes left.
    """
    space = load_space(space)
    if channels is not None and "channels" not in space.choices:
        space = space.with_channels(int(channels))
    archs = [v.arch for _, v in space.variants()]
    total = len(archs) * math.prod(len(space.candidates[s]) for s in space.slots)
    seen = set(exclude)
    if n > total - len(seen):
        raise ValueError(f"space {space.name} has only {total} genotypes; asked for {n} more")
    rng = random.Random(seed)
    out: list[Genotype] = []
    while len(out) < n:
        ops = tuple((s, rng.choice(space.candidates[s])) for s in space.slots)
        arch = archs[0] if len(archs) == 1 else rng.choice(archs)
        g = Genotype(space.name, arch, ops)
        if g not in seen:
            seen.add(g)
            out.append(g)
    return out


def genotype_label(g: Genotype) -> str:
    """Compact one-line form for CSVs: ``srsm.feat1=conv_3;srsm.feat2=...``."""
    return ";".join(f"{s}={o}" for s, o in g.ops)


def accuracy_metrics(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    """MAPE (%), Kendall's tau, share within +-10 % (%), mean predicted/measured ratio."""
    p = np.asarray(predicted, dtype=float)
    m = np.asarray(measured, dtype=float)
    if len(p) == 0:
        return {"n": 0, "mape": float("nan"), "tau": float("nan"), "within10": float("nan")}
    rel = np.abs(p - m) / m
    tau = kendall_tau(p, m) if len(p) > 1 else float("nan")
    return {
        "n": len(p),
        "mape": float(100 * rel.mean()),
        "tau": tau,
        "within10": float(100 * (rel <= 0.10).mean()),
        "ratio": float((p / m).mean()),
    }


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (``scipy.stats.kendalltau``; scipy is a dependency)."""
    from scipy.stats import kendalltau

    return float(kendalltau(x, y).statistic)


def fit_calibration(
    predicted: Sequence[float], measured: Sequence[float], scope: str = ""
) -> Calibration:
    """Fit ``measured ~ a * predicted + b`` minimising the *relative* squared error.

    With one point only ``a`` is fitted (b = 0). The fit's own error on these points is in
    ``info``.
    """
    p = np.asarray(predicted, dtype=float)
    m = np.asarray(measured, dtype=float)
    if len(p) == 0:
        raise ValueError("fit_calibration needs at least one (predicted, measured) pair")
    if len(p) == 1 or np.ptp(p) <= 1e-12 * max(1.0, float(np.abs(p).max())):
        a, b = float(np.sum(p / m) / np.sum((p / m) ** 2)), 0.0
    else:
        A = np.stack([p / m, 1.0 / m], axis=1)
        (a, b), *_ = np.linalg.lstsq(A, np.ones_like(m), rcond=None)
        a, b = float(a), float(b)
    fitted = accuracy_metrics(a * p + b, m)
    info = {"fitted_on": len(p), "fit_mape": round(fitted["mape"], 3), "date": now_iso()}
    return Calibration(a, b, scope, info)


@dataclass
class NetResult:
    """One measured network of the check."""

    index: int
    split: str  # "calibration" or "validation"
    genotype: Genotype
    n_units: int
    predicted_ms: float
    measured: TimingStats
    measured_ms: float
    calibrated_ms: float = float("nan")


@dataclass
class ValidationReport:
    """Outcome of :func:`validate_predictor`; metrics are over the validation nets only."""

    table: str
    device: str
    space: str
    channels: int
    settings: ProfileSettings
    statistic: str
    results: list[NetResult]
    calibration: Calibration | None
    raw: dict[str, float]
    calibrated: dict[str, float]
    seconds: float
    paths: dict[str, Path] = field(default_factory=dict)

    def summary(self) -> str:
        s = self.settings
        lines = [
            f"predictor check: table {self.table} ({self.device})",
            f"  space {self.space}, C={self.channels}, input {s.input_size[0]}x{s.input_size[1]}, "
            f"batch {s.batch}, {s.resolved_threads} thread(s), {s.reps} reps, "
            f"{s.warmup} warm-up, {s.rounds} round(s), statistic: {self.statistic}",
            f"  {self.raw.get('n', 0)} validation nets, "
            f"{sum(r.split == 'calibration' for r in self.results)} calibration nets "
            f"(disjoint), {self.seconds:.0f} s",
            f"  raw        MAPE {self.raw['mape']:6.2f} %  tau {self.raw['tau']:.3f}  "
            f"within 10 % {self.raw['within10']:5.1f} %  mean pred/meas {self.raw['ratio']:.3f}",
        ]
        if self.calibration is not None:
            c = self.calibration
            lines.append(
                f"  calibrated MAPE {self.calibrated['mape']:6.2f} %  tau "
                f"{self.calibrated['tau']:.3f}  within 10 % {self.calibrated['within10']:5.1f} %"
                f"  (measured ~ {c.a:.4f} * predicted + {c.b:.4f} ms)"
            )
        for k, p in self.paths.items():
            lines.append(f"  {k}: {p}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        s = self.settings
        return {
            "table": self.table,
            "device": self.device,
            "space": self.space,
            "channels": self.channels,
            "input_size": list(s.input_size),
            "batch": s.batch,
            "threads": s.resolved_threads,
            "reps": s.reps,
            "warmup": s.warmup,
            "rounds": s.rounds,
            "statistic": self.statistic,
            "n_validation": int(self.raw.get("n", 0)),
            "n_calibration": sum(r.split == "calibration" for r in self.results),
            "raw": _round(self.raw),
            "calibrated": _round(self.calibrated),
            "calibration": self.calibration.to_dict() if self.calibration else None,
            "seconds": round(self.seconds, 1),
            "date": now_iso(),
        }


def _round(d: dict[str, float]) -> dict[str, float]:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}


def settings_from_table(table: LatencyTable, **overrides: Any) -> ProfileSettings:
    """The profiling settings recorded in a table's sidecar (``overrides`` win)."""
    m = table.meta
    kw: dict[str, Any] = {}
    for k in ("batch", "warmup", "reps", "rounds", "threads", "max_seconds", "min_reps", "quick"):
        if m.get(k) is not None:
            kw[k] = m[k]
    if m.get("input_size"):
        kw["input_size"] = tuple(int(v) for v in m["input_size"])
    if m.get("dtype"):
        kw["dtype"] = str(m["dtype"])
    if m.get("device"):
        kw["device"] = str(m["device"])
    kw.update({k: v for k, v in overrides.items() if v is not None})
    return ProfileSettings(**kw)


def split_genotypes(
    space: SearchSpace, n: int, n_calibration: int, channels: int, seed: int = 0
) -> list[tuple[str, Genotype]]:
    """``n_calibration`` calibration genotypes then ``n`` validation ones, all distinct."""
    calib = sample_genotypes(space, n_calibration, seed=seed + 1, channels=channels)
    valid = sample_genotypes(space, n, seed=seed, channels=channels, exclude=calib)
    return [("calibration", g) for g in calib] + [("validation", g) for g in valid]


def measure_genotypes(
    genotypes: Sequence[Genotype],
    settings: ProfileSettings,
    seed: int = 0,
    progress: bool = True,
) -> list[TimingStats]:
    """Build each derived net (weights seeded) and measure it end to end."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        nets = [build(g) for g in genotypes]
    return measure_networks(nets, settings, progress=progress, desc="nets")


def analyse(
    table: LatencyTable,
    space: SearchSpace,
    channels: int,
    genotypes: Sequence[tuple[str, Genotype]],
    stats: Sequence[TimingStats],
    settings: ProfileSettings,
    statistic: str = "median",
    seconds: float = 0.0,
    seed: int = 0,
) -> ValidationReport:
    """Compare predictions with measurements (no side effects): fit the calibration on the
    ``"calibration"`` nets, report raw and calibrated metrics on the ``"validation"`` nets."""
    H, W = settings.input_size
    old_stat = table.statistic
    table.statistic = statistic
    try:
        preds = [predict(g, (H, W), table, calibrated=False) for _, g in genotypes]
    finally:
        table.statistic = old_stat
    results = [
        NetResult(i, split, g, _n_units(g, (H, W)), p, st, getattr(st, f"{statistic}_ms"))
        for i, ((split, g), p, st) in enumerate(zip(genotypes, preds, stats))
    ]
    cal_rows = [r for r in results if r.split == "calibration"]
    val_rows = [r for r in results if r.split == "validation"]
    cal = None
    if cal_rows:
        scope = calibration_scope(
            channels, space.arch.misaligned, (H, W), settings.batch, statistic
        )
        cal = fit_calibration(
            [r.predicted_ms for r in cal_rows], [r.measured_ms for r in cal_rows], scope
        )
    for r in results:
        r.calibrated_ms = float(cal.apply(r.predicted_ms)) if cal else r.predicted_ms
    meas = [r.measured_ms for r in val_rows]
    raw = accuracy_metrics([r.predicted_ms for r in val_rows], meas)
    calm = accuracy_metrics([r.calibrated_ms for r in val_rows], meas)
    if cal is not None:
        info = dict(cal.info)
        info.update(
            space=space.name,
            seed=seed,
            n_validation=len(val_rows),
            validation_raw=_round(raw),
            validation_calibrated=_round(calm),
        )
        cal = Calibration(cal.a, cal.b, cal.scope, info)
    return ValidationReport(
        table=table.name,
        device=str(table.meta.get("device_fingerprint", "?")),
        space=space.name,
        channels=channels,
        settings=settings,
        statistic=statistic,
        results=results,
        calibration=cal,
        raw=raw,
        calibrated=calm,
        seconds=seconds,
    )


def validate_predictor(
    table: LatencyTable,
    space: SearchSpace | str,
    n: int,
    settings: ProfileSettings | None = None,
    channels: int | None = None,
    n_calibration: int = 20,
    seed: int = 0,
    out_dir: str | Path | None = RESULTS_DIR,
    store_calibration: bool = True,
    save_table: bool = True,
    statistic: str = "median",
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> ValidationReport:
    """Measure ``n`` random derived nets (plus ``n_calibration`` for the fit) and compare.

    Args:
        table: the device's table, covering ``space`` at ``channels`` and the input size.
        settings: timing settings; default: those recorded in the table's sidecar.
        channels: width of the sampled nets (default: the space's).
        n_calibration: nets for the affine calibration (0: none; disjoint from the ``n``).
        out_dir: where the per-net CSV, the scatter PNG and a YAML summary go (None: nowhere).
        store_calibration: put the fit into ``table``'s sidecar; ``save_table`` also writes
            the table back (atomically) when it has a path.
        statistic: the statistic compared, for the unit rows *and* the nets: ``median``
            (default), ``mean``, ``p10`` or ``min``. On a machine with background load the
            median of a whole network (tens of ms) includes interference that the median of
            a sub-millisecond unit mostly escapes; ``min`` estimates both without it.
    """
    t0 = time.perf_counter()
    say = log or (lambda s: None)
    settings = settings or settings_from_table(table)
    space = load_space(space)
    C = int(channels or space.arch.channels)
    genos = split_genotypes(space, n, n_calibration, C, seed)
    if space.choices and store_calibration:
        say(
            f"{space.name} searches {sorted(space.choices)}: the calibration is fitted and "
            f"reported, not stored (the table's calibrations are per width and network kind)"
        )
        store_calibration = False
    say(
        f"measuring {len(genos)} derived nets of {space.name} (C={C}) end to end "
        f"({n_calibration} calibration + {n} validation)"
    )
    stats = measure_genotypes([g for _, g in genos], settings, seed, progress)
    report = analyse(
        table, space, C, genos, stats, settings, statistic, time.perf_counter() - t0, seed
    )
    if store_calibration and report.calibration is not None:
        store_report_calibration(table, report, save=save_table, log=say)
    if out_dir is not None:
        write_report(report, Path(out_dir))
    return report


def store_report_calibration(
    table: LatencyTable,
    report: ValidationReport,
    save: bool = True,
    log: Callable[[str], None] | None = print,
) -> bool:
    """Put the report's calibration into the table's sidecar if it looks sound.

    An implausible fit (:meth:`Calibration.problems`) is not stored, and an older calibration
    of the same scope is removed (the new evidence contradicts it). ``save`` writes the table
    (atomically) when it has a path. Returns True when the calibration was stored.
    """
    say = log or (lambda s: None)
    cal = report.calibration
    if cal is None:
        return False
    problems = cal.problems()
    if problems:
        dropped = table.remove_calibration(cal.scope)
        say(
            f"calibration {cal.scope} not stored: {'; '.join(problems)}"
            + (" (the previous one was removed)" if dropped else "")
        )
    else:
        table.set_calibration(cal)
    if save and table.path is not None and (not problems or dropped):
        table.save()
    if not problems:
        say(f"calibration {cal.scope}: a={cal.a:.4f}, b={cal.b:.4f} ms -> {table.path}")
    return not problems


@torch.no_grad()
def _n_units(g: Genotype, input_size: tuple[int, int]) -> int:
    from nas.latency.predict import _genotype_calls

    return len(_genotype_calls(g, input_size)[0])


def report_stem(report: ValidationReport) -> str:
    stat = "" if report.statistic == "median" else f"-{report.statistic}"
    return f"validate-{report.table}-{report.space}-C{report.channels}{stat}"


def write_report(report: ValidationReport, out_dir: Path, stem: str | None = None) -> None:
    """Write ``<stem>.csv`` (one row per net), ``<stem>.png`` and ``<stem>.yaml``, atomically."""
    stem = stem or report_stem(report)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / f"{stem}.csv"
    atomic_write_text(csv_path, validation_csv(report))
    yaml_path = out_dir / f"{stem}.yaml"
    atomic_write_text(yaml_path, yaml.safe_dump(report.to_dict(), sort_keys=False))
    png_path = out_dir / f"{stem}.png"
    plot_validation(report, png_path)
    report.paths.update(csv=csv_path, summary=yaml_path, plot=png_path)


def validation_csv(report: ValidationReport) -> str:
    """The per-net rows as CSV text."""
    import csv

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        [
            "net",
            "split",
            "genotype",
            "n_units",
            "predicted_ms",
            "calibrated_ms",
            "measured_ms",
            "measured_median_ms",
            "measured_min_ms",
            "measured_p10_ms",
            "measured_p90_ms",
            "measured_n",
            "error_raw_pct",
            "error_calibrated_pct",
        ]
    )
    for r in report.results:
        m = r.measured_ms
        w.writerow(
            [
                r.index,
                r.split,
                genotype_label(r.genotype),
                r.n_units,
                f"{r.predicted_ms:.5g}",
                f"{r.calibrated_ms:.5g}",
                f"{m:.5g}",
                f"{r.measured.median_ms:.5g}",
                f"{r.measured.min_ms:.5g}",
                f"{r.measured.p10_ms:.5g}",
                f"{r.measured.p90_ms:.5g}",
                r.measured.n,
                f"{100 * (r.predicted_ms - m) / m:.3f}",
                f"{100 * (r.calibrated_ms - m) / m:.3f}",
            ]
        )
    return buf.getvalue()


def plot_validation(report: ValidationReport, path: Path) -> None:
    """Scatter of predicted vs measured (raw and calibrated), y = x and +-10 % lines."""
    from nas.report import new_figure

    val = [r for r in report.results if r.split == "validation"]
    cal = [r for r in report.results if r.split == "calibration"]
    fig, ax = new_figure(figsize=(5.5, 5.0), dpi=120)
    allv = [r.measured_ms for r in report.results] + [
        v for r in report.results for v in (r.predicted_ms, r.calibrated_ms)
    ]
    lo, hi = min(allv) * 0.9, max(allv) * 1.1
    xs = np.linspace(lo, hi, 2)
    ax.plot(xs, xs, "k-", lw=1, label="y = x")
    ax.plot(xs, xs * 1.1, "k:", lw=0.8, label="+-10 %")
    ax.plot(xs, xs * 0.9, "k:", lw=0.8)
    series = [("raw sum", "predicted_ms", report.raw, "tab:orange")]
    if report.calibration is not None:
        series.append(("calibrated", "calibrated_ms", report.calibrated, "tab:blue"))
    for label, attr, acc, color in series:
        ax.scatter(
            [r.measured_ms for r in val],
            [getattr(r, attr) for r in val],
            s=18,
            c=color,
            label=f"{label} (MAPE {acc['mape']:.1f} %, tau {acc['tau']:.2f})",
        )
        ax.scatter(
            [r.measured_ms for r in cal],
            [r.calibrated_ms for r in cal],
            s=18,
            facecolors="none",
            edgecolors="tab:gray",
            label="calibration nets (fit)",
        )
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel(f"measured latency (ms, {report.statistic})")
    ax.set_ylabel(f"predicted latency (ms, sum of unit {report.statistic}s)")
    s = report.settings
    ax.set_title(
        f"{report.space} C={report.channels}, {s.input_size[0]}x{s.input_size[1]}, "
        f"batch {s.batch}\n{report.device}",
        fontsize=8,
    )
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write(path, lambda f: f.write(buf.getvalue()))
