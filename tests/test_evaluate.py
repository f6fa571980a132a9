"""``nas.evaluate``: one table of quality, size, FLOPs and measured latency (tiny settings)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
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
from nas.genotype import CRMEF_GENERAL
from nas.latency import LatencyTable, trace_units
from nas.models import resolve_model

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
    argv += ["--warmup", "1", "--threads", "1", "--device", "cpu", "--quiet"]
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
