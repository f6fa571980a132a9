"""Synthetic under/over-exposed pairs from well-exposed photos (no data set needed).

Image formation model, per sample (all draws from the sample's own generator):

1. Inverse camera response: ``L = I ** gamma`` with ``gamma ~ U(gamma_range)``
   (default ``[1.8, 2.6]``, a parametric gamma CRF around sRGB's 2.2; pass
   ``gamma_range=(2.2, 2.2)`` for a fixed response). ``I`` is the 8-bit photo in ``[0, 1]``.
2. Exposure: ``L_u = L * 2 ** -k_u`` (under), ``L_o = L * 2 ** +k_o`` (over), ``k_u`` and
   ``k_o`` drawn independently from ``U(ev_range)`` (default 1..3 EV, so the exposure
   ratio between the inputs is 4x..64x).
3. Noise in the linear domain, Poisson-Gaussian (heteroscedastic Gaussian approximation,
   Foi et al. 2008): ``L' = L_e + sqrt(a * L_e + b**2) * n``, ``n ~ N(0, 1)`` i.i.d. per
   pixel and channel, shot gain ``a ~ logU(shot_range)`` (default ``[1e-4, 2e-3]``,
   i.e. 500..10000 photo-electrons at full scale) and read noise ``b ~ logU(read_range)``
   (default ``[5e-4, 2e-3]`` of full scale). The same ``a, b`` are used for both inputs
   (same camera). At the defaults the noise is visible in the dark areas of the
   under-exposed input (a few 8-bit levels) and negligible elsewhere.
4. Clip to ``[0, 1]`` (sensor saturation), re-apply the response ``** (1 / gamma)`` and
   quantise to 8 bit (``round(255 x) / 255``).

The ground truth is the original photo (same crop). Photos: by default the colour
photographs bundled inside scikit-image (:func:`bundled_photo_paths`, read from the
installed wheel, nothing is downloaded), or any folder / list of images.

Split by photo: the photo list is partitioned with :func:`nas.data.base.split_items`
(sorted by name, shuffled by ``seed``, cut by ``ratios`` with largest-remainder rounding,
every split with a positive ratio gets at least one photo when there are at least three
photos). With the 6 bundled photos and the default 0.8/0.1/0.1 this gives 4/1/1.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from nas.data.augment import crop_sample, random_crop, random_flip_rot
from nas.data.base import (
    DATA_ERRORS,
    PairDataset,
    check_split,
    make_generator,
    split_items,
)
from nas.data.io import list_images, load_image, resize_image
from nas.data.misalign import corner_homography, valid_margin, valid_mask, warp_image

__all__ = [
    "BUNDLED_PHOTOS",
    "SyntheticPairs",
    "bundled_photo_paths",
    "expose",
    "sample_exposure_params",
    "synthesize_pair",
]

logger = logging.getLogger("nas.data")

#: Colour photographs shipped inside the scikit-image wheel (file names in
#: ``skimage/data``). ``motorcycle_right`` is left out: it is the same scene as
#: ``motorcycle_left`` (stereo pair) and could leak across splits.
BUNDLED_PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "ihc.png",
)

_SALT_SAMPLE = 0x5A7E


def bundled_photo_paths() -> list[Path]:
    """Paths of the bundled photos present in the installed scikit-image.

    Raises:
        FileNotFoundError: none of them is installed.
    """
    import skimage.data

    folder = Path(skimage.data.__file__).parent
    paths = [folder / n for n in BUNDLED_PHOTOS if (folder / n).is_file()]
    if not paths:
        raise FileNotFoundError(
            f"no bundled photo found in '{folder}' (expected some of {BUNDLED_PHOTOS})"
        )
    return paths


def _log_uniform(lo: float, hi: float, n: int, g: torch.Generator | None) -> torch.Tensor:
    u = torch.rand(n, generator=g, dtype=torch.float64)
    lo_t, hi_t = torch.tensor(lo).log(), torch.tensor(hi).log()
    return torch.exp(lo_t + (hi_t - lo_t) * u).float()


def sample_exposure_params(
    n: int = 1,
    generator: torch.Generator | None = None,
    *,
    ev_range: tuple[float, float] = (1.0, 3.0),
    gamma_range: tuple[float, float] = (1.8, 2.6),
    shot_range: tuple[float, float] = (1e-4, 2e-3),
    read_range: tuple[float, float] = (5e-4, 2e-3),
) -> dict[str, torch.Tensor]:
    """Draw ``n`` sets of formation parameters (see the module docstring).

    Returns:
        dict of ``(n,)`` float32 tensors: ``gamma``, ``ev_under`` (>= 0, applied as
        ``2 ** -ev_under``), ``ev_over`` (>= 0), ``shot`` and ``read``. Draw order is fixed:
        gamma, ev_under, ev_over, shot, read.
    """
    for name, (lo, hi) in (("ev_range", ev_range), ("gamma_range", gamma_range)):
        if not 0 <= lo <= hi:
            raise ValueError(f"{name} must satisfy 0 <= lo <= hi, got {(lo, hi)}")
    for name, (lo, hi) in (("shot_range", shot_range), ("read_range", read_range)):
        if not 0 < lo <= hi:
            raise ValueError(f"{name} must satisfy 0 < lo <= hi, got {(lo, hi)}")
    if gamma_range[0] <= 0:
        raise ValueError(f"gamma_range must be positive, got {gamma_range}")

    def unif(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=generator)

    return {
        "gamma": unif(*gamma_range),
        "ev_under": unif(*ev_range),
        "ev_over": unif(*ev_range),
        "shot": _log_uniform(*shot_range, n, generator),
        "read": _log_uniform(*read_range, n, generator),
    }


def _per_sample(v: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """Broadcastable parameter: scalar, or ``(B,)`` -> ``(B, 1, 1, 1)`` for a batch."""
    t = torch.as_tensor(v, dtype=x.dtype)
    if t.ndim == 0:
        return t
    if x.ndim == 4 and t.numel() in (1, x.shape[0]):
        return t.reshape(-1, 1, 1, 1)
    if t.numel() == 1:
        return t.reshape(())
    raise ValueError(f"parameter of shape {tuple(t.shape)} does not match image {tuple(x.shape)}")


def expose(
    image: torch.Tensor,
    ev: torch.Tensor | float,
    gamma: torch.Tensor | float,
    shot: torch.Tensor | float,
    read: torch.Tensor | float,
    generator: torch.Generator | None = None,
    *,
    quantize: bool = True,
) -> torch.Tensor:
    """Re-expose a well-exposed image by ``ev`` stops (negative = darker).

    Args:
        image: ``(3, H, W)`` or ``(B, 3, H, W)`` in ``[0, 1]`` (display-referred).
        ev: exposure change in stops, scalar or ``(B,)``.
        gamma: response exponent (linear = image ** gamma), scalar or ``(B,)``.
        shot: Poisson gain ``a`` (variance ``a * L``), scalar or ``(B,)``.
        read: Gaussian read-noise std ``b``, scalar or ``(B,)``.
        generator: noise source.
        quantize: round to 8-bit levels.

    Returns:
        Tensor of the input's shape, float32 in ``[0, 1]``.
    """
    x = image.float().clamp(0.0, 1.0)
    gamma_t = _per_sample(gamma, x)
    lin = x.pow(gamma_t) * torch.exp2(_per_sample(ev, x))
    var = _per_sample(shot, x) * lin + _per_sample(read, x) ** 2
    noise = torch.randn(lin.shape, generator=generator, dtype=lin.dtype)
    lin = (lin + var.sqrt() * noise).clamp_(0.0, 1.0)
    out = lin.pow(1.0 / gamma_t)
    if quantize:
        out = (out * 255.0).round_().div_(255.0)
    return out


def synthesize_pair(
    gt: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    params: dict[str, torch.Tensor] | None = None,
    **ranges: Any,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Under- and over-exposed versions of ``gt`` (see the module docstring).

    Args:
        gt: ``(3, H, W)`` or ``(B, 3, H, W)`` well-exposed image(s) in ``[0, 1]``.
        generator: source of parameters (if not given) and noise.
        params: output of :func:`sample_exposure_params` (drawn if None; ``n = B``).
        **ranges: forwarded to :func:`sample_exposure_params`.

    Returns:
        ``(under, over, params)``; ``under``/``over`` shaped like ``gt``, float32 in
        ``[0, 1]``, quantised to 8 bit.
    """
    n = gt.shape[0] if gt.ndim == 4 else 1
    if params is None:
        params = sample_exposure_params(n, generator, **ranges)
    p = params if gt.ndim == 4 else {k: v[0] for k, v in params.items()}
    under = expose(gt, -p["ev_under"], p["gamma"], p["shot"], p["read"], generator)
    over = expose(gt, p["ev_over"], p["gamma"], p["shot"], p["read"], generator)
    return under, over, params


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x * 255.0).round_().to(torch.uint8)


class SyntheticPairs(PairDataset):
    """Random crops of photos turned into (under, over, gt) triples on the fly.

    Args:
        photos: ``None`` (bundled scikit-image photos), a folder (scanned recursively)
            or a list of image paths.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"`` (split by photo).
        crop: patch size (default 128). ``None``: whole photos, sample ``i`` uses photo
            ``i % n_photos`` (evaluation), batch size 1 unless all photos share a size.
        length: samples per epoch (default 1024 for train, 64 otherwise; number of
            photos when ``crop`` is None).
        seed: seeds the split and every sample (generator seeded by
            ``(seed, index, epoch)``; the epoch only matters for the train split).
        ratios: ``(train, val, test)`` fractions of the photos.
        augment: random flips / 90-degree rotations (default: train split only). Crop
            positions are random in every split (deterministic by index outside train).
        max_side: photos larger than this are downscaled once at load (default 1024).
        misaligned: warp the under (or ``misalign_target``) input by a random corner
            homography (:mod:`nas.data.misalign`). The crop is taken with a margin and
            cut back after warping, so ``valid`` is all ones and the size is ``crop``.
        rho: corner perturbation in pixels (default ``crop / 16``).
        misalign_target: ``"under"`` (default) or ``"over"``.
        on_error: ``"raise"`` or ``"skip"`` for photos that cannot be read (checked at
            construction; skipped photos are logged with their path).
        ev_range, gamma_range, shot_range, read_range: formation parameters.

    Samples: ``{"under", "over", "gt"}`` ``(3, crop, crop)`` float32 in ``[0, 1]`` (8-bit
    levels), ``"name"`` (``"<photo>#<index>"``), plus ``"valid"`` ``(1, crop, crop)`` and
    ``"homography"`` ``(3, 3)`` when misaligned. Photos are kept in memory as uint8.
    """

    def __init__(
        self,
        photos: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
        *,
        split: str = "train",
        crop: int | None = 128,
        length: int | None = None,
        seed: int = 0,
        ratios: Sequence[float] = (0.8, 0.1, 0.1),
        augment: bool | None = None,
        max_side: int | None = 1024,
        misaligned: bool = False,
        rho: float | None = None,
        misalign_target: str = "under",
        on_error: str = "raise",
        ev_range: tuple[float, float] = (1.0, 3.0),
        gamma_range: tuple[float, float] = (1.8, 2.6),
        shot_range: tuple[float, float] = (1e-4, 2e-3),
        read_range: tuple[float, float] = (5e-4, 2e-3),
    ) -> None:
        super().__init__(on_error=on_error, seed=seed)
        self.split = check_split(split)
        self.vary_with_epoch = split == "train"
        if crop is not None and crop <= 0:
            raise ValueError(f"crop must be a positive int or None, got {crop}")
        if misalign_target not in ("under", "over"):
            raise ValueError(f"misalign_target must be 'under' or 'over', got {misalign_target!r}")
        self.crop = crop
        self.augment = (split == "train") if augment is None else bool(augment)
        self.misaligned = misaligned
        self.misalign_target = misalign_target
        self.rho = rho if rho is not None else (crop / 16.0 if crop is not None else None)
        self.ranges = {
            "ev_range": tuple(ev_range),
            "gamma_range": tuple(gamma_range),
            "shot_range": tuple(shot_range),
            "read_range": tuple(read_range),
        }
        sample_exposure_params(1, torch.Generator(), **self.ranges)  # validate ranges early

        if photos is None:
            paths = bundled_photo_paths()
            self.source = "bundled scikit-image photos"
        elif isinstance(photos, (str, os.PathLike)):
            folder = Path(photos)
            if not folder.is_dir():
                raise FileNotFoundError(f"photo folder not found: '{folder}'")
            paths = list_images(folder)
            if not paths:
                raise ValueError(f"no image files found in '{folder}'")
            self.source = str(folder)
        else:
            paths = [Path(p) for p in photos]
            if not paths:
                raise ValueError("empty photo list")
            self.source = f"{len(paths)} photos"
        names = [self._photo_id(p, paths) for p in paths]
        by_name = dict(zip(names, paths, strict=True))
        if len(by_name) != len(paths):
            raise ValueError("duplicate photo paths")
        chosen = split_items(names, ratios, seed)[split]
        if not chosen:
            raise ValueError(
                f"split {split!r} of {self.source} is empty: {len(paths)} photo(s) with "
                f"ratios {tuple(ratios)}; use more photos or split='all'"
            )

        self.margin = valid_margin(self.rho) if misaligned and self.rho is not None else 0
        need = None if crop is None else crop + 2 * self.margin
        self.photo_names: list[str] = []
        self.photo_paths: list[Path] = []
        self._photos: list[torch.Tensor] = []
        for name in chosen:
            path = by_name[name]
            try:
                img = load_image(path, max_side=max_side)
            except DATA_ERRORS as exc:
                if self.on_error == "raise":
                    raise
                logger.warning("skipping photo '%s': %s", path, exc)
                continue
            if need is not None and min(img.shape[-2:]) < need:
                h, w = img.shape[-2:]
                s = need / min(h, w)
                img = resize_image(img, (max(need, round(h * s)), max(need, round(w * s))))
            self.photo_names.append(name)
            self.photo_paths.append(path)
            self._photos.append(_to_uint8(img))
        if not self._photos:
            raise ValueError(f"no readable photo in split {split!r} of {self.source}")
        if length is None:
            length = len(self._photos) if crop is None else (1024 if split == "train" else 64)
        if length <= 0:
            raise ValueError(f"length must be positive, got {length}")
        self.length = int(length)

    @staticmethod
    def _photo_id(path: Path, all_paths: Sequence[Path]) -> str:
        stems = [p.stem for p in all_paths]
        return path.stem if stems.count(path.stem) == 1 else path.as_posix()

    def __len__(self) -> int:
        return self.length

    def _load(self, index: int, epoch: int) -> dict[str, Any]:
        g = make_generator(self.seed, index, epoch, _SALT_SAMPLE)
        drawn = int(torch.randint(0, len(self._photos), (1,), generator=g))
        pi = drawn if self.crop is not None else index % len(self._photos)
        gt = self._photos[pi].float().div_(255.0)
        sample: dict[str, Any] = {"gt": gt}
        if self.crop is not None:
            size = self.crop + 2 * self.margin
            sample = random_crop(sample, size, g)
        if self.augment:
            sample = random_flip_rot(sample, g)
        gt = sample["gt"]
        params = sample_exposure_params(1, g, **self.ranges)
        out: dict[str, Any] = {}
        if self.misaligned:
            h, w = gt.shape[-2:]
            rho = self.rho if self.rho is not None else min(h, w) / 16.0
            margin = self.margin if self.crop is not None else valid_margin(rho)
            hom = corner_homography(h, w, rho, g)
            # warp the clean view, then expose it: noise is not resampled by the warp
            moved = warp_image(gt, hom, padding="border")
            src_u, src_o = (moved, gt) if self.misalign_target == "under" else (gt, moved)
            p = {k: v[0] for k, v in params.items()}
            under = expose(src_u, -p["ev_under"], p["gamma"], p["shot"], p["read"], g)
            over = expose(src_o, p["ev_over"], p["gamma"], p["shot"], p["read"], g)
            out = {
                "under": under,
                "over": over,
                "gt": gt,
                "valid": valid_mask(hom, h, w),
                "homography": hom,
            }
            out = crop_sample(out, margin, margin, h - 2 * margin, w - 2 * margin)
            for k in ("under", "over", "gt", "valid"):
                out[k] = out[k].contiguous()
        else:
            under, over, _ = synthesize_pair(gt, g, params=params)
            out = {"under": under, "over": over, "gt": gt.contiguous()}
        out["name"] = f"{self.photo_names[pi]}#{index}"
        return out

    def __repr__(self) -> str:
        return (
            f"SyntheticPairs(source={self.source!r}, split={self.split!r}, "
            f"photos={self.photo_names}, crop={self.crop}, length={self.length}, "
            f"misaligned={self.misaligned})"
        )
