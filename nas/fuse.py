"""``python -m nas.fuse --model RUN_OR_NAME IMG1 IMG2 [IMG3 ...] -o OUT.png``: fuse exposures.

Fuses a user's exposures of one scene, of any size, with any model reference
(:func:`nas.models.resolve_model`: a training run, a model file, a genotype, a search run or a
registry name) or a classical method (``--model mertens`` or ``average``,
:mod:`nas.classical`). Images are read by :func:`nas.data.io.load_image` (EXIF orientation,
16-bit, grayscale and RGBA handled there) and the result is written atomically as 8-bit sRGB.

Untrained models
----------------
A registry name or a genotype file without trained weights (``ResolvedModel.trained`` false,
also a search run's inherited ``derived_init.pt``) gives a meaningless image: the command
refuses it (exit code 2) unless ``--allow-untrained`` is given, and then prints a warning.

Safety: the output may never be one of the inputs (compared after resolving links; the command
refuses before computing anything), and is written atomically (temporary file, then rename).

The fusion itself (tiling, the exposure rules, classical methods) is :mod:`nas.tiling`, whose
docstring explains ``--tile``, ``--overlap`` and ``--rule``; its names are re-exported here.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from nas import tiling
from nas.accel import prepare_inference
from nas.cli import add_device
from nas.data.io import ImageReadError, PairSizeError, load_image, save_image
from nas.tiling import (  # noqa: F401 - re-exported (nas.fuse was their home)
    ALL_RULE,
    DEFAULT_ALIGN,
    DEFAULT_OVERLAP,
    DEFAULT_STATS_MAX_PIXELS,
    DEFAULT_TILE,
    RULES,
    FuseError,
    FuseResult,
    fuse_classical,
    fuse_images,
    fuse_images_info,
    fuse_pair,
    global_norm_stats,
    mean_luminance,
    order_exposures,
    tile_spans,
    tile_weights,
)

__all__ = [*tiling.__all__, "main"]

OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
"""Output formats :func:`nas.data.io.save_image` writes."""


# --- command line -------------------------------------------------------------------------


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output(out: Path, inputs: Sequence[Path]) -> None:
    """Refuse an output that is an input (after resolving links), a folder, or of unknown type."""
    for p in inputs:
        if _same_file(out, p):
            raise FuseError(f"refusing to overwrite input image '{p}' with the output '{out}'")
    if out.is_dir():
        raise FuseError(f"output '{out}' is a folder; give a file name such as fused.png")
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise FuseError(
            f"output '{out}': unsupported suffix {out.suffix!r} (use one of "
            f"{', '.join(OUTPUT_SUFFIXES)})"
        )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m nas.fuse",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        required=True,
        help="training run, model .pt, genotype.yaml, search run or registry name",
    )
    p.add_argument("images", nargs="+", metavar="IMG", help="two or more exposures")
    p.add_argument(
        "--out",
        "-o",
        "--output",
        dest="out",
        required=True,
        help="fused image (.png, .jpg, .tif, ...)",
    )
    add_device(p)
    p.add_argument(
        "--tile",
        type=int,
        default=DEFAULT_TILE,
        help=f"tile side in pixels, default {DEFAULT_TILE}; 0: no tiling",
    )
    p.add_argument(
        "--overlap",
        type=int,
        default=DEFAULT_OVERLAP,
        help=f"tile overlap in pixels, default {DEFAULT_OVERLAP} (each tile edge keeps 3/8 of it "
        "as context; see the module docstring)",
    )
    p.add_argument(
        "--rule",
        choices=[*RULES, ALL_RULE],
        default=None,
        help="more than two exposures: fuse the darkest and brightest (extremes, default for "
        "networks), all pair by pair darkest to brightest (sequential), or all at once (all: "
        "classical methods only, their default)",
    )
    p.add_argument("--channels", type=int, help="width of crmef-* registry models (untrained only)")
    p.add_argument(
        "--allow-untrained",
        action="store_true",
        help="fuse with a model that has no trained weights (gives a meaningless image)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    from nas.models import ModelRefError, resolve_model
    from nas.utils import resolve_device

    args = build_parser().parse_args(argv)
    try:
        if len(args.images) < 2:
            raise FuseError("need at least two exposures (IMG1 IMG2 ...)")
        if args.tile < 0 or args.overlap < 0:
            raise FuseError("--tile and --overlap must be >= 0")
        if args.tile > 0 and args.overlap >= args.tile:
            raise FuseError(f"--overlap ({args.overlap}) must be smaller than --tile ({args.tile})")
        inputs = [Path(p) for p in args.images]
        out = Path(args.out)
        check_output(out, inputs)
        device = resolve_device(args.device)
        kwargs = {"channels": args.channels} if args.channels else {}
        resolved = resolve_model(args.model, allow_classical=True, **kwargs)
        rule = args.rule or (ALL_RULE if resolved.classical else "extremes")
        if rule == ALL_RULE and not resolved.classical:
            raise FuseError(
                f"--rule all fuses every exposure at once, which only the classical methods "
                f"do; {resolved.name} fuses pairs: use --rule extremes or sequential"
            )
        if not resolved.trained:
            what = (
                f"model {resolved.name!r} ({resolved.source}) has no trained weights: "
                "its output is not a meaningful fusion"
            )
            if not args.allow_untrained:
                raise FuseError(
                    f"{what}. Pass a training run or a trained model file, or "
                    "--allow-untrained to fuse anyway"
                )
            bar = "!" * 78
            print(f"{bar}\nWARNING: {what}.\n{bar}", file=sys.stderr)
        images = [load_image(p) for p in inputs]
        names = [str(p) for p in inputs]
        if resolved.classical:
            t0 = time.perf_counter()
            res = fuse_classical(resolved.model, images, rule, names=names, device=device)
        else:
            model = prepare_inference(resolved.model, device)  # channels_last on CUDA
            info = resolved.registry_info
            if info is not None and info.global_context and args.tile > 0:
                h, w = images[0].shape[-2:]
                if max(h, w) > args.tile:
                    print(
                        f"note: {resolved.name} attends over the whole image; tiles of "
                        f"{args.tile} px approximate that (use --tile 0 if memory allows)",
                        file=sys.stderr,
                    )
            # a pyramid blend spans the whole image: tiles would each build their own
            tile = 0 if resolved.pyramid_blend else args.tile
            t0 = time.perf_counter()
            res = fuse_images_info(
                model, images, tile, args.overlap, rule=rule, names=names, device=device
            )
        save_image(res.image, out, protected=inputs)
    except (
        FuseError,
        ModelRefError,
        ImageReadError,
        PairSizeError,
        FileNotFoundError,
        ValueError,
        RuntimeError,
    ) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    dt = time.perf_counter() - t0
    used = ", ".join(
        f"{inputs[i].name} (luma {lum:.3f})" for i, lum in zip(res.used, res.luminance)
    )
    h, w = res.image.shape[-2:]
    print(
        f"fused {len(res.used)} of {len(inputs)} exposures [{rule}: {used}] with "
        f"{resolved.name} on {device}, {w}x{h}, {dt:.1f} s -> {out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
