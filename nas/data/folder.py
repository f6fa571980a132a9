"""Unlabelled exposure pairs from a folder, MEFB style: ``<Name>_A.*`` + ``<Name>_B.*``.

The folder is scanned recursively; files whose stem ends in ``_A`` / ``_B``
(case-insensitive) are paired by ``(sub-folder, Name)``, also case-insensitively (MEFB
pairs ``Farmhouse_A.png`` with ``FarmHouse_B.png``). Which of the two is under- or
over-exposed is not encoded in the names (MEFB mixes both orders), so at load time the
two images are ordered by mean luminance (Rec. 709 weights on the stored values): the
darker becomes ``"under"`` (ties keep A as under). There is no ground truth: samples are
``{"under", "over", "name"}``, meant for no-reference evaluation.

Bad input: a file without its partner, or two candidates for one slot (``x_A.png`` and
``x_A.jpg``), raises a ``ValueError`` naming the files (logged and skipped with
``on_error="skip"``); pairs of different size raise :class:`~nas.data.io.PairSizeError`
naming both files (or ``size_mismatch="resize"``: B resized to A's size).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from nas.data.augment import PairAugment
from nas.data.base import PairDataset, check_on_error, check_split, make_generator, split_items
from nas.data.io import PairSizeError, list_images, load_image, natural_key, resize_image

__all__ = ["FolderPairs", "find_folder_pairs", "mean_luminance"]

logger = logging.getLogger("nas.data")

_PAIR_RE = re.compile(r"^(?P<name>.+)_(?P<tag>[ab])$", re.IGNORECASE)
_SALT = 0xF01D


def mean_luminance(image: torch.Tensor) -> float:
    """Mean Rec. 709 luma of a ``(3, H, W)`` image in ``[0, 1]``."""
    w = torch.tensor([0.2126, 0.7152, 0.0722], dtype=image.dtype).view(3, 1, 1)
    return float((image * w).sum(0).mean())


def find_folder_pairs(
    root: str | os.PathLike, *, on_error: str = "raise"
) -> list[tuple[str, Path, Path]]:
    """``(name, path_A, path_B)`` for every complete ``<Name>_A`` / ``<Name>_B`` pair.

    ``name`` is ``<sub-folder>/<Name>`` relative to ``root`` (just ``<Name>`` at top level).
    Images not following the naming scheme are ignored.
    """
    check_on_error(on_error)
    r = Path(root)
    slots: dict[str, dict[str, Path]] = {}
    display: dict[str, str] = {}
    bad: set[str] = set()
    for p in list_images(r):
        m = _PAIR_RE.match(p.stem)
        if not m:
            continue
        rel_parent = p.parent.relative_to(r).as_posix()
        name = m.group("name") if rel_parent == "." else f"{rel_parent}/{m.group('name')}"
        tag = m.group("tag").upper()
        # names match case-insensitively (MEFB pairs 'Farmhouse_A' with 'FarmHouse_B');
        # the scene is named as its first file spells it
        name = display.setdefault(name.lower(), name)
        slot = slots.setdefault(name, {})
        if tag in slot:
            msg = f"two candidates for '{name}_{tag}': '{slot[tag]}' and '{p}'"
            if on_error == "raise":
                raise ValueError(msg)
            logger.warning("skipping: %s", msg)
            bad.add(name)
            continue
        slot[tag] = p
    out = []
    for name in sorted(slots, key=natural_key):
        if name in bad:
            continue
        slot = slots[name]
        if "A" not in slot or "B" not in slot:
            have = slot.get("A") or slot.get("B")
            miss = "B" if "A" in slot else "A"
            msg = f"'{have}' has no partner '{Path(name).name}_{miss}.*' next to it"
            if on_error == "raise":
                raise ValueError(msg)
            logger.warning("skipping: %s", msg)
            continue
        out.append((name, slot["A"], slot["B"]))
    return out


class FolderPairs(PairDataset):
    """Unlabelled (under, over) pairs from a MEFB-style folder (see the module docstring).

    Args:
        root: folder scanned recursively for ``<Name>_A.*`` / ``<Name>_B.*``.
        split: ``"all"`` (default, the usual evaluation use) or ``"train"``/``"val"``/
            ``"test"`` (split by scene with ``ratios`` and ``seed``).
        crop: central crop size (``None``: full images, batch size 1 unless all match).
        max_side: downscale so the long side is at most this (``None``: native).
        on_error: ``"raise"`` or ``"skip"``.
        size_mismatch: ``"raise"`` or ``"resize"`` (B resized to A's size).

    Samples: ``{"under", "over"}`` ``(3, H, W)`` float32 in ``[0, 1]``, ``"name"``;
    no ``"gt"`` key.
    """

    vary_with_epoch = False

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        split: str = "all",
        crop: int | None = None,
        max_side: int | None = None,
        ratios: Sequence[float] = (0.8, 0.1, 0.1),
        seed: int = 0,
        on_error: str = "raise",
        size_mismatch: str = "raise",
    ) -> None:
        super().__init__(on_error=on_error, seed=seed)
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"pair folder not found: '{self.root}'")
        self.split = check_split(split)
        if size_mismatch not in ("raise", "resize"):
            raise ValueError(f"size_mismatch must be 'raise' or 'resize', got {size_mismatch!r}")
        self.size_mismatch = size_mismatch
        self.max_side = max_side
        self.transform = PairAugment(crop, random=False)
        pairs = find_folder_pairs(self.root, on_error=on_error)
        if not pairs:
            raise ValueError(f"no '<Name>_A.*' / '<Name>_B.*' image pairs found in '{self.root}'")
        keep = set(split_items([n for n, _, _ in pairs], ratios, seed)[split])
        self.pairs = [p for p in pairs if p[0] in keep]
        if not self.pairs:
            raise ValueError(f"split {split!r} of '{self.root}' is empty ({len(pairs)} pairs)")

    @property
    def names(self) -> list[str]:
        """Scene names of this split."""
        return [n for n, _, _ in self.pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, index: int, epoch: int) -> dict[str, Any]:
        name, pa, pb = self.pairs[index]
        a = load_image(pa, max_side=self.max_side)
        b = load_image(pb, max_side=self.max_side)
        if a.shape != b.shape:
            if self.size_mismatch == "raise":
                raise PairSizeError(
                    f"pair '{name}': '{pa}' is {a.shape[1]}x{a.shape[2]} but '{pb}' is "
                    f"{b.shape[1]}x{b.shape[2]} (size_mismatch='resize' to resize)"
                )
            b = resize_image(b, tuple(a.shape[-2:]))  # type: ignore[arg-type]
        under, over = (a, b) if mean_luminance(a) <= mean_luminance(b) else (b, a)
        sample: dict[str, Any] = {"under": under, "over": over}
        sample = self.transform(sample, make_generator(self.seed, index, epoch, _SALT))
        sample["name"] = name
        return sample

    def __repr__(self) -> str:
        return f"FolderPairs(root='{self.root}', split={self.split!r}, pairs={len(self)})"
