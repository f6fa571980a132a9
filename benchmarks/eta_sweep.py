"""Benchmark: does eta move the measured latency of the derived net? (CRMEF Table VIII)

One search per eta (same seed, data and budget: ``nas/configs/search-eta-cpu.yaml`` -- the shipped
crmef space in the authors' style at C=32, real bracketed sequences with the no-reference
objective, the paper's penalty predicted at the deployment size), then, in one process:

1. every derived net is timed on this machine at batch 1 and the deployment size (default
   1024 x 768, ``--latency-input 768 1024``) in ONE interleaved run (the profiler's harness,
   :func:`nas.latency.profiler.measure_networks`), beside its table prediction;
2. quality: validation MEF-SSIM of each derived net with the weights inherited from its
   supernet, on the validation scenes of the data (``--eval-crop`` centre crops); for
   ``--retrain-etas`` also after a short retrain (``nas.train``, ``init: inherit``);
3. the alpha trajectories (softmax(alpha) per slot against the epoch) of every search.

Before the searches the rows of the deployment-size table are profiled (only missing ones,
batch 1, ``--profile-reps`` timed calls per unit) into ``latency_tables/``.

    python benchmarks/eta_sweep.py --data ../shared/data/sequences
        [--etas 0 0.25 0.5 1 2] [--penalty paper] [--channels 32]
        [--latency-input 768 1024] [--retrain-etas 0 1] [--out results/eta_sweep]

Writes ``<out>/eta_sweep.md|csv``, ``<out>/eta_sweep.png`` (measured ms and quality against
eta), ``<out>/alphas-eta<e>.png`` and the run folders under ``<out>/runs``.

The same searches as a resumable Optuna study (one trial per eta, scored on validation
MEF-SSIM and the latency measured at the deployment size; ``tests/test_sweep.py`` checks
that the two configurations search alike)::

    python -m nas.sweep --config sweep-eta-cpu --set data=../shared/data/sequences

This script is the benchmark around them: each search in its own process (for its peak
memory), the space's own latency span, one interleaved re-timing of every net beside its
prediction, and short retrains.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nas.config import load_yaml_config  # noqa: E402
from nas.genotype import Genotype, build, count_parameters  # noqa: E402
from nas.latency import LatencyTable, predict  # noqa: E402
from nas.latency.profiler import ProfileSettings, measure_networks, profile_spaces  # noqa: E402
from nas.plot import _save_figure, alpha_trajectories, draw_alpha_trajectories  # noqa: E402
from nas.report import markdown_table  # noqa: E402
from nas.search import SearchConfig, build_space  # noqa: E402
from nas.utils import atomic_write_text, size_text  # noqa: E402

CONFIG = ROOT / "configs" / "search-eta-cpu.yaml"
_CHILD = """
import json, resource, sys, time
from nas import {module}
t0 = time.perf_counter()
rc = {module}.main(sys.argv[1:])
print("BENCH " + json.dumps({{"rc": rc, "seconds": time.perf_counter() - t0,
      "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def _run_cli(module: str, args: list[str], threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    print(f"$ python -m nas.{module} {' '.join(args)}", flush=True)
    out = subprocess.run(
        [sys.executable, "-c", _CHILD.format(module=module), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    stats = json.loads(out.stdout.rsplit("BENCH ", 1)[1]) if "BENCH " in out.stdout else {}
    if out.returncode != 0 or stats.get("rc") != 0:
        raise RuntimeError(f"nas.{module} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return stats


def _fresh_or_reused(run: Path, reuse: bool, job) -> dict:
    """Run ``job`` in a fresh ``run`` folder, or, with ``reuse``, take the stats of a finished
    earlier run of it (``bench.json``)."""
    done = run / "bench.json"
    if reuse and done.is_file():
        print(f"reusing {run}", flush=True)
        return json.loads(done.read_text())
    if run.exists():
        shutil.rmtree(run)
    stats = job()
    atomic_write_text(done, json.dumps(stats))
    return stats


def profile_table(cfg: SearchConfig, threads: int, reps: int) -> tuple[LatencyTable, float]:
    """The deployment-size table of this device, missing rows profiled first."""
    size = tuple(cfg.latency_input)
    settings = ProfileSettings(
        device="cpu",
        batch=1,
        input_size=size,
        warmup=1,
        reps=reps,
        threads=threads,
        max_seconds=30.0,
        min_reps=3,
    )
    t0 = time.perf_counter()
    report = profile_spaces(
        [build_space(cfg)],
        [cfg.channels],
        settings,
        ROOT / "latency_tables",
        only_missing=True,
        progress=False,
    )
    return report.table, time.perf_counter() - t0


def val_pairs(cfg: SearchConfig, crop: int, images: int) -> list[tuple[torch.Tensor, ...]]:
    """(under, over) centre crops of the validation scenes, each (1, 3, crop, crop)."""
    from nas.data import build_dataset

    val = build_dataset(
        cfg.data, "val", crop, False, cfg.seed, length=images, max_side=cfg.max_side, cache=True
    )
    return [(val[i]["under"][None], val[i]["over"][None]) for i in range(min(images, len(val)))]


@torch.no_grad()
def val_mef_ssim(net: torch.nn.Module, pairs: list[tuple[torch.Tensor, ...]]) -> float:
    """Mean MEF-SSIM of ``net`` on the validation pairs."""
    from nas.metrics import mef_ssim

    net = net.eval()
    scores = [float(mef_ssim(net(u, o).clamp(0, 1), [u, o])) for u, o in pairs]
    return sum(scores) / len(scores)


def span_genotypes(cfg: SearchConfig, table: LatencyTable) -> dict[str, Genotype]:
    """The cheapest and the dearest genotype of the space by table latency at the deployment
    size (per slot the candidate with the smallest / largest summed latency)."""
    from nas.latency.predict import slot_latency
    from nas.supernet import Supernet

    space = build_space(cfg)
    const = slot_latency(Supernet(space), table, tuple(cfg.latency_input), calibrated=False)
    out = {}
    for name, pick in (("cheapest", torch.argmin), ("dearest", torch.argmax)):
        ops = tuple((s, space.candidates[s][int(pick(const.slots[s]))]) for s in space.slots)
        out[name] = Genotype(space.name, space.arch, ops)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "sequences"))
    p.add_argument("--config", type=Path, default=CONFIG)
    p.add_argument("--etas", type=float, nargs="+", default=[0.0, 0.25, 0.5, 1.0, 2.0])
    p.add_argument("--penalty", choices=["paper", "normalised"], default=None)
    p.add_argument("--channels", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--latency-input", type=int, nargs=2, metavar=("H", "W"))
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--profile-reps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    p.add_argument("--eval-crop", type=int, default=256)
    p.add_argument("--eval-images", type=int, default=8)
    p.add_argument("--retrain-etas", type=float, nargs="*", default=[0.0, 1.0])
    p.add_argument("--retrain-epochs", type=int, default=6)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "eta_sweep")
    p.add_argument("--reuse", action="store_true", help="keep finished searches / retrains")
    args = p.parse_args(argv)

    overrides = {"data": args.data, "device": "cpu"}
    for key, value in (
        ("latency_penalty", args.penalty),
        ("channels", args.channels),
        ("epochs", args.epochs),
        ("latency_input", args.latency_input),
    ):
        if value is not None:
            overrides[key] = value
    cfg = load_yaml_config(SearchConfig, args.config)
    cfg = SearchConfig(**{**cfg.__dict__, **overrides})
    size = tuple(cfg.latency_input)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    cfg_file = args.out / "search.yaml"
    keep = {k: v for k, v in cfg.__dict__.items() if k not in ("runs_dir", "run_name")}
    atomic_write_text(cfg_file, yaml.safe_dump(keep, sort_keys=False))

    table, profile_s = profile_table(cfg, args.threads, args.profile_reps)
    record = args.out / "profile.json"  # how long the rows took when they were profiled
    if profile_s > 10 or not record.is_file():
        atomic_write_text(record, json.dumps({"table": table.name, "seconds": profile_s}))
    profile_s = json.loads(record.read_text())["seconds"]
    print(f"table {table.name}: {len(table)} rows ({profile_s:.0f} s to profile)", flush=True)

    runs = args.out / "runs"
    stats, genos = {}, {}
    for eta in args.etas:
        name = f"eta{eta:g}"
        a = ["--config", str(cfg_file), "--eta", str(eta), "--run-name", name]
        a += ["--runs-dir", str(runs), "--no-progress"]
        stats[eta] = _fresh_or_reused(
            runs / name, args.reuse, lambda a=a: _run_cli("search", a, args.threads)
        )
        genos[eta] = Genotype.from_yaml(runs / name / "genotype.yaml")
        metrics = pd.read_csv(runs / name / "metrics.csv")
        stats[eta]["s_per_epoch"] = float(metrics["epoch_seconds"].mean())
        draw_alpha_trajectories(
            alpha_trajectories(metrics),
            args.out / f"alphas-{name}.png",
            title=f"softmax(alpha), eta={eta:g} ({cfg.latency_penalty} penalty)",
            warmup_epochs=cfg.warmup_epochs,
        )

    # derived nets with inherited weights: latency (one interleaved run) and quality
    from nas.models import load_model_file, resolve_model

    nets = {e: load_model_file(runs / f"eta{e:g}" / "derived_init.pt").model for e in args.etas}
    span = span_genotypes(cfg, table)  # the space's own range, timed in the same run
    settings = ProfileSettings(
        device="cpu", batch=1, input_size=size, warmup=1, reps=1, rounds=args.rounds,
        threads=args.threads,
    )  # fmt: skip
    # each distinct genotype is timed once (weights do not change the time of a convolution)
    distinct: dict[Genotype, torch.nn.Module] = {}
    for e in args.etas:
        distinct.setdefault(genos[e], nets[e])
    for g in span.values():
        distinct.setdefault(g, build(g))
    t0 = time.perf_counter()
    timed = dict(zip(distinct, measure_networks(list(distinct.values()), settings)))
    timing_s = time.perf_counter() - t0
    span_rows = [
        {
            "genotype": name + ": " + " ".join(op for _, op in g.ops),
            "params": count_parameters(build(g)),
            "predicted_ms": round(predict(g, size, table, calibrated=False), 1),
            "measured_ms": round(timed[g].median_ms, 1),
        }
        for name, g in span.items()
    ]
    pairs = val_pairs(cfg, args.eval_crop, args.eval_images)
    rows = []
    for eta, st in zip(args.etas, (timed[genos[e]] for e in args.etas)):
        g = genos[eta]
        rows.append(
            {
                "eta": eta,
                "genotype": " ".join(op for _, op in g.ops),
                "params": count_parameters(nets[eta]),
                "predicted_ms": round(predict(g, size, table, calibrated=False), 1),
                "measured_ms": round(st.median_ms, 1),
                "val_mef_ssim_inherited": round(val_mef_ssim(nets[eta], pairs), 4),
                "search_s_per_epoch": round(stats[eta]["s_per_epoch"], 1),
                "search_peak_rss_mb": round(stats[eta]["maxrss_mb"]),
            }
        )
    table_df = pd.DataFrame(rows)

    # a short retrain of some derived nets (init: inherit), then the same quality measure
    retrained = {}
    for eta in args.retrain_etas:
        if eta not in args.etas:
            continue
        name = f"retrain-eta{eta:g}"
        a = ["--config", str(ROOT / "configs" / "train-real.yaml"), "--data", cfg.data]
        a += ["--arch", str(runs / f"eta{eta:g}"), "--init", "inherit", "--device", "cpu"]
        a += ["--epochs", str(args.retrain_epochs), "--samples-per-epoch", "64"]
        a += ["--run-name", name, "--runs-dir", str(runs), "--no-progress"]
        st = _fresh_or_reused(
            runs / name, args.reuse, lambda a=a: _run_cli("train", a, args.threads)
        )
        best = resolve_model(runs / name).model  # the best validation epoch
        retrained[eta] = (
            round(val_mef_ssim(best, pairs), 4),
            round(st["seconds"]),
        )
    table_df["val_mef_ssim_retrained"] = [retrained.get(e, (None,))[0] for e in args.etas]

    ms = dict(zip(args.etas, table_df["measured_ms"]))
    span_df = pd.DataFrame(span_rows)
    span_ratio = span_df["measured_ms"].iloc[1] / span_df["measured_ms"].iloc[0]
    ratio = ms[0.0] / ms[1.0] if 0.0 in ms and 1.0 in ms else None
    _plot(table_df, args.out / "eta_sweep.png", cfg)
    lines = [
        f"# eta sweep: crmef ({build_space(cfg).arch.style} style) at C={cfg.channels}, "
        f"{cfg.latency_penalty} penalty, latency at batch 1 and {size[1]}x{size[0]} (W x H)",
        "",
        f"Table `{table.name}` ({profile_s:.0f} s to profile its missing rows); searches: "
        f"`{args.config.relative_to(ROOT)}` on `{cfg.data}` ({cfg.epochs} epochs, "
        f"{cfg.warmup_epochs} warm-up, {cfg.samples_per_epoch} crops of {cfg.crop}x{cfg.crop} "
        f"per epoch, seed {cfg.seed}); measured: each distinct genotype once, median of "
        f"{args.rounds} interleaved rounds ({timing_s:.0f} s), {args.threads} threads, torch "
        f"{torch.__version__}; quality: "
        f"validation MEF-SSIM on {args.eval_images} centre crops of {args.eval_crop}x"
        f"{args.eval_crop} of the validation scenes, with inherited supernet weights and "
        f"after {args.retrain_epochs} epochs of retraining (64 crops of 96x96 per epoch, "
        f"`nas/configs/train-real.yaml`, init: inherit).",
        "",
        markdown_table(_pretty(table_df), list(table_df.columns)),
        "",
        f"eta=0 / eta=1 measured latency: {ratio:.2f}x (target >= 2.5x; paper: 3.05x at C32)"
        if ratio
        else "",
        "",
        "The space's own range at this size (per slot the candidate with the smallest / largest "
        "table latency), timed in the same interleaved run:",
        "",
        markdown_table(_pretty(span_df), list(span_df.columns)),
        f"dearest / cheapest measured: {span_ratio:.2f}x: no search in this space can separate "
        "two nets by more on this device at this size.",
        "",
        "retrain seconds: " + ", ".join(f"eta {e:g}: {s} s" for e, (_, s) in retrained.items()),
        f"total benchmark time: {time.perf_counter() - t_start:.0f} s",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    atomic_write_text(args.out / "eta_sweep.md", text)
    atomic_write_text(args.out / "eta_sweep.csv", table_df.to_csv(index=False))
    return 0


def _pretty(df: pd.DataFrame) -> pd.DataFrame:
    """Milliseconds and counts with thousands separators, scores with 4 decimals."""
    out = df.copy().astype(object)
    for c in out.columns:
        if c.endswith("_ms") or c in ("params", "search_peak_rss_mb"):
            out[c] = [f"{v:,.0f}" for v in df[c]]
        elif c.startswith("val_"):
            out[c] = ["" if pd.isna(v) else f"{v:.4f}" for v in df[c]]
        elif c == "eta":
            out[c] = [f"{v:g}" for v in df[c]]
    return out


def _plot(df: pd.DataFrame, path: Path, cfg: SearchConfig) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    x = [str(e) for e in df["eta"]]
    ax.bar(x, df["measured_ms"], color="tab:blue", alpha=0.7, label="measured ms")
    ax.plot(x, df["predicted_ms"], "k_", markersize=18, label="table sum (ms)")
    ax.set_xlabel(f"eta ({cfg.latency_penalty} penalty)")
    ax.set_ylabel(f"ms at batch 1, {size_text(tuple(cfg.latency_input))}")
    ax2 = ax.twinx()
    ax2.plot(x, df["val_mef_ssim_inherited"], "o-", color="tab:red", label="MEF-SSIM (inherited)")
    if df["val_mef_ssim_retrained"].notna().any():
        ax2.plot(
            x, df["val_mef_ssim_retrained"], "s", color="darkred", label="MEF-SSIM (retrained)"
        )
    ax2.set_ylabel("val MEF-SSIM")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper right")
    fig.tight_layout()
    _save_figure(fig, path, ("png",))
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
