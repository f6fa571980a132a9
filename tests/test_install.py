"""A plain (non-editable) install works from any folder: spaces and configs are package data,
latency tables follow one rule ($NAS_TABLES_DIR, else ./latency_tables)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built and installed into a temporary folder (no dependencies:
    they are this environment's)."""
    pytest.importorskip("setuptools")
    tmp = tmp_path_factory.mktemp("wheel")
    wheel_dir, target = tmp / "dist", tmp / "site"
    build = [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps"]
    build += ["--no-build-isolation", "-q", "-w", str(wheel_dir)]
    subprocess.run(build, check=True, capture_output=True, cwd=tmp)
    (wheel,) = wheel_dir.glob("mef_nas-*.whl")
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "-q"]
    subprocess.run(install + ["--target", str(target), str(wheel)], check=True, cwd=tmp)
    return target


def _run(target: Path, cwd: Path, *args: str, env: dict[str, str] | None = None):
    e = {**os.environ, "PYTHONPATH": str(target), **(env or {})}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=e, capture_output=True, text=True, timeout=300
    )


def test_wheel_ships_spaces_and_configs(installed: Path, tmp_path: Path) -> None:
    code = (
        "import nas, nas.space as s, nas.config as c;"
        "print(nas.__file__);"
        "print(s.shipped_spaces()); print(c.shipped_configs());"
        "print(s.load_space('crmef').arch.channels)"
    )
    out = _run(installed, tmp_path, "-c", code)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith(str(installed)), "the installed copy must be the one imported"
    for name in ("crmef", "crmef-misaligned", "tiny"):
        assert f"'{name}'" in lines[1]
    for name in ("search-real", "train-real", "search-paper"):
        assert f"'{name}'" in lines[2]
    assert lines[3] == "32"


def test_installed_search_runs_from_another_folder(installed: Path, tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    args = ["-m", "nas.search", "--preset", "tiny", "--epochs", "1"]
    args += ["--runs-dir", str(tmp_path / "runs"), "--no-progress"]
    out = _run(installed, tmp_path, *args, env={"NAS_TABLES_DIR": str(tables)})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    (run,) = (tmp_path / "runs").iterdir()
    assert (run / "genotype.yaml").is_file()
    # the search's table went where $NAS_TABLES_DIR says, not into the installed package
    assert list(tables.glob("*.csv")), "the latency table must be written to $NAS_TABLES_DIR"
    assert not (installed / "latency_tables").exists()


def test_shipped_config_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nas.config import config_path, shipped_configs

    monkeypatch.chdir(tmp_path)
    assert "search-real" in shipped_configs()
    for ref in ("search-real", "search-real.yaml", "configs/search-real.yaml"):
        assert config_path(ref).name == "search-real.yaml"
    with pytest.raises(FileNotFoundError, match="shipped configs"):
        config_path("no-such-config")
    mine = tmp_path / "search-real.yaml"
    mine.write_text("epochs: 1\n")
    assert config_path("search-real.yaml") == Path("search-real.yaml")  # a local file wins
