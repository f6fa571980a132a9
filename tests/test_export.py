"""``nas.export --model``: deployable files (state dict, torch.export, ONNX), each checked."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import yaml

from nas import export
from nas.genotype import CRMEF_GENERAL, CRMEF_MISALIGNED, Genotype, build
from nas.models import arch_of_genotype, resolve_model, save_model
from nas.ops import DeformConvOp
from nas.ops.deform_conv import deform_backend, deform_conv2d

SMALL_SHAPES = ((2, 3, 32, 48), (1, 3, 40, 36))


@pytest.fixture(autouse=True)
def _small_checks(monkeypatch) -> None:
    """Check on smaller pairs than the CLI default, to keep the tests fast."""
    monkeypatch.setattr(export, "CHECK_SHAPES", SMALL_SHAPES)


def _model_file(tmp_path: Path, g: Genotype) -> Path:
    """A model file with random (not initial) weights: the offsets of deformable ops are not 0."""
    torch.manual_seed(1)
    net = build(g)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, DeformConvOp):
                m.offset_conv.weight.normal_(0.0, 0.3)
                m.offset_conv.bias.normal_(0.0, 1.0)
    return save_model(tmp_path / f"{g.space}.pt", net, arch_of_genotype(g))


def _pair(shape: tuple[int, ...], seed: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    return export.check_pair_inputs(shape, seed=seed)


def test_exportable_deform_conv_matches() -> None:
    x = torch.randn(2, 8, 13, 17)
    w, b = torch.randn(6, 4, 3, 3), torch.randn(6)  # 2 weight groups
    off = torch.randn(2, 2 * 2 * 9, 7, 9) * 3  # 2 offset groups, stride 2
    mask = torch.rand(2, 2 * 9, 7, 9)
    ref = deform_conv2d(x, off, w, b, stride=2, padding=1, mask=mask)
    with deform_backend("grid_sample"):
        got = deform_conv2d(x, off, w, b, stride=2, padding=1, mask=mask)
    assert (ref - got).abs().max().item() < 1e-4


def test_state_dict_round_trip(tmp_path: Path) -> None:
    src = _model_file(tmp_path, CRMEF_GENERAL.with_channels(8))
    out = tmp_path / "exported" / "net.pt"
    report = export.export_model(src, "state-dict", out)
    assert report["ok"] and report["max_abs_diff"] == 0.0
    assert yaml.safe_load(Path(f"{out}.check.yaml").read_text())["ok"] is True
    a, b = resolve_model(src).model.eval(), resolve_model(out).model.eval()
    u, o = _pair((1, 3, 27, 41))
    with torch.no_grad():
        assert torch.equal(a(u, o), b(u, o))
    assert resolve_model(out).genotype == CRMEF_GENERAL.with_channels(8)


def test_state_dict_of_a_registry_model_keeps_kwargs(tmp_path: Path) -> None:
    out = tmp_path / "crmef8.pt"
    assert export.export_model("crmef-general", "state-dict", out, channels=8)["ok"]
    r = resolve_model(out)
    assert r.arch == {"kind": "registry", "name": "crmef-general", "kwargs": {"channels": 8}}


@pytest.mark.parametrize("g", [CRMEF_GENERAL, CRMEF_MISALIGNED], ids=["general", "misaligned"])
def test_torch_export_matches_eager_on_two_sizes(tmp_path: Path, g: Genotype) -> None:
    src = _model_file(tmp_path, g.with_channels(8))
    out = tmp_path / "net.pt2"
    report = export.export_model(src, "torch-export", out)
    assert report["ok"], report.get("error")
    assert report["dynamic"] == {"batch": True, "height": True, "width": True}
    assert [c["shape"] for c in report["checks"]] == [list(s) for s in SMALL_SHAPES]
    assert all(c["max_abs_diff"] < 1e-5 for c in report["checks"])
    if g.arch.misaligned:
        return  # loading the file again costs seconds; the report's checks ran on the file
    # the file alone, at a third size, against the eager model
    extra = {"arch.json": ""}
    program = torch.export.load(out, extra_files=extra)
    assert json.loads(extra["arch.json"]) == arch_of_genotype(g.with_channels(8))
    eager = resolve_model(src).model.eval()
    u, o = _pair((3, 3, 29, 45))
    with torch.no_grad():
        assert (program.module()(u, o) - eager(u, o)).abs().max().item() < 1e-5


@pytest.mark.parametrize(
    "size,partner",
    [((768, 1024), (767, 1023)), ((97, 130), (98, 129)), ((64, 96), (64, 95)), ((8, 8), (8, 8))],
)
def test_parity_partner_keeps_every_coarser_level(size, partner) -> None:
    """Each side moves to the other parity with the same half size, unless that changes the
    pyramid depth (64 -> 63 would drop a level; 8 x 8 has no side that can move)."""
    from nas.pyramid import max_levels

    got = export.parity_partner(*size)
    assert got == partner
    assert max_levels(*got) == max_levels(*size)
    assert [(n + 1) // 2 for n in got] == [(n + 1) // 2 for n in size]


FAST_NET = Path(__file__).resolve().parents[1] / "results/mefb/models/searched-fast-eta0.03.pt"


def test_fast_head_net_exports_at_a_deployment_size(tmp_path: Path, capsys) -> None:
    """The shipped fast net (1/16-scale body, pyramid blend): one graph for the pyramid shape of
    the given size, checked there and at its parity partner, file equal to the eager model."""
    out = tmp_path / "fast.pt2"
    argv = ["--model", str(FAST_NET), "--format", "torch-export", "--out", str(out)]
    assert export.main([*argv, "--input-size", "48", "80"]) == 0
    printed = capsys.readouterr().out
    assert "2x3x48x80: 0" in printed and "1x3x47x79: 0" in printed
    assert "takes sizes with the same pyramid shape" in printed
    report = yaml.safe_load(Path(f"{out}.check.yaml").read_text())
    assert report["ok"] and report["dynamic"] == {"batch": True, "height": True, "width": True}
    program = torch.export.load(out).module()
    eager = resolve_model(FAST_NET).model.eval()
    u, o = _pair((3, 3, 47, 80), seed=9)  # a third size of the same pyramid shape
    with torch.no_grad():
        assert (program(u, o) - eager(u, o)).abs().max().item() < 1e-5
    # the probed ranges are the sizes the program takes: their ends run, one past them fails
    (h0, h1), (w0, w1) = report["accepts"]["height"], report["accepts"]["width"]
    assert f"takes: height {h0} to {h1 or 'any'} at width 80" in printed
    assert h0 <= 47 and h1 >= 48 and w0 <= 79 and (w1 is None or w1 >= 80)
    for h, w, runs in [(h0, 80, True), (h1, 80, True), (h0 - 1, 80, False), (h1 + 1, 80, False)]:
        assert export._passes_guards(program, h, w) is runs, (h, w)
        if runs:
            u, o = _pair((1, 3, h, w), seed=h)
            with torch.no_grad():
                assert (program(u, o) - eager(u, o)).abs().max().item() < 1e-5
        else:
            with pytest.raises(AssertionError, match="Guard failed"):
                program(*_pair((1, 3, h, w)))


def test_cli_export_and_failure_report(tmp_path: Path, monkeypatch, capsys) -> None:
    src = _model_file(tmp_path, CRMEF_GENERAL.with_channels(8))
    out = tmp_path / "cli.pt"
    assert export.main(["--model", str(src), "--format", "state-dict", "--out", str(out)]) == 0
    assert "max abs diff vs eager 0" in capsys.readouterr().out

    def broken(model, example):
        raise RuntimeError("data-dependent branch on a tensor value")

    monkeypatch.setattr(export, "export_program", broken)
    bad = tmp_path / "bad.pt2"
    assert export.main(["--model", str(src), "--format", "torch-export", "--out", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "torch-export export failed for" in err and "data-dependent branch" in err
    report = yaml.safe_load(Path(f"{bad}.check.yaml").read_text())
    assert report["ok"] is False and "data-dependent" in report["error"]


def test_cli_usage_errors(tmp_path: Path, monkeypatch, capsys) -> None:
    src = _model_file(tmp_path, CRMEF_GENERAL.with_channels(8))
    assert export.main(["--model", str(src), "--format", "state-dict", "--out", str(src)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert export.main(["--model", "no-such-model", "--format", "state-dict"]) == 2
    bad_suffix = ["--model", str(src), "--format", "torch-export", "--out", str(tmp_path / "x.pt")]
    assert export.main(bad_suffix) == 2
    assert "must end in .pt2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        export.main(["--model", str(src)])  # --format missing
    with pytest.raises(SystemExit):
        export.main([])

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "onnx" else real(n, *a)
    )
    out = tmp_path / "m.onnx"
    assert export.main(["--model", str(src), "--format", "onnx", "--out", str(out)]) == 2
    assert "pip install .[export]" in capsys.readouterr().err and not out.exists()


def test_search_run_with_format_derives_then_exports(tmp_path: Path, monkeypatch) -> None:
    run = tmp_path / "run"
    run.mkdir()
    g = CRMEF_GENERAL.with_channels(8)

    def fake_derive_run(path, max_skip=None):  # stands in for the derivation of a search run
        torch.save({"genotype": g.to_dict(), "state_dict": build(g).state_dict()}, run / "d.pt")
        (run / "d.pt").rename(run / "derived_init.pt")
        return {"run": str(path)}

    monkeypatch.setattr(export, "derive_run", fake_derive_run)
    assert export.main([str(run), "--format", "state-dict"]) == 0
    assert (run / "export" / "model.pt").is_file()
    assert resolve_model(run / "export" / "model.pt").genotype == g


needs_onnx = pytest.mark.skipif(
    importlib.util.find_spec("onnx") is None or importlib.util.find_spec("onnxscript") is None,
    reason="onnx / onnxscript not installed (pip install .[export])",
)


@needs_onnx
def test_onnx_export(tmp_path: Path) -> None:
    src = _model_file(tmp_path, CRMEF_GENERAL.with_channels(8))
    out = tmp_path / "net.onnx"
    report = export.export_model(src, "onnx", out)
    assert report["ok"], report.get("error")
    assert out.is_file() and report["dynamic"] == {"batch": True, "height": True, "width": True}
    if importlib.util.find_spec("onnxruntime") is not None:
        assert len(report["checks"]) == 2 and report["max_abs_diff"] < 1e-4
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["nas.arch"]) == arch_of_genotype(CRMEF_GENERAL.with_channels(8))


@needs_onnx
def test_onnx_file_of_a_fast_net_has_a_fixed_size(tmp_path: Path) -> None:
    """ONNX keeps no shape guards, so a pyramid-shaped graph is not left open to other sizes."""
    out = tmp_path / "fast.onnx"
    report = export.export_model(FAST_NET, "onnx", out, input_size=(48, 80))
    assert report["ok"], report.get("error")
    assert report["dynamic"] == {"batch": True, "height": False, "width": False}
    assert "fixed 48 x 80 input" in report["size_class"]
    if importlib.util.find_spec("onnxruntime") is not None:
        assert [c["shape"] for c in report["checks"]] == [[2, 3, 48, 80], [1, 3, 48, 80]]
