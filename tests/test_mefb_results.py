"""The shipped real-photo results reproduce from the shipped model files (``results/mefb``).

``benchmarks/mefb.py`` writes every reported network as ``results/mefb/models/<name>.pt`` and
its per-pair MEFB scores as ``results/mefb/eval-mefb/*-pairs.csv``. A fresh checkout must
reproduce those scores to 1e-4 from the files alone: checked here on the two smallest MEFB
pairs for every shipped model (skipped when MEFB's data is absent, as on a user's clone).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from nas.mefb import evaluate_folder

ROOT = Path(__file__).resolve().parents[1]
MEFB = ROOT.parent / "shared" / "data" / "mefb"
RESULTS = ROOT / "results" / "mefb"
PAIRS = sorted((RESULTS / "eval-mefb").glob("*-pairs.csv"))
SHIPPED = sorted(pd.read_csv(PAIRS[0])["model"].unique()) if PAIRS else []

pytestmark = [
    pytest.mark.skipif(not MEFB.is_dir(), reason=f"MEFB data not found at {MEFB}"),
    pytest.mark.skipif(not PAIRS, reason="no shipped results/mefb yet"),
]


def _smallest_scenes(pairs: pd.DataFrame, n: int = 2) -> list[str]:
    sizes = pairs.drop_duplicates("scene").sort_values(["megapixels", "scene"])
    return list(sizes["scene"][:n])


def test_every_table_model_ships_its_weights() -> None:
    for model in SHIPPED:
        if model not in ("mertens", "average"):
            assert (RESULTS / "models" / f"{model}.pt").is_file(), model


@pytest.mark.parametrize("model", SHIPPED)
def test_shipped_scores_reproduce(model: str) -> None:
    pairs = pd.read_csv(PAIRS[0])
    rows = pairs[pairs["model"] == model]
    assert len(rows) == 100, f"{model}: the shipped table should cover MEFB's 100 pairs"
    scenes = _smallest_scenes(rows)
    ref = str(RESULTS / "models" / f"{model}.pt") if model not in ("mertens", "average") else model
    got = evaluate_folder([ref], MEFB, scenes=scenes, device="cpu", threads=1, mefb_table=False)
    for _, r in got.pairs.iterrows():
        want = rows[rows["scene"] == r["scene"]].iloc[0]
        assert abs(r["mef_ssim"] - want["mef_ssim"]) < 1e-4, (model, r["scene"])
        assert abs(r["qabf"] - want["qabf"]) < 1e-4, (model, r["scene"])


EXTRA = [
    ("eval-pyramid", "searched-pyramid-eta0.5"),
    ("eval-pyramid-long", "searched-pyramid-long-eta0.5"),
    ("eval-fast", "searched-fast-eta0.03"),
    ("eval-fast-front", "searched-fast-target200"),
]
"""Shipped nets evaluated in their own MEFB runs: (results folder, model)."""


@pytest.mark.parametrize("folder, model", EXTRA)
def test_extra_net_scores_reproduce(folder: str, model: str) -> None:
    """A shipped net's MEFB scores in its own run reproduce from its model file."""
    found = sorted((RESULTS / folder).glob("*-pairs.csv"))
    assert found, f"results/mefb/{folder} has no per-pair CSV"
    pairs = pd.read_csv(found[0])
    rows = pairs[pairs["model"] == model]
    assert len(rows) == 100
    scenes = _smallest_scenes(rows)
    ref = str(RESULTS / "models" / f"{model}.pt")
    got = evaluate_folder([ref], MEFB, scenes=scenes, device="cpu", threads=1, mefb_table=False)
    for _, r in got.pairs.iterrows():
        want = rows[rows["scene"] == r["scene"]].iloc[0]
        assert abs(r["mef_ssim"] - want["mef_ssim"]) < 1e-4, r["scene"]
        assert abs(r["qabf"] - want["qabf"]) < 1e-4, r["scene"]
