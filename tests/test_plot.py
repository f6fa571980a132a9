"""``nas.plot``: Pareto front, trade-off frames, drawing (Agg) and the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nas.plot import (
    alpha_frame,
    draw_alpha_heatmap,
    draw_tradeoff,
    main,
    params_frame,
    pareto_front,
    quality_column,
    run_alpha_frame,
    tradeoff_frame,
    weights_from_row,
)


def _eval_df(with_psnr: bool = True) -> pd.DataFrame:
    df = pd.DataFrame(
        {
            "name": ["mef-cl", "ffmef", "crmef-general", "search-a", "search-b", "search-c"],
            "kind": ["registry", "registry", "registry", "genotype", "genotype", "genotype"],
            "group": ["baseline", "baseline", "crmef", "searched", "searched", "searched"],
            "trained": [True] * 6,
            "eta": [np.nan, np.nan, np.nan, 1.0, 0.0, 0.5],
            "psnr": [20.0, 18.0, 21.0, 19.0, 22.0, 20.5],
            "mef_ssim": [0.90, 0.85, 0.93, 0.88, 0.95, 0.91],
            "params": [661379, 7662, 400000, 20000, 90000, 40000],
            "latency_ms": [50.0, 10.0, 40.0, 8.0, 45.0, 20.0],
        }
    )
    if not with_psnr:
        df["psnr"] = np.nan
    return df


def test_pareto_front_hand_made() -> None:
    df = pd.DataFrame(
        {"x": [1.0, 2.0, 3.0, 2.0, 4.0, np.nan, 1.0], "y": [1.0, 3.0, 2.0, 3.0, 5.0, 9.0, 0.5]},
        index=list("abcdefg"),
    )
    mask = pareto_front(df, "x", "y")
    assert list(mask.index) == list("abcdefg")
    # a (fastest), b/d (identical, both kept), e (best); c dominated by b; f NaN; g by a
    assert mask.to_dict() == dict(a=True, b=True, c=False, d=True, e=True, f=False, g=False)
    flipped = pareto_front(df, "x", "y", minimize_x=False, maximize_y=False)
    assert flipped["g"] and flipped["e"] and not flipped["a"]
    with pytest.raises(KeyError, match="nope"):
        pareto_front(df, "x", "nope")


def test_tradeoff_frame() -> None:
    f = tradeoff_frame(_eval_df())
    assert list(f.columns) == ["name", "latency_ms", "quality", "is_pareto", "eta", "group"]
    assert f.attrs["quality"] == "psnr"
    assert f["quality"].tolist() == _eval_df()["psnr"].tolist()
    front = set(f.loc[f["is_pareto"], "name"])
    assert front == {"search-a", "search-c", "crmef-general", "search-b"}
    assert f.loc[f["name"] == "search-b", "eta"].item() == 0.0
    # without PSNR (no ground truth) the quality is MEF-SSIM
    g = tradeoff_frame(_eval_df(with_psnr=False))
    assert g.attrs["quality"] == "mef_ssim" and quality_column(_eval_df(False)) == "mef_ssim"
    assert g["quality"].tolist() == _eval_df()["mef_ssim"].tolist()


def test_tradeoff_frame_infers_group_from_registry_not_names() -> None:
    df = _eval_df().drop(columns=["group", "eta"])
    df.loc[3, "name"] = "search-crmef-eta0.25"  # a run name is not parsed
    f = tradeoff_frame(df)
    assert f["group"].tolist()[:4] == ["baseline", "baseline", "crmef", "derived"]
    assert f["eta"].isna().all()
    with_eta = tradeoff_frame(_eval_df().drop(columns=["group"]))
    assert with_eta.loc[3, "group"] == "searched" and with_eta.loc[3, "eta"] == 1.0


def test_params_frame() -> None:
    f = params_frame(_eval_df())
    assert list(f.columns) == ["name", "params", "quality", "is_pareto", "eta", "group"]
    assert set(f.loc[f["is_pareto"], "name"]) == {"ffmef", "search-a", "search-c", "search-b"}


def test_draw_tradeoff_files(tmp_path: Path) -> None:
    written = draw_tradeoff(tradeoff_frame(_eval_df()), tmp_path / "t.png", caption="cpu | x")
    assert [p.name for p in written] == ["t.png", "t.pdf"]
    assert written[1].read_bytes().startswith(b"%PDF")
    import matplotlib.image

    img = matplotlib.image.imread(written[0])
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300
    assert float(img[..., :3].std()) > 0.05  # something is drawn, not a blank canvas
    written = draw_tradeoff(params_frame(_eval_df()), tmp_path / "p", x="params", formats=["png"])
    assert written == [tmp_path / "p.png"] and written[0].is_file()


def test_cli_tradeoff_and_params(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "eval-cpu-x-synthetic.csv"
    _eval_df().to_csv(csv, index=False)
    assert main(["tradeoff", str(csv)]) == 0
    assert (tmp_path / "eval-cpu-x-synthetic-tradeoff.png").is_file()
    assert (tmp_path / "eval-cpu-x-synthetic-tradeoff.pdf").is_file()
    assert main(["params", str(csv), "--out", str(tmp_path / "pp"), "--formats", "png"]) == 0
    assert (tmp_path / "pp.png").is_file()
    assert main(["tradeoff", str(tmp_path / "missing.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err


def _fake_search_run(root: Path) -> Path:
    run = root / "search-run"
    run.mkdir()
    rows = pd.DataFrame(
        {
            "epoch": [0, 1],
            "train_loss": [0.3, 0.2],
            "w:srsm.feat1:conv_3": [0.5, 0.7],
            "w:srsm.feat1:skip": [0.5, 0.3],
            "w:drm.0:resconv_3": [0.2, 0.1],
            "w:drm.0:resdilconv_3": [0.8, 0.9],
        }
    )
    rows.to_csv(run / "metrics.csv", index=False)
    return run


def test_alphas_from_run(tmp_path: Path) -> None:
    run = _fake_search_run(tmp_path)
    frame, row = run_alpha_frame(run)
    assert row["epoch"] == 1
    expected = alpha_frame(weights_from_row(row))
    pd.testing.assert_frame_equal(frame, expected)
    chosen = frame[frame["chosen"]].set_index("slot")["op"].to_dict()
    assert chosen == {"srsm.feat1": "conv_3", "drm.0": "resdilconv_3"}
    assert main(["alphas", str(run)]) == 0
    assert (run / "alphas-last.png").is_file() and (run / "alphas-last.pdf").is_file()


def test_alphas_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["alphas", str(tmp_path)]) == 2
    assert "metrics.csv" in capsys.readouterr().err
    run = tmp_path / "train-run"
    run.mkdir()
    pd.DataFrame({"epoch": [0], "val_psnr": [20.0]}).to_csv(run / "metrics.csv", index=False)
    assert main(["alphas", str(run)]) == 2
    assert "w:<slot>:<op>" in capsys.readouterr().err


def test_alpha_heatmap_unchanged(tmp_path: Path) -> None:
    """The search's own use: frame from weights, PNG by default."""
    frame = alpha_frame({"a": {"x": 0.2, "y": 0.8}, "b": {"x": 0.6, "y": 0.4}})
    assert frame["chosen"].tolist() == [False, True, True, False]
    written = draw_alpha_heatmap(frame, tmp_path / "alphas.png", title="t")
    assert written == [tmp_path / "alphas.png"] and written[0].is_file()
