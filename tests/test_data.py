"""Tests of nas.data: I/O, SICE (both layouts), folder pairs, synthetic and misaligned
pairs, augmentation, loaders and the ``--data`` factory. Tiny image trees in tmp_path."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nas.data import (
    FolderPairs,
    ImageReadError,
    MisalignedPairs,
    PairAugment,
    PairSizeError,
    SICEDataset,
    SyntheticPairs,
    build_dataset,
    corner_homography,
    describe_spec,
    expose,
    load_image,
    make_loader,
    misalign_sample,
    random_flip_rot,
    save_image,
    select_pair,
    split_counts,
    split_items,
    valid_mask,
    warp_image,
)
from nas.data.augment import flip_rot_sample

# ---------------------------------------------------------------- helpers


def _write(path: Path, value: int | np.ndarray, size: tuple[int, int] = (24, 32)) -> Path:
    """Write an RGB image: constant ``value`` (0..255) or a given uint8 array."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(value, np.ndarray):
        arr = value
    else:
        arr = np.full((size[0], size[1], 3), value, dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


def _level(img: torch.Tensor) -> int:
    return round(float(img.mean()) * 255)


def _sice_original(root: Path, n_seq: int = 4, n_exp: int = 5, *, part="Dataset_Part1",
                   label="Label", ext=".JPG", label_ext=".PNG") -> Path:  # fmt: skip
    """Sequence s, exposure k (1-based) is a constant image of level 20*k + s; label 200+s."""
    for s in range(1, n_seq + 1):
        for k in range(1, n_exp + 1):
            _write(root / part / str(s) / f"{k}{ext}", 20 * k + s)
        _write(root / part / label / f"{s}{label_ext}", 200 + s)
    return root


def _sice_extracted(root: Path, split: str, stems: list[str], letters=("A", "B", "C")) -> Path:
    for st in stems:
        for letter, v in zip(letters, (30, 180, 120), strict=True):
            _write(root / f"{split}{letter}" / f"{st}.png", v)
    return root


# ---------------------------------------------------------------- I/O


def test_load_rgb_gray_rgba_palette(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "rgb.png")
    x = load_image(tmp_path / "rgb.png")
    assert x.shape == (3, 10, 12) and x.dtype == torch.float32
    assert torch.allclose(x, torch.from_numpy(arr).permute(2, 0, 1).float() / 255)

    Image.fromarray(arr[..., 0]).save(tmp_path / "gray.png")
    g = load_image(tmp_path / "gray.png")
    assert g.shape == (3, 10, 12) and torch.equal(g[0], g[1]) and torch.equal(g[1], g[2])

    rgba = np.dstack([arr, np.full((10, 12), 0, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert torch.allclose(load_image(tmp_path / "rgba.png"), x)  # alpha dropped
    assert torch.allclose(load_image(tmp_path / "rgba.png", alpha="white"), torch.ones_like(x))

    Image.fromarray(arr).convert("P").save(tmp_path / "pal.png")
    assert load_image(tmp_path / "pal.png").shape == (3, 10, 12)


def test_load_16bit_png(tmp_path):
    arr = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "d16.png")
    assert Image.open(tmp_path / "d16.png").mode in ("I;16", "I")
    x = load_image(tmp_path / "d16.png")
    assert x.shape == (3, 2, 2)
    assert torch.allclose(x[0], torch.from_numpy(arr.astype(np.float32) / 65535.0))


def test_load_exif_rotation(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255  # left half white
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    img.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    x = load_image(tmp_path / "rot.jpg")
    assert x.shape == (3, 40, 20)  # upright: portrait
    assert x[:, :20].mean() > 0.9 and x[:, 20:].mean() < 0.1  # white half now on top


def test_load_truncated_and_garbage(tmp_path):
    _write(tmp_path / "full.jpg", np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8))
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="cut.jpg"):
        load_image(tmp_path / "cut.jpg")
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(ImageReadError, match="junk.png"):
        load_image(tmp_path / "junk.png")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")


def test_save_image_atomic_roundtrip_and_protected(tmp_path):
    x = torch.rand(3, 9, 11)
    p = save_image(x, tmp_path / "sub" / "out.png")
    y = load_image(p)
    assert torch.allclose(y, (x * 255).round() / 255, atol=1e-6)
    smooth = torch.linspace(0, 1, 32).expand(3, 32, 32).contiguous()
    save_image(smooth, tmp_path / "out.jpg")
    assert (load_image(tmp_path / "out.jpg") - smooth).abs().mean() < 0.02
    assert sorted(f.name for f in (tmp_path / "sub").iterdir()) == ["out.png"]  # no temp left
    with pytest.raises(ValueError, match="out.png"):
        save_image(x, p, protected=[p])
    with pytest.raises(ValueError, match="suffix"):
        save_image(x, tmp_path / "out.xyz")


# ---------------------------------------------------------------- splits


def test_split_counts_and_items():
    assert split_counts(10) == (8, 1, 1)
    assert split_counts(6) == (4, 1, 1)
    assert split_counts(3) == (1, 1, 1)
    assert split_counts(2) == (1, 1, 0)
    items = [f"s{i}" for i in range(23)]
    a, b = split_items(items, seed=1), split_items(items, seed=1)
    assert a == b
    sets = [set(a[k]) for k in ("train", "val", "test")]
    assert set.union(*sets) == set(items) and sum(map(len, sets)) == len(items)
    assert split_items(items, seed=2)["train"] != a["train"]


# ---------------------------------------------------------------- SICE


def test_sice_original_pair_modes(tmp_path):
    root = _sice_original(tmp_path / "sice", n_seq=3, n_exp=5)
    ds = SICEDataset(root, "all", pair_mode="extreme")
    assert ds.layout == "original" and len(ds) == 3
    s = ds[0]
    seq = int(s["name"].split("/")[-1])
    assert s["name"].startswith("Dataset_Part1/")
    assert _level(s["under"]) == 20 + seq and _level(s["over"]) == 100 + seq
    assert _level(s["gt"]) == 200 + seq and "gt" in s

    s = SICEDataset(root, "all", pair_mode="ev1")[0]
    seq = int(s["name"].split("/")[-1])
    assert (_level(s["under"]), _level(s["over"])) == (40 + seq, 80 + seq)  # exposures 2, 4
    assert select_pair(4, "ev1") == (1, 2) and select_pair(2, "ev1") == (0, 1)

    ds = SICEDataset(root, "all", pair_mode="random", augment=True)
    ds.vary_with_epoch = True
    seen = set()
    for e in range(6):
        ds.set_epoch(e)
        s = ds[1]
        assert _level(s["under"]) < _level(s["over"])
        seen.add((_level(s["under"]), _level(s["over"])))
    assert len(seen) > 1  # varies with the epoch
    ds.set_epoch(3)
    a = ds[1]
    ds2 = SICEDataset(root, "all", pair_mode="random", augment=True)
    ds2.vary_with_epoch = True
    ds2.set_epoch(3)
    assert torch.equal(a["under"], ds2[1]["under"])  # deterministic


def test_sice_case_insensitive_and_parts(tmp_path):
    root = tmp_path / "sice"
    _sice_original(root, 2, 3, part="dataset_part1", label="label", ext=".jpg", label_ext=".jpg")
    _sice_original(root, 2, 3, part="DATASET_PART2", label="LABEL", ext=".JPG", label_ext=".Png")
    ds = SICEDataset(root, "all")
    assert ds.layout == "original"
    assert sorted(ds.names) == [
        "DATASET_PART2/1",
        "DATASET_PART2/2",
        "dataset_part1/1",
        "dataset_part1/2",
    ]
    # a single Dataset_Part folder as root
    assert len(SICEDataset(root / "dataset_part1", "all")) == 2


def test_sice_split_by_sequence(tmp_path):
    root = _sice_original(tmp_path / "sice", n_seq=10, n_exp=2)
    splits = {k: SICEDataset(root, k, seed=3).names for k in ("train", "val", "test")}
    assert [len(splits[k]) for k in ("train", "val", "test")] == [8, 1, 1]
    assert not set(splits["train"]) & set(splits["val"])
    assert not set(splits["train"]) & set(splits["test"])
    assert not set(splits["val"]) & set(splits["test"])
    assert SICEDataset(root, "train", seed=3).names == splits["train"]
    alt = SICEDataset(root, "test", ratios=(0.5, 0.2, 0.3), seed=3).names
    assert len(alt) == 3


def test_sice_extracted_layouts(tmp_path):
    # predefined train/test triples: test kept as is, val carved out of train
    root = tmp_path / "ext"
    _sice_extracted(root, "train", [f"t{i}" for i in range(9)])
    _sice_extracted(root, "test", ["x1", "x2"])
    test = SICEDataset(root, "test")
    assert test.layout == "extracted" and sorted(test.names) == ["test/x1", "test/x2"]
    tr, va = SICEDataset(root, "train"), SICEDataset(root, "val")
    assert len(tr) + len(va) == 9 and len(va) >= 1 and not set(tr.names) & set(va.names)
    s = test[0]
    assert (_level(s["under"]), _level(s["over"]), _level(s["gt"])) == (30, 180, 120)
    # any prefix, any case: pooled and split by ratios
    root2 = tmp_path / "ext2"
    _sice_extracted(root2, "Eval", [str(i) for i in range(10)], letters=("a", "B", "c"))
    parts = [SICEDataset(root2, k, pair_mode="random").names for k in ("train", "val", "test")]
    assert [len(p) for p in parts] == [8, 1, 1]
    assert all(n.startswith("Eval/") for n in parts[0])


def test_sice_unlabelled(tmp_path, caplog):
    root = _sice_original(tmp_path / "sice", n_seq=3, n_exp=2)
    _write(root / "Dataset_Part1" / "7" / "1.JPG", 10)
    _write(root / "Dataset_Part1" / "7" / "2.JPG", 90)
    with pytest.raises(ValueError, match=r"Dataset_Part1.7.*no ground truth"):
        SICEDataset(root, "all")
    with caplog.at_level(logging.WARNING, logger="nas.data"):
        ds = SICEDataset(root, "all", skip_unlabelled=True)
    assert len(ds) == 3 and "Dataset_Part1/7" not in ds.names
    assert any("7" in r.getMessage() and "ground truth" in r.getMessage() for r in caplog.records)
    # extracted layout: missing C file
    ext = _sice_extracted(tmp_path / "ext", "train", ["a", "b"])
    (ext / "trainC" / "b.png").unlink()
    with pytest.raises(ValueError, match=r"b\.png"):
        SICEDataset(ext, "all")
    assert SICEDataset(ext, "all", skip_unlabelled=True).names == ["train/a"]


def test_sice_size_mismatch(tmp_path):
    root = _sice_original(tmp_path / "sice", n_seq=1, n_exp=3)
    _write(root / "Dataset_Part1" / "1" / "3.JPG", 100, size=(20, 30))
    ds = SICEDataset(root, "all")
    with pytest.raises(PairSizeError, match=r"3\.JPG.*1\.PNG"):
        ds[0]
    s = SICEDataset(root, "all", size_mismatch="resize")[0]
    assert s["under"].shape == s["over"].shape == s["gt"].shape == (3, 24, 32)
    # the resized 30x20 frame keeps its constant level; the others are untouched
    assert {_level(s["under"]), _level(s["over"])} == {21, 100}
    assert _level(s["gt"]) == 201


def test_sice_bad_file_raise_and_skip(tmp_path, caplog):
    root = _sice_original(tmp_path / "sice", n_seq=3, n_exp=2)
    bad = root / "Dataset_Part1" / "2" / "1.JPG"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    ds = SICEDataset(root, "all")
    idx = ds.names.index("Dataset_Part1/2")
    with pytest.raises(ImageReadError, match=r"Dataset_Part1.2.1\.JPG"):
        ds[idx]
    ds = SICEDataset(root, "all", on_error="skip")
    with caplog.at_level(logging.WARNING, logger="nas.data"):
        s = ds[idx]
    assert s["name"] != "Dataset_Part1/2"
    assert any("1.JPG" in r.getMessage() for r in caplog.records)
    batches = list(make_loader(ds, batch_size=3))
    assert batches[0]["under"].shape[0] == 3  # the run goes on


# ---------------------------------------------------------------- folder pairs


def test_folder_pairs_luminance_order(tmp_path):
    _write(tmp_path / "p" / "x_A.png", 220)  # A brighter
    _write(tmp_path / "p" / "x_B.png", 30)
    _write(tmp_path / "p" / "y_a.jpg", 40)
    _write(tmp_path / "p" / "y_B.JPG", 200)
    ds = FolderPairs(tmp_path / "p")
    assert ds.names == ["x", "y"]
    for s in (ds[0], ds[1]):
        assert "gt" not in s
        assert s["under"].mean() < s["over"].mean()
    assert _level(ds[0]["under"]) == 30
    assert describe_spec(tmp_path / "p") == "pairs"
    _write(tmp_path / "p" / "z_A.png", 50)
    with pytest.raises(ValueError, match="z_A.png"):
        FolderPairs(tmp_path / "p")
    assert len(FolderPairs(tmp_path / "p", on_error="skip")) == 2
    _write(tmp_path / "q" / "w_A.png", 50)
    _write(tmp_path / "q" / "w_B.png", 90, size=(10, 10))
    with pytest.raises(PairSizeError, match=r"w_A\.png.*w_B\.png"):
        FolderPairs(tmp_path / "q")[0]


# ---------------------------------------------------------------- synthetic


def test_synthetic_statistics_and_splits():
    names = {k: SyntheticPairs(split=k, length=4).photo_names for k in ("train", "val", "test")}
    assert all(names.values())
    assert not set(names["train"]) & (set(names["val"]) | set(names["test"]))
    assert not set(names["val"]) & set(names["test"])
    ds = SyntheticPairs(split="train", length=12, seed=0)
    u, o, g = [], [], []
    for i in range(len(ds)):
        s = ds[i]
        assert s["under"].shape == s["over"].shape == s["gt"].shape == (3, 128, 128)
        for k in ("under", "over", "gt"):
            assert s[k].dtype == torch.float32 and 0 <= s[k].min() and s[k].max() <= 1
        u.append(s["under"])
        o.append(s["over"])
        g.append(s["gt"])
    u, o, g = torch.stack(u), torch.stack(o), torch.stack(g)
    assert u.mean() < g.mean() < o.mean()
    assert (u.flatten(1).mean(1) < g.flatten(1).mean(1)).all()
    assert (o.flatten(1).mean(1) > g.flatten(1).mean(1)).all()
    assert (u >= 1.0).float().mean() < 0.05
    assert 0.0 < (o >= 1.0).float().mean() < 0.9
    q = (u * 255 - (u * 255).round()).abs().max()
    assert q < 1e-4  # 8-bit levels


def test_synthetic_determinism_seeds_epochs():
    a = SyntheticPairs(split="train", length=3, seed=5)
    b = SyntheticPairs(split="train", length=3, seed=5)
    c = SyntheticPairs(split="train", length=3, seed=6)
    assert torch.equal(a[2]["under"], b[2]["under"]) and a[2]["name"] == b[2]["name"]
    assert not torch.equal(a[2]["under"], c[2]["under"])
    x0 = a[1]["over"]
    a.set_epoch(1)
    assert not torch.equal(a[1]["over"], x0)
    v = SyntheticPairs(split="val", length=3, seed=5)
    y0 = v[1]["under"]
    v.set_epoch(7)
    assert torch.equal(v[1]["under"], y0)  # evaluation data does not change


def test_expose_monotone_and_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.full((3, 64, 64), 0.5)
    dark = expose(x, -2.0, 2.2, 1e-3, 1e-3, g)
    bright = expose(x, 2.0, 2.2, 1e-3, 1e-3, g)
    assert abs(float(dark.mean()) - 0.5 * 2 ** (-2 / 2.2)) < 0.02
    assert abs(float(bright.mean()) - 0.5 * 2 ** (2 / 2.2)) < 0.02
    assert float(expose(x, 3.0, 2.2, 1e-3, 1e-3, g).mean()) == 1.0  # saturated
    assert 0.0 < float(dark.std()) < 0.05  # visible but mild noise
    batch = expose(torch.rand(4, 3, 8, 8), torch.tensor([-1.0, -2, -3, 0]), 2.2, 1e-4, 1e-3, g)
    assert batch.shape == (4, 3, 8, 8)


def test_synthetic_user_folder_and_bad_photo(tmp_path, caplog):
    rng = np.random.default_rng(0)
    for i in range(4):
        _write(tmp_path / "ph" / f"p{i}.png", rng.integers(0, 256, (40, 50, 3), np.uint8))
    (tmp_path / "ph" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(ImageReadError, match="broken.png"):
        SyntheticPairs(tmp_path / "ph", split="all", crop=32, length=2)
    with caplog.at_level(logging.WARNING, logger="nas.data"):
        ds = SyntheticPairs(tmp_path / "ph", split="all", crop=64, length=2, on_error="skip")
    assert "broken" not in ds.photo_names and len(ds.photo_names) == 4
    assert any("broken.png" in r.getMessage() for r in caplog.records)
    assert ds[0]["gt"].shape == (3, 64, 64)  # small photos upscaled to the crop


# ---------------------------------------------------------------- misalignment


def test_homography_warp_roundtrip():
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 96), torch.linspace(0, 1, 96), indexing="ij")
    img = torch.stack([xx, yy, 0.5 + 0.5 * torch.sin(6 * xx) * torch.cos(5 * yy)])
    hom = corner_homography(96, 96, 6.0, g)
    warped = warp_image(img, hom)
    back = warp_image(warped, torch.linalg.inv(hom))
    region = warp_image(valid_mask(hom, 96, 96), torch.linalg.inv(hom), padding="zeros") > 0.999
    assert region.float().mean() > 0.7
    err = (back - img).abs()[:, region[0]]
    assert float(err.mean()) < 0.01 and float(err.max()) < 0.1
    assert (warped - img).abs().mean() > 0.01  # it did move
    assert 0.7 < float(valid_mask(hom, 96, 96).mean()) < 1.0
    # the point mapping: warped(H p) == img(p)
    p = torch.tensor([40.0, 50.0, 1.0])
    q = hom @ p
    q = q[:2] / q[2]
    qi = q.round().long()
    assert torch.allclose(warped[:, qi[1], qi[0]], img[:, 50, 40], atol=0.05)


def test_misaligned_wrapper_gt_and_valid(tmp_path):
    base = SyntheticPairs(split="val", length=4, crop=96, seed=1)
    wrap = MisalignedPairs(base, seed=2)
    s0, s = base[1], wrap[1]
    assert torch.equal(s["over"], s0["over"]) and torch.equal(s["gt"], s0["gt"])
    assert not torch.equal(s["under"], s0["under"])
    assert s["valid"].shape == (1, 96, 96) and 0.5 < float(s["valid"].mean()) < 1.0
    back = warp_image(s["under"], torch.linalg.inv(s["homography"]))
    inner = warp_image(s["valid"], torch.linalg.inv(s["homography"]), padding="zeros") > 0.999
    assert float((back - s0["under"]).abs()[:, inner[0]].mean()) < 0.03
    assert torch.equal(wrap[1]["under"], s["under"])  # deterministic
    # cropped to the valid interior: homography re-expressed in the cropped grid
    c = MisalignedPairs(base, seed=2, crop_valid=True)[1]
    assert c["under"].shape[-1] < 96 and float(c["valid"].min()) == 1.0
    m = (96 - c["under"].shape[-1]) // 2
    back = warp_image(c["under"], torch.linalg.inv(c["homography"]))
    ref = s0["under"][:, m:-m, m:-m]
    inner = warp_image(c["valid"], torch.linalg.inv(c["homography"]), padding="zeros") > 0.999
    assert float((back - ref).abs()[:, inner[0]].mean()) < 0.03


def test_synthetic_misaligned_shapes_and_alignment():
    ds = SyntheticPairs(split="train", length=2, crop=64, misaligned=True, seed=0)
    s = ds[0]
    assert s["under"].shape == s["gt"].shape == (3, 64, 64) and s["valid"].shape == (1, 64, 64)
    assert float(s["valid"].min()) == 1.0
    # the over input is aligned with gt, the under one with warp(gt)
    moved = warp_image(s["gt"], s["homography"])
    inner = (slice(None), slice(4, -4), slice(4, -4))

    def ncc(a, b):
        a, b = a - a.mean(), b - b.mean()
        return float((a * b).sum() / (a.norm() * b.norm() + 1e-8))

    assert ncc(s["under"][inner], moved[inner]) > ncc(s["under"][inner], s["gt"][inner])
    assert ncc(s["over"][inner], s["gt"][inner]) > 0.5


# ---------------------------------------------------------------- augmentation


def test_augment_identical_and_deterministic():
    x = torch.rand(3, 40, 40)
    sample = {"under": x.clone(), "over": x.clone(), "gt": x.clone(), "valid": x[:1].clone()}
    aug = PairAugment(24)
    for seed in range(8):
        out = aug(sample, torch.Generator().manual_seed(seed))
        assert out["under"].shape == (3, 24, 24)
        assert torch.equal(out["under"], out["over"]) and torch.equal(out["under"], out["gt"])
        assert torch.equal(out["valid"], out["under"][:1])
        again = aug(sample, torch.Generator().manual_seed(seed))
        assert torch.equal(out["gt"], again["gt"])
    outs = {aug(sample, torch.Generator().manual_seed(s))["gt"].sum().item() for s in range(8)}
    assert len(outs) > 1
    # non-square: only 0/180 degree turns
    rect = {"under": torch.rand(3, 10, 16)}
    for s in range(6):
        assert random_flip_rot(rect, torch.Generator().manual_seed(s))["under"].shape[-2:] == (
            10,
            16,
        )
    ev = PairAugment(24, random=False)(sample)
    assert torch.equal(ev["gt"], x[:, 8:32, 8:32])


def test_augment_keeps_homography_consistent():
    g = torch.Generator().manual_seed(1)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    gt = torch.stack([xx, yy, torch.sin(8 * xx * yy)]) * 0.5 + 0.25
    s = misalign_sample({"under": gt.clone(), "over": gt.clone(), "gt": gt}, g, rho=4.0)
    for hf, vf, k in [(True, False, 1), (False, True, 3), (True, True, 2)]:
        t = flip_rot_sample(s, hf, vf, k)
        moved = warp_image(t["gt"], t["homography"])
        err = (moved - t["under"]).abs()[:, t["valid"][0] > 0]
        assert float(err.mean()) < 0.01


# ---------------------------------------------------------------- loaders and factory


def test_make_loader_shapes_and_order():
    ds = SyntheticPairs(split="train", length=10, crop=32, seed=0)
    loader = make_loader(ds, batch_size=4, shuffle=True, seed=3)
    batches = list(loader)
    assert [b["under"].shape for b in batches] == [(4, 3, 32, 32)] * 2 + [(2, 3, 32, 32)]
    assert isinstance(batches[0]["name"], list) and len(batches[0]["name"]) == 4
    order0 = sum((b["name"] for b in batches), [])
    order1 = sum((b["name"] for b in make_loader(ds, batch_size=4, shuffle=True, seed=3)), [])
    assert order0 == order1  # same seed, same order and content
    epoch1 = sum((b["name"] for b in loader), [])  # second pass = epoch 1
    assert epoch1 != order0
    loader.set_epoch(0)
    assert sum((b["name"] for b in loader), []) == order0


def test_make_loader_worker_matches_main_process():
    ds = SyntheticPairs(split="train", length=4, crop=32, seed=0)
    a = next(iter(make_loader(ds, batch_size=4, seed=1, num_workers=0)))
    b = next(iter(make_loader(ds, batch_size=4, seed=1, num_workers=1, timeout=120)))
    assert torch.equal(a["under"], b["under"]) and a["name"] == b["name"]


def test_build_dataset_specs(tmp_path):
    ds = build_dataset("synthetic", "train", crop=32, length=3)
    assert isinstance(ds, SyntheticPairs) and ds[0]["gt"].shape == (3, 32, 32)
    mis = build_dataset("SYNTHETIC", "val", crop=32, misaligned=True, length=2)
    assert mis[0]["valid"].shape == (1, 32, 32)

    sice = _sice_original(tmp_path / "sice", n_seq=4, n_exp=3)
    d = build_dataset(sice, "train", crop=16)
    assert isinstance(d, SICEDataset) and d[0]["under"].shape == (3, 16, 16)
    dm = build_dataset(sice, "train", crop=16, misaligned=True, rho=2.0)
    s = dm[0]
    assert s["under"].shape == (3, 16, 16) and float(s["valid"].min()) == 1.0
    ext = _sice_extracted(tmp_path / "ext", "train", ["a", "b", "c"])
    assert build_dataset(ext, "all", crop=None)[0]["gt"].shape == (3, 24, 32)

    for i in range(3):
        _write(tmp_path / "photos" / f"im{i}.png", 60 * i + 20, size=(40, 40))
    assert describe_spec(tmp_path / "photos") == "photos"
    dp = build_dataset(tmp_path / "photos", "test", crop=32, length=2)
    assert isinstance(dp, SyntheticPairs) and dp[1]["over"].shape == (3, 32, 32)

    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_dataset(tmp_path / "nowhere", "train")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="empty"):
        build_dataset(tmp_path / "empty", "train")
    with pytest.raises(ValueError, match="notes.txt"):
        build_dataset(tmp_path / "empty" / "notes.txt", "train")


def test_rho_default_margin():
    from nas.data import valid_margin

    assert valid_margin(128 / 16) == 9 and math.isclose(
        SyntheticPairs(split="val", length=1).rho, 8.0
    )


def test_folder_pairs_match_names_case_insensitively(tmp_path) -> None:
    """MEFB itself pairs 'Farmhouse_A.png' with 'FarmHouse_B.png' and 'sKY_a' with 'Sky_B'."""
    from PIL import Image

    from nas.data import find_folder_pairs

    for rel in ("Farm/Farmhouse_A.png", "Farm/FarmHouse_B.png", "Sky/sKY_a.png", "Sky/Sky_B.png"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / rel)
    pairs = find_folder_pairs(tmp_path)
    assert [(n, a.name, b.name) for n, a, b in pairs] == [
        ("Farm/Farmhouse", "Farmhouse_A.png", "FarmHouse_B.png"),
        ("Sky/sKY", "sKY_a.png", "Sky_B.png"),
    ]
