"""SICE multi-exposure data set (Cai et al., 2018), in two on-disk layouts.

**Original layout** (as downloaded)::

    <root>/Dataset_Part1/<n>/<k>.JPG        exposures of sequence n, k = 1..N, darkest first
    <root>/Dataset_Part1/Label/<n>.JPG      ground truth of sequence n (.JPG or .PNG)
    <root>/Dataset_Part2/...                same structure

Folder names are matched case-insensitively (``dataset_part1``, ``label``), so are file
suffixes. ``<root>`` may also be one ``Dataset_PartX`` folder itself (it holds ``Label``).
Exposures are ordered by the natural order of their file names (``2`` before ``10``),
which in SICE is darkest first. Sequence ids are ``"<part>/<n>"``.

**Pre-extracted layout** (used by fusion code such as CRMEF)::

    <root>/trainA/<name>   under-exposed       <root>/testA/...
    <root>/trainB/<name>   over-exposed        <root>/testB/...
    <root>/trainC/<name>   ground truth        <root>/testC/...

Any ``<prefix>A`` / ``<prefix>B`` (/ ``<prefix>C``) folder triple is recognised
(case-insensitive), files are matched by stem. Sequence ids are ``"<prefix>/<stem>"``.

**Pair selection** (``pair_mode``), with the N exposures indexed 0..N-1 darkest first:

* ``"extreme"`` (default): ``(0, N-1)``, the largest exposure ratio (CRMEF's choice).
* ``"ev1"``: the exposures just below and above the middle of the sequence: for odd N
  the two neighbours of the middle frame ``(m-1, m+1)`` with ``m = N // 2``; for even N
  the two central frames ``(N/2-1, N/2)``. (SICE steps are roughly 1 EV, so this is the
  "middle +-1 EV" pair.)
* ``"random"``: a uniformly random pair ``i < j``, drawn from the sample's generator
  (seeded by ``(seed, index, epoch)``; fixed across epochs outside the train split).

The pre-extracted layout holds exactly one pair per scene, so every mode gives (A, B).

**Splits** are by sequence (a scene is never in two splits), deterministic by ``seed``
(:func:`nas.data.base.split_items`, default ratios 0.8/0.1/0.1). Exception: a
pre-extracted root that has both a ``train`` and a ``test`` triple keeps that split
(``test`` = the test triple, ``val`` = a ``val``/``valid`` triple if present, otherwise
``ratios[1] / (ratios[0] + ratios[1])`` of the train sequences, removed from ``train``).
``split="all"`` returns every sequence.

**Bad input**: a sequence without ground truth raises a ``ValueError`` naming it, or is
skipped with a logged warning when ``skip_unlabelled=True``. Inputs and ground truth of
different sizes raise :class:`~nas.data.io.PairSizeError` naming both files, unless
``size_mismatch="resize"`` (inputs resized to the ground truth's size, bilinear). Other
structural problems (a sequence with fewer than 2 exposures, an A file without a B
partner, duplicate stems) raise naming the path, or are logged and skipped with
``on_error="skip"``; unreadable images follow the ``on_error`` policy at load time.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nas.data.base import (
    PairDataset,
    _check_ratios,
    check_on_error,
    make_generator,
    split_items,
)
from nas.data.io import PairSizeError, is_image_file, load_image, natural_key, resize_image

__all__ = [
    "PAIR_MODES",
    "SICEDataset",
    "SICESequence",
    "detect_sice_layout",
    "scan_sice",
    "select_pair",
]

logger = logging.getLogger("nas.data")

PAIR_MODES = ("extreme", "ev1", "random")
_SALT = 0x51CE
_VAL_NAMES = ("val", "valid", "validation")


@dataclass(frozen=True)
class SICESequence:
    """One scene: its exposures (darkest first), its ground truth and its group.

    ``group`` is the lower-cased folder prefix in the pre-extracted layout (``"train"``,
    ``"test"``, ...) and the part folder name in the original layout.
    """

    name: str
    exposures: tuple[Path, ...]
    label: Path | None
    group: str = ""


def select_pair(
    n: int, mode: str = "extreme", generator: torch.Generator | None = None
) -> tuple[int, int]:
    """Indices ``(i, j)``, ``i < j``, of the (under, over) exposures among ``n`` (see module doc).

    The ``"random"`` mode draws one integer from ``generator``; the others draw nothing.
    """
    if n < 2:
        raise ValueError(f"need at least 2 exposures to form a pair, got {n}")
    if mode == "extreme":
        return 0, n - 1
    if mode == "ev1":
        if n % 2:
            m = n // 2
            return m - 1, m + 1
        return n // 2 - 1, n // 2
    if mode == "random":
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
        k = int(torch.randint(0, len(pairs), (1,), generator=generator))
        return pairs[k]
    raise ValueError(f"pair_mode must be one of {PAIR_MODES}, got {mode!r}")


def _subdirs(folder: Path) -> list[Path]:
    return sorted(
        (d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")),
        key=lambda d: natural_key(d.name),
    )


def _images(folder: Path) -> list[Path]:
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and is_image_file(p)),
        key=lambda p: natural_key(p.name),
    )


def _by_stem(files: Sequence[Path]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in files:
        key = p.stem.lower()
        if key in out:
            raise ValueError(f"two files with the same name: '{out[key]}' and '{p}'")
        out[key] = p
    return out


def _original_parts(root: Path) -> list[Path]:
    subs = _subdirs(root)
    parts = [d for d in subs if re.fullmatch(r"dataset_part\d*", d.name.lower())]
    if parts:
        return parts
    if any(d.name.lower() == "label" for d in subs):
        return [root]
    return []


def _extracted_triples(root: Path) -> dict[str, dict[str, Path]]:
    groups: dict[str, dict[str, Path]] = {}
    for d in _subdirs(root):
        m = re.fullmatch(r"(.+?)([abc])", d.name, flags=re.IGNORECASE)
        if not m:
            continue
        prefix, letter = m.group(1).lower(), m.group(2).lower()
        g = groups.setdefault(prefix, {})
        if letter in g:
            raise ValueError(f"ambiguous SICE folders (case): '{g[letter]}' and '{d}'")
        g[letter] = d
    return {p: g for p, g in groups.items() if "a" in g and "b" in g}


def detect_sice_layout(root: str | os.PathLike) -> str | None:
    """``"extracted"`` (``<split>A/B/C`` folders), ``"original"`` (``Dataset_PartX``/``Label``)
    or ``None`` when ``root`` is neither (or not a folder)."""
    r = Path(root)
    if not r.is_dir():
        return None
    if _extracted_triples(r):
        return "extracted"
    for part in _original_parts(r):
        if any(d.name.lower() != "label" for d in _subdirs(part)):
            return "original"
    return None


def _problem(msg: str, on_error: str) -> None:
    if on_error == "raise":
        raise ValueError(msg)
    logger.warning("skipping: %s", msg)


def _unlabelled(seq: str, where: str, skip_unlabelled: bool) -> None:
    msg = f"SICE sequence '{seq}' has no ground truth ({where})"
    if not skip_unlabelled:
        raise ValueError(msg + "; pass skip_unlabelled=True to skip such sequences")
    logger.warning("skipping: %s", msg)


def _scan_original(root: Path, skip_unlabelled: bool, on_error: str) -> list[SICESequence]:
    seqs: list[SICESequence] = []
    for part in _original_parts(root):
        subs = _subdirs(part)
        label_dirs = [d for d in subs if d.name.lower() == "label"]
        if len(label_dirs) > 1:
            raise ValueError(f"several label folders in '{part}': {[str(d) for d in label_dirs]}")
        labels = _by_stem(_images(label_dirs[0])) if label_dirs else {}
        for d in subs:
            if d.name.lower() == "label":
                continue
            exposures = _images(d)
            if not exposures:
                continue
            name = d.name if part == root else f"{part.name}/{d.name}"
            if len(exposures) < 2:
                _problem(f"SICE sequence '{d}' has fewer than 2 exposures", on_error)
                continue
            label = labels.get(d.name.lower())
            if label is None:
                where = f"no '{d.name}.*' in '{label_dirs[0]}'" if label_dirs else "no Label folder"
                _unlabelled(str(d), where, skip_unlabelled)
                continue
            seqs.append(SICESequence(name, tuple(exposures), label, part.name.lower()))
    return seqs


def _scan_extracted(root: Path, skip_unlabelled: bool, on_error: str) -> list[SICESequence]:
    seqs: list[SICESequence] = []
    for prefix, dirs in sorted(_extracted_triples(root).items()):
        a, b = _by_stem(_images(dirs["a"])), _by_stem(_images(dirs["b"]))
        c = _by_stem(_images(dirs["c"])) if "c" in dirs else {}
        group_name = dirs["a"].name[:-1]
        for stem in sorted(set(a) | set(b), key=natural_key):
            if stem not in a or stem not in b:
                have, miss = (a, dirs["b"]) if stem in a else (b, dirs["a"])
                _problem(f"'{have[stem]}' has no partner named '{stem}.*' in '{miss}'", on_error)
                continue
            if stem not in c:
                where = f"no '{stem}.*' in '{dirs['c']}'" if "c" in dirs else "no C folder"
                _unlabelled(str(a[stem]), where, skip_unlabelled)
                continue
            name = f"{group_name}/{a[stem].stem}"
            seqs.append(SICESequence(name, (a[stem], b[stem]), c[stem], prefix))
    return seqs


def scan_sice(
    root: str | os.PathLike, *, skip_unlabelled: bool = False, on_error: str = "raise"
) -> tuple[str, list[SICESequence]]:
    """Find the sequences of a SICE root (layout auto-detected).

    Returns:
        ``(layout, sequences)`` with ``layout`` in ``{"original", "extracted"}``.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: ``root`` is not a SICE root, or a structural problem (see module doc).
    """
    r = Path(root)
    check_on_error(on_error)
    if not r.is_dir():
        raise FileNotFoundError(f"SICE root not found: '{r}'")
    layout = detect_sice_layout(r)
    if layout is None:
        raise ValueError(
            f"'{r}' is not a SICE root: expected Dataset_PartX/<n>/ + Dataset_PartX/Label/ "
            "or <split>A/ <split>B/ <split>C/ folders"
        )
    scan = _scan_extracted if layout == "extracted" else _scan_original
    seqs = scan(r, skip_unlabelled, on_error)
    if not seqs:
        raise ValueError(f"no usable SICE sequence found in '{r}' ({layout} layout)")
    return layout, seqs


def _select_split(
    layout: str,
    seqs: list[SICESequence],
    split: str,
    ratios: Sequence[float],
    seed: int,
) -> list[SICESequence]:
    if split == "all":
        return list(seqs)
    groups = {s.group for s in seqs}
    if layout == "extracted" and "train" in groups and "test" in groups:
        if split == "test":
            return [s for s in seqs if s.group == "test"]
        val_groups = groups & set(_VAL_NAMES)
        if val_groups:
            want = val_groups if split == "val" else {"train"}
            return [s for s in seqs if s.group in want]
        train = [s for s in seqs if s.group == "train"]
        r = _check_ratios(ratios)
        parts = split_items([s.name for s in train], (r[0], r[1], 0.0), seed)
        keep = set(parts[split])
        return [s for s in train if s.name in keep]
    keep = set(split_items([s.name for s in seqs], ratios, seed)[split])
    return [s for s in seqs if s.name in keep]


class SICEDataset(PairDataset):
    """SICE (under, over, gt) triples, either layout (see the module docstring).

    Args:
        root: SICE root folder.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
        pair_mode: ``"extreme"`` (default), ``"ev1"`` or ``"random"``.
        crop: patch size; ``None`` keeps full images (batch size 1 then, SICE sizes vary).
        augment: random crop window + flips + 90-degree rotations (default: train only);
            otherwise a central crop.
        ratios: ``(train, val, test)`` fractions of the sequences.
        seed: seeds the split and the per-sample randomness.
        max_side: downscale images so the long side is at most this (SICE photos are up
            to 6000 px wide; ``None`` keeps the native resolution).
        skip_unlabelled: skip (with a warning) sequences without ground truth.
        on_error: ``"raise"`` or ``"skip"`` (bad files logged with their path).
        size_mismatch: ``"raise"`` (default) or ``"resize"`` inputs to the gt's size.

    Samples: ``{"under", "over", "gt"}`` ``(3, H, W)`` float32 in ``[0, 1]``, ``"name"``
    (the sequence id). Attributes: ``layout``, ``sequences`` (list of
    :class:`SICESequence`), ``names``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        *,
        pair_mode: str = "extreme",
        crop: int | None = None,
        augment: bool | None = None,
        ratios: Sequence[float] = (0.8, 0.1, 0.1),
        seed: int = 0,
        max_side: int | None = None,
        skip_unlabelled: bool = False,
        on_error: str = "raise",
        size_mismatch: str = "raise",
    ) -> None:
        super().__init__(on_error=on_error, seed=seed)
        self._setup_folder(
            root, split, pair_mode, PAIR_MODES, crop, augment, max_side, size_mismatch
        )
        self.vary_with_epoch = split == "train"
        self.layout, all_seqs = scan_sice(
            self.root, skip_unlabelled=skip_unlabelled, on_error=on_error
        )
        self.sequences = _select_split(self.layout, all_seqs, split, ratios, seed)
        if not self.sequences:
            raise ValueError(
                f"split {split!r} of SICE root '{self.root}' is empty "
                f"({len(all_seqs)} sequences, ratios {tuple(ratios)})"
            )

    @property
    def names(self) -> list[str]:
        """Sequence ids of this split."""
        return [s.name for s in self.sequences]

    def __len__(self) -> int:
        return len(self.sequences)

    def _load(self, index: int, epoch: int) -> dict[str, Any]:
        seq = self.sequences[index]
        g = make_generator(self.seed, index, epoch, _SALT)
        i, j = select_pair(len(seq.exposures), self.pair_mode, g)
        paths = {"under": seq.exposures[i], "over": seq.exposures[j], "gt": seq.label}
        imgs = {k: load_image(p, max_side=self.max_side) for k, p in paths.items()}
        ref = tuple(imgs["gt"].shape[-2:])
        for k in ("under", "over"):
            size = tuple(imgs[k].shape[-2:])
            if size == ref:
                continue
            if self.size_mismatch == "raise":
                raise PairSizeError(
                    f"SICE sequence '{seq.name}': '{paths[k]}' is {size[0]}x{size[1]} but "
                    f"'{paths['gt']}' is {ref[0]}x{ref[1]} (size_mismatch='resize' to resize)"
                )
            imgs[k] = resize_image(imgs[k], ref)  # type: ignore[arg-type]
        sample: dict[str, Any] = dict(imgs)
        sample = self.transform(sample, g)
        sample["name"] = seq.name
        return sample

    def __repr__(self) -> str:
        return (
            f"SICEDataset(root='{self.root}', layout={self.layout!r}, split={self.split!r}, "
            f"sequences={len(self)}, pair_mode={self.pair_mode!r}, transform={self.transform})"
        )
