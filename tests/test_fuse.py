"""``nas.fuse``: tiled fusion equals untiled, N > 2 exposures, CLI safety and input formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from nas import fuse
from nas.baselines import create_model
from nas.data.io import PairSizeError, load_image
from nas.genotype import CRMEF_GENERAL, build
from nas.models import arch_of_genotype, save_model


def _pair(h: int, w: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    under = torch.rand(3, h, w, generator=g) * 0.5
    over = torch.rand(3, h, w, generator=g) * 0.5 + 0.5
    return under, over


class _Record(nn.Module):
    """Returns the mean of its inputs and records the mean luminance of each call's pair."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[float, float]] = []

    def forward(self, under: Tensor, over: Tensor) -> Tensor:
        self.calls.append((fuse.mean_luminance(under), fuse.mean_luminance(over)))
        return 0.5 * (under + over)


@pytest.mark.parametrize(
    ("name", "kwargs"), [("crmef-general", {"channels": 8}), ("ffmef", {})], ids=str
)
def test_tiled_equals_untiled(name: str, kwargs: dict) -> None:
    model = create_model(name, **kwargs).eval()
    under, over = _pair(80, 96)
    with torch.no_grad():
        whole = model(under[None], over[None])[0]
    assert len(fuse.tile_spans(80, 48, 32)) == 3 and len(fuse.tile_spans(96, 48, 32)) == 4
    tiled = fuse.fuse_images(model, [under, over], tile=48, overlap=32)
    assert tiled.shape == whole.shape
    assert (tiled - whole).abs().max().item() < 1e-4


def test_ffmef_tiles_use_whole_image_norm_statistics() -> None:
    model = create_model("ffmef").eval()
    under, over = _pair(80, 96, seed=1)
    with torch.no_grad():
        whole = model(under[None], over[None])
        with fuse.global_norm_stats(model, under[None], over[None]) as n:
            assert n > 0
            same = model(under[None], over[None])
            per_tile = model(under[None, :, :40, :48], over[None, :, :40, :48])
    assert (same - whole).abs().max().item() < 1e-5
    assert not any(hasattr(m, "forward") and "forward" in vars(m) for m in model.modules())
    with torch.no_grad():
        local = model(under[None, :, :40, :48], over[None, :, :40, :48])
    # the tile normalised by the whole image's statistics differs from one normalised by its own
    assert (per_tile - local).abs().max().item() > 1e-4


def test_blend_weights_are_a_partition_of_unity() -> None:
    identity = _Record()
    under, over = _pair(83, 101)  # not multiples of the alignment
    out = fuse.fuse_pair(identity, under, over, tile=32, overlap=16)
    assert torch.allclose(out, 0.5 * (under + over), atol=1e-6)
    assert len(identity.calls) > 1 + 8  # stats pass skipped: no norms; many tiles
    spans = fuse.tile_spans(101, 32, 16)
    assert all(s % fuse.DEFAULT_ALIGN == 0 for s in spans)
    assert 32 <= 101 - spans[-1] < 32 + fuse.DEFAULT_ALIGN


def test_tile_spans_single_tile_and_bad_overlap() -> None:
    assert fuse.tile_spans(100, 0, 16) == [0]
    assert fuse.tile_spans(100, 128, 16) == [0]
    with pytest.raises(fuse.FuseError, match="overlap"):
        fuse.tile_spans(200, 64, 64)


def test_three_exposures_extremes_and_sequential() -> None:
    base = torch.rand(3, 24, 32)
    dark, mid, bright = base * 0.2, base * 0.5, base * 0.5 + 0.5
    images = [mid, bright, dark]  # any input order
    lum = [fuse.mean_luminance(x) for x in (dark, mid, bright)]

    rec = _Record()
    out = fuse.fuse_images(rec, images, rule="extremes")
    assert rec.calls == [pytest.approx((lum[0], lum[2]))]
    assert torch.allclose(out, 0.5 * (dark + bright))

    rec = _Record()
    out = fuse.fuse_images(rec, images, rule="sequential")
    first = 0.5 * (dark + mid)
    assert len(rec.calls) == 2
    assert rec.calls[0] == pytest.approx((lum[0], lum[1]))
    assert rec.calls[1] == pytest.approx((fuse.mean_luminance(first), lum[2]))
    assert torch.allclose(out, 0.5 * (first + bright))
    assert fuse.order_exposures(images, "sequential") == [2, 0, 1]
    with pytest.raises(fuse.FuseError, match="rule"):
        fuse.order_exposures(images, "median")


def test_fuse_images_size_mismatch_names_both() -> None:
    with pytest.raises(PairSizeError, match=r"'a\.png' is 32x24.*'b\.png' is 30x24"):
        fuse.fuse_images(
            _Record(), [torch.rand(3, 24, 32), torch.rand(3, 24, 30)], names=["a.png", "b.png"]
        )


# --- command line -------------------------------------------------------------------------


def _save_rgb(path: Path, img: Tensor) -> Path:
    arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    """A 'trained' model file (a save_model file counts as trained) of a width-8 CRMEF net."""
    g = CRMEF_GENERAL.with_channels(8)
    return save_model(tmp_path / "model.pt", build(g), arch_of_genotype(g))


@pytest.fixture
def exposures(tmp_path: Path) -> list[Path]:
    under, over = _pair(40, 56)
    mid = 0.5 * (under + over)
    return [
        _save_rgb(tmp_path / "u.png", under),
        _save_rgb(tmp_path / "o.png", over),
        _save_rgb(tmp_path / "m.png", mid),
    ]


def test_cli_fuses_three_exposures(tmp_path: Path, model_file: Path, exposures, capsys) -> None:
    out = tmp_path / "out" / "fused.png"
    argv = ["--model", str(model_file), *map(str, exposures), "--out", str(out), "--device", "cpu"]
    assert fuse.main([*argv, "--tile", "32", "--overlap", "16", "--rule", "sequential"]) == 0
    assert out.is_file() and load_image(out).shape == (3, 40, 56)
    msg = capsys.readouterr().out
    assert "fused 3 of 3 exposures" in msg and "sequential" in msg
    assert not list(out.parent.glob(".*.tmp"))  # atomic write left no temporary file
    assert fuse.main(argv) == 0
    assert "fused 2 of 3 exposures [extremes: u.png" in capsys.readouterr().out


def test_cli_mismatched_sizes_names_files(tmp_path: Path, model_file: Path, capsys) -> None:
    a = _save_rgb(tmp_path / "a.png", torch.rand(3, 24, 32))
    b = _save_rgb(tmp_path / "b.png", torch.rand(3, 20, 32))
    out = tmp_path / "f.png"
    assert fuse.main(["--model", str(model_file), str(a), str(b), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "a.png" in err and "32x24" in err and "b.png" in err and "32x20" in err
    assert not out.exists()


def test_cli_refuses_to_overwrite_an_input(
    tmp_path: Path, model_file: Path, exposures, capsys, monkeypatch
) -> None:
    before = exposures[0].read_bytes()
    monkeypatch.chdir(tmp_path)
    for target in (str(exposures[0]), "./u.png", str(tmp_path / "sub" / ".." / "u.png")):
        argv = ["--model", str(model_file), str(exposures[0]), str(exposures[1]), "-o", target]
        assert fuse.main(argv) == 2
        assert "refusing to overwrite input" in capsys.readouterr().err
    link = tmp_path / "link.png"
    link.symlink_to(exposures[1])
    argv = ["--model", str(model_file), str(exposures[0]), str(exposures[1]), "-o", str(link)]
    assert fuse.main(argv) == 2
    assert exposures[0].read_bytes() == before


def test_cli_sixteen_bit_and_grayscale_inputs(tmp_path: Path, model_file: Path) -> None:
    rng = np.random.default_rng(0)
    g16 = tmp_path / "gray16.png"
    Image.fromarray((rng.random((36, 44)) * 20000).astype(np.uint16)).save(g16)
    assert Image.open(g16).mode.startswith("I")
    gray = tmp_path / "gray8.png"
    Image.fromarray((rng.random((36, 44)) * 100 + 150).astype(np.uint8), mode="L").save(gray)
    rgba = tmp_path / "rgba.png"
    Image.fromarray((rng.random((36, 44, 4)) * 255).astype(np.uint8), mode="RGBA").save(rgba)
    out = tmp_path / "fused.tif"
    argv = ["--model", str(model_file), str(g16), str(gray), str(rgba), "-o", str(out)]
    assert fuse.main([*argv, "--rule", "sequential", "--device", "cpu"]) == 0
    fused = load_image(out)
    assert fused.shape == (3, 36, 44) and torch.isfinite(fused).all()


def test_cli_untrained_model_needs_flag(tmp_path: Path, exposures, capsys) -> None:
    out = tmp_path / "f.png"
    base = ["--model", "crmef-general", "--channels", "8", *map(str, exposures[:2]), "-o"]
    assert fuse.main([*base, str(out)]) == 2
    assert "no trained weights" in capsys.readouterr().err and not out.exists()
    assert fuse.main([*base, str(out), "--allow-untrained"]) == 0
    assert "WARNING" in capsys.readouterr().err and out.is_file()


def test_cli_bad_arguments(tmp_path: Path, model_file: Path, exposures, capsys) -> None:
    two = [str(p) for p in exposures[:2]]
    m = ["--model", str(model_file)]
    assert fuse.main([*m, two[0], "-o", str(tmp_path / "f.png")]) == 2
    assert fuse.main([*m, *two, "-o", str(tmp_path / "f.xyz")]) == 2
    assert "unsupported suffix" in capsys.readouterr().err
    assert fuse.main([*m, *two, "-o", str(tmp_path / "f.png"), "--overlap", "600"]) == 2
    assert (
        fuse.main([*m, two[0], str(tmp_path / "missing.png"), "-o", str(tmp_path / "f.png")]) == 2
    )
    assert "missing.png" in capsys.readouterr().err
    assert fuse.main(["--model", "no-such-model", *two, "-o", str(tmp_path / "f.png")]) == 2


def test_cli_classical_methods(tmp_path: Path, exposures, model_file: Path, capsys) -> None:
    """Classical methods by name: no weights (no --allow-untrained), all exposures at once by
    default, pairwise with --rule; --rule all is refused for a network."""
    out = tmp_path / "mertens.png"
    assert fuse.main(["--model", "mertens", *map(str, exposures), "-o", str(out)]) == 0
    assert "fused 3 of 3 exposures [all: u.png" in capsys.readouterr().out
    fused = load_image(out)
    assert fused.shape == (3, 40, 56) and torch.isfinite(fused).all()

    avg = tmp_path / "avg.png"
    argv = ["--model", "average", *map(str, exposures), "-o", str(avg), "--rule", "extremes"]
    assert fuse.main(argv) == 0
    assert "fused 2 of 3 exposures [extremes: u.png" in capsys.readouterr().out
    u, o = load_image(exposures[0]), load_image(exposures[1])
    assert (load_image(avg) - 0.5 * (u + o)).abs().max() <= 0.5 / 255 + 1e-6

    argv = ["--model", str(model_file), *map(str, exposures[:2]), "-o", str(tmp_path / "n.png")]
    assert fuse.main([*argv, "--rule", "all"]) == 2
    assert "only the classical methods" in capsys.readouterr().err


def test_fuse_classical_sequence_equals_fuse_sequence() -> None:
    from nas.classical import Mertens

    base = torch.rand(3, 24, 32)
    dark, mid, bright = base * 0.2, base * 0.5, base * 0.5 + 0.5
    res = fuse.fuse_classical(Mertens(), [mid, bright, dark])
    assert res.used == [2, 0, 1]
    # OpenCV's threaded pyramid may round differently run to run (last float bits)
    expected = Mertens().fuse_sequence([dark, mid, bright])
    assert torch.allclose(res.image, expected, atol=1e-5)


FAST_NET = Path(__file__).resolve().parents[1] / "results/mefb/models/searched-fast-eta0.03.pt"


def test_cli_runs_a_pyramid_blend_whole(tmp_path: Path, exposures) -> None:
    """A fast-head net blends a pyramid of the whole image: asked for tiles smaller than the
    image, the CLI still fuses it whole (tiles would each build their own pyramid)."""
    from nas.models import resolve_model
    from nas.tiling import fuse_pair

    resolved = resolve_model(FAST_NET)
    assert resolved.pyramid_blend and not resolve_model("crmef-general").pyramid_blend
    out = tmp_path / "fused.png"
    argv = ["--model", str(FAST_NET), *map(str, exposures[:2]), "--out", str(out)]
    assert fuse.main([*argv, "--tile", "32", "--overlap", "16", "--device", "cpu"]) == 0
    under, over = (load_image(p).unsqueeze(0) for p in exposures[:2])
    net = resolved.model.eval()
    whole = fuse_pair(net, under, over, 0, 0)[0]
    tiled = fuse_pair(net, under, over, 32, 16)[0]
    assert (tiled - whole).abs().max() > 0.01  # what tiling would have done
    assert (load_image(out) - whole).abs().max() <= 0.5 / 255 + 1e-6  # 8-bit rounding only
