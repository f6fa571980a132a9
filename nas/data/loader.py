"""DataLoader helper and the ``--data PATH|synthetic`` dataset factory.

:func:`make_loader` returns an :class:`EpochDataLoader`: a plain ``DataLoader`` whose
shuffling order is a function of ``(seed, epoch)`` only, and which advances the epoch by
itself at every pass (``for batch in loader`` twice gives epochs 0 and 1), forwarding it
to the dataset (:meth:`set_epoch`) before any worker starts. ``loader.set_epoch(e)``
resumes at epoch ``e``. Workers are not persistent, so each pass sees the dataset's
current epoch; with ``num_workers=0`` (the default, the right choice on a 2-core box)
everything runs in the main process and nothing can stall.

:func:`build_dataset` is the one entry point used by every CLI's ``--data`` option.
"""

from __future__ import annotations

import logging
import os
import random
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from nas.data.base import check_split, sample_seed, single_thread
from nas.data.folder import FolderPairs
from nas.data.io import list_images
from nas.data.misalign import MisalignedPairs, valid_margin
from nas.data.sequences import SEQUENCE_PAIR_MODES, SequenceFolder
from nas.data.sice import SICEDataset, detect_sice_layout
from nas.data.synthetic import SyntheticPairs

__all__ = [
    "EpochDataLoader",
    "SeededSampler",
    "build_dataset",
    "collate_pairs",
    "describe_spec",
    "make_loader",
    "set_dataset_epoch",
]

logger = logging.getLogger("nas.data")

_PAIR_STEM = re.compile(r".+_[ab]$", re.IGNORECASE)


def set_dataset_epoch(dataset: Any, epoch: int) -> None:
    """Call ``set_epoch(epoch)`` on ``dataset`` and on what it wraps (Subset, Concat...)."""
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
        return
    inner = getattr(dataset, "dataset", None)
    if inner is not None:
        set_dataset_epoch(inner, epoch)
    for d in getattr(dataset, "datasets", ()) or ():
        set_dataset_epoch(d, epoch)


class SeededSampler(Sampler[int]):
    """Indices ``0..n-1``, shuffled by a generator seeded from ``(seed, epoch)`` if asked."""

    def __init__(self, n: int, *, shuffle: bool, seed: int = 0) -> None:
        self.n = int(n)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.n))
        g = torch.Generator()
        g.manual_seed(sample_seed(self.seed, self.epoch, 0x5A3B))
        return iter(torch.randperm(self.n, generator=g).tolist())


def collate_pairs(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """``default_collate`` run with one intra-op thread (see :mod:`nas.data.base`)."""
    with single_thread():
        return default_collate(batch)


def _seed_worker(worker_id: int) -> None:
    """Seed Python's and NumPy's RNGs in a worker from its (deterministic) torch seed."""
    s = torch.initial_seed() % (2**32)
    random.seed(s)
    np.random.seed(s)


class EpochDataLoader(DataLoader):
    """``DataLoader`` that sets the epoch on its sampler and dataset at every pass.

    Each ``iter(loader)`` uses the current epoch, then increments it. Use
    :meth:`set_epoch` to jump (e.g. when resuming a run).
    """

    def __init__(self, dataset: Dataset, *, seed: int = 0, start_epoch: int = 0, **kw: Any):
        super().__init__(dataset, **kw)
        self.seed = int(seed)
        self.epoch = int(start_epoch)

    def set_epoch(self, epoch: int) -> None:
        """Epoch of the next pass."""
        self.epoch = int(epoch)

    def __iter__(self):  # type: ignore[override]
        epoch = self.epoch
        self.epoch += 1
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        set_dataset_epoch(self.dataset, epoch)
        if self.generator is not None:  # worker base seeds depend on (seed, epoch) only
            self.generator.manual_seed(sample_seed(self.seed, epoch, 0x3037))
        return super().__iter__()


def make_loader(
    dataset: Dataset,
    batch_size: int = 16,
    shuffle: bool = False,
    seed: int = 0,
    num_workers: int = 0,
    *,
    drop_last: bool = False,
    pin_memory: bool = False,
    start_epoch: int = 0,
    timeout: float = 0.0,
) -> EpochDataLoader:
    """DataLoader over pair samples, deterministic by ``seed`` (order and content).

    Args:
        dataset: a pair dataset (samples as in :mod:`nas.data`).
        batch_size: samples per batch; batches are default-collated:
            ``under``/``over``/``gt`` ``(B, 3, H, W)``, ``name`` a list of str.
        shuffle: shuffle the order, by ``(seed, epoch)``.
        seed: order seed (the data's own randomness is seeded by the dataset's seed).
        num_workers: worker processes (0 = main process; recommended on small CPUs).
        drop_last: drop the last incomplete batch.
        pin_memory: pin host memory (CUDA training).
        start_epoch: epoch of the first pass.
        timeout: seconds to wait for a worker batch (0 = forever; only with workers).

    Returns:
        :class:`EpochDataLoader`.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    sampler = SeededSampler(len(dataset), shuffle=shuffle, seed=seed)  # type: ignore[arg-type]
    g = torch.Generator()
    g.manual_seed(sample_seed(seed, start_epoch, 0x3037))
    return EpochDataLoader(
        dataset,
        seed=seed,
        start_epoch=start_epoch,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=pin_memory,
        worker_init_fn=_seed_worker if num_workers > 0 else None,
        generator=g,
        collate_fn=collate_pairs,
        timeout=timeout if num_workers > 0 else 0.0,
        persistent_workers=False,
    )


def eval_batches(dataset: Dataset, batch_size: int, count: int, seed: int) -> list[dict]:
    """A run's fixed evaluation batches: the first ``count`` batches of ``dataset`` in order
    (no shuffling), the loader seeded with ``seed + 2`` (a run's training loader takes
    ``seed``, the architecture steps' ``seed + 1``). The search's logged evaluation, the
    retrain's checkpoint selection and a sweep's scoring of a derived net all use it, so
    they score the same images."""
    loader = make_loader(dataset, batch_size, shuffle=False, seed=seed + 2)
    return [b for _, b in zip(range(count), loader)]


def _is_pair_folder(folder: Path) -> bool:
    imgs = list_images(folder)
    if not imgs:
        return False
    tagged = [p for p in imgs if _PAIR_STEM.match(p.stem)]
    if 2 * len(tagged) < len(imgs):
        return False
    keys = {(p.parent, p.stem[:-2].lower(), p.stem[-1].lower()) for p in tagged}
    return any((par, n, "b") in keys for par, n, t in keys if t == "a")


def _is_sequences_tree(folder: Path) -> bool:
    """True for a tree of exposure sequences (the rule of :func:`describe_spec`)."""
    groups: dict[Path, list[Path]] = {}
    for p in list_images(folder):
        groups.setdefault(p.parent, []).append(p)
    if not groups or folder in groups:
        return False
    for imgs in groups.values():
        stems = {p.stem.lower() for p in imgs if _PAIR_STEM.match(p.stem)}
        if any(s.endswith("_a") and s[:-2] + "_b" in stems for s in stems):
            return False
    singles = sorted(str(d) for d, imgs in groups.items() if len(imgs) < 2)
    if singles:
        if len(singles) < len(groups):
            logger.warning(
                "data '%s' looks like a tree of exposure sequences, but %d folder(s) hold a "
                "single image (e.g. '%s'): treating it as a folder of photos",
                folder,
                len(singles),
                singles[0],
            )
        return False
    return True


def describe_spec(spec: str | os.PathLike) -> str:
    """What :func:`build_dataset` would make of ``spec``: ``"synthetic"``,
    ``"sice-original"``, ``"sice-extracted"``, ``"pairs"`` (unlabelled ``_A``/``_B``
    folder), ``"sequences"`` (folders of real exposure sequences) or ``"photos"``
    (folder of photos -> synthetic pairs).

    The checks run in that order, so SICE and ``_A``/``_B`` layouts win. A folder is
    ``"sequences"`` when it holds no image directly, and every folder below it that
    directly holds images (at any depth) holds at least 2 of them, none forming an
    ``<X>_A``/``<X>_B`` pair. Any other folder with images is ``"photos"`` (as before
    sequences were supported); a tree that fails only because some folder holds a single
    image is treated as photos with a logged warning naming that folder.

    Raises:
        FileNotFoundError: the path does not exist (message names it).
        ValueError: the path is none of the above (message names it).
    """
    if str(spec).strip().lower() == "synthetic":
        return "synthetic"
    p = Path(spec).expanduser()
    hint = (
        "expected 'synthetic', a SICE root (Dataset_PartX/<n>/ + Label/, or <split>A/B/C "
        "folders), a folder of <Name>_A/<Name>_B pairs, a folder of exposure sequences "
        "(<scene>/<frames>, >= 2 frames per scene folder), or a folder of photos"
    )
    if not p.exists():
        raise FileNotFoundError(f"data '{p}' does not exist; {hint}")
    if not p.is_dir():
        raise ValueError(f"data '{p}' is a file, not a folder; {hint}")
    layout = detect_sice_layout(p)
    if layout is not None:
        return f"sice-{layout}"
    if _is_pair_folder(p):
        return "pairs"
    if _is_sequences_tree(p):
        return "sequences"
    if list_images(p):
        return "photos"
    raise ValueError(f"data '{p}' holds no image files; {hint}")


def build_dataset(
    spec: str | os.PathLike,
    split: str = "train",
    crop: int | None = 128,
    misaligned: bool = False,
    seed: int = 0,
    *,
    length: int | None = None,
    pair_mode: str | None = None,
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    augment: bool | None = None,
    max_side: int | None = None,
    rho: float | None = None,
    misalign_target: str = "under",
    skip_unlabelled: bool = False,
    on_error: str = "raise",
    cache: bool = False,
) -> Dataset:
    """Dataset for ``--data PATH|synthetic`` (kind detected by :func:`describe_spec`).

    * ``"synthetic"``: :class:`SyntheticPairs` on the bundled scikit-image photos.
    * a SICE root (either layout): :class:`SICEDataset` (``pair_mode``, ``max_side``,
      ``skip_unlabelled`` apply).
    * a folder of ``<Name>_A``/``<Name>_B`` images: :class:`FolderPairs`, unlabelled
      (no ``"gt"``), all pairs whatever ``split`` (a warning is logged for ``"train"``).
    * a tree of exposure sequences (``<scene>/<frames>``, see :func:`describe_spec`):
      :class:`~nas.data.sequences.SequenceFolder`, unlabelled (no ``"gt"``), split by
      scene; frames paired by luminance (``pair_mode``, ``max_side``, ``cache`` apply).
    * any other folder of images: :class:`SyntheticPairs` on those photos.

    Args:
        spec: ``"synthetic"`` or a path.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
        crop: patch size (random window + flips/rotations for train, central otherwise);
            ``None`` keeps full images.
        misaligned: warp the under input by a random homography (:mod:`nas.data.misalign`).
            With a ``crop``, the base patch is ``crop + 2 * valid_margin(rho)`` and the
            invalid border is cropped away, so outputs are ``crop`` x ``crop`` with an
            all-ones ``"valid"`` mask; without a crop, ``"valid"`` flags the border.
        seed: seeds splits, sample content and homographies.
        length: samples per epoch (synthetic only).
        pair_mode: pair selection. ``None`` (default) picks each kind's default:
            ``"extreme"`` for SICE, ``"random"`` for sequences (fixed per scene outside
            ``train``). SICE takes ``"extreme"``, ``"ev1"`` or ``"random"``; sequences
            take ``"random"``, ``"extreme"`` or ``"middle"``, and map SICE's ``"ev1"``
            (the central pair) to ``"middle"``. Other kinds ignore it.
        ratios: ``(train, val, test)`` split fractions (by scene / sequence / photo).
        augment: override the default (augment the train split only).
        max_side: downscale loaded images (SICE / pairs / sequences: default native;
            photos: 1024).
        rho: homography corner perturbation in pixels (default ``crop / 16``).
        misalign_target: ``"under"`` (default) or ``"over"``.
        skip_unlabelled: SICE: skip sequences without ground truth (with a warning).
        on_error: ``"raise"`` or ``"skip"`` bad files (skips are logged naming the file).
        cache: sequences: keep decoded frames in memory (``uint8``) across epochs.

    Returns:
        A map-style dataset of sample dicts.
    """
    check_split(split)
    kind = describe_spec(spec)
    if crop is not None and crop <= 0:
        raise ValueError(f"crop must be a positive int or None, got {crop}")
    if kind in ("synthetic", "photos"):
        photos = None if kind == "synthetic" else Path(spec).expanduser()
        return SyntheticPairs(
            photos,
            split=split,
            crop=crop,
            length=length,
            seed=seed,
            ratios=ratios,
            augment=augment,
            max_side=1024 if max_side is None else max_side,
            misaligned=misaligned,
            rho=rho,
            misalign_target=misalign_target,
            on_error=on_error,
        )
    path = Path(spec).expanduser()
    if rho is None and crop is not None:
        rho = crop / 16.0
    margin = valid_margin(rho) if (misaligned and crop is not None and rho is not None) else 0
    base_crop = None if crop is None else crop + 2 * margin
    base: Dataset = _real_dataset(
        kind,
        path,
        split,
        base_crop,
        pair_mode=pair_mode,
        ratios=ratios,
        augment=augment,
        seed=seed,
        max_side=max_side,
        skip_unlabelled=skip_unlabelled,
        on_error=on_error,
        cache=cache,
    )
    if not misaligned:
        return base
    return MisalignedPairs(
        base, rho=rho, target=misalign_target, seed=seed, crop_valid=crop is not None
    )


def _real_dataset(
    kind: str,
    path: Path,
    split: str,
    base_crop: int | None,
    *,
    pair_mode: str | None,
    ratios: Sequence[float],
    augment: bool | None,
    seed: int,
    max_side: int | None,
    skip_unlabelled: bool,
    on_error: str,
    cache: bool,
) -> Dataset:
    """:func:`build_dataset`'s aligned dataset of real images of ``kind`` (``sice-*``,
    ``sequences`` or ``pairs``) at ``path``, cropped to ``base_crop``; the arguments as
    there."""
    common: dict[str, Any] = dict(
        crop=base_crop, augment=augment, ratios=ratios, seed=seed, max_side=max_side
    )
    common["on_error"] = on_error
    if kind.startswith("sice"):
        mode = "extreme" if pair_mode is None else pair_mode
        return SICEDataset(path, split, pair_mode=mode, skip_unlabelled=skip_unlabelled, **common)
    if kind == "sequences":
        mode = "random" if pair_mode is None else {"ev1": "middle"}.get(pair_mode, pair_mode)
        if mode not in SEQUENCE_PAIR_MODES:
            raise ValueError(
                f"pair_mode {pair_mode!r} does not apply to the exposure sequences in "
                f"'{path}': use one of {SEQUENCE_PAIR_MODES}"
            )
        return SequenceFolder(path, split, pair_mode=mode, cache=cache, **common)
    if split == "train":
        logger.warning(
            "data '%s' is an unlabelled pair folder (no ground truth): it is meant for evaluation",
            path,
        )
    return FolderPairs(
        path, split="all", crop=base_crop, max_side=max_side, seed=seed, on_error=on_error
    )
