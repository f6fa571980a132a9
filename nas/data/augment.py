"""Paired geometric augmentation: one random draw, applied to every image of a sample.

A sample is a dict whose image entries (``"under"``, ``"over"``, ``"gt"``, ``"valid"``,
each ``(C, H, W)``) share one spatial size. Every function here transforms all of them
identically, and keeps an optional ``"homography"`` entry (``(3, 3)``, mapping
reference-frame pixel coordinates to the warped input's coordinates, see
:mod:`nas.data.misalign`) consistent with the new pixel grid.

Random draws come from an explicit ``torch.Generator`` in a fixed order (crop top, crop
left, horizontal flip, vertical flip, rotation), so results are reproducible.
"""

from __future__ import annotations

from typing import Any

import torch

from nas.data.io import PairSizeError, resize_image

__all__ = [
    "IMAGE_KEYS",
    "PairAugment",
    "center_crop",
    "crop_sample",
    "ensure_min_size",
    "flip_rot_sample",
    "image_keys",
    "random_crop",
    "random_flip_rot",
    "sample_size",
]

#: Sample entries treated as images (transformed together).
IMAGE_KEYS = ("under", "over", "gt", "valid", "under_aligned", "over_aligned")

Sample = dict[str, Any]


def image_keys(sample: Sample) -> list[str]:
    """The image entries present in ``sample``."""
    return [k for k in IMAGE_KEYS if isinstance(sample.get(k), torch.Tensor)]


def sample_size(sample: Sample) -> tuple[int, int]:
    """Common ``(H, W)`` of the sample's images; :class:`PairSizeError` if they differ."""
    keys = image_keys(sample)
    if not keys:
        raise ValueError("sample has no image entries")
    sizes = {k: tuple(sample[k].shape[-2:]) for k in keys}
    first = sizes[keys[0]]
    if any(s != first for s in sizes.values()):
        raise PairSizeError(f"images of sample {sample.get('name', '?')!r} differ in size: {sizes}")
    return first  # type: ignore[return-value]


def _conjugate(sample: Sample, g: torch.Tensor) -> None:
    """Update ``sample["homography"]`` for a pixel-grid change ``g`` (old -> new coords)."""
    h = sample.get("homography")
    if isinstance(h, torch.Tensor):
        g = g.to(h.dtype)
        sample["homography"] = g @ h @ torch.linalg.inv(g)


def crop_sample(sample: Sample, top: int, left: int, height: int, width: int) -> Sample:
    """Crop every image to rows ``top:top+height``, columns ``left:left+width``.

    Returns a new dict (other entries shared). The homography, if any, is re-expressed
    in the cropped pixel grid.
    """
    out = dict(sample)
    for k in image_keys(sample):
        out[k] = sample[k][..., top : top + height, left : left + width]
    g = torch.tensor([[1.0, 0.0, -left], [0.0, 1.0, -top], [0.0, 0.0, 1.0]], dtype=torch.float64)
    _conjugate(out, g)
    return out


def ensure_min_size(sample: Sample, size: int) -> Sample:
    """Upscale (bilinear) all images so the short side is at least ``size`` pixels.

    A no-op for images already big enough. The ``"valid"`` mask is re-binarised
    (``> 0.5``) after resizing; a homography is rescaled accordingly.
    """
    h, w = sample_size(sample)
    if min(h, w) >= size:
        return sample
    s = size / min(h, w)
    nh, nw = max(size, round(h * s)), max(size, round(w * s))
    out = dict(sample)
    for k in image_keys(sample):
        r = resize_image(sample[k], (nh, nw))
        out[k] = (r > 0.5).to(r.dtype) if k == "valid" else r
    # resize_image uses align_corners=False: x_new = (x + 0.5) * s - 0.5
    sx, sy = nw / w, nh / h
    g = [[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]]
    _conjugate(out, torch.tensor(g, dtype=torch.float64))
    return out


def random_crop(sample: Sample, size: int, generator: torch.Generator | None = None) -> Sample:
    """Random ``size x size`` crop (same window for every image).

    Images smaller than ``size`` are upscaled first (:func:`ensure_min_size`).
    Draws ``top`` then ``left`` from ``generator``.
    """
    sample = ensure_min_size(sample, size)
    h, w = sample_size(sample)
    top = int(torch.randint(0, h - size + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - size + 1, (1,), generator=generator))
    return crop_sample(sample, top, left, size, size)


def center_crop(sample: Sample, size: int) -> Sample:
    """Deterministic central ``size x size`` crop (upscaling first if too small)."""
    sample = ensure_min_size(sample, size)
    h, w = sample_size(sample)
    return crop_sample(sample, (h - size) // 2, (w - size) // 2, size, size)


def flip_rot_sample(sample: Sample, hflip: bool, vflip: bool, k: int) -> Sample:
    """Apply horizontal flip, vertical flip, then ``k`` counter-clockwise 90-degree turns."""
    out = dict(sample)
    keys = image_keys(sample)
    h, w = sample_size(sample)
    d = torch.float64
    if hflip:
        for key in keys:
            out[key] = torch.flip(out[key], dims=(-1,))
        _conjugate(out, torch.tensor([[-1.0, 0, w - 1], [0, 1, 0], [0, 0, 1]], dtype=d))
    if vflip:
        for key in keys:
            out[key] = torch.flip(out[key], dims=(-2,))
        _conjugate(out, torch.tensor([[1.0, 0, 0], [0, -1, h - 1], [0, 0, 1]], dtype=d))
    for _ in range(k % 4):
        for key in keys:
            out[key] = torch.rot90(out[key], 1, dims=(-2, -1))
        # torch.rot90(k=1): new[y', x'] = old[x', W-1-y'], i.e. (x, y) -> (y, W-1-x)
        _conjugate(out, torch.tensor([[0.0, 1, 0], [-1, 0, w - 1], [0, 0, 1]], dtype=d))
        h, w = w, h
    for key in keys:
        out[key] = out[key].contiguous()
    return out


def random_flip_rot(
    sample: Sample,
    generator: torch.Generator | None = None,
    *,
    flips: bool = True,
    rot90: bool = True,
) -> Sample:
    """Random horizontal / vertical flips (p = 0.5 each) and 90-degree rotations.

    The three draws (hflip, vflip, k) are always made, so the generator advances the
    same way whatever the options. Non-square images only get ``k`` in {0, 2}.
    """
    r = torch.randint(0, 2, (2,), generator=generator).tolist()
    k = int(torch.randint(0, 4, (1,), generator=generator))
    h, w = sample_size(sample)
    if not rot90:
        k = 0
    elif h != w:
        k = 2 * (k % 2)
    if not flips:
        r = [0, 0]
    return flip_rot_sample(sample, bool(r[0]), bool(r[1]), k)


class PairAugment:
    """Crop + flips + rotations, identical on every image of a sample.

    Args:
        crop: patch size (``None``: keep the full image). The CRMEF paper trains on
            128 x 128 patches.
        random: random crop window and random flips/rotations (training); when False,
            a central crop and no flip/rotation (evaluation).
        flips: enable random horizontal/vertical flips.
        rot90: enable random 90-degree rotations.

    Call as ``aug(sample, generator)``; returns a new sample dict.
    """

    def __init__(
        self, crop: int | None = 128, *, random: bool = True, flips: bool = True, rot90: bool = True
    ) -> None:
        if crop is not None and crop <= 0:
            raise ValueError(f"crop must be a positive int or None, got {crop}")
        self.crop = crop
        self.random = random
        self.flips = flips
        self.rot90 = rot90

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        if self.crop is not None:
            sample = (
                random_crop(sample, self.crop, generator)
                if self.random
                else center_crop(sample, self.crop)
            )
        if self.random and (self.flips or self.rot90):
            sample = random_flip_rot(sample, generator, flips=self.flips, rot90=self.rot90)
        return sample

    def __repr__(self) -> str:
        return (
            f"PairAugment(crop={self.crop}, random={self.random}, "
            f"flips={self.flips}, rot90={self.rot90})"
        )
