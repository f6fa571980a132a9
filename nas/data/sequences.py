"""Real bracketed exposure sequences without ground truth, one folder per scene.

**Layout**::

    <root>/<source>/<scene>/<frame>.jpg     frames in any order, any file names
    <root>/<scene>/<frame>.png              (any depth works)

**Scan.** A *sequence* is any folder found recursively under ``root`` that directly holds
image files (:func:`~nas.data.io.is_image_file`; hidden files and folders are skipped).
Its name is its path relative to ``root`` in posix form (``"hdrps/Foo"``); sequences are
sorted by :func:`~nas.data.io.natural_key` of the name. A ``root`` that itself holds
images directly is not a sequences tree (:class:`ValueError`). A sequence folder with a
single image raises a :class:`ValueError` naming the folder and the file, or is logged
and skipped with ``on_error="skip"``.

**Exposure order.** File names say nothing about exposure, so at construction every
frame of the split's sequences is read once at low resolution (``load_image(p,
max_side=128)``, a reduced-scale JPEG decode) and its mean Rec. 709 luminance
(:func:`~nas.data.folder.mean_luminance`) is stored; frames are ordered darkest first
(ties by natural file-name order). For the bundled 81-scene / 514-frame set this takes
about 1.5 s on 2 CPU cores (proportionally less for one split). An unreadable frame
raises :class:`~nas.data.io.ImageReadError` naming the file, or (``on_error="skip"``) is
dropped with a warning; a sequence left with fewer than 2 readable frames then raises /
is skipped. Frame sizes are read from the file headers (no decode, EXIF orientation
applied): frames of one sequence with different sizes raise
:class:`~nas.data.io.PairSizeError` naming both files (skipped with ``on_error="skip"``),
unless ``size_mismatch="resize"``, where at load time the over-exposed frame is resized
(bilinear) to the size of the darker frame of the pair. Sizes are checked again at load
time (same error).

**Pair rule.** With luminances ``l_0 <= ... <= l_{N-1}``, the candidate pairs are the
``(i, j)``, ``i < j``, with a real exposure gap ``l_j - l_i >= min_gap`` (default
``0.15``), among the frames whose mean luminance lies in ``[0.02, 0.98]`` (nearly black
or white frames carry little content). If that leaves no candidate, all frames are
allowed; if there is still none, the pair is ``(0, N-1)``. ``pair_mode`` picks one:

* ``"random"`` (default, every split): a candidate drawn uniformly from the sample's
  generator, seeded by ``(seed, index, epoch)``. The train split varies it with the
  epoch; ``val`` / ``test`` / ``all`` use epoch 0, so each scene keeps one fixed pair
  and the evaluation set holds a reproducible mix of small and large gaps.
* ``"extreme"``: the candidate with the largest gap ``l_j - l_i`` (first in ``(i, j)``
  order on ties).
* ``"middle"``: the candidate whose mid-luminance ``(l_i + l_j) / 2`` is closest to 0.5
  (ties: the larger gap).

**Samples.** ``{"under", "over"}`` ``(3, H, W)`` float32 in ``[0, 1]`` (``under`` the
darker frame of the pair) and ``"name"`` (the sequence name); there is no ``"gt"``.
Crops, flips and rotations come from :class:`~nas.data.augment.PairAugment` and are
identical on both images (random for ``train``, central otherwise, unless ``augment``
says otherwise).

**Splits** are by sequence (:func:`~nas.data.base.split_items`, default ratios
0.8/0.1/0.1, by ``seed``), made on the scanned names before any frame is decoded, so a
bad frame never moves a scene to another split; ``split="all"`` keeps every sequence.

**Cache.** ``cache=True`` keeps every decoded frame (after ``max_side``) as a ``uint8``
``(3, H, W)`` tensor in a per-process dict, so JPEGs are decoded once rather than every
epoch. Memory is ``3 * H * W`` bytes per distinct frame used: 0.57 MB for a 536 x 356
frame, 2.9 MB for 1200 x 800; about 0.5 GB for all 514 frames of the bundled set at
native size (0.4 GB for its train split), less with ``max_side``. A cached sample then
costs well under a millisecond instead of ~20 ms of JPEG decoding. Frames are
re-quantised to 8 bits, which is exact for 8-bit files at native size and within
``0.5 / 255`` after a ``max_side`` resize or for 16-bit files. The cache lives in the
process that loads the samples: it pays off with ``num_workers=0`` (the default);
non-persistent DataLoader workers start with the parent's cache (fork) and lose what
they add at the end of every pass.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from nas.data.base import (
    DATA_ERRORS,
    PairDataset,
    check_on_error,
    make_generator,
    single_thread,
    split_items,
)
from nas.data.folder import mean_luminance
from nas.data.io import PairSizeError, list_images, load_image, natural_key, resize_image

__all__ = [
    "SEQUENCE_PAIR_MODES",
    "ExposureSequence",
    "SequenceFolder",
    "candidate_pairs",
    "choose_pair",
    "find_sequences",
]

logger = logging.getLogger("nas.data")

#: ``pair_mode`` values of :class:`SequenceFolder`.
SEQUENCE_PAIR_MODES = ("random", "extreme", "middle")
_SALT = 0x5E9F
#: Long side of the low-resolution read used to measure frame luminance.
_LUMA_SIDE = 128
#: Frames with mean luminance outside this range are avoided when pairing.
_DARK, _BRIGHT = 0.02, 0.98
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class ExposureSequence:
    """One scene: its frames darkest first, their mean luminances and the candidate pairs.

    ``luminances[k]`` is the mean Rec. 709 luminance of ``frames[k]`` (non-decreasing);
    ``pairs`` are the ``(i, j)`` candidates of :func:`candidate_pairs`.
    """

    name: str
    frames: tuple[Path, ...]
    luminances: tuple[float, ...]
    pairs: tuple[tuple[int, int], ...]


def _problem(msg: str, on_error: str, exc_type: type[Exception] = ValueError) -> None:
    if on_error == "raise":
        raise exc_type(msg)
    logger.warning("skipping: %s", msg)


def find_sequences(
    root: str | os.PathLike, *, on_error: str = "raise"
) -> list[tuple[str, tuple[Path, ...]]]:
    """``(name, frames)`` for every sequence folder under ``root`` (see the module doc).

    ``frames`` are in natural file-name order (not exposure order); names are sorted by
    :func:`~nas.data.io.natural_key`.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: ``root`` holds images directly, holds no sequence, or (``on_error=
            "raise"``) a sequence folder holds a single image (message names both).
    """
    check_on_error(on_error)
    r = Path(root)
    if not r.is_dir():
        raise FileNotFoundError(f"sequences root not found: '{r}'")
    folders: dict[str, list[Path]] = {}
    for p in list_images(r):
        folders.setdefault(p.parent.relative_to(r).as_posix(), []).append(p)
    if "." in folders:
        raise ValueError(
            f"'{r}' holds image files directly (e.g. '{folders['.'][0].name}'): a sequences "
            "root holds one sub-folder of frames per scene"
        )
    out = []
    for name in sorted(folders, key=natural_key):
        frames = folders[name]
        if len(frames) < 2:
            _problem(
                f"sequence folder '{r / name}' holds a single image '{frames[0].name}' "
                "(a sequence needs at least 2 exposures)",
                on_error,
            )
            continue
        out.append((name, tuple(sorted(frames, key=lambda p: natural_key(p.name)))))
    if not out:
        raise ValueError(f"no exposure sequence (folder of >= 2 images) found under '{r}'")
    return out


def candidate_pairs(luminances: Sequence[float], min_gap: float = 0.15) -> list[tuple[int, int]]:
    """Candidate ``(i, j)`` pairs of frames sorted darkest first (see the module doc).

    Args:
        luminances: non-decreasing mean luminances ``l_0 <= ... <= l_{N-1}``, ``N >= 2``.
        min_gap: smallest accepted ``l_j - l_i``.

    Returns:
        Non-empty list in ``(i, j)`` order; ``[(0, N-1)]`` when no pair has the gap.
    """
    n = len(luminances)
    if n < 2:
        raise ValueError(f"need at least 2 frames to form a pair, got {n}")
    lum = [float(x) for x in luminances]

    def gapped(idx: Sequence[int]) -> list[tuple[int, int]]:
        return [
            (i, j) for a, i in enumerate(idx) for j in idx[a + 1 :] if lum[j] - lum[i] >= min_gap
        ]

    usable = [k for k in range(n) if _DARK <= lum[k] <= _BRIGHT]
    return gapped(usable) or gapped(range(n)) or [(0, n - 1)]


def choose_pair(
    luminances: Sequence[float],
    pairs: Sequence[tuple[int, int]],
    mode: str = "random",
    generator: torch.Generator | None = None,
) -> tuple[int, int]:
    """One of the candidate ``pairs`` by ``mode`` (see the module doc).

    ``"random"`` draws one integer from ``generator`` (even with a single candidate);
    the other modes draw nothing.
    """
    if not pairs:
        raise ValueError("no candidate pair")
    lum = luminances
    if mode == "random":
        k = int(torch.randint(0, len(pairs), (1,), generator=generator))
        return tuple(pairs[k])  # type: ignore[return-value]
    if mode == "extreme":
        return max(pairs, key=lambda p: lum[p[1]] - lum[p[0]])
    if mode == "middle":
        return min(
            pairs, key=lambda p: (abs((lum[p[0]] + lum[p[1]]) / 2 - 0.5), lum[p[0]] - lum[p[1]])
        )
    raise ValueError(f"pair_mode must be one of {SEQUENCE_PAIR_MODES}, got {mode!r}")


def _upright_size(path: Path) -> tuple[int, int]:
    """``(H, W)`` from the file header, EXIF orientation applied (no pixel decode)."""
    with Image.open(path) as img:
        w, h = img.size
        if img.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
            w, h = h, w
    return h, w


class SequenceFolder(PairDataset):
    """Unlabelled (under, over) pairs drawn from real exposure sequences (module doc).

    Args:
        root: folder holding one sub-folder of frames per scene (at any depth).
        split: ``"train"`` (default), ``"val"``, ``"test"`` or ``"all"``.
        pair_mode: ``"random"`` (default; fixed per scene outside ``train``),
            ``"extreme"`` or ``"middle"``.
        min_gap: smallest luminance gap ``l_j - l_i`` of a candidate pair.
        crop: patch size; ``None`` keeps full frames (batch size 1 then, sizes vary).
        augment: random crop window + flips + 90-degree rotations (default: train only);
            otherwise a central crop.
        ratios: ``(train, val, test)`` fractions of the sequences.
        seed: seeds the split and the per-sample randomness (pair, crop, flips).
        max_side: downscale frames so the long side is at most this (``None``: native).
        cache: keep decoded frames in memory as ``uint8`` (see the module doc).
        on_error: ``"raise"`` or ``"skip"`` (bad folders / frames logged with their path).
        size_mismatch: ``"raise"`` (default) or ``"resize"`` the over frame to the under
            frame's size.

    Samples: ``{"under", "over"}`` ``(3, H, W)`` float32 in ``[0, 1]``, ``"name"``; no
    ``"gt"``. Attributes: ``sequences`` (list of :class:`ExposureSequence`), ``names``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        *,
        pair_mode: str = "random",
        min_gap: float = 0.15,
        crop: int | None = None,
        augment: bool | None = None,
        ratios: Sequence[float] = (0.8, 0.1, 0.1),
        seed: int = 0,
        max_side: int | None = None,
        cache: bool = False,
        on_error: str = "raise",
        size_mismatch: str = "raise",
    ) -> None:
        super().__init__(on_error=on_error, seed=seed)
        random = self._setup_folder(
            root, split, pair_mode, SEQUENCE_PAIR_MODES, crop, augment, max_side, size_mismatch
        )
        if not (math.isfinite(min_gap) and 0.0 <= min_gap <= 1.0):
            raise ValueError(f"min_gap must be in [0, 1], got {min_gap}")
        self.min_gap = float(min_gap)
        self.cache = bool(cache)
        self._frames: dict[Path, torch.Tensor] = {}
        # an augmented split (train, or the search's architecture-step val) varies per epoch
        self.vary_with_epoch = random
        found = find_sequences(self.root, on_error=on_error)
        keep = set(split_items([n for n, _ in found], ratios, seed)[split])
        with single_thread():
            measured = [self._measure(n, f) for n, f in found if n in keep]
        self.sequences = [s for s in measured if s is not None]
        if not self.sequences:
            raise ValueError(
                f"split {split!r} of sequences root '{self.root}' is empty "
                f"({len(found)} sequences, ratios {tuple(ratios)})"
            )

    def _measure(self, name: str, frames: tuple[Path, ...]) -> ExposureSequence | None:
        """Luminance-sort the frames of one sequence; None if it is skipped."""
        lums: dict[Path, float] = {}
        sizes: dict[Path, tuple[int, int]] = {}
        for p in frames:
            try:
                lums[p] = mean_luminance(load_image(p, max_side=_LUMA_SIDE))
                sizes[p] = _upright_size(p)
            except DATA_ERRORS as exc:
                if self.on_error == "raise":
                    raise
                logger.warning("skipping frame of sequence '%s': %s", name, exc)
        good = list(lums)
        if len(good) < 2:
            _problem(
                f"sequence '{self.root / name}' has fewer than 2 readable frames", self.on_error
            )
            return None
        if self.size_mismatch == "raise":
            first = good[0]
            for p in good[1:]:
                if sizes[p] != sizes[first]:
                    (h0, w0), (h1, w1) = sizes[first], sizes[p]
                    _problem(
                        f"sequence '{name}': '{first}' is {h0}x{w0} but '{p}' is {h1}x{w1} "
                        "(size_mismatch='resize' to resize)",
                        self.on_error,
                        PairSizeError,
                    )
                    return None
        order = sorted(good, key=lambda p: (lums[p], natural_key(p.name)))
        lum = tuple(lums[p] for p in order)
        pairs = tuple(candidate_pairs(lum, self.min_gap))
        return ExposureSequence(name, tuple(order), lum, pairs)

    @property
    def names(self) -> list[str]:
        """Sequence names of this split."""
        return [s.name for s in self.sequences]

    def __len__(self) -> int:
        return len(self.sequences)

    def _frame(self, path: Path) -> torch.Tensor:
        """Frame as float32 ``(3, H, W)`` (uint8 from the cache when ``cache`` is on)."""
        if not self.cache:
            return load_image(path, max_side=self.max_side)
        t = self._frames.get(path)
        if t is None:
            img = load_image(path, max_side=self.max_side)
            t = img.mul(255.0).round_().to(torch.uint8)
            self._frames[path] = t
        return t

    def pair_indices(self, index: int, epoch: int | None = None) -> tuple[int, int]:
        """``(i, j)`` frame indices (darkest first) that sample ``index`` uses.

        ``epoch`` defaults to the dataset's effective epoch (0 outside ``train``).
        """
        e = self.effective_epoch if epoch is None else (epoch if self.vary_with_epoch else 0)
        seq = self.sequences[index]
        g = make_generator(self.seed, index, e, _SALT)
        return choose_pair(seq.luminances, seq.pairs, self.pair_mode, g)

    def _load(self, index: int, epoch: int) -> dict[str, Any]:
        seq = self.sequences[index]
        g = make_generator(self.seed, index, epoch, _SALT)
        i, j = choose_pair(seq.luminances, seq.pairs, self.pair_mode, g)
        pu, po = seq.frames[i], seq.frames[j]
        under, over = self._frame(pu), self._frame(po)
        hu, wu = under.shape[-2:]
        ho, wo = over.shape[-2:]
        if (hu, wu) != (ho, wo):
            if self.size_mismatch == "raise":
                raise PairSizeError(
                    f"sequence '{seq.name}': '{pu}' is {hu}x{wu} but '{po}' is {ho}x{wo} "
                    "(size_mismatch='resize' to resize)"
                )
            over = self._as_float(over)
            over = resize_image(over, (hu, wu))
        crop = self.transform.crop
        if crop is not None and min(hu, wu) < crop:  # upscaled by the crop: needs floats
            under, over = self._as_float(under), self._as_float(over)
        sample: dict[str, Any] = {"under": under, "over": over}
        sample = self.transform(sample, g)
        for k in ("under", "over"):  # crop / flip on uint8 first: exact, less to convert
            sample[k] = self._as_float(sample[k])
        sample["name"] = seq.name
        return sample

    @staticmethod
    def _as_float(t: torch.Tensor) -> torch.Tensor:
        return t.float().div_(255.0) if t.dtype == torch.uint8 else t

    def __repr__(self) -> str:
        return (
            f"SequenceFolder(root='{self.root}', split={self.split!r}, sequences={len(self)}, "
            f"pair_mode={self.pair_mode!r}, min_gap={self.min_gap}, cache={self.cache}, "
            f"transform={self.transform})"
        )
