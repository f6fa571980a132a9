"""Search-space YAML -> validated dataclasses."""

from __future__ import annotations

from pathlib import Path

import pytest

from nas.space import SPACES_DIR, SearchSpace, SpaceError, load_space, slot_names


@pytest.mark.parametrize("path", sorted(SPACES_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_spaces_load(path: Path) -> None:
    space = SearchSpace.from_yaml(path)
    assert space.slots == slot_names(space.arch.misaligned)
    assert SearchSpace.from_dict(space.to_dict()) == space


def test_load_by_name_and_width() -> None:
    space = load_space("crmef")
    assert space.arch.channels == 32 and not space.arch.misaligned
    assert space.with_channels(64).arch.channels == 64
    assert load_space("crmef-misaligned").arch.misaligned


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "space.yaml"
    p.write_text(text)
    return p


def test_unknown_key_lists_valid_keys(tmp_path: Path) -> None:
    data = load_space("tiny").to_dict() | {"chanels": 8}
    with pytest.raises(SpaceError, match="chanels.*valid keys.*channels"):
        SearchSpace.from_dict(data, source="x.yaml")


def test_unknown_op_names_slot_and_valid_ops() -> None:
    data = load_space("tiny").to_dict()
    data["slots"]["drm.0"] = ["resconv_3", "sepconv_3"]
    with pytest.raises(SpaceError, match=r"drm\.0.*sepconv_3.*valid ops"):
        SearchSpace.from_dict(data)


def test_missing_and_unknown_slots() -> None:
    data = load_space("tiny").to_dict()
    del data["slots"]["drm.3"]
    with pytest.raises(SpaceError, match="missing"):
        SearchSpace.from_dict(data)
    data = load_space("tiny").to_dict()
    data["slots"]["dasm.l3"] = ["deform_3"]  # not valid when misaligned is false
    with pytest.raises(SpaceError, match="dasm.l3"):
        SearchSpace.from_dict(data)


@pytest.mark.parametrize(
    "text,match",
    [
        ("name: x\nslots: [1, 2\n", "not valid YAML"),
        ("- a\n- b\n", "mapping"),
        ("name: x\nchannels: -1\nslots: {}\n", "channels"),
        ("name: x\nrelight: add\nslots: {}\n", "relight"),
    ],
)
def test_bad_yaml(tmp_path: Path, text: str, match: str) -> None:
    p = _write(tmp_path, text)
    with pytest.raises(SpaceError, match=match) as e:
        SearchSpace.from_yaml(p)
    assert str(p) in str(e.value)


def test_missing_file_lists_shipped() -> None:
    with pytest.raises(FileNotFoundError, match="crmef"):
        load_space("no-such-space")
