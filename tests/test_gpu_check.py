"""``benchmarks/gpu_check.sh``: every step runs and lands in one report (tiny, on CPU)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_script_parses():
    subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_check.sh")], check=True)


def test_tables_dir_follows_environment(monkeypatch, tmp_path):
    from nas.latency.table import default_table_dir

    monkeypatch.setenv("NAS_TABLES_DIR", str(tmp_path))
    assert default_table_dir() == tmp_path
    monkeypatch.delenv("NAS_TABLES_DIR")
    assert default_table_dir().name == "latency_tables"


@pytest.mark.slow
def test_quick_check_on_cpu_writes_one_report(tmp_path):
    env = {
        **os.environ,
        "DEVICE": "cpu",
        "QUICK": "1",
        "OUT": str(tmp_path),
        "PYTHON": sys.executable,
    }
    tables = sorted((ROOT / "latency_tables").glob("*"))
    subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh")],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    report = (tmp_path / "report.md").read_text()
    steps = re.findall(r"^## (.+)$", report, flags=re.M)
    assert len(steps) == 10, steps
    assert report.count("-> exit 0 in") == 10, report
    for name in ("deform_conv.txt", "inference.md", "search_step.md", "amp_genotype.md"):
        assert (tmp_path / name).stat().st_size > 0
    assert "| bf16 |" in (tmp_path / "search_step.md").read_text()
    # QUICK keeps its tables out of the repository's folder
    assert sorted((ROOT / "latency_tables").glob("*")) == tables
