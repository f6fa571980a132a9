"""Genotype: YAML round trip, derive/build, graph, reference genotypes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import networkx as nx
import pytest
import torch

from nas.genotype import (
    CRMEF_GENERAL,
    CRMEF_MISALIGNED,
    REFERENCE_GENOTYPES,
    Genotype,
    GenotypeError,
    build,
    count_parameters,
    derive,
)
from nas.supernet import Supernet


@pytest.mark.parametrize("g", list(REFERENCE_GENOTYPES.values()), ids=list(REFERENCE_GENOTYPES))
def test_yaml_round_trip(tmp_path: Path, g: Genotype) -> None:
    p = tmp_path / "genotype.yaml"
    g.to_yaml(p)
    assert Genotype.from_yaml(p) == g
    assert Genotype.from_yaml_text(g.to_yaml()) == g
    assert hash(g) == hash(Genotype.from_yaml(p))


def test_genotype_is_frozen_and_printable() -> None:
    with pytest.raises(AttributeError):
        CRMEF_GENERAL.space = "x"  # type: ignore[misc]
    assert "drm.0=resdilconv_3" in str(CRMEF_GENERAL)
    assert CRMEF_GENERAL["srsm.conv"] == "conv_3"


def test_reference_genotypes_build_and_run() -> None:
    for g in (CRMEF_GENERAL.with_channels(8), CRMEF_MISALIGNED.with_channels(8)):
        torch.manual_seed(0)
        net = build(g).eval()
        torch.manual_seed(0)
        twin = build(g).eval()
        u, o = torch.rand(2, 1, 3, 40, 36)
        y = net(u, o)
        assert y.shape == u.shape and 0.0 <= y.min() and y.max() <= 1.0
        # the genotype alone fixes the network: same seed, same weights, same output
        torch.testing.assert_close(twin(u, o), y)
        assert not torch.allclose(net(o, u), y)  # and it does look at its inputs


def _styled(g: Genotype, style: str) -> Genotype:
    return dataclasses.replace(g, arch=dataclasses.replace(g.arch, style=style))


def test_reference_parameter_counts() -> None:
    """Exact counts. The published genotypes are built in the authors' style by default
    (residual ops with two convolutions, a 2C-wide detail module): the general net at C = 64
    has the paper's 1,879,330 parameters (Table VIII: 1.88 M), 474,786 at C = 32. The lean
    style (one convolution per residual op, detail module at C) builds 755,919 at C = 64."""
    assert CRMEF_GENERAL.arch.style == "authors"
    assert count_parameters(build(CRMEF_GENERAL)) == 1_879_330
    assert count_parameters(build(CRMEF_GENERAL.with_channels(32))) == 474_786
    assert count_parameters(build(_styled(CRMEF_GENERAL, "lean"))) == 755_919
    assert count_parameters(build(CRMEF_MISALIGNED)) == 2_634_526  # + the alignment module


def test_derive_takes_argmax() -> None:
    net = Supernet("tiny")
    with torch.no_grad():
        for s in net.space.slots:
            a = net.alpha(s)
            a.zero_()
            a[-1] = 1.0
    g = derive(net)
    assert g.choice == {s: net.space.candidates[s][-1] for s in net.space.slots}
    assert g.space == "tiny" and g.arch == net.arch


def test_networkx_graph_follows_data_flow() -> None:
    g = CRMEF_MISALIGNED.with_channels(8).to_networkx()
    assert isinstance(g, nx.DiGraph) and nx.is_directed_acyclic_graph(g)
    assert {"under", "over", "output"} <= set(g.nodes)
    assert nx.has_path(g, "under", "output") and nx.has_path(g, "over", "output")
    assert g.nodes["dasm.l3"]["op"] == "authors.deform_5"  # the authors' style, by default
    assert g.nodes["drm.head"]["op"] == "fixed.authors.drm_head_aligned"
    assert g.has_edge("drm.op3", "drm.post3") and g.has_edge("drm.post3", "drm.head")


def test_unknown_op_in_file_names_file_slot_and_valid_ops(tmp_path: Path) -> None:
    p = tmp_path / "g.yaml"
    p.write_text(CRMEF_GENERAL.to_yaml().replace("resconv_3", "resconv_9", 1))
    with pytest.raises(GenotypeError, match=rf"{p}.*drm\.2.*resconv_9.*valid ops"):
        Genotype.from_yaml(p)


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda d: d.pop("ops"), "ops"),
        (lambda d: d["ops"].pop("drm.3"), "missing"),
        (lambda d: d.update(widht=3), "unknown key"),
        (lambda d: d.update(channels="wide"), "channels"),
    ],
)
def test_bad_genotype_mappings(edit, match: str) -> None:
    d = CRMEF_GENERAL.to_dict()
    edit(d)
    with pytest.raises(GenotypeError, match=match):
        Genotype.from_dict(d)


def test_bad_yaml_text_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(GenotypeError, match="not valid YAML"):
        Genotype.from_yaml_text("ops: [a,\n")
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        Genotype.from_yaml(tmp_path / "nope.yaml")
