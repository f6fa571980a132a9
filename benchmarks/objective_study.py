"""Objective study: which no-reference objective trains the best pyramid-head net?

Every variant retrains the same architecture (the shipped ``crmef-pyramid`` search's
derived net, fresh weights: its head starts as Mertens' fusion) with the same budget and
seed, changing nothing but the loss's arguments (``loss_args``: ``L_mean``'s weight, patch
size and target, the chroma term). Each variant's best checkpoint (validation MEF-SSIM on
the ``val`` crops, as ``nas.train`` picks it) then fuses the held-out scenes of the
sequences set (``val`` and ``test`` splits, full frames, the most widely spaced pair of
each scene) and is scored with MEFB's MEF-SSIM and Q^AB/F, the luminance RMS contrast and
colourfulness, the last two as ratios to OpenCV Mertens' (default weights) on the same
pairs. MEFB is not used: the study picks the objective, MEFB then scores the choice once.

Training runs are resumable: a variant whose run already finished is not retrained.

    python benchmarks/objective_study.py --data ../shared/data/sequences \
        --out results/objective_study --epochs 12 --threads 1
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from nas.data.sequences import SequenceFolder
from nas.mefb import pair_metrics, quantize8
from nas.metrics import colourfulness, rms_contrast
from nas.models import resolve_model
from nas.report import markdown_table
from nas.utils import atomic_write_text

ARCH = "results/mefb/models/searched-pyramid-eta0.5.pt"

# name -> (loss_args, what it tests); "mertens-0.1" is the shipped train-pyramid objective
VARIANTS: dict[str, tuple[dict, str]] = {
    "mertens-0.1": (
        {"mean_weight": 0.1, "mean_target": "mertens", "chroma_weight": 0.0},
        "shipped: light L_mean to Mertens' patch means",
    ),
    "no-mean": (
        {"mean_weight": 0.0, "chroma_weight": 0.0},
        "MEF-SSIM alone",
    ),
    "mertens-1": (
        {"mean_weight": 1.0, "mean_target": "mertens", "chroma_weight": 0.0},
        "heavy L_mean, Mertens target",
    ),
    "spd-0.1": (
        {"mean_weight": 0.1, "mean_target": "spd", "chroma_weight": 0.0},
        "light L_mean, SPD (well-exposedness) target",
    ),
    "spd-1-chroma": (
        {"mean_weight": 1.0, "mean_target": "spd", "chroma_weight": 1.0},
        "the mef-ssim loss's defaults (used by search-real / train-real)",
    ),
    "mertens-0.1-win8": (
        {"mean_weight": 0.1, "mean_target": "mertens", "mean_window": 8, "chroma_weight": 0.0},
        "patch 8 instead of 16",
    ),
    "mertens-0.1-win32": (
        {"mean_weight": 0.1, "mean_target": "mertens", "mean_window": 32, "chroma_weight": 0.0},
        "patch 32 instead of 16",
    ),
    "mertens-0.1-chroma": (
        {"mean_weight": 0.1, "mean_target": "mertens", "chroma_weight": 1.0},
        "with DeepFuse's chroma term",
    ),
}


def train_variant(name: str, loss_args: dict, args: argparse.Namespace) -> Path:
    """Retrain the architecture with ``loss_args`` (skipped when the run already finished)."""
    runs = args.out / "runs"
    run = runs / f"objective-{name}"
    if (run / "done").exists():
        return run
    cmd = [
        sys.executable, "-m", "nas.train", "--config", "train-pyramid", "--model", args.arch,
        "--data", str(args.data), "--epochs", str(args.epochs), "--crop", str(args.crop),
        "--samples-per-epoch", str(args.samples), "--seed", "0", "--no-progress",
        "--set", f"loss_args={json.dumps(loss_args)}", f"eval_batches={args.eval_batches}",
        "--run-name", run.name, "--runs-dir", str(runs),
    ]  # fmt: skip
    if run.exists():
        cmd.append("--resume")
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    (run / "done").write_text(f"{time.perf_counter() - t0:.1f} s\n")
    return run


def held_out_pairs(root: Path) -> list[dict]:
    """Full frames of the ``val`` and ``test`` scenes, the widest-gap pair of each."""
    pairs = []
    for split in ("val", "test"):
        ds = SequenceFolder(root, split, pair_mode="extreme")
        pairs += [ds[i] for i in range(len(ds))]
    return pairs


def score(fuser, pairs: list[dict]) -> dict[str, list[float]]:
    """Per-pair MEF-SSIM, Q^AB/F, RMS contrast and colourfulness of one method."""
    out: dict[str, list[float]] = {"mef_ssim": [], "qabf": [], "contrast": [], "colour": []}
    for p in pairs:
        a, b = p["under"][None], p["over"][None]
        with torch.no_grad():
            f = fuser.model(a, b).clamp(0, 1)
        m = pair_metrics(f, a, b)
        f8 = quantize8(f)
        out["mef_ssim"].append(m["mef_ssim"])
        out["qabf"].append(m["qabf"])
        out["contrast"].append(float(rms_contrast(f8)[0]))
        out["colour"].append(float(colourfulness(f8)[0]))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data/sequences"))
    p.add_argument("--arch", default=ARCH)
    p.add_argument("--out", type=Path, default=Path("results/objective_study"))
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--crop", type=int, default=160)
    p.add_argument("--samples", type=int, default=128)
    p.add_argument("--eval-batches", type=int, default=12)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = p.parse_args(argv)
    if not args.data.is_dir():
        p.error(f"--data '{args.data}' is not a folder of exposure sequences")
    torch.set_num_threads(args.threads)
    runs = {v: train_variant(v, VARIANTS[v][0], args) for v in args.variants}
    pairs = held_out_pairs(args.data)
    methods = {"mertens-default": "mertens-default", "average": "average", **runs}
    scores = {
        k: score(resolve_model(str(r), allow_classical=True), pairs) for k, r in methods.items()
    }
    ref = {k: sum(v) / len(v) for k, v in scores["mertens-default"].items()}
    rows = []
    for k, s in scores.items():
        mean = {m: sum(v) / len(v) for m, v in s.items()}
        rows.append(
            {
                "objective": k,
                "loss_args": json.dumps(VARIANTS[k][0]) if k in VARIANTS else "(classical)",
                "MEF-SSIM": mean["mef_ssim"],
                "Q^AB/F": mean["qabf"],
                "contrast / Mertens": mean["contrast"] / ref["contrast"],
                "colourfulness / Mertens": mean["colour"] / ref["colour"],
                "what it tests": VARIANTS[k][1] if k in VARIANTS else "",
            }
        )
    df = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out / "table.csv", index=False, float_format="%.5f")
    fmt = {"MEF-SSIM": 4, "Q^AB/F": 4, "contrast / Mertens": 3, "colourfulness / Mertens": 3}
    shown = df.copy()
    for c, d in fmt.items():
        shown[c] = shown[c].map(lambda x, d=d: f"{x:.{d}f}")
    head = (
        f"Held-out sequences scenes (val + test splits, {len(pairs)} scenes, full frames, "
        f"widest-gap pair), {args.epochs} epochs x {args.samples} crops of {args.crop} px per "
        "variant, seed 0, best validation checkpoint.\n\n"
    )
    text = head + markdown_table(shown, list(shown.columns)) + "\n"
    atomic_write_text(args.out / "table.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
