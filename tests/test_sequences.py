"""Tests of nas.data.sequences: real exposure sequences without ground truth.

Tiny trees of constant / gradient frames in tmp_path (file names deliberately not in
exposure order), plus one check on the bundled real data (skipped when it is absent).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nas.data import (
    ImageReadError,
    MisalignedPairs,
    PairSizeError,
    SequenceFolder,
    build_dataset,
    candidate_pairs,
    describe_spec,
    find_sequences,
    mean_luminance,
    split_items,
)
from nas.data.sequences import choose_pair

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sequences"

# ---------------------------------------------------------------- helpers


def _write(path: Path, value: int | np.ndarray, size: tuple[int, int] = (24, 32)) -> Path:
    """Write an RGB image: constant ``value`` (0..255) or a given uint8 array."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = value if isinstance(value, np.ndarray) else np.full((*size, 3), value, np.uint8)
    Image.fromarray(arr).save(path)
    return path


def _scene(folder: Path, levels: list[int], ext: str = ".png", **kw) -> Path:
    """Frames ``00<ext>, 01<ext>, ...`` of constant gray ``levels``, in the given order."""
    for k, v in enumerate(levels):
        _write(folder / f"{k:02d}{ext}", v, **kw)
    return folder


def _level(img: torch.Tensor) -> int:
    return round(float(img.mean()) * 255)


def _tree(root: Path, n: int = 6, levels: tuple[int, ...] = (200, 40, 120, 80, 160)) -> Path:
    """``n`` scenes under ``root/src`` with frames of ``levels`` rotated per scene."""
    for s in range(n):
        r = s % len(levels)
        _scene(root / "src" / f"scene{s}", list(levels[r:] + levels[:r]))
    return root


# ---------------------------------------------------------------- scan and order


def test_scan_names_and_luminance_order(tmp_path):
    _scene(tmp_path / "b" / "scene10", [200, 30, 120, 90], ext=".jpg")
    _scene(tmp_path / "b" / "scene2", [150, 60])
    _scene(tmp_path / "a", [90, 10, 250])  # depth 1 next to depth-2 scenes
    (tmp_path / "b" / "notes.txt").write_text("not an image")
    found = find_sequences(tmp_path)
    assert [n for n, _ in found] == ["a", "b/scene2", "b/scene10"]

    ds = SequenceFolder(tmp_path, "all", pair_mode="extreme")
    assert ds.names == ["a", "b/scene2", "b/scene10"]
    seq = ds.sequences[2]
    assert [p.name for p in seq.frames] == ["01.jpg", "03.jpg", "02.jpg", "00.jpg"]
    assert list(seq.luminances) == sorted(seq.luminances)
    for i in range(len(ds)):
        s = ds[i]
        assert set(s) == {"under", "over", "name"} and s["name"] == ds.names[i]
        assert s["under"].dtype == torch.float32 and s["under"].shape == (3, 24, 32)
        assert mean_luminance(s["under"]) < mean_luminance(s["over"])
    assert abs(_level(ds[2]["under"]) - 30) <= 2 and abs(_level(ds[2]["over"]) - 200) <= 2


def test_candidate_pairs_min_gap_and_extremes():
    assert candidate_pairs([0.1, 0.2, 0.3, 0.5], 0.15) == [(0, 2), (0, 3), (1, 3), (2, 3)]
    assert candidate_pairs([0.1, 0.2, 0.3, 0.5], 0.35) == [(0, 3)]
    # nearly black / white frames are avoided while a usable pair exists ...
    assert candidate_pairs([0.01, 0.3, 0.5, 0.99], 0.15) == [(1, 2)]
    # ... and allowed when they are needed for the gap
    assert candidate_pairs([0.01, 0.3, 0.35, 0.99], 0.15) == [
        (0, 1),
        (0, 2),
        (0, 3),
        (1, 3),
        (2, 3),
    ]
    assert candidate_pairs([0.4, 0.45, 0.5], 0.15) == [(0, 2)]  # no gap anywhere
    with pytest.raises(ValueError, match="at least 2"):
        candidate_pairs([0.5])


def test_choose_pair_modes():
    lum = [0.2, 0.4, 0.6, 0.9]
    pairs = candidate_pairs(lum, 0.15)
    assert choose_pair(lum, pairs, "extreme") == (0, 3)
    assert choose_pair(lum, pairs, "middle") == (1, 2)  # mid-luminance exactly 0.5
    tie = [0.1, 0.4, 0.6, 0.9]  # (0, 3) and (1, 2) both centred on 0.5
    assert choose_pair(tie, candidate_pairs(tie, 0.15), "middle") == (0, 3)
    drawn = {choose_pair(lum, pairs, "random", torch.Generator().manual_seed(k)) for k in range(64)}
    assert drawn == set(pairs)
    with pytest.raises(ValueError, match="pair_mode"):
        choose_pair(lum, pairs, "ev1")


def test_dataset_pair_modes_and_min_gap(tmp_path):
    _scene(tmp_path / "s", [153, 51, 230, 102])  # luminance 0.6, 0.2, 0.9, 0.4
    ext = SequenceFolder(tmp_path, "all", pair_mode="extreme")[0]
    assert (_level(ext["under"]), _level(ext["over"])) == (51, 230)
    mid = SequenceFolder(tmp_path, "all", pair_mode="middle")[0]
    assert (_level(mid["under"]), _level(mid["over"])) == (102, 153)
    wide = SequenceFolder(tmp_path, "all", min_gap=0.35)
    assert wide.sequences[0].pairs == ((0, 2), (0, 3), (1, 3))
    allowed = {(51, 153), (51, 230), (102, 230)}
    for e in range(6):
        tr = SequenceFolder(tmp_path, "all", min_gap=0.35, augment=True)
        tr.vary_with_epoch = True
        tr.set_epoch(e)
        s = tr[0]
        assert (_level(s["under"]), _level(s["over"])) in allowed
    with pytest.raises(ValueError, match="pair_mode"):
        SequenceFolder(tmp_path, "all", pair_mode="ev1")
    with pytest.raises(ValueError, match="min_gap"):
        SequenceFolder(tmp_path, "all", min_gap=-0.1)


def test_val_pairs_fixed_train_pairs_vary(tmp_path):
    levels = (20, 50, 80, 110, 140, 170, 200, 230)
    _tree(tmp_path, n=10, levels=levels)
    val = SequenceFolder(tmp_path, "val", ratios=(0.5, 0.5, 0.0), crop=16)
    ref = [val.pair_indices(i) for i in range(len(val))]
    first = [val[i] for i in range(len(val))]
    for e in (1, 5):
        val.set_epoch(e)
        assert [val.pair_indices(i) for i in range(len(val))] == ref
        for i, s in enumerate(first):
            again = val[i]
            assert torch.equal(again["under"], s["under"]) and torch.equal(again["over"], s["over"])
    everything = SequenceFolder(tmp_path, "all")
    assert len({everything.pair_indices(i) for i in range(len(everything))}) > 1  # a mix

    train = SequenceFolder(tmp_path, "train", ratios=(0.5, 0.5, 0.0), crop=16)
    per_epoch = []
    for e in range(4):
        train.set_epoch(e)
        per_epoch.append([train.pair_indices(i) for i in range(len(train))])
    assert len({tuple(p) for p in per_epoch}) > 1
    train.set_epoch(2)
    a = train[0]
    b = SequenceFolder(tmp_path, "train", ratios=(0.5, 0.5, 0.0), crop=16)
    b.set_epoch(2)
    assert torch.equal(a["under"], b[0]["under"])  # same (seed, index, epoch): same sample


def test_split_by_scene(tmp_path):
    _tree(tmp_path, n=10)
    parts = {k: SequenceFolder(tmp_path, k).names for k in ("train", "val", "test")}
    assert [len(v) for v in parts.values()] == [8, 1, 1]
    names = [n for v in parts.values() for n in v]
    assert len(set(names)) == len(names) == 10
    assert sorted(names) == sorted(n for n, _ in find_sequences(tmp_path))
    other = {k: SequenceFolder(tmp_path, k, seed=1).names for k in ("train", "val", "test")}
    assert other != parts and [len(v) for v in other.values()] == [8, 1, 1]  # seeded


def test_crop_and_identical_augmentation(tmp_path):
    yy, xx = np.mgrid[0:40, 0:48]
    base = (xx + 2 * yy) % 100 + 10  # asymmetric, up to 109: over = 2 * under fits 8 bits
    under = np.repeat(base[..., None], 3, -1).astype(np.uint8)
    under[..., 1] //= 2
    _write(tmp_path / "s" / "b.png", 2 * under)
    _write(tmp_path / "s" / "a.png", under)
    full = SequenceFolder(tmp_path, "all")[0]
    assert full["under"].shape == (3, 40, 48)
    assert torch.allclose(full["over"], 2 * full["under"], atol=1e-6)
    ds = SequenceFolder(tmp_path, "train", ratios=(1, 0, 0), crop=16)
    cached = SequenceFolder(tmp_path, "train", ratios=(1, 0, 0), crop=16, cache=True)
    seen = set()
    for e in range(8):
        for d in (ds, cached):
            d.set_epoch(e)
        s = ds[0]
        assert s["under"].shape == s["over"].shape == (3, 16, 16)
        assert torch.allclose(s["over"], 2 * s["under"], atol=1e-6)
        c = cached[0]
        assert torch.equal(c["under"], s["under"]) and torch.equal(c["over"], s["over"])
        seen.add(tuple(s["under"][0, 0, :4].tolist()))
    assert len(seen) > 1  # crops / flips vary with the epoch
    assert all(t.dtype == torch.uint8 for t in cached._frames.values())
    assert len(cached._frames) == 2
    small = SequenceFolder(tmp_path, "val", ratios=(0, 1, 0), crop=64, cache=True)[0]
    assert small["under"].shape == (3, 64, 64)  # upscaled to the crop (from the cache too)
    assert SequenceFolder(tmp_path, "all", max_side=24)[0]["over"].shape == (3, 20, 24)


# ---------------------------------------------------------------- detection / factory


def test_describe_spec_and_build_dataset(tmp_path, caplog):
    root = _tree(tmp_path / "seq", n=6)
    assert describe_spec(root) == "sequences"
    ds = build_dataset(root, "train", crop=16)
    assert isinstance(ds, SequenceFolder) and ds.pair_mode == "random"
    s = ds[0]
    assert s["under"].shape == (3, 16, 16) and "gt" not in s
    assert build_dataset(root, "val", crop=16, pair_mode="extreme").pair_mode == "extreme"
    assert build_dataset(root, "val", crop=16, pair_mode="ev1").pair_mode == "middle"
    with pytest.raises(ValueError, match="pair_mode"):
        build_dataset(root, "val", crop=16, pair_mode="sideways")
    dm = build_dataset(root, "train", crop=16, misaligned=True, rho=2.0)
    assert isinstance(dm, MisalignedPairs) and isinstance(dm.dataset, SequenceFolder)
    m = dm[0]
    assert m["under"].shape == m["over"].shape == (3, 16, 16) and "gt" not in m
    assert float(m["valid"].min()) == 1.0
    assert dm.dataset.transform.crop == 16 + 2 * 3  # base crop + 2 * valid_margin(2)

    # other kinds keep their detection
    _write(tmp_path / "mefb" / "x" / "x_A.jpg", 40)
    _write(tmp_path / "mefb" / "x" / "x_B.jpg", 200)
    _write(tmp_path / "mefb" / "y" / "y_A.jpg", 40)
    _write(tmp_path / "mefb" / "y" / "y_B.jpg", 200)
    assert describe_spec(tmp_path / "mefb") == "pairs"
    _scene(tmp_path / "photos" / "sub", [40, 80])
    _write(tmp_path / "photos" / "top.png", 100)  # images at the root: photos
    assert describe_spec(tmp_path / "photos") == "photos"
    _scene(tmp_path / "mixed" / "s1", [40, 80])
    _write(tmp_path / "mixed" / "s2" / "only.png", 100)
    with caplog.at_level(logging.WARNING, logger="nas.data"):
        assert describe_spec(tmp_path / "mixed") == "photos"
    assert any("s2" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- bad input


def test_single_image_folder(tmp_path, caplog):
    _tree(tmp_path, n=3)
    _write(tmp_path / "src" / "lonely" / "only.png", 100)
    with pytest.raises(ValueError, match=r"lonely.*only\.png"):
        SequenceFolder(tmp_path, "all")
    with caplog.at_level(logging.WARNING, logger="nas.data"):
        ds = SequenceFolder(tmp_path, "all", on_error="skip")
    assert len(ds) == 3 and "src/lonely" not in ds.names
    assert any("only.png" in r.getMessage() for r in caplog.records)
    _write(tmp_path / "top.png", 100)
    with pytest.raises(ValueError, match="directly"):
        SequenceFolder(tmp_path, "all")


def test_unreadable_frame(tmp_path, caplog):
    _scene(tmp_path / "a", [30, 120, 200])
    (tmp_path / "a" / "03.jpg").write_bytes(b"\xff\xd8\xff garbage, not a JPEG")
    _scene(tmp_path / "b", [30, 200])
    (tmp_path / "b" / "00.png").write_bytes(b"junk")
    with pytest.raises(ImageReadError, match=r"03\.jpg"):
        SequenceFolder(tmp_path, "all")
    with caplog.at_level(logging.WARNING, logger="nas.data"):
        ds = SequenceFolder(tmp_path, "all", on_error="skip")
    assert ds.names == ["a"] and len(ds.sequences[0].frames) == 3  # b: 1 readable frame
    msgs = " ".join(r.getMessage() for r in caplog.records)
    assert "03.jpg" in msgs and "00.png" in msgs and "fewer than 2 readable" in msgs


def test_size_mismatch(tmp_path, caplog):
    _write(tmp_path / "s" / "00.png", 200, size=(12, 16))
    _write(tmp_path / "s" / "01.png", 30, size=(24, 32))
    with pytest.raises(PairSizeError, match=r"00\.png.*01\.png"):
        SequenceFolder(tmp_path, "all")
    with (
        caplog.at_level(logging.WARNING, logger="nas.data"),
        pytest.raises(ValueError, match="empty"),
    ):
        SequenceFolder(tmp_path, "all", on_error="skip")
    assert any("01.png" in r.getMessage() for r in caplog.records)
    s = SequenceFolder(tmp_path, "all", size_mismatch="resize")[0]
    assert s["under"].shape == s["over"].shape == (3, 24, 32)  # the darker frame's size
    assert _level(s["under"]) == 30 and _level(s["over"]) == 200

    root = tmp_path / "u"
    _scene(root / "x", [30, 200])
    ds = SequenceFolder(root, "all")
    _write(root / "x" / "01.png", 200, size=(10, 10))  # changed after the scan
    with pytest.raises(PairSizeError, match=r"00\.png.*01\.png"):
        ds[0]


# ---------------------------------------------------------------- real data


@pytest.mark.skipif(not REAL.is_dir(), reason=f"real sequences not found at {REAL}")
def test_real_sequences():
    assert describe_spec(REAL) == "sequences"
    train = SequenceFolder(REAL, "train", crop=64)
    val = SequenceFolder(REAL, "val", crop=64)
    test = split_items([n for n, _ in find_sequences(REAL)], seed=0)["test"]  # not decoded
    names = train.names + val.names + test
    assert len(names) == len(set(names)) == 81
    assert len(train) > len(val) > 0 and len(test) > 0
    assert all(len(s.frames) >= 2 for s in train.sequences + val.sequences)
    for ds in (train, val):
        for i in (0, len(ds) // 2, len(ds) - 1):
            s = ds[i]
            assert s["under"].shape == s["over"].shape == (3, 64, 64)
            assert s["name"] == ds.names[i]
            k, j = ds.pair_indices(i)
            lum = ds.sequences[i].luminances
            assert lum[j] - lum[k] >= 0.15 or ds.sequences[i].pairs == ((0, len(lum) - 1),)
            assert mean_luminance(s["under"]) < mean_luminance(s["over"])
