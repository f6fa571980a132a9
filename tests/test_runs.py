"""The run record (:class:`nas.runs.Run`): what a run folder is, read from its files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nas.genotype import CRMEF_GENERAL
from nas.runs import Run, RunError
from nas.search import SearchConfig


def _run(root: Path, name: str, **config) -> Path:
    p = root / name
    (p / "checkpoints").mkdir(parents=True)
    (p / "config.yaml").write_text(yaml.safe_dump({"run_name": name, **config}))
    return p


@pytest.fixture
def runs(tmp_path: Path) -> dict[str, Path]:
    search = _run(
        tmp_path,
        "s",
        kind="search",
        eta=0.25,
        space="tiny",
        crop=48,
        seed=3,
        batch=4,
        eval_batches=2,
        latency_input=[768, 1024],
        data="synthetic",
    )
    CRMEF_GENERAL.with_channels(8).to_yaml(search / "genotype.yaml")
    (search / "genotypes").mkdir()
    CRMEF_GENERAL.with_channels(8).to_yaml(search / "genotypes" / "epoch_001.yaml")
    (search / "export.yaml").write_text("params: 123\n")
    train = _run(tmp_path, "t", kind="train", arch=str(search), crop=64)
    plain = _run(tmp_path, "p", kind="train", arch="ffmef")
    return {"search": search, "train": train, "plain": plain}


def test_search_run_record(runs):
    r = Run.load(runs["search"])
    assert (r.kind, r.name, r.eta, r.space) == ("search", "s", 0.25, "tiny")
    assert r.latency_size == (768, 1024)
    assert r.genotype() == CRMEF_GENERAL.with_channels(8)
    assert r.export_report() == {"params": 123}
    assert r.checkpoint("last") is None
    cfg = r.config_as(SearchConfig)
    assert isinstance(cfg, SearchConfig) and cfg.eta == 0.25 and cfg.latency_input == [768, 1024]


def test_training_run_knows_its_search(runs):
    t = Run.load(runs["train"])
    assert t.kind == "train" and t.eta == 0.25 and t.space is None
    assert t.latency_size == (64, 64)  # no latency_input: the crop
    assert Run.load(runs["plain"]).eta is None


@pytest.mark.parametrize(
    "rel",
    ["s", "s/genotype.yaml", "s/genotypes/epoch_001.yaml", "t", "t/checkpoints"],
)
def test_origin_of_a_model_reference(runs, rel):
    root = runs["search"].parent
    origin = Run.origin_of(root / rel)
    assert origin is not None and origin.path == runs["search"]


def test_origin_of_unrelated_references(runs, tmp_path):
    assert Run.origin_of(runs["plain"]) is None  # a baseline's training run
    assert Run.origin_of("ffmef") is None
    assert Run.origin_of(tmp_path / "nowhere") is None


def test_not_a_run(tmp_path):
    with pytest.raises(RunError, match="config.yaml"):
        Run.load(tmp_path)
    assert Run.find(tmp_path) is None
    (tmp_path / "config.yaml").write_text("kind: other\n")
    with pytest.raises(RunError, match="kind 'other'"):
        Run.load(tmp_path)
