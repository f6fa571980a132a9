"""Benchmark: does the fast space (``crmef-fast``) grade latency from one knob?

The searches (``nas/configs/search-fast.yaml``: scale 1/2-1/16 and width 8/16 searched beside
the ops, the latency predicted at 1024 x 768 from this device's 1-thread table) run as an eta
sweep with the ``log`` penalty and as a target sweep with TuNAS' ``abs`` penalty::

    python -m nas.search --config search-fast --data ../shared/data/sequences --eta E \\
        --epochs 6 --run-name etaE --out results/eta_sweep_fast/runs
    python -m nas.search --config search-fast --data ../shared/data/sequences --eta 1 \\
        --latency-penalty abs --target-ms T --epochs 6 --run-name targetT \\
        --out results/eta_sweep_fast/runs

(``--search`` runs the missing ones, one after another, the same way). This script then, in
ONE process and ONE interleaved timing run (batch 1, 1024 x 768, ``--threads``):

1. times every derived net, the space's cheapest and dearest nets (by the table), OpenCV's
   Mertens fusion (default weights), the plain average and the shipped learned models of
   ``results/mefb/models`` (the slow ones with ``--baseline-rounds`` calls);
2. scores them on the held-out sequences scenes (val + test splits, widest-gap pair, frames
   resized to a long side of 1024) with MEFB's MEF-SSIM; the searched nets carry the
   weights they inherit from their supernet (not retrained);
3. writes ``<out>/fast_sweep.md|csv``, ``<out>/front.png`` (MEF-SSIM against measured ms,
   log scale) and ``<out>/genotypes/eta<e>.yaml`` / ``target<T>.yaml``, and prints the
   targets of the space: span, distinct nets, monotone eta, target error, Mertens ratio.

    python benchmarks/fast_sweep.py [--search] [--etas 0 0.001 0.003 0.01 0.03 0.1 1]
        [--targets 25 50 100 200 400 800] [--threads 1] [--out results/eta_sweep_fast]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import yaml
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from objective_study import held_out_pairs  # noqa: E402

from nas.data.io import resize_max_side  # noqa: E402
from nas.genotype import Genotype, build, count_parameters  # noqa: E402
from nas.latency import LatencyTable, predict  # noqa: E402
from nas.latency.predict import slot_latency  # noqa: E402
from nas.latency.profiler import ProfileSettings, measure_networks  # noqa: E402
from nas.mefb import pair_metrics  # noqa: E402
from nas.models import load_model_file, resolve_model  # noqa: E402
from nas.plot import _save_figure  # noqa: E402
from nas.report import markdown_table  # noqa: E402
from nas.space import load_space  # noqa: E402
from nas.supernet import make_supernet  # noqa: E402
from nas.utils import atomic_write_text  # noqa: E402

SIZE = (768, 1024)
BASELINES = (
    "mef-cl",
    "ffmef",
    "lcndr",
    "hyperp-mb",
    "crmef-general",
    "searched-eta0.5",
    "searched-pyramid-long-eta0.5",
)
"""Shipped models of ``results/mefb/models`` timed with ``--baseline-rounds`` calls."""
RETRAINED = ("searched-fast-eta0.03",)
"""Shipped retrained fast nets, timed in the main interleaved run."""


class Classical(nn.Module):
    """A classical fuser as a module (for the timing harness)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.fuser = resolve_model(name, allow_classical=True).model

    def forward(self, under: torch.Tensor, over: torch.Tensor) -> torch.Tensor:
        return self.fuser.fuse(under, over)


def run_searches(runs: Path, etas: list[float], targets: list[float], data: str) -> None:
    """The sweep's searches that have not finished (no ``export.yaml``), one at a time."""
    base = [sys.executable, "-m", "nas.search", "--config", "search-fast", "--data", data]
    base += ["--epochs", "6", "--out", str(runs), "--no-progress"]
    jobs = [(f"eta{e:g}", ["--eta", f"{e:g}"]) for e in etas]
    jobs += [
        (f"target{t:g}", ["--eta", "1", "--latency-penalty", "abs", "--target-ms", f"{t:g}"])
        for t in targets
    ]
    for name, extra in jobs:
        if (runs / name / "export.yaml").is_file():
            continue
        print(f"search {name}", flush=True)
        subprocess.run([*base, *extra, "--run-name", name], check=True)


def load_runs(runs: Path) -> list[dict]:
    """Every finished run: name, knob, genotype, predicted ms and the inherited net."""
    out = []
    for d in sorted(runs.iterdir()):
        if not (d / "export.yaml").is_file():
            continue
        cfg = yaml.safe_load((d / "config.yaml").read_text())
        target = cfg.get("target_ms")
        out.append(
            {
                "name": d.name,
                "sweep": "target" if target else "eta",
                "knob": float(target) if target else float(cfg["eta"]),
                "genotype": Genotype.from_yaml(d / "genotype.yaml"),
                "net": load_model_file(d / "derived_init.pt").model,
            }
        )
    return out


def span_genotypes(table: LatencyTable) -> dict[str, Genotype]:
    """The cheapest and the dearest net of ``crmef-fast`` by the table (per variant the
    cheapest / dearest op of every slot, then the cheapest / dearest variant)."""
    space = load_space("crmef-fast")
    net = make_supernet(space)
    const = slot_latency(net, table, SIZE)
    best: dict[str, tuple[float, Genotype]] = {}
    for a, part in zip(net.assignments, const.parts):
        arch = space.variants()[net.assignments.index(a)][1].arch
        for kind, pick in (("cheapest", min), ("dearest", max)):
            ops = tuple(
                (s, space.candidates[s][pick(range(len(v)), key=lambda i, v=v: float(v[i]))])
                for s, v in part.slots.items()
            )
            g = Genotype(space.name, arch, ops)
            ms = predict(g, SIZE, table)
            if kind not in best or (ms < best[kind][0]) == (kind == "cheapest"):
                best[kind] = (ms, g)
    return {f"space-{k}": g for k, (_, g) in best.items()}


def mef_ssim_of(net: nn.Module, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    net.eval()
    scores = []
    with torch.inference_mode():
        for a, b in pairs:
            scores.append(pair_metrics(net(a, b).clamp(0, 1), a, b)["mef_ssim"])
    return sum(scores) / len(scores)


def _group(name: str) -> str:
    if name.startswith("space-"):
        return "space"
    return "retrained" if name in RETRAINED else "reference"


def label(g: Genotype) -> str:
    ops = " ".join(op for _, op in g.ops)
    return f"x{g.arch.scale} C{g.arch.channels}: {ops}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "sequences"))
    p.add_argument("--out", type=Path, default=ROOT / "results" / "eta_sweep_fast")
    p.add_argument("--search", action="store_true", help="run the missing searches first")
    p.add_argument("--etas", type=float, nargs="+", default=[0, 0.001, 0.003, 0.01, 0.03, 0.1, 1])
    p.add_argument("--targets", type=float, nargs="+", default=[25, 50, 100, 200, 400, 800])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--baseline-rounds", type=int, default=1)
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument("--replot", action="store_true", help="redraw front.png from fast_sweep.csv")
    args = p.parse_args(argv)
    if args.replot:
        plot_front(pd.read_csv(args.out / "fast_sweep.csv"), args.out / "front.png")
        return 0
    runs = args.out / "runs"
    if args.search:
        run_searches(runs, args.etas, args.targets, args.data)
    t0 = time.perf_counter()
    torch.set_num_threads(args.threads)
    table = LatencyTable.load(device="cpu", input_size=SIZE)
    table.statistic = "median"
    found = load_runs(runs)
    nets: dict[str, nn.Module] = {r["name"]: r["net"] for r in found}
    genos: dict[str, Genotype] = {r["name"]: r["genotype"] for r in found}
    for name, g in span_genotypes(table).items():
        torch.manual_seed(0)
        nets[name], genos[name] = build(g), g
    classical: dict[str, nn.Module] = {n: Classical(n) for n in ("mertens-default", "average")}
    for n in RETRAINED:
        f = ROOT / "results" / "mefb" / "models" / f"{n}.pt"
        if f.is_file():
            classical[n] = load_model_file(f).model
    settings = ProfileSettings(
        device="cpu",
        batch=1,
        input_size=SIZE,
        warmup=1,
        reps=args.rounds * 2,
        rounds=args.rounds,
        threads=args.threads,
        max_seconds=None,
    )
    fast = {**nets, **classical}
    stats = measure_networks(list(fast.values()), settings)
    ms = {n: st.median_ms for n, st in zip(fast, stats)}
    learned: dict[str, nn.Module] = {}
    if not args.no_baselines:
        for b in BASELINES:
            learned[b] = load_model_file(ROOT / "results" / "mefb" / "models" / f"{b}.pt").model
        slow = ProfileSettings(
            device="cpu",
            batch=1,
            input_size=SIZE,
            warmup=0,
            reps=args.baseline_rounds,
            rounds=args.baseline_rounds,
            threads=args.threads,
            min_reps=1,
        )
        for n, st in zip(learned, measure_networks(list(learned.values()), slow)):
            ms[n] = st.median_ms
    pairs = [
        tuple(resize_max_side(pr[k], 1024)[None] for k in ("under", "over"))
        for pr in held_out_pairs(Path(args.data))
    ]
    rows = []
    knobs = {r["name"]: (r["sweep"], r["knob"]) for r in found}
    for name, net in {**nets, **classical, **learned}.items():
        g = genos.get(name)
        sweep, knob = knobs.get(name, ("", float("nan")))
        rows.append(
            {
                "method": name,
                "sweep": sweep or _group(name),
                "knob": knob,
                "net": label(g) if g else "",
                "params": 0 if isinstance(net, Classical) else count_parameters(net),
                "predicted_ms": predict(g, SIZE, table) if g else float("nan"),
                "measured_ms": ms[name],
                "mef_ssim": mef_ssim_of(net, pairs),
            }
        )
        print(f"{name:24s} {ms[name]:9.1f} ms  MEF-SSIM {rows[-1]['mef_ssim']:.4f}", flush=True)
    df = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "genotypes").mkdir(exist_ok=True)
    for r in found:
        r["genotype"].to_yaml(args.out / "genotypes" / f"{r['name']}.yaml")
    df.to_csv(args.out / "fast_sweep.csv", index=False)
    checks = summarise(df)
    md = [
        f"# Fast-space sweeps (crmef-fast) at {SIZE[1]}x{SIZE[0]}, batch 1, "
        f"{args.threads} thread(s), this CPU",
        "",
        "Searched nets: search-fast config, 6 epochs, weights inherited from the supernet (not "
        "retrained). MEF-SSIM: MEFB's, mean over the 16 held-out sequences scenes (val + test, "
        "widest-gap pair, long side 1024). Latency: median of one interleaved run "
        f"({args.rounds} rounds; learned baselines {args.baseline_rounds} call(s)).",
        "",
        markdown_table(
            df.sort_values(["sweep", "knob", "measured_ms"]),
            list(df.columns),
            cell=_cell,
            right=["knob", "params", "predicted_ms", "measured_ms", "mef_ssim"],
        ),
        "",
        *[f"- {c}" for c in checks],
        "",
        f"(`python benchmarks/fast_sweep.py`, {time.perf_counter() - t0:.0f} s)",
    ]
    atomic_write_text(args.out / "fast_sweep.md", "\n".join(md) + "\n")
    plot_front(df, args.out / "front.png")
    print("\n".join(checks))
    return 0


def _cell(v: object, column: str) -> str:
    if isinstance(v, float):
        if v != v:
            return ""
        return f"{v:.4f}" if column == "mef_ssim" else f"{v:.4g}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def summarise(df: pd.DataFrame) -> list[str]:
    """The issue's targets, measured."""
    out = []
    span = df[df.sweep == "space"].set_index("method").measured_ms
    if len(span) == 2:
        r = span["space-dearest"] / span["space-cheapest"]
        out.append(
            f"space span: dearest {span['space-dearest']:.0f} ms / cheapest "
            f"{span['space-cheapest']:.1f} ms = {r:.1f}x"
        )
    eta = df[df.sweep == "eta"].sort_values("knob")
    if len(eta):
        mono = all(b <= a * 1.05 for a, b in zip(eta.measured_ms, eta.measured_ms[1:]))
        out.append(
            f"eta sweep: {eta.net.nunique()} distinct nets of {len(eta)}; re-timed span "
            f"{eta.measured_ms.max() / eta.measured_ms.min():.1f}x; latency non-increasing "
            f"with eta (5 % timing slack): {mono}"
        )
    tgt = df[df.sweep == "target"].sort_values("knob")
    if len(tgt):
        err = (tgt.measured_ms / tgt.knob - 1) * 100
        parts = ", ".join(f"{k:g} ms: {e:+.0f} %" for k, e in zip(tgt.knob, err))
        out.append(f"target sweep, measured vs target: {parts}")
    ref = df.set_index("method")
    if "mertens-default" in ref.index:
        m = ref.loc["mertens-default"]
        searched = df[df.sweep.isin(["eta", "target"])]
        ok = searched[searched.measured_ms <= m.measured_ms]
        if len(ok):
            best = ok.sort_values("mef_ssim").iloc[-1]
            out.append(
                f"at most Mertens' time ({m.measured_ms:.1f} ms, MEF-SSIM {m.mef_ssim:.4f}): "
                f"{best.method} {best.measured_ms:.1f} ms, MEF-SSIM {best.mef_ssim:.4f}"
            )
        else:
            fastest = searched.sort_values("measured_ms").iloc[0]
            out.append(
                f"no searched net at Mertens' time ({m.measured_ms:.1f} ms); fastest "
                f"{fastest.method} {fastest.measured_ms:.1f} ms"
            )
    return out


def _short_label(r: pd.Series) -> str:
    if r.sweep == "target":
        return f"{r.knob:g} ms"
    if r.sweep == "eta":
        return f"eta {r.knob:g}"
    return str(r.method).replace("space-", "")


def plot_front(df: pd.DataFrame, path: Path) -> None:
    """MEF-SSIM against measured ms (log x); labels nudged apart where points crowd."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 5.2))
    style = {
        "eta": ("o", "C0"),
        "target": ("s", "C1"),
        "space": ("x", "grey"),
        "retrained": ("*", "C2"),
        "reference": ("^", "C3"),
    }
    for sweep, (marker, colour) in style.items():
        d = df[df.sweep == sweep]
        if len(d):
            ax.scatter(d.measured_ms, d.mef_ssim, marker=marker, color=colour, label=sweep, s=28)
    ax.set_xscale("log")
    lo, hi = df.mef_ssim.min(), df.mef_ssim.max()
    ax.set_ylim(lo - 0.03 * (hi - lo), hi + 0.12 * (hi - lo))  # room for labels above
    fig.canvas.draw()  # fixes the axes' transform before labels are placed
    placed: list[tuple[float, float]] = []
    seen: set[tuple[str, str]] = set()
    order = df.sort_values("measured_ms")
    for _, r in order.iterrows():
        text = _short_label(r)
        key = (r.get("net", "") or r.method, r.sweep)
        if r.sweep == "eta" and key in seen:  # the same net at several eta: label once
            continue
        seen.add(key)
        x, y = ax.transData.transform((r.measured_ms, r.mef_ssim))
        steps = (4.0, *(s * k * 9.0 + 4.0 for k in range(1, 12) for s in (-1, 1)))
        dy = next(
            (
                d
                for d in steps
                if not any(abs(x - px) < 60 and abs(y + d - py) < 9 for px, py in placed)
            ),
            4.0,
        )
        placed.append((x, y + dy))
        colour = style.get(r.sweep, ("", "black"))[1]
        ax.annotate(
            text,
            (r.measured_ms, r.mef_ssim),
            xytext=(6, dy),
            textcoords="offset points",
            fontsize=6.5,
            color=colour,
            va="center",
            arrowprops=None if abs(dy) < 6 else {"arrowstyle": "-", "lw": 0.4, "color": colour},
        )
    ax.set_xlabel(f"measured latency at {SIZE[1]}x{SIZE[0]}, batch 1 (ms, log)")
    ax.set_ylabel("MEF-SSIM, held-out sequences scenes")
    ax.set_title("crmef-fast: eta and target sweeps beside Mertens and learned baselines")
    ax.legend(fontsize=7, loc="lower center")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save_figure(fig, path, ["png"])
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
