"""Ghosting view: fused crops of the moving region of each real misaligned pair, side by side.

The moving region is found from the inputs alone: both exposures are turned to luminance,
each normalised to zero mean and unit deviation in every ``--window`` x ``--window`` block,
and the block where the two disagree most (largest mean absolute difference of the normalised
luminance, among blocks with texture in both) is the one a static scene cannot explain. The
fused outputs of every method are cropped there and put side by side, labelled; the inputs
themselves are not written (they stay out of the repository).

    python -m nas.evaluate --protocol mefb --data ../shared/data/misaligned --threads 1 \\
        --models results/mefb/models/searched-pyramid-long-eta0.5.pt \\
        results/mefb/models/searched-misaligned-eta0.5.pt mertens-default average \\
        --save-fused results/tmp/misaligned-fused --out results/mefb/eval-misaligned-pyramid
    python benchmarks/ghosting_view.py --fused results/tmp/misaligned-fused \\
        --models average mertens-default searched-misaligned-eta0.5 \\
        searched-pyramid-long-eta0.5 --out results/mefb/ghosting
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from nas.data.io import load_image

ROOT = Path(__file__).resolve().parent.parent


def _luma(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None, None]


def moving_block(a: torch.Tensor, b: torch.Tensor, window: int) -> tuple[int, int]:
    """Top-left (y, x) of the ``window``-sized block where the two exposures' locally
    normalised luminance differ most. a, b: (3, H, W) in [0, 1]."""
    k = window // 4

    def normalised(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = _luma(x)
        mu = F.avg_pool2d(y, k, 1, k // 2, count_include_pad=False)[
            ..., : y.shape[-2], : y.shape[-1]
        ]
        var = F.avg_pool2d((y - mu) ** 2, k, 1, k // 2, count_include_pad=False)
        sd = var[..., : y.shape[-2], : y.shape[-1]].sqrt()
        return (y - mu) / (sd + 0.02), sd

    na, sa = normalised(a)
    nb, sb = normalised(b)
    diff = (na - nb).abs() * ((sa > 0.02) & (sb > 0.02))
    score = F.avg_pool2d(diff, window, stride=max(1, window // 4))
    i = int(torch.argmax(score))
    gy, gx = divmod(i, score.shape[-1])
    return gy * max(1, window // 4), gx * max(1, window // 4)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "misaligned")
    p.add_argument("--fused", type=Path, required=True, help="<fused>/<model>/<scene>.png")
    p.add_argument("--models", nargs="+", required=True)
    p.add_argument("--window", type=int, default=192)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "mefb" / "ghosting")
    args = p.parse_args(argv)
    from PIL import Image, ImageDraw

    args.out.mkdir(parents=True, exist_ok=True)
    for scene in sorted(d for d in args.data.iterdir() if d.is_dir()):
        files = sorted(f for f in scene.iterdir() if f.suffix.lower() in (".png", ".jpg"))
        a, b = (load_image(f) for f in files[:2])
        w = min(args.window, *a.shape[-2:])
        y, x = moving_block(a, b, w)
        tiles = []
        for m in args.models:
            img = Image.open(args.fused / m / f"{scene.name}.png").convert("RGB")
            tiles.append(img.crop((x, y, x + w, y + w)).resize((2 * w, 2 * w), Image.NEAREST))
        canvas = Image.new("RGB", (sum(t.width for t in tiles), 2 * w + 20), "white")
        for i, (m, t) in enumerate(zip(args.models, tiles)):
            canvas.paste(t, (i * t.width, 20))
            ImageDraw.Draw(canvas).text((i * t.width + 4, 4), m, fill="black")
        path = args.out / f"{scene.name}.jpg"
        canvas.save(path, quality=90)
        print(f"{scene.name}: moving block at y={y} x={x} ({w} px) -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
