"""Misaligned pairs: warp one exposure by a random homography (camera shake).

The homography comes from perturbing the four image corners by independent offsets in
``[-rho, rho]`` pixels (``rho`` defaults to 1/16 of the image's short side, i.e. 8 px for
the 128 px training crops) and solving for the perspective transform with kornia
(``get_perspective_transform``); the image is resampled with ``warp_perspective``.

Conventions:

* By default the **under** exposure is warped; the **over** exposure stays in the
  reference frame, and so does the ground truth (it was aligned with both inputs, so it
  stays aligned with the unwarped one). ``target="over"`` swaps the roles.
* ``sample["under_aligned"]`` (``"over_aligned"`` with ``target="over"``) keeps the input
  before warping, i.e. in the reference frame. Everything that scores a fusion against its
  sources uses it in place of the warped input (:func:`nas.losses.fusion_sources`): the
  no-reference training loss (MEF-SSIM), the teacher warm-up, the validation of search and
  training (:func:`nas.engine.validation_scores`) and ``nas.evaluate``'s MEF-SSIM and
  Q^AB/F (:func:`nas.measure.measure_quality`), since a fusion aligned to the reference
  cannot also match the warped structure. The network itself gets the warped input.
* ``sample["homography"]`` (``(3, 3)`` float32) maps pixel coordinates ``(x, y, 1)`` of the
  reference frame to the coordinates of the same scene point in the warped input
  (``warped(H p) = original(p)``). Warping the warped input by ``H^-1`` recovers the
  original on the valid region.
* Invalid borders (pixels of the warped input whose source lies outside the original
  image) are filled by replicating the border (``padding="border"``, softer than black)
  and flagged in ``sample["valid"]``: ``(1, H, W)`` float32, 1 where the warped input is
  real content, 0 elsewhere (bilinear support included: 1-pixel safety band).
* With ``crop_valid=True`` every image is also cropped by ``valid_margin(rho)`` pixels on
  each side; since the warped image of the frame border moves by at most ``rho`` pixels,
  the crop lies entirely in the valid region (``valid`` is then all ones). To keep a
  given output size, load the base dataset with ``crop + 2 * valid_margin(rho)``, as
  :func:`nas.data.loader.build_dataset` and :class:`nas.data.synthetic.SyntheticPairs` do.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from kornia.geometry.transform import get_perspective_transform, warp_perspective
from torch.utils.data import Dataset

from nas.data.augment import crop_sample, sample_size
from nas.data.base import make_generator, single_thread

__all__ = [
    "MisalignedPairs",
    "corner_homography",
    "default_rho",
    "misalign_sample",
    "valid_margin",
    "valid_mask",
    "warp_image",
]

_SALT = 0x3A11


def default_rho(height: int, width: int) -> float:
    """Default corner perturbation: 1/16 of the short side, in pixels."""
    return min(height, width) / 16.0


def valid_margin(rho: float) -> int:
    """Border (pixels per side) guaranteed to contain every invalid pixel for ``rho``."""
    return int(math.ceil(rho)) + 1


def corner_homography(
    height: int, width: int, rho: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random homography from corner perturbation.

    The corners ``(0, 0), (W-1, 0), (W-1, H-1), (0, H-1)`` are each moved by offsets drawn
    uniformly in ``[-rho, rho]`` (x and y independently).

    Returns:
        ``(3, 3)`` float32 matrix mapping reference pixel coordinates to warped ones.
    """
    if rho < 0:
        raise ValueError(f"rho must be >= 0, got {rho}")
    src = torch.tensor(
        [[0.0, 0.0], [width - 1.0, 0.0], [width - 1.0, height - 1.0], [0.0, height - 1.0]]
    )
    offsets = (torch.rand(4, 2, generator=generator) * 2.0 - 1.0) * rho
    dst = src + offsets
    h = get_perspective_transform(src[None].double(), dst[None].double())[0]
    return (h / h[2, 2]).float()


def warp_image(
    image: torch.Tensor,
    homography: torch.Tensor,
    *,
    padding: str = "border",
    mode: str = "bilinear",
) -> torch.Tensor:
    """Warp ``(C, H, W)`` or ``(B, C, H, W)`` by ``homography`` (``(3, 3)`` or ``(B, 3, 3)``).

    ``out(H p) = image(p)``; pixels mapping outside the image follow ``padding``
    (``"border"``, ``"zeros"`` or ``"reflection"``). Output keeps the input size and dtype;
    values of a ``[0, 1]`` image stay in ``[0, 1]`` (bilinear is a convex combination).
    """
    x = image[None] if image.ndim == 3 else image
    m = homography[None] if homography.ndim == 2 else homography
    if m.shape[0] == 1 and x.shape[0] > 1:
        m = m.expand(x.shape[0], 3, 3)
    h, w = x.shape[-2:]
    y = warp_perspective(
        x, m.to(x.dtype), (h, w), mode=mode, padding_mode=padding, align_corners=True
    )
    return y[0] if image.ndim == 3 else y


def valid_mask(homography: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(1, H, W)`` float32 mask: 1 where ``warp_image`` output is real content, else 0."""
    ones = torch.ones(1, height, width)
    w = warp_image(ones, homography, padding="zeros")
    return (w > 0.999).float()


def misalign_sample(
    sample: dict[str, Any],
    generator: torch.Generator | None = None,
    *,
    rho: float | None = None,
    target: str = "under",
    padding: str = "border",
    crop_valid: bool = False,
) -> dict[str, Any]:
    """Warp ``sample[target]`` by a random corner homography; add ``valid`` and ``homography``.

    Args:
        sample: dict with ``"under"``, ``"over"`` (``(3, H, W)``), optionally ``"gt"``.
        generator: source of the 8 corner offsets.
        rho: corner perturbation in pixels (default :func:`default_rho`).
        target: which input moves (``"under"`` default, or ``"over"``).
        padding: fill of the invalid border (see :func:`warp_image`).
        crop_valid: crop ``valid_margin(rho)`` pixels per side so only valid pixels remain
            (output is ``(H - 2m, W - 2m)``).

    Returns:
        New sample; ``valid`` is ``(1, H', W')`` float32, ``homography`` ``(3, 3)`` float32
        in the output pixel grid. An existing ``valid`` mask is combined (logical and).
    """
    if target not in ("under", "over"):
        raise ValueError(f"target must be 'under' or 'over', got {target!r}")
    h, w = sample_size(sample)
    rho = default_rho(h, w) if rho is None else float(rho)
    m = valid_margin(rho)
    if crop_valid and (h <= 2 * m or w <= 2 * m):
        raise ValueError(f"image {h}x{w} too small for crop_valid with rho={rho} (margin {m})")
    hom = corner_homography(h, w, rho, generator)
    out = dict(sample)
    out[target] = warp_image(sample[target], hom, padding=padding)
    out[f"{target}_aligned"] = sample[target]  # what the fusion is scored against
    valid = valid_mask(hom, h, w)
    if isinstance(sample.get("valid"), torch.Tensor):
        valid = valid * warp_image(sample["valid"], hom, padding="zeros").gt(0.999).float()
    out["valid"] = valid
    out["homography"] = hom
    if crop_valid:
        out = crop_sample(out, m, m, h - 2 * m, w - 2 * m)
    return out


class MisalignedPairs(Dataset):
    """Wrap any pair dataset so that one input of every sample is warped.

    Args:
        dataset: dataset of sample dicts (``under``/``over``/``gt``/``name``).
        rho: corner perturbation in pixels (default: 1/16 of each sample's short side).
        target: input to warp, ``"under"`` (default) or ``"over"``.
        seed: seed of the homographies; sample ``i`` at epoch ``e`` always gets the same
            one (generator seeded by ``(seed, i, e)``), in any worker.
        crop_valid: crop the invalid border away (output smaller by ``2 * valid_margin``).
        padding: fill of invalid border pixels.

    The epoch follows the wrapped dataset's ``vary_with_epoch`` (fixed for evaluation
    splits); :meth:`set_epoch` is forwarded to the wrapped dataset.
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        rho: float | None = None,
        target: str = "under",
        seed: int = 0,
        crop_valid: bool = False,
        padding: str = "border",
    ) -> None:
        if target not in ("under", "over"):
            raise ValueError(f"target must be 'under' or 'over', got {target!r}")
        self.dataset = dataset
        self.rho = rho
        self.target = target
        self.seed = int(seed)
        self.crop_valid = crop_valid
        self.padding = padding
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch here and in the wrapped dataset."""
        self.epoch = int(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.dataset[index]
        epoch = self.epoch if getattr(self.dataset, "vary_with_epoch", True) else 0
        if index < 0:
            index += len(self)
        g = make_generator(self.seed, index, epoch, _SALT)
        with single_thread():
            return misalign_sample(
                sample,
                g,
                rho=self.rho,
                target=self.target,
                padding=self.padding,
                crop_valid=self.crop_valid,
            )
