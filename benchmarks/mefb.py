"""Real photos end to end: search and retrain on real exposure sequences, evaluate on MEFB.

    python benchmarks/mefb.py                      # train what is missing, then evaluate
    python benchmarks/mefb.py --phase evaluate     # only evaluate the shipped model files
    python benchmarks/mefb.py --budget gpu         # the GPU budget (see BUDGETS)

Data: ``--data`` (default ``../shared/data`` next to the repository) must hold
``sequences/`` (training and validation: 81 real bracketed scenes), ``mefb/`` (MEFB's 100
real pairs, the test set: never trained, searched, tuned or selected on), ``reference/``
(4 scenes with a reference image) and ``misaligned/`` (5 real misaligned pairs).

Phase ``train`` (skipped per model when ``results/mefb/models/<name>.pt`` exists, unless
``--retrain``):

1. three searches with the no-reference objective (``loss: mef-ssim``) on the sequences:
   the general space at eta 0 and eta 0.5, and the misaligned space at eta 0.5 (trained on
   the sequences warped by random homographies);
2. the three derived nets retrained from scratch, next to CRMEF's two published genotypes
   (at the searched width, so the comparison is of genotypes) and the four baselines, every
   one with the same loss, data, crop, batch, epochs and optimiser (Adam, cosine);
3. each trained network written as ``results/mefb/models/<name>.pt`` (architecture record +
   weights, selected by validation MEF-SSIM on the sequences' val scenes), with its
   training time in ``results/mefb/training.csv``.

Phase ``evaluate``: MEFB's protocol (:func:`nas.mefb.evaluate_folder`, the library behind
``python -m nas.evaluate --protocol mefb``) on MEFB (every network for registered pairs and
the classical ``mertens`` and ``average``), on ``reference/`` and on ``misaligned/`` (every
model, the misaligned variants included). ``--jobs`` models run at a time, each in its own
process with ``--threads`` threads (defaults 2 and 1: on 2 cores each model, Mertens too, is
timed on one core); the runs are merged into one table per data set. Tables, plot and a few
fused outputs land under ``results/mefb/``. The model files alone reproduce it.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nas.baselines import width_kwargs  # noqa: E402
from nas.models import resolve_model, save_model  # noqa: E402
from nas.search import SearchConfig, run_search  # noqa: E402
from nas.train import TrainConfig, run_train  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data"

#: Short searches need larger steps than the paper's 3e-4 (the ``small`` preset's values).
_FAST_SGD = dict(w_lr=0.05, w_lr_min=0.005, a_lr=1e-2)

#: Budgets. ``cpu``: about an hour on 2 CPU cores (what results/mefb/ was made with).
#: ``gpu``: the paper-scale counterpart for one GPU (wider nets, larger crops, more epochs).
BUDGETS: dict[str, dict] = {
    "cpu": dict(
        channels=16,
        max_side=640,
        search=dict(epochs=16, warmup_epochs=4, batch=4, crop=96, eval_batches=2, **_FAST_SGD),
        search_misaligned=dict(
            epochs=8, warmup_epochs=2, batch=4, crop=64, eval_batches=2, **_FAST_SGD
        ),
        train=dict(epochs=30, batch=4, crop=96, eval_batches=2, lr=1e-3, lr_min=1e-5),
    ),
    # seconds: checks that the script runs end to end (not a result)
    "smoke": dict(
        channels=8,
        max_side=256,
        search=dict(epochs=1, warmup_epochs=0, batch=2, crop=48, eval_batches=1),
        search_misaligned=dict(epochs=1, warmup_epochs=0, batch=2, crop=48, eval_batches=1),
        train=dict(epochs=1, batch=2, crop=48, eval_batches=1, steps_per_epoch=2),
    ),
    "gpu": dict(
        channels=32,
        max_side=None,
        search=dict(epochs=100, warmup_epochs=20, batch=16, crop=128, eval_batches=4),
        search_misaligned=dict(epochs=100, warmup_epochs=20, batch=16, crop=128, eval_batches=4),
        train=dict(epochs=300, batch=16, crop=128, eval_batches=4, lr=1e-3, lr_min=1e-6),
    ),
}

#: The MEFB scenes whose fused outputs are committed (ours, Mertens', the average's).
SHOW_SCENES = ("Balloons", "Arno", "ArtistPalette")

#: Whose fused outputs are shown: the searched net at the paper's eta ("Ours"), and the floor.
SHOW_MODELS = ("searched-eta0.5", "mertens", "average")
FUSED_TMP = ROOT / "results" / "tmp" / "mefb-fused"

SEARCHES = {  # name -> (space, eta)
    "searched-eta0": ("crmef", 0.0),
    "searched-eta0.5": ("crmef", 0.5),
    "searched-misaligned-eta0.5": ("crmef-misaligned", 0.5),
}
REGISTRY = ("crmef-general", "crmef-misaligned", "mef-cl", "ffmef", "lcndr", "hyperp-mb")


def _log(msg: str) -> None:
    print(f"[mefb {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def train_phase(args: argparse.Namespace, budget: dict) -> None:
    models = args.out / "models"
    models.mkdir(parents=True, exist_ok=True)
    runs = args.runs_dir
    seq = str(args.data / "sequences")
    timing_file = args.out / "training.csv"
    timings = _read_timings(timing_file)
    common = dict(
        data=seq, loss="mef-ssim", max_side=budget["max_side"], cache=True, seed=args.seed
    )

    def done(name: str) -> bool:
        return (models / f"{name}.pt").is_file() and not args.retrain

    def record(name: str, run: Path, seconds: float, what: str) -> None:
        r = resolve_model(run)
        save_model(models / f"{name}.pt", r.model, r.arch, trained=True, name=name)
        timings[name] = {"model": name, "what": what, "seconds": round(seconds, 1), "run": run.name}
        _write_timings(timing_file, timings)
        _log(f"{name}: {seconds:.0f} s -> {models / f'{name}.pt'}")

    targets: list[tuple[str, str]] = []  # (model name, arch reference)
    for name in SEARCHES:
        if not args.only or name in args.only:
            targets.append((name, ""))
    for name in REGISTRY:
        if not args.only or name in args.only:
            targets.append((name, name))

    for name, ref in targets:
        if done(name):
            _log(f"{name}: model file exists, skipped (--retrain to redo)")
            continue
        t0 = time.perf_counter()
        what = "train"
        if not ref:  # a searched net: search first
            space, eta = SEARCHES[name]
            sb = budget["search_misaligned" if "misaligned" in space else "search"]
            scfg = SearchConfig(
                space=space,
                channels=budget["channels"],
                eta=eta,
                latency_input=128,
                run_name=f"mefb-search-{name}",
                runs_dir=str(runs),
                **common,
                **sb,
            )
            _log(f"{name}: search {space} eta {eta} ({sb})")
            ref = str(_fresh(run_search, scfg, progress=not args.no_progress))
            what = f"search {time.perf_counter() - t0:.0f} s + train"
        kw = {"channels": budget["channels"]} if width_kwargs(ref, 1) else {}
        tcfg = TrainConfig(
            arch=ref, run_name=f"mefb-train-{name}", runs_dir=str(runs), **common, **kw
        )
        tcfg = replace(tcfg, **budget["train"])
        _log(f"{name}: retrain {ref} ({budget['train']})")
        run = _fresh(run_train, tcfg, progress=not args.no_progress)
        record(name, run, time.perf_counter() - t0, what)


def _fresh(fn, cfg, progress: bool) -> Path:
    """Run ``fn(cfg)`` in a fresh run folder (an interrupted earlier one is replaced)."""
    path = Path(cfg.runs_dir) / cfg.run_name
    if path.exists():
        shutil.rmtree(path)
    return Path(fn(cfg, progress=progress))


def _read_timings(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    with path.open() as f:
        return {r["model"]: r for r in csv.DictReader(f)}


def _write_timings(path: Path, rows: dict[str, dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["model", "what", "seconds", "run"])
        w.writeheader()
        w.writerows(rows.values())
    tmp.replace(path)


#: Expected cost order (slowest first), so that a pool of workers finishes together.
_COST_ORDER = ("mef-cl", "crmef-misaligned", "searched-misaligned", "lcndr", "ffmef")


def _cost_rank(ref: str) -> int:
    stem = Path(ref).stem
    return next((i for i, k in enumerate(_COST_ORDER) if stem.startswith(k)), len(_COST_ORDER))


def _evaluate_one(ref: str, data: str, kw: dict):
    """One model on one folder, in a worker process (``torch`` pinned to ``kw['threads']``)."""
    from nas.mefb import evaluate_folder

    torch.set_num_threads(kw["threads"])
    t0 = time.perf_counter()
    res = evaluate_folder([ref], data, **kw)
    _log(f"  {Path(ref).stem} on {Path(data).name}: {time.perf_counter() - t0:.0f} s")
    return res


def evaluate_phase(args: argparse.Namespace) -> int:
    """``nas.mefb.evaluate_folder`` for every model on MEFB, reference/ and misaligned/:
    ``--jobs`` models at a time, each in its own process with ``--threads`` threads (so on 2
    cores with the defaults every model, Mertens included, is timed on one core), merged
    into one table per data set (:func:`nas.mefb.merge_folder_evals`)."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from nas.mefb import merge_folder_evals
    from nas.mefb_report import folder_markdown, write_folder_eval

    models = sorted((args.out / "models").glob("*.pt"))
    if not models:
        _log(f"no model files in {args.out / 'models'}: run the train phase first")
        return 2
    refs = sorted([str(m) for m in models] + ["mertens", "average"], key=_cost_rank)
    # (folder, title, show fused outputs, include the misaligned variants). The misaligned
    # variants are for unregistered pairs: scored on misaligned/ and reference/, not on MEFB's
    # registered pairs (where their deformable alignment would cost ~40 s/MP on one core).
    sets = [
        ("mefb", "MEFB (100 real pairs)", True, False),
        ("reference", "reference (4 scenes with a reference image)", False, True),
        ("misaligned", "misaligned (5 real misaligned pairs)", False, True),
    ]
    command = "python benchmarks/mefb.py " + " ".join(sys.argv[1:])
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        for folder, title, show, with_misaligned in sets:
            data = str(args.data / folder)
            todo = [r for r in refs if with_misaligned or "misaligned" not in Path(r).stem]
            _log(f"evaluate on {title}: {len(todo)} models, {args.jobs} at a time")
            futures = []
            for ref in todo:
                kw = dict(
                    device=args.device, threads=args.threads, max_pairs=args.max_pairs, log=None
                )
                if show and Path(ref).stem in SHOW_MODELS and not args.max_pairs:
                    kw.update(save_fused=str(FUSED_TMP), save_names=list(SHOW_SCENES))
                futures.append(pool.submit(_evaluate_one, ref, data, kw))
            order = {Path(r).stem: i for i, r in enumerate(sorted(todo))}
            results = sorted(
                (f.result() for f in futures), key=lambda r: order[r.summary["name"][0]]
            )
            merged = merge_folder_evals(results, jobs=args.jobs)
            merged.meta["command"] = command
            paths = write_folder_eval(merged, args.out / f"eval-{folder}")
            print(folder_markdown(merged), flush=True)
            _log(f"wrote {paths['md']}")
    if not args.max_pairs:
        show_fused(args.out / "fused")
    return 0


def show_phase(data: Path, out: Path, models: list[str]) -> int:
    """Fuse :data:`SHOW_SCENES` with ``models`` (``nas.evaluate --save-fused``) and write the
    side-by-side JPEGs."""
    cmd = [sys.executable, "-m", "nas.evaluate", "--protocol", "mefb", "--data", str(data)]
    cmd += ["--scenes", *SHOW_SCENES, "--models", *models, "--save-fused", str(FUSED_TMP)]
    cmd += ["--out", str(ROOT / "results" / "tmp" / "mefb-show"), "--no-progress"]
    subprocess.run(cmd, check=True)
    show_fused(out, tuple(Path(m).stem for m in models))
    return 0


def show_fused(out: Path, models: tuple[str, ...] = SHOW_MODELS) -> None:
    """One JPEG per shown scene: the fused outputs of ``models`` side by side, left to right
    (no input photo: MEFB's images must not enter the repository)."""
    from PIL import Image, ImageDraw

    out.mkdir(parents=True, exist_ok=True)
    for scene in SHOW_SCENES:
        tiles = [Image.open(FUSED_TMP / m / f"{scene}.png").convert("RGB") for m in models]
        h = min(t.height for t in tiles)
        tiles = [t.resize((round(t.width * h / t.height), h)) for t in tiles]
        canvas = Image.new("RGB", (sum(t.width for t in tiles), h + 24), "white")
        x = 0
        for m, t in zip(models, tiles):
            canvas.paste(t, (x, 24))
            ImageDraw.Draw(canvas).text((x + 6, 6), m, fill="black")
            x += t.width
        if canvas.width > 1800:
            canvas = canvas.resize((1800, round(canvas.height * 1800 / canvas.width)))
        canvas.save(out / f"{scene}.jpg", quality=88)
        _log(f"fused outputs of {scene}: {out / f'{scene}.jpg'} ({', '.join(models)})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--phase", choices=["all", "train", "evaluate", "show"], default="all")
    p.add_argument(
        "--show-models",
        nargs="+",
        default=list(SHOW_MODELS),
        help="with --phase show: the models (names or model files) fused side by side",
    )
    p.add_argument("--budget", choices=sorted(BUDGETS), default="cpu")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "mefb")
    p.add_argument("--runs-dir", dest="runs_dir", type=Path, default=ROOT / "results" / "runs")
    p.add_argument("--only", nargs="*", help="train only these model names")
    p.add_argument("--retrain", action="store_true", help="retrain even if a model file exists")
    p.add_argument("--max-pairs", dest="max_pairs", type=int, help="quick evaluation")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="threads per evaluated model")
    p.add_argument("--jobs", type=int, default=2, help="models evaluated at a time")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.phase == "show":
        return show_phase(args.data / "mefb", args.out / "fused", args.show_models)
    for sub in ("sequences", "mefb", "reference", "misaligned"):
        if not (args.data / sub).is_dir():
            print(f"error: '{args.data / sub}' not found (see --data)", file=sys.stderr)
            return 2
    torch.set_num_threads(args.threads)
    budget = BUDGETS[args.budget]
    if args.phase in ("all", "train"):
        train_phase(args, budget)
    if args.phase in ("all", "evaluate"):
        return evaluate_phase(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
