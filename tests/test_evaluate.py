"""``nas.evaluate``: one table of quality, size, FLOPs and measured latency (tiny settings)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from nas.evaluate import (
    COLUMNS,
    UntrainedModelError,
    evaluate_models,
    main,
    markdown_table,
    resolve_models,
    write_eval,
)
from nas.genotype import CRMEF_GENERAL, build
from nas.latency import LatencyTable, trace_units
from nas.latency.timing import pinned_threads
from nas.mefb import (
    PAIR_COLUMNS,
    PLOT_FILE,
    SUMMARY_COLUMNS,
    FolderEval,
    evaluate_folder,
    pair_metrics,
)
from nas.mefb_report import (
    folder_markdown,
    ranked_table,
    speed_quality_frame,
    write_folder_eval,
)
from nas.models import arch_of_genotype, resolve_model, save_model

SIZE = 24  # latency resolution and crop: tiny, but >= 11 px for MEF-SSIM
FAST = dict(
    crop=SIZE,
    max_images=2,
    batch_size=2,
    latency_size=SIZE,
    latency_batch=1,
    reps=3,
    rounds=3,
    warmup=1,
    threads=1,
    device="cpu",
)


@pytest.fixture(scope="module")
def search_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fake search run folder: config (kind search, eta 0.5) and a C8 genotype."""
    run = tmp_path_factory.mktemp("runs") / "search-crmef-eta0.5"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"kind": "search", "eta": 0.5}))
    CRMEF_GENERAL.with_channels(8).to_yaml(run / "genotype.yaml")
    return run


@pytest.fixture(scope="module")
def unit_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A latency table with 1 ms per unit of the C8 CRMEF net at SIZE x SIZE, batch 1."""
    net = resolve_model("crmef-general", channels=8).model
    keys = {c.key for c in trace_units(net, (SIZE, SIZE), batch=1)}
    table = LatencyTable.from_rows({tuple(k): 1.0 for k in keys}, batch=1)
    return table.save(tmp_path_factory.mktemp("tables") / "rigged.csv")


@pytest.fixture(scope="module")
def table(search_run: Path, unit_table: Path) -> pd.DataFrame:
    refs = [
        "ffmef",
        resolve_model("crmef-general", channels=8),
        "hyperp-mb",
        search_run / "genotype.yaml",
    ]
    with pytest.warns(UserWarning, match="untrained"):
        return evaluate_models(refs, allow_untrained=True, latency_table=unit_table, **FAST)


def test_columns_and_rows(table: pd.DataFrame) -> None:
    assert list(table.columns) == list(COLUMNS)
    assert list(table["name"]) == ["ffmef", "crmef-general", "hyperp-mb", "genotype"]
    assert list(table["kind"]) == ["registry", "registry", "registry", "genotype"]
    assert list(table["group"]) == ["baseline", "crmef", "baseline", "searched"]
    assert not table["trained"].any()
    assert (table["images"] == 2).all()
    for c in ("psnr", "ssim", "fsim", "mef_ssim", "qabf", "latency_ms"):
        assert table[c].notna().all(), c
    assert (table["params"] > 0).all() and (table["macs"] > 0).all()
    # FlopCounterMode counts 2 FLOPs per MAC and more ops than thop (interpolation)
    assert (table["flops"] >= table["macs"]).all()
    assert table.loc[0, "params"] == 7662  # FFMEF keeps its paper's width
    assert table.loc[1, "params"] == table.loc[3, "params"]  # same genotype, same width


def test_speedup_against_fastest_baseline(table: pd.DataFrame) -> None:
    base = table[table["group"] == "baseline"]
    fastest = base["latency_ms"].idxmin()
    assert table.loc[fastest, "speedup"] == pytest.approx(1.0)
    ref = table.loc[fastest, "latency_ms"]
    for _, r in table.iterrows():
        assert r["speedup"] == pytest.approx(ref / r["latency_ms"])
    assert base["speedup"].max() == pytest.approx(1.0)
    assert table.attrs["meta"]["speedup"]["reference"] == table.loc[fastest, "name"]


def test_eta_and_predicted_latency(table: pd.DataFrame, unit_table: Path) -> None:
    assert table.loc[3, "eta"] == 0.5
    assert math.isnan(table.loc[0, "eta"])
    # 1 ms per unit: the prediction is the number of units the net runs
    n_units = len(trace_units(resolve_model("crmef-general", channels=8).model, (SIZE, SIZE)))
    assert table.loc[1, "predicted_ms"] == pytest.approx(n_units)
    assert table.loc[3, "predicted_ms"] == pytest.approx(n_units)
    assert table[table["group"] == "baseline"]["predicted_ms"].isna().all()
    assert table.attrs["meta"]["predicted_latency"]["table"] == str(unit_table)


def test_write_and_markdown(table: pd.DataFrame, tmp_path: Path) -> None:
    paths = write_eval(table, tmp_path / "ev", ["--models", "x"])
    csv = paths["csv"]
    assert csv.name.startswith("eval-cpu-") and "synthetic-test-c24-n2" in csv.name
    assert paths["md"].read_text().startswith("Device `cpu-")
    back = pd.read_csv(csv)
    assert list(back.columns) == list(COLUMNS) and len(back) == 4
    meta = yaml.safe_load(paths["meta"].read_text())
    assert meta["latency"]["resolution"] == [SIZE, SIZE] and meta["latency"]["reps"] == 3
    assert meta["device"]["torch"] and meta["data"]["spec"] == "synthetic"
    assert meta["command"] == "python -m nas.evaluate --models x"
    md = markdown_table(table)
    assert "| model |" in md and "speed-up" in md and "UNTRAINED" in md
    assert not list((tmp_path / "ev").glob(".*tmp"))


def test_refuses_untrained_without_flag() -> None:
    with pytest.raises(UntrainedModelError, match="ffmef"):
        evaluate_models(["ffmef"], **FAST)


def test_channels_only_for_crmef() -> None:
    models = resolve_models(["ffmef", "crmef-general"], channels=8)
    assert models[0].arch["kwargs"] == {}
    assert models[1].arch["kwargs"] == {"channels": 8}
    with pytest.raises(ValueError, match="crmef"):
        resolve_models(["ffmef"], channels=8)


def test_cli_writes_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    argv = ["--models", "ffmef", "crmef-general", "--channels", "8", "--crop", str(SIZE)]
    argv += ["--max-images", "2", "--latency-size", str(SIZE), "--reps", "2", "--rounds", "2"]
    argv += ["--warmup", "1", "--threads", "1", "--device", "cpu", "--no-progress"]
    argv += ["--out", str(out), "--allow-untrained"]
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert "| ffmef |" in printed.out and "| crmef-general |" in printed.out
    assert "WARNING: untrained" in printed.err
    csvs = list(out.glob("eval-*.csv"))
    assert len(csvs) == 1 and csvs[0].with_suffix(".md").is_file()
    assert (out / "meta.yaml").is_file()
    df = pd.read_csv(csvs[0])
    assert df.loc[df["name"] == "ffmef", "speedup"].item() == pytest.approx(1.0)
    meta = yaml.safe_load((out / "meta.yaml").read_text())
    pred = meta["predicted_latency"]  # a prediction, or the reason there is none
    has_pred = not math.isnan(df.loc[df["name"] == "crmef-general", "predicted_ms"].item())
    assert has_pred or pred["reason"] or "crmef-general" in pred["not_predicted"]


def test_cli_refuses_untrained(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--models", "ffmef", "--crop", "16", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "untrained" in err and "--allow-untrained" in err


def test_cli_unknown_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--models", "no-such-net", "--allow-untrained", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "no-such-net" in err
    for name in ("mef-cl", "ffmef", "lcndr", "hyperp-mb", "crmef-general"):
        assert name in err


def test_cli_bad_data(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    assert main(["--models", "ffmef", "--data", str(missing), "--allow-untrained"]) == 2
    assert "does not exist" in capsys.readouterr().err


# --- classical methods in the table protocol -----------------------------------------------


def test_cli_settings_come_from_the_dataclass_fields() -> None:
    """The evaluation options are built from :class:`EvalSettings`' fields: with no flags they
    parse to ``EvalSettings()`` (every default equal), and each flag sets its field."""
    from nas.evaluate import EvalSettings, add_settings_args, build_parser, settings_from_args

    bare = argparse.ArgumentParser()
    add_settings_args(bare)
    assert settings_from_args(bare.parse_args([])) == EvalSettings()
    assert settings_from_args(build_parser().parse_args(["--models", "m"])) == EvalSettings()
    dests = {a.dest for a in bare._actions}
    assert {f.name for f in dataclasses.fields(EvalSettings)} <= dests
    argv = [
        *("--data", "d", "--split", "val", "--full", "--max-images", "3", "--batch", "2"),
        *("--misaligned", "--device", "cpu", "--latency-size", "64", "--latency-batch", "2"),
        *("--reps", "7", "--rounds", "2", "--warmup", "1", "--threads", "1", "--seed", "4"),
        *("--allow-untrained", "--latency-table", "t.csv", "--allow-foreign-table"),
        *("--channels", "8"),
    ]
    assert settings_from_args(bare.parse_args(argv)) == EvalSettings(
        data="d",
        split="val",
        crop=None,
        max_images=3,
        batch_size=2,
        misaligned=True,
        device="cpu",
        latency_size=64,
        latency_batch=2,
        reps=7,
        rounds=2,
        warmup=1,
        threads=1,
        allow_untrained=True,
        latency_table="t.csv",
        allow_foreign_table=True,
        seed=4,
        channels=8,
    )
    assert settings_from_args(bare.parse_args(["--crop", "64"])).crop == 64
    with pytest.raises(SystemExit):  # --crop and --full exclude each other
        bare.parse_args(["--crop", "64", "--full"])


def test_classical_methods_in_the_table() -> None:
    with pinned_threads(1):  # the metrics run on torch's threads; 1 is fastest on tiny crops
        df = evaluate_models(["average", "mertens"], **{**FAST, "max_images": 1})
    # no --allow-untrained needed: classical methods have nothing to train
    assert list(df["kind"]) == ["classical", "classical"]
    assert list(df["group"]) == ["classical", "classical"]
    assert df["trained"].all() and (df["params"] == 0).all()
    assert df["macs"].isna().all() and df["flops"].isna().all()
    assert (df["latency_ms"] > 0).all() and df["mef_ssim"].notna().all()
    assert "| average | classical | yes |" in markdown_table(df)


# --- the MEFB no-reference protocol --------------------------------------------------------

MEFB_REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mefb"
FAKE_TABLE = {
    "source": "fake MEFB table for the tests",
    "methods": {
        "BEST": {"MEF_SSIM": 0.999, "Qabf": 0.8, "Psnr": 50.0},
        "MIDDLE": {"MEF_SSIM": 0.85, "Qabf": 0.5, "Psnr": 50.0},
        "WORST": {"MEF_SSIM": 0.10, "Qabf": 0.1, "Psnr": 50.0},
    },
}


def _scene_images(h: int, w: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(under, over, reference) of a smooth random scene, quantised to 8 bits."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, h, w, generator=g)
    x = torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)[0]
    x = (x - x.amin()) / (x.amax() - x.amin())
    q = lambda t: (t.clamp(0, 1) * 255).round() / 255  # noqa: E731
    return q(x * 0.35), q(x * 1.2 + 0.3), q(x)


def _write(path: Path, img: torch.Tensor) -> Path:
    from nas.data.io import save_image

    return save_image(img, path)


def _mefb_tree(root: Path, table: bool = True) -> Path:
    """3 MEFB-style pairs: 48x56, 48x56 (bright one as A) and 52x60; a fake published table."""
    root.mkdir(parents=True, exist_ok=True)
    for name, (h, w), swap in (
        ("s1", (48, 56), False),
        ("s2", (48, 56), True),
        ("s3", (52, 60), False),
    ):
        u, o, _ = _scene_images(h, w, int(name[1]))
        a, b = (o, u) if swap else (u, o)
        _write(root / name / f"{name}_A.png", a)
        _write(root / name / f"{name}_B.png", b)
    if table:
        (root / "mefb_table.json").write_text(json.dumps(FAKE_TABLE))
    return root


@pytest.fixture(scope="module")
def mefb_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _mefb_tree(tmp_path_factory.mktemp("mefb") / "mefb")


@pytest.fixture(scope="module")
def net_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved (so 'trained') C8 CRMEF network: a tiny learned model for the protocol."""
    torch.manual_seed(0)
    g = CRMEF_GENERAL.with_channels(8)
    return save_model(tmp_path_factory.mktemp("net") / "tiny.pt", build(g), arch_of_genotype(g))


@pytest.fixture(scope="module")
def folder_eval(mefb_tree: Path, net_file: Path) -> FolderEval:
    return evaluate_folder(
        ["average", "mertens", str(net_file)], mefb_tree, device="cpu", threads=1
    )


def test_mefb_rows_ranks_and_published(folder_eval: FolderEval, tmp_path: Path) -> None:
    s = folder_eval.summary
    assert list(s.columns) == list(SUMMARY_COLUMNS)
    assert list(s["name"]) == ["average", "mertens", "tiny"]
    assert list(s["group"]) == ["classical", "classical", "derived"]
    assert list(s["pairs"]) == [3, 3, 3] and (s["tiled_pairs"] == 0).all()
    assert list(folder_eval.pairs["scene"].unique()) == ["s1", "s2", "s3"]
    assert (s["params"].iloc[:2] == 0).all() and s["params"].iloc[2] > 0
    for c in ("time_ms", "ms_per_mp", "metrics_ms"):
        assert (s[c] > 0).all() and (folder_eval.pairs[c] > 0).all(), c
    assert s["psnr"].isna().all()  # no ground truth in MEFB
    # published rows: rank among them = 1 + number of published methods above
    for _, r in s.iterrows():
        above = sum(m["MEF_SSIM"] > r["mef_ssim"] for m in FAKE_TABLE["methods"].values())
        assert r["mefb_rank"] == 1 + above
    ranked = ranked_table(folder_eval)
    assert list(ranked["rank"]) == list(range(1, 7))
    assert ranked["mef_ssim"].is_monotonic_decreasing
    assert set(ranked["source"]) == {"this run", "MEFB published"}
    assert ranked.loc[0, "name"] == "BEST" and ranked.iloc[-1]["name"] == "WORST"

    paths = write_folder_eval(folder_eval, tmp_path / "out", ["--protocol", "mefb"])
    assert paths["csv"].name.startswith("mefb-cpu-") and paths["csv"].name.endswith("-mefb.csv")
    assert list(pd.read_csv(paths["csv"]).columns) == list(SUMMARY_COLUMNS)
    back = pd.read_csv(paths["pairs"])
    assert list(back.columns) == list(PAIR_COLUMNS) and len(back) == 9
    md = paths["md"].read_text()
    assert "| rank | method | source | MEF-SSIM | Q^AB/F | ms/MP | params |" in md
    assert "| MEFB published |" in md.replace("| BEST | MEFB published |", "| MEFB published |")
    assert "**mertens**" in md and "among MEFB's 3 published methods" in md
    assert paths["plot"].name == PLOT_FILE and paths["plot"].stat().st_size > 1000
    meta = yaml.safe_load(paths["meta"].read_text())
    assert meta["device"]["device_fingerprint"] == s.loc[0, "device"]
    assert meta["data"]["pairs"] == 3 and meta["published"]["methods"] == 3


def test_mefb_average_row_equals_the_metric_computed_directly(
    folder_eval: FolderEval, mefb_tree: Path
) -> None:
    from nas.data.io import load_image
    from nas.metrics import mef_ssim, qabf

    mefs, qs = [], []
    for name in ("s1", "s2", "s3"):
        a = load_image(mefb_tree / name / f"{name}_A.png")[None]
        b = load_image(mefb_tree / name / f"{name}_B.png")[None]
        f = (a + b) / 2
        mefs.append(float(mef_ssim(f, [a, b], scales=3, quantize=True)[0]))
        qs.append(float(qabf(f, a, b, quantize=True)[0]))
    row = folder_eval.summary.set_index("name").loc["average"]
    assert row["mef_ssim"] == pytest.approx(sum(mefs) / 3, abs=1e-12)
    assert row["qabf"] == pytest.approx(sum(qs) / 3, abs=1e-12)


def test_mefb_metrics_are_symmetric_in_the_sources() -> None:
    u, o, _ = _scene_images(48, 52, 7)
    f = (0.6 * u + 0.4 * o)[None]
    ab = pair_metrics(f, u[None], o[None])
    ba = pair_metrics(f, o[None], u[None])
    assert ab["mef_ssim"] == pytest.approx(ba["mef_ssim"], abs=1e-12)
    assert ab["qabf"] == pytest.approx(ba["qabf"], abs=1e-12)


def test_mefb_is_reproducible_and_tiles_above_the_threshold(
    folder_eval: FolderEval, mefb_tree: Path, net_file: Path
) -> None:
    again = evaluate_folder(
        ["average", "mertens", str(net_file)], mefb_tree, device="cpu", threads=1, max_pairs=2
    )
    first = folder_eval.pairs.set_index(["model", "scene"])
    for _, r in again.pairs.iterrows():
        ref = first.loc[(r["model"], r["scene"])]
        # the same computation on the same pairs: the same float64 numbers, to the last bit
        assert r["mef_ssim"] == ref["mef_ssim"] and r["qabf"] == ref["qabf"], r["model"]
    assert again.meta["data"]["subset"] and len(again.pairs) == 6
    tiled = evaluate_folder(
        [str(net_file)],
        mefb_tree,
        device="cpu",
        threads=1,
        tile_above_mp=0.001,
        tile=32,
        overlap=16,
        mefb_table=False,
        max_pairs=1,
    )
    assert tiled.summary.loc[0, "tiled_pairs"] == 1 and tiled.published is None
    whole = first.loc[("tiny", "s1"), "mef_ssim"]
    assert tiled.pairs.loc[0, "mef_ssim"] == pytest.approx(whole, abs=1e-3)


def test_mefb_cli_saves_only_named_fused_outputs(
    mefb_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, fused = tmp_path / "eval", tmp_path / "fused"
    argv = ["--protocol", "mefb", "--data", str(mefb_tree), "--models", "average", "mertens"]
    argv += ["--out", str(out), "--device", "cpu", "--threads", "1", "--quiet"]
    argv += ["--max-pairs", "2", "--save-fused", str(fused), "--save-names", "s2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| rank | method |" in printed and "MEFB published" in printed
    assert sorted(p.relative_to(fused).as_posix() for p in fused.rglob("*.png")) == [
        "average/s2.png",
        "mertens/s2.png",
    ]
    assert len(list(out.glob("mefb-*-n2*.csv"))) == 2  # summary + per-pair
    assert (out / PLOT_FILE).is_file()


def test_mefb_missing_partner_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _mefb_tree(tmp_path / "broken", table=False)
    (root / "s2" / "s2_B.png").unlink()
    argv = ["--protocol", "mefb", "--data", str(root), "--models", "average", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "s2_A.png" in err and "no partner" in err
    assert not (tmp_path / "o").exists()
    assert main(["--protocol", "mefb", "--models", "average"]) == 2  # synthetic: no folder
    assert "--data FOLDER" in capsys.readouterr().err


def test_mefb_ab_and_under_over_gt_layouts(tmp_path: Path) -> None:
    ab, uo = tmp_path / "misaligned", tmp_path / "reference"
    for i in range(2):
        u, o, gt = _scene_images(48, 56, 10 + i)
        _write(ab / f"crmef-{i}" / "A.png", u)
        _write(ab / f"crmef-{i}" / "B.png", o)
        _write(uo / f"scene-{i}" / "under.png", u)
        _write(uo / f"scene-{i}" / "over.png", o)
        _write(uo / f"scene-{i}" / "gt.png", gt)
    r_ab = evaluate_folder(["average"], ab, device="cpu", threads=1)
    assert list(r_ab.pairs["scene"]) == ["crmef-0", "crmef-1"]
    assert set(r_ab.pairs["layout"]) == {"ab"} and r_ab.summary["psnr"].isna().all()
    assert r_ab.published is None and "PSNR" not in folder_markdown(r_ab)
    r_uo = evaluate_folder(["average"], uo, device="cpu", threads=1)
    assert set(r_uo.pairs["layout"]) == {"under-over"}
    assert (r_uo.pairs["psnr"] > 10).all() and (r_uo.pairs["ssim"] > 0).all()
    assert "| PSNR | SSIM |" in folder_markdown(r_uo)
    assert r_uo.meta["data"]["ground_truth_pairs"] == 2
    (uo / "scene-1" / "over.png").unlink()
    with pytest.raises(ValueError, match="under.png' has no partner 'over"):
        evaluate_folder(["average"], uo, device="cpu")


def test_speed_quality_frame_marks_the_pareto_front() -> None:
    summary = pd.DataFrame(
        {
            "name": ["fast-bad", "slow-good", "slow-bad", "mid"],
            "group": ["classical", "classical", "derived", "derived"],
            "ms_per_mp": [1.0, 100.0, 200.0, 10.0],
            "mef_ssim": [0.90, 0.97, 0.95, 0.93],
        }
    )
    pub = pd.DataFrame({"name": ["A", "B"], "mef_ssim": [0.9, 0.97], "qabf": [0.5, 0.6]})
    frame = speed_quality_frame(summary, pub)
    assert list(frame["is_pareto"]) == [True, True, False, True]
    assert frame.attrs["published"] == [("B", 0.97), ("A", 0.9)]


@pytest.mark.skipif(not MEFB_REAL.is_dir(), reason=f"real MEFB data not present at {MEFB_REAL}")
def test_mefb_real_pairs_average() -> None:
    # the three smallest MEFB scenes (0.08 MP each); 'garage' holds Garage_A/B.jpg
    r = evaluate_folder(
        ["average"], MEFB_REAL, scenes=["Window2", "garage", "Door"], device="cpu", threads=1
    )
    assert len(r.pairs) == 3 and r.published is not None and len(r.published) == 21
    mef = float(r.summary.loc[0, "mef_ssim"])
    assert 0.8 < mef < 1.0
    # the rank among MEFB's published methods: 1 + the number that score higher
    published = json.loads((MEFB_REAL / "mefb_table.json").read_text())["methods"]
    above = sum(m["MEF_SSIM"] > mef for m in published.values())
    assert 0 < above < len(published)  # the three-scene average sits inside the table
    assert r.summary.loc[0, "mefb_rank"] == 1 + above


# --- misaligned data: training loss, validation and evaluation score the same sources -------


class _Average(torch.nn.Module):
    """Fuses by averaging (of the warped input and the reference, as a network would get)."""

    def forward(self, under: torch.Tensor, over: torch.Tensor) -> torch.Tensor:
        return 0.5 * (under + over)


def test_misaligned_pairs_scored_against_the_same_sources_everywhere() -> None:
    """On warped pairs, the training loss (MEF-SSIM objective), the run's validation and
    ``nas.evaluate``'s quality all score the fusion against ``fusion_sources``: the
    reference-frame copy ``under_aligned`` and ``over``, not the warped ``under``."""
    from nas.data.misalign import misalign_sample
    from nas.engine import validation_scores
    from nas.losses import MEFSSIMLoss, fusion_sources
    from nas.measure import measure_quality
    from nas.metrics import compute_all, mef_ssim
    from nas.models import ResolvedModel

    g = torch.Generator().manual_seed(0)
    base = torch.rand(4, 3, 72, 72, generator=g)
    samples = [
        misalign_sample(
            {"under": 0.4 * x, "over": (0.3 + x).clamp(0, 1)}, g, rho=6, crop_valid=True
        )
        for x in base
    ]
    batch = {k: torch.stack([s[k] for s in samples]) for k in ("under", "over", "under_aligned")}
    assert batch["under"].shape[-1] >= 44  # 3 MEF-SSIM scales
    net = _Average()
    fused = net(batch["under"], batch["over"])
    aligned = [batch["under_aligned"], batch["over"]]
    assert all(a is b for a, b in zip(fusion_sources(batch), aligned))

    # the reference numbers: against the reference frame, and (differing) against the warp
    want = mef_ssim(fused, aligned, scales=3).mean()
    warped = mef_ssim(fused, [batch["under"], batch["over"]], scales=3).mean()
    assert abs(float(want - warped)) > 5e-3  # >> the 1e-6 tolerances below

    # training loss: its MEF-SSIM term is 1 - want (mean and chroma terms off)
    loss = MEFSSIMLoss(mean_weight=0.0, chroma_weight=0.0)
    assert float(loss(fused, batch)) == pytest.approx(1 - float(want), abs=1e-6)

    # validation of search / training runs
    val = validation_scores(net, loss, [batch], torch.device("cpu"))
    assert val["val_mef_ssim"] == pytest.approx(float(want), abs=1e-6)

    # nas.evaluate's quality pass
    model = ResolvedModel(model=net, name="average", arch={"kind": "registry"}, source="test")
    quality, n_img, has_gt = measure_quality([model], samples, torch.device("cpu"), batch_size=4)
    assert n_img == 4 and not has_gt
    expect = compute_all(fused, *aligned)
    assert quality[0]["mef_ssim"] == pytest.approx(float(want), abs=1e-6)
    assert quality[0]["qabf"] == pytest.approx(expect["qabf"], abs=1e-6)
