"""Washed-out check on MEFB: luminance RMS contrast and colourfulness of fused images.

RMS contrast = standard deviation of the Rec. 601 luminance (0-1); colourfulness = Hasler &
Suesstrunk (2003), ``sqrt(sd_rg^2 + sd_yb^2) + 0.3 sqrt(mu_rg^2 + mu_yb^2)`` on 0-255 RGB.
Both are averaged over the pairs and printed beside a reference method's, as ratios.

    python benchmarks/look_stats.py --models results/mefb/models/searched-pyramid-eta0.5.pt \
        --reference mertens-default --out results/mefb/look-pyramid.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch

from nas.data.io import load_image
from nas.metrics import colourfulness, rms_contrast
from nas.models import resolve_model
from nas.report import markdown_table
from nas.utils import atomic_write_text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="../shared/data/mefb")
    p.add_argument("--models", nargs="+", required=True)
    p.add_argument("--reference", default="mertens-default")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    refs = [args.reference, "average", *args.models]
    fusers = {r: resolve_model(r, allow_classical=True) for r in refs}
    sums = {r: [0.0, 0.0] for r in refs}
    scenes = sorted(d for d in Path(args.data).iterdir() if d.is_dir())
    for sc in scenes:
        files = {f.stem.lower()[-2:]: f for f in sc.iterdir()}  # MEFB: <Scene>_A / _B, any case
        a = load_image(files["_a"]).unsqueeze(0)
        b = load_image(files["_b"]).unsqueeze(0)
        for r, m in fusers.items():
            with torch.no_grad():
                f = m.model(a, b)[0].clamp(0, 1)
            f = torch.round(f * 255) / 255  # as saved / scored (8 bits)
            sums[r][0] += float(rms_contrast(f[None])[0])
            sums[r][1] += float(colourfulness(f[None])[0])
    n = len(scenes)
    base = sums[args.reference]
    rows = [
        {
            "method": Path(r).stem,
            "RMS contrast": f"{s[0] / n:.4f}",
            "contrast ratio": f"{s[0] / base[0]:.3f}",
            "colourfulness": f"{s[1] / n:.2f}",
            "colourfulness ratio": f"{s[1] / base[1]:.3f}",
        }
        for r, s in sums.items()
    ]
    table = markdown_table(pd.DataFrame(rows), list(rows[0]))
    text = f"MEFB {n} pairs, full resolution, fused outputs quantised to 8 bits.\n\n{table}\n"
    print(text)
    if args.out:
        atomic_write_text(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
