"""Shared pieces of the pair datasets: seeding, deterministic splits, error policy.

Determinism. Every random choice a dataset makes for sample ``index`` comes from a
``torch.Generator`` seeded by :func:`sample_seed` ``(seed, index, epoch, salt)``, never
from global RNG state, so the same sample comes out whichever DataLoader worker (or
process) builds it. Training datasets vary with the epoch (:meth:`PairDataset.set_epoch`,
called by :class:`nas.data.loader.EpochDataLoader` at the start of each pass);
validation / test datasets ignore the epoch, so evaluation is identical every time.

Threads. Per-sample work is on small tensors (a 128 x 128 crop is ~50k values), where
torch's intra-op parallelism only adds synchronisation: on a busy 2-core machine every
elementwise op took ~6 ms with 2 threads versus ~5 us with one. :meth:`PairDataset.__getitem__`
therefore builds samples with ``torch.set_num_threads(1)`` and restores the previous count
afterwards (DataLoader workers are single-threaded anyway). Set the module flag
``SINGLE_THREAD_SAMPLES = False`` to disable this.

Splits. :func:`split_items` sorts the item ids (scene / sequence / photo names), shuffles
them with a generator seeded by ``seed`` and cuts the list by the ratios (largest
remainder rounding); every split with a positive ratio gets at least one item when there
are enough items. Items are whole scenes, so no scene appears in two splits.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Hashable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from nas.data.io import ImageReadError, PairSizeError

__all__ = [
    "SPLITS",
    "PairDataset",
    "make_generator",
    "sample_seed",
    "split_counts",
    "split_items",
]

logger = logging.getLogger("nas.data")

#: Split names understood by every dataset (``"all"`` = no split).
SPLITS = ("train", "val", "test")

_M64 = (1 << 64) - 1


#: Build samples with one intra-op thread (see the module docstring).
SINGLE_THREAD_SAMPLES = True


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(1)`` (if enabled), then restore."""
    n = torch.get_num_threads()
    if not SINGLE_THREAD_SAMPLES or n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def sample_seed(*parts: int) -> int:
    """Mix integers (seed, index, epoch, salt, ...) into one 63-bit seed (splitmix64)."""
    h = 0x5EED
    for p in parts:
        h = _splitmix64(h ^ (int(p) & _M64))
    return h & ((1 << 63) - 1)


def make_generator(*parts: int) -> torch.Generator:
    """CPU ``torch.Generator`` seeded by :func:`sample_seed` of ``parts``."""
    g = torch.Generator()
    g.manual_seed(sample_seed(*parts))
    return g


def _check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    if len(ratios) != 3:
        raise ValueError(f"ratios must be (train, val, test), got {tuple(ratios)}")
    r = tuple(float(x) for x in ratios)
    if any(x < 0 or not math.isfinite(x) for x in r) or sum(r) <= 0:
        raise ValueError(f"ratios must be finite, >= 0 and not all 0, got {r}")
    s = sum(r)
    return (r[0] / s, r[1] / s, r[2] / s)


def split_counts(n: int, ratios: Sequence[float] = (0.8, 0.1, 0.1)) -> tuple[int, int, int]:
    """Number of items per split (train, val, test) for ``n`` items.

    Largest-remainder rounding of ``n * ratio``; then every split with a positive ratio
    is given at least one item (taken from the largest split) when ``n`` allows it. With
    fewer items than positive ratios, train is served first, then val, then test.
    """
    r = _check_ratios(ratios)
    raw = [round(n * x, 9) for x in r]
    counts = [math.floor(x) for x in raw]
    rest = n - sum(counts)
    order = sorted(range(3), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[:rest]:
        counts[i] += 1
    positive = [i for i in range(3) if r[i] > 0]
    if n < len(positive):
        counts = [0, 0, 0]
        for i in positive[:n]:
            counts[i] = 1
        return (counts[0], counts[1], counts[2])
    for i in positive:
        if counts[i] == 0:
            j = max(range(3), key=lambda k: (counts[k], -k))
            counts[j] -= 1
            counts[i] += 1
    return (counts[0], counts[1], counts[2])


def split_items(
    items: Sequence[Hashable], ratios: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> dict[str, list]:
    """Deterministic train/val/test partition of ``items`` (scene ids), by ``seed``.

    Returns:
        ``{"train": [...], "val": [...], "test": [...], "all": [...]}``, each list sorted;
        the three splits are disjoint and cover ``items``.
    """
    uniq = sorted(set(items), key=str)
    if len(uniq) != len(items):
        raise ValueError("split_items: duplicate item ids")
    counts = split_counts(len(uniq), ratios)
    g = torch.Generator()
    g.manual_seed(sample_seed(seed, 0x5B117))
    perm = torch.randperm(len(uniq), generator=g).tolist()
    shuffled = [uniq[i] for i in perm]
    a, b = counts[0], counts[0] + counts[1]
    out = {
        "train": sorted(shuffled[:a], key=str),
        "val": sorted(shuffled[a:b], key=str),
        "test": sorted(shuffled[b:], key=str),
        "all": list(uniq),
    }
    return out


def check_split(split: str) -> str:
    """Validate a split name (``train``, ``val``, ``test`` or ``all``)."""
    if split not in (*SPLITS, "all"):
        raise ValueError(f"split must be one of {(*SPLITS, 'all')}, got {split!r}")
    return split


def check_on_error(on_error: str) -> str:
    """Validate an ``on_error`` policy (``"raise"`` or ``"skip"``)."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    return on_error


#: Exceptions that ``on_error="skip"`` turns into a warning (bad files, not bugs).
DATA_ERRORS = (ImageReadError, PairSizeError, OSError)


class PairDataset(Dataset):
    """Base class of the pair datasets: epoch handling and the ``on_error`` policy.

    Subclasses implement ``__len__`` and ``_load(index, epoch) -> dict`` returning
    ``{"under": (3,H,W), "over": (3,H,W), "gt": (3,H,W) (optional), "name": str, ...}``,
    float32 in ``[0, 1]``.

    ``on_error="raise"`` (default) lets a bad file's error (which names the file)
    propagate. ``on_error="skip"`` logs a warning naming the file (logger ``nas.data``),
    remembers the index as bad and returns the next good sample instead (so a batch
    may hold a duplicate); if every index fails, a ``RuntimeError`` is raised.
    """

    #: Whether samples change with :meth:`set_epoch` (True for training splits).
    vary_with_epoch: bool = True

    def __init__(self, *, on_error: str = "raise", seed: int = 0) -> None:
        self.on_error = check_on_error(on_error)
        self.seed = int(seed)
        self.epoch = 0
        self._bad: set[int] = set()

    def _setup_folder(
        self,
        root: Any,
        split: str,
        pair_mode: str,
        pair_modes: Sequence[str],
        crop: int | None,
        augment: bool | None,
        max_side: int | None,
        size_mismatch: str,
    ) -> bool:
        """What the real-photo folders share (SICE, sequences): ``root``, ``split``,
        ``pair_mode`` (one of ``pair_modes``), ``max_side``, ``size_mismatch`` (``raise`` or
        ``resize``) and the crop/augment ``transform``. Returns whether samples are drawn
        at random (``augment``; default: the training split)."""
        from pathlib import Path

        from nas.data.augment import PairAugment

        self.root = Path(root)
        self.split = check_split(split)
        if pair_mode not in pair_modes:
            raise ValueError(f"pair_mode must be one of {tuple(pair_modes)}, got {pair_mode!r}")
        if size_mismatch not in ("raise", "resize"):
            raise ValueError(f"size_mismatch must be 'raise' or 'resize', got {size_mismatch!r}")
        self.pair_mode = pair_mode
        self.size_mismatch = size_mismatch
        self.max_side = max_side
        random = (split == "train") if augment is None else bool(augment)
        self.transform = PairAugment(crop, random=random)
        return random

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch used to seed per-sample randomness (training splits only)."""
        self.epoch = int(epoch)

    @property
    def effective_epoch(self) -> int:
        """The epoch actually used for seeding (0 when ``vary_with_epoch`` is False)."""
        return self.epoch if self.vary_with_epoch else 0

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _load(self, index: int, epoch: int) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for dataset of length {n}")
        with single_thread():
            return self._get(index, n)

    def _get(self, index: int, n: int) -> dict[str, Any]:
        if self.on_error == "raise":
            return self._load(index, self.effective_epoch)
        for step in range(n):
            i = (index + step) % n
            if i in self._bad:
                continue
            try:
                return self._load(i, self.effective_epoch)
            except DATA_ERRORS as exc:
                self._bad.add(i)
                logger.warning("skipping sample %d of %s: %s", i, type(self).__name__, exc)
        raise RuntimeError(f"{type(self).__name__}: every sample failed to load (see warnings)")
