"""``python -m nas.demo``: the whole pipeline, small, on photos bundled with scikit-image.

1. profile: a quick latency table of the tiny search space on this device;
2. search: the latency-penalised DARTS search (tiny preset, eta 0 and 0.5);
3. export: genotype, inherited weights, size and predicted latency of each derived net;
4. retrain: the derived nets, the four baselines and CRMEF's published general genotype,
   all with the same (tiny) budget and data;
5. evaluate: quality, size, measured latency and speed-ups in one table;
6. plot: the latency-accuracy trade-off; and fuse one bundled exposure pair.

Everything runs on the synthetic exposure pairs made from the bundled photos, with a demo
budget of a few minutes on 2 CPU cores: the numbers show the pipeline works, they are not a
benchmark of the methods (see the README for the longer configurations).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import time
from pathlib import Path

import torch

from nas.cli import add_device
from nas.utils import resolve_device

DEMO_DIR = Path("results") / "demo"
BASELINES = ("mef-cl", "ffmef", "lcndr", "hyperp-mb")


def _step(title: str) -> float:
    print(f"\n=== {title} ===", flush=True)
    return time.perf_counter()


def _done(t0: float) -> None:
    print(f"--- {time.perf_counter() - t0:.1f} s", flush=True)


def run_demo(out: Path, device: str, epochs: int, fresh: bool) -> Path:
    """Run every stage into ``out``; returns the evaluation CSV."""
    from nas import profile
    from nas.baselines import width_kwargs
    from nas.evaluate import evaluate_models, write_eval
    from nas.search import PRESETS as SEARCH_PRESETS
    from nas.search import SearchConfig, run_search
    from nas.train import PRESETS as TRAIN_PRESETS
    from nas.train import TrainConfig, run_train

    if fresh and out.exists():
        shutil.rmtree(out)
    runs = out / "runs"
    tables = out / "latency_tables"
    t_all = time.perf_counter()

    t0 = _step("1. profile: quick latency table of the tiny space on this device")
    rc = profile.main(
        [
            "--device",
            device,
            "--quick",
            "--space",
            "tiny",
            "--channels",
            "8",
            "--out",
            str(tables),
            "--no-progress",
        ]
    )
    if rc != 0:
        raise RuntimeError(f"profiling failed (exit {rc})")
    table = sorted(tables.glob("*.csv"))[-1]
    print(f"table: {table}")
    _done(t0)

    refs: list[str] = []
    for eta in (0.0, 0.5):
        t0 = _step(f"2-3. search (tiny preset, eta {eta:g}) and export")
        cfg = dataclasses.replace(
            SearchConfig(**SEARCH_PRESETS["tiny"]),
            eta=eta,
            device=device,
            latency_table=str(table),
            runs_dir=str(runs),
            run_name=f"search-tiny-eta{eta:g}",
            epochs=max(epochs + 2, 4),
        )
        run = run_search(cfg, progress=False)
        print((run / "genotype.yaml").read_text())
        print((run / "export.yaml").read_text().split("genotype:")[0])
        refs.append(str(run))
        _done(t0)

    trained: list[str] = []
    arches = [*refs, "crmef-general", *BASELINES]
    for arch in arches:
        t0 = _step(f"4. retrain {Path(arch).name} (same budget for all)")
        name = f"train-{Path(arch).name}"
        cfg = dataclasses.replace(
            TrainConfig(**TRAIN_PRESETS["tiny"]),
            arch=arch,
            channels=8 if width_kwargs(arch, 8) else None,
            device=device,
            runs_dir=str(runs),
            run_name=name,
            epochs=epochs,
        )
        trained.append(str(run_train(cfg, progress=False)))
        _done(t0)

    t0 = _step("5. evaluate: quality, size, measured latency (one run, interleaved)")
    df = evaluate_models(
        trained,
        data="synthetic",
        split="test",
        crop=64,
        max_images=8,
        device=device,
        latency_size=64,
        reps=20,
        rounds=3,
        warmup=3,
        latency_table=str(table),
    )
    paths = write_eval(df, out / "eval", argv=["(nas.demo)"])
    csv = paths["csv"]
    print(paths["md"].read_text())
    _done(t0)

    t0 = _step("6. plot the trade-off and fuse a bundled pair")
    from nas.plot import draw_tradeoff, read_eval_csv, tradeoff_frame

    frame = tradeoff_frame(read_eval_csv(csv))
    for p in draw_tradeoff(frame, out / "tradeoff", title="demo budget (tiny), synthetic test"):
        print(f"wrote {p}")
    _fuse_example(trained[1], out, device)
    _done(t0)
    print(f"\ndemo finished in {time.perf_counter() - t_all:.0f} s; outputs in {out}/")
    return csv


def _fuse_example(model_ref: str, out: Path, device: str) -> None:
    from skimage import data

    from nas.data.io import save_image
    from nas.data.synthetic import expose
    from nas.models import resolve_model
    from nas.tiling import fuse_images

    photo = torch.from_numpy(data.chelsea()).permute(2, 0, 1).float() / 255
    under = expose(photo, -2.0, gamma=2.2, shot=0.0, read=0.0)
    over = expose(photo, 2.0, gamma=2.2, shot=0.0, read=0.0)
    model = resolve_model(model_ref).model.to(device).eval()
    fused = fuse_images(model, [under, over], tile=256, overlap=32)
    for name, img in (("under", under), ("over", over), ("fused", fused)):
        save_image(img, out / f"fuse-{name}.png")
    print(f"fused {tuple(photo.shape[1:])} pair with {Path(model_ref).name}: {out}/fuse-*.png")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m nas.demo", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=DEMO_DIR, help=f"output folder ({DEMO_DIR})")
    add_device(p)
    p.add_argument("--epochs", type=int, default=12, help="retraining epochs (12)")
    p.add_argument("--keep", action="store_true", help="do not clear the output folder first")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.manual_seed(0)
    run_demo(args.out, str(resolve_device(args.device)), args.epochs, fresh=not args.keep)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
