"""Scenes of exposure pairs in folders, for no-reference (and small full-reference) evaluation.

:func:`find_scenes` scans a folder recursively and accepts three layouts, detected per folder
(they may be mixed under one root):

``mefb``
    MEFB: ``<Scene>/<Scene>_A.*`` and ``<Scene>/<Scene>_B.*`` (several pairs may share a
    folder). The tag is case-insensitive and so is the name: MEFB itself ships
    ``Farmhouse/Farmhouse_A.png`` with ``FarmHouse_B.png`` and ``Sky/sKY_a.png`` with
    ``Sky_B.png`` (as :func:`nas.data.folder.find_folder_pairs` does). Which image is darker
    is not encoded (MEFB mixes both orders).
``ab``
    ``<scene>/A.*`` (under-exposed) and ``<scene>/B.*`` (over-exposed): the CRMEF authors'
    misaligned test set (``crmef-<id>/A.png``, ``B.png``).
``under-over``
    ``<scene>/under.*``, ``<scene>/over.*`` and optionally ``<scene>/gt.*`` (a reference):
    SICE-style scenes.

``gt.*`` is also accepted next to ``A``/``B``. File stems are matched case-insensitively;
other images are ignored.

A :class:`Scene` keeps the sources in file order, ``a`` (``_A`` / ``A`` / ``under``) then ``b``
-- the order MEFB passes them to its metrics. :func:`load_scene` also orders them by mean
luminance for the networks (the darker one is ``under``; ties keep ``a`` first), as
:class:`~nas.data.folder.FolderPairs` does.

Bad input raises ``ValueError`` naming the file: an image without its partner (``'x/x_A.png'
has no partner 'x_B.*' next to it``, the wording of :func:`~nas.data.folder.find_folder_pairs`),
two candidates for one slot, a ``gt`` without sources; :func:`load_scene` raises
:class:`~nas.data.io.PairSizeError` naming both files when sizes differ.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nas.data.folder import mean_luminance
from nas.data.io import PairSizeError, list_images, load_image, natural_key

__all__ = ["LAYOUTS", "Scene", "find_scenes", "load_scene", "select_scenes"]

LAYOUTS: tuple[str, ...] = ("mefb", "ab", "under-over")
_PAIR_RE = re.compile(r"^(?P<name>.+)_(?P<tag>[ab])$", re.IGNORECASE)
_SLOT_STEMS = {"a": "a", "b": "b", "under": "under", "over": "over", "gt": "gt"}


@dataclass(frozen=True)
class Scene:
    """One scene: two source exposures (file order) and an optional reference.

    Attributes:
        name: ``<folder>`` relative to the root (``<folder>/<Name>`` when a MEFB folder holds
            a pair whose name is not the folder's); ``"."`` parts dropped.
        a, b: the sources in file order (``_A``/``A``/``under`` first).
        gt: the reference image, or ``None``.
        layout: one of :data:`LAYOUTS`.
    """

    name: str
    a: Path
    b: Path
    gt: Path | None = None
    layout: str = "mefb"


def _scene_name(rel_parent: str, stem_name: str | None, root: Path) -> str:
    folder = root.name if rel_parent == "." else rel_parent
    if stem_name is None or stem_name.casefold() == Path(folder).name.casefold():
        return folder
    return stem_name if rel_parent == "." else f"{rel_parent}/{stem_name}"


def find_scenes(root: str | os.PathLike) -> list[Scene]:
    """Every scene under ``root`` (see the module docstring), sorted naturally by name.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: an image without its partner, two candidates for one slot, a ``gt``
            without sources (each naming the files), or no scene at all.
    """
    r = Path(root)
    if not r.is_dir():
        raise FileNotFoundError(f"scene folder not found: '{r}'")
    by_folder: dict[str, list[Path]] = {}
    for p in list_images(r):
        by_folder.setdefault(p.parent.relative_to(r).as_posix(), []).append(p)
    scenes: list[Scene] = []
    for rel, files in by_folder.items():
        scenes += _folder_scenes(r, rel, files)
    if not scenes:
        raise ValueError(
            f"no exposure pairs found in '{r}': expected scene folders holding "
            "'<Scene>_A.*' + '<Scene>_B.*' (MEFB), 'A.*' + 'B.*', or 'under.*' + 'over.*' "
            "(+ optional 'gt.*')"
        )
    names = [s.name for s in scenes]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:  # only possible for odd trees; make them unique by the first file's stem
        scenes = [
            Scene(f"{s.name}/{s.a.stem}", s.a, s.b, s.gt, s.layout) if s.name in dup else s
            for s in scenes
        ]
    return sorted(scenes, key=lambda s: natural_key(s.name))


def _folder_scenes(root: Path, rel: str, files: list[Path]) -> list[Scene]:
    slots: dict[str, Path] = {}
    mefb: dict[str, dict[str, Path]] = {}
    display: dict[str, str] = {}
    for p in files:
        stem = p.stem.casefold()
        if stem in _SLOT_STEMS:
            key = _SLOT_STEMS[stem]
            if key in slots:
                raise ValueError(
                    f"two candidates for '{key}' in '{p.parent}': '{slots[key]}' and '{p}'"
                )
            slots[key] = p
            continue
        m = _PAIR_RE.match(p.stem)
        if not m:
            continue
        key = m.group("name").casefold()
        tag = m.group("tag").upper()
        slot = mefb.setdefault(key, {})
        display.setdefault(key, m.group("name"))
        if tag in slot:
            raise ValueError(f"two candidates for '{display[key]}_{tag}': '{slot[tag]}' and '{p}'")
        slot[tag] = p
    out: list[Scene] = []
    for key, slot in mefb.items():
        if "A" not in slot or "B" not in slot:
            have = slot.get("A") or slot.get("B")
            miss = "B" if "A" in slot else "A"
            raise ValueError(f"'{have}' has no partner '{display[key]}_{miss}.*' next to it")
        out.append(Scene(_scene_name(rel, display[key], root), slot["A"], slot["B"]))
    if slots:
        gt = slots.get("gt")
        pairs = [("a", "b", "ab"), ("under", "over", "under-over")]
        found = False
        for lo, hi, layout in pairs:
            if lo in slots or hi in slots:
                if lo not in slots or hi not in slots:
                    have, miss = (slots[lo], hi) if lo in slots else (slots[hi], lo)
                    want = miss.upper() if layout == "ab" else miss
                    raise ValueError(f"'{have}' has no partner '{want}.*' next to it")
                if found:
                    raise ValueError(
                        f"'{root / rel}' holds both A/B and under/over images; keep one pair"
                    )
                found = True
                out.append(Scene(_scene_name(rel, None, root), slots[lo], slots[hi], gt, layout))
        if gt is not None and not found:
            raise ValueError(f"'{gt}' has no 'under.*'/'over.*' (or 'A.*'/'B.*') next to it")
    return out


def load_scene(scene: Scene, max_side: int | None = None) -> dict[str, Any]:
    """Read a scene: ``{"a", "b", "under", "over", "name"}`` (+ ``"gt"``), each source
    ``(3, H, W)`` float32 in [0, 1]; ``under``/``over`` are ``a``/``b`` ordered by mean
    luminance (the same tensors, not copies).

    Raises:
        PairSizeError: the images differ in size (the message names both files).
        FileNotFoundError / ImageReadError: an unreadable file (named).
    """
    a = load_image(scene.a, max_side=max_side)
    b = load_image(scene.b, max_side=max_side)
    items: list[tuple[Path, torch.Tensor]] = [(scene.a, a), (scene.b, b)]
    gt = None
    if scene.gt is not None:
        gt = load_image(scene.gt, max_side=max_side)
        items.append((scene.gt, gt))
    for p, x in items[1:]:
        if x.shape != a.shape:
            raise PairSizeError(
                f"scene '{scene.name}': '{scene.a}' is {a.shape[2]}x{a.shape[1]} (W x H) but "
                f"'{p}' is {x.shape[2]}x{x.shape[1]}"
            )
    under, over = (a, b) if mean_luminance(a) <= mean_luminance(b) else (b, a)
    out: dict[str, Any] = {"a": a, "b": b, "under": under, "over": over, "name": scene.name}
    if gt is not None:
        out["gt"] = gt
    return out


def select_scenes(scenes: Sequence[Scene], names: Sequence[str]) -> list[Scene]:
    """The scenes named ``names`` (in ``names`` order); an unknown name is a ``ValueError``
    listing a few valid ones."""
    by = {s.name: s for s in scenes}
    missing = [n for n in names if n not in by]
    if missing:
        sample = ", ".join(list(by)[:8]) + (", ..." if len(by) > 8 else "")
        raise ValueError(f"unknown scene(s) {missing}; scenes here: {sample}")
    return [by[n] for n in names]
