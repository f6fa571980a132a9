"""Sweeps: eta grid on SQLite, cooperating workers, a killed worker, NSGA-II, fronts."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas import sweep
from nas.config import from_mapping
from nas.latency import LatencyTable
from nas.latency.trace import trace_units
from nas.report import markdown_table, pareto_mask
from nas.runs import RunDir
from nas.supernet import Supernet
from nas.sweep.study import quiet_experimental

REPO = Path(__file__).resolve().parents[1]
CROP = 32
SEARCH = [
    "--set",
    "epochs=1",
    "warmup_epochs=0",
    f"crop={CROP}",
    "batch=4",
    "samples_per_epoch=4",
    "eval_batches=1",
    f"latency_input={CROP}",
]
TRAIN = ["--train-set", f"crop={CROP}", "batch=2", "samples_per_epoch=4", "eval_batches=1"]


def rigged_table(path: Path) -> Path:
    """The tiny space at CROP x CROP: cost k^2 ms per op (as in test_search)."""
    rows = {}
    for call in trace_units(Supernet("tiny"), (CROP, CROP), batch=1):
        op = call.op_name
        k = int(op.rsplit("_", 1)[1]) if op[-1].isdigit() else 1
        rows[tuple(call.key)] = 0.1 if op.startswith("fixed") or op == "skip" else float(k * k)
    LatencyTable.from_rows(rows, batch=1).save(path)
    return path


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return rigged_table(tmp_path_factory.mktemp("lat") / "rigged.csv")


def _worker(tmp: Path, table: Path, study: str) -> list[str]:
    """Worker flags: this study's SQLite file, 1 thread, the rigged (foreign) table."""
    return [
        "--study",
        study,
        "--storage",
        f"sqlite:///{tmp / 'sweeps' / (study + '.db')}",
        "--out-dir",
        str(tmp / "sweeps"),
        "--runs-dir",
        str(tmp / "runs"),
        "--device",
        "cpu",
        "--threads",
        "1",
        "--latency-table",
        str(table),
        "--allow-foreign-table",
        "--latency-reps",
        "3",
        "--heartbeat",
        "1",
        "--grace",
        "3",
    ]


def _study(tmp: Path, name: str) -> optuna.Study:
    url = f"sqlite:///{tmp / 'sweeps' / (name + '.db')}"
    return optuna.load_study(study_name=name, storage=sweep.make_storage(url, None))


def _states(study: optuna.Study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def test_grid_sweep_on_sqlite_and_rerun_skips_complete(tmp_path: Path, table: Path, capsys):
    args = ["--eta", "0", "0.5", "2", *SEARCH, *_worker(tmp_path, table, "grid")]
    assert sweep.main(args) == 0
    study = _study(tmp_path, "grid")
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert sorted(t.params["eta"] for t in trials) == [0.0, 0.5, 2.0]
    for t in trials:
        u = t.user_attrs
        assert (Path(u["run_dir"]) / "genotype.yaml").is_file()
        assert u["measured_ms"] > 0 and u["predicted_ms"] > 0 and u["wall_s"] > 0
        assert len(u["genotype"].split()) == 7
        assert t.values[0] == pytest.approx(u["derived_quality"])
        assert t.values[1] == pytest.approx(u["measured_ms"])
    out = capsys.readouterr().out
    assert "Pareto front" in out and "measured ms" in out and "| 0.5 |" in out
    for suffix in (".csv", ".md", ".png"):
        assert (tmp_path / "sweeps" / f"grid{suffix}").is_file()
    # the same command again: every grid point is complete, nothing runs
    assert sweep.main(args) == 0
    assert _states(_study(tmp_path, "grid")) == {"COMPLETE": 3}
    # other settings for the same study are refused, naming the difference
    assert sweep.main(["--eta", "0", "1", *SEARCH, *_worker(tmp_path, table, "grid")]) == 2
    assert "created with other settings" in capsys.readouterr().err


def test_sampled_eta_range_budget_is_per_study(tmp_path: Path, table: Path) -> None:
    w = _worker(tmp_path, table, "tpe")
    assert sweep.main(["--eta-range", "0", "2", "--n-trials", "2", *SEARCH, *w]) == 0
    study = _study(tmp_path, "tpe")
    assert _states(study) == {"COMPLETE": 2}
    assert all(0 <= t.params["eta"] <= 2 for t in study.get_trials())
    # a larger budget continues the same study (settings come from the study itself)
    assert sweep.main(["--n-trials", "3", *w]) == 0
    assert _states(_study(tmp_path, "tpe")) == {"COMPLETE": 3}


def test_retrain_with_beta_grid(tmp_path: Path, table: Path) -> None:
    args = ["--eta", "0.5", "--retrain-epochs", "1", "--beta1", "0.5", "0.75", "--beta2", "0"]
    assert sweep.main([*args, *SEARCH, *TRAIN, *_worker(tmp_path, table, "rt")]) == 0
    trials = _study(tmp_path, "rt").get_trials(states=(TrialState.COMPLETE,))
    assert sorted(t.params["beta1"] for t in trials) == [0.5, 0.75]
    for t in trials:
        cfg = RunDir(t.user_attrs["retrain_dir"], resume=True).load_config()
        assert cfg["loss_name"] == "crmef" and cfg["beta1"] == t.params["beta1"]
        assert t.values[0] == pytest.approx(t.user_attrs["retrain_quality"])


def test_two_workers_share_one_study(tmp_path: Path, table: Path) -> None:
    """Two separately started processes: every grid point once, none twice."""
    cmd = [sys.executable, "-m", "nas.sweep", "--eta", "0", "0.25", "0.5", "1", *SEARCH]
    procs = [
        subprocess.Popen(
            [*cmd, *_worker(tmp_path, table, "duo"), "--worker-index", str(i), "--no-report"],
            env=_env(),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-2000:] for o in outs)
    study = _study(tmp_path, "duo")
    assert _states(study) == {"COMPLETE": 4}
    etas = [t.params["eta"] for t in study.get_trials()]
    assert sorted(etas) == [0.0, 0.25, 0.5, 1.0]
    workers = {t.user_attrs["worker"] for t in study.get_trials()}
    assert len(workers) == 2  # both took part


@pytest.mark.slow
def test_n_workers_spawns_local_processes(tmp_path: Path, table: Path, monkeypatch) -> None:
    """``--n-workers 2``: the command starts two worker processes and reports once."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.chdir(tmp_path)
    args = ["--eta", "0", "1", "2", *SEARCH, *_worker(tmp_path, table, "nw"), "--n-workers", "2"]
    assert sweep.main(args) == 0
    study = _study(tmp_path, "nw")
    assert _states(study) == {"COMPLETE": 3}
    assert sorted(t.params["eta"] for t in study.get_trials()) == [0.0, 1.0, 2.0]
    assert (tmp_path / "sweeps" / "nw.md").is_file()


def test_killed_worker_is_failed_after_grace_and_resumed(tmp_path: Path, table: Path) -> None:
    """kill -9 a worker mid-search; its trial fails after the grace period; a new worker
    re-runs that grid point by resuming the same run folder, and completes the study."""
    flags = [
        "--eta",
        "0.5",
        *SEARCH,
        "epochs=40",
        *_worker(tmp_path, table, "kill"),
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "nas.sweep", *flags, "--no-report"],
        env=_env(),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    run_dir = None
    deadline = time.time() + 300
    while time.time() < deadline:
        runs = list((tmp_path / "runs").glob("kill-t000-*/metrics.csv"))
        if runs and len(RunDir(runs[0].parent, resume=True).read_metrics()) >= 2:
            run_dir = runs[0].parent
            break
        assert proc.poll() is None, "the worker ended before it could be killed"
        time.sleep(0.2)
    assert run_dir is not None, "the search never got going"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(RunDir(run_dir, resume=True).read_metrics())
    assert done_before < 40
    url = f"sqlite:///{tmp_path / 'sweeps' / 'kill.db'}"
    study = optuna.load_study(study_name="kill", storage=sweep.make_storage(url, 1, 3))
    assert _states(study) == {"RUNNING": 1}  # nobody noticed yet
    time.sleep(4.5)  # > grace period since the last heartbeat
    with quiet_experimental():
        optuna.storages.fail_stale_trials(study)
    assert _states(study) == {"FAIL": 1, "WAITING": 1}  # failed, and re-queued
    assert sweep.main(flags) == 0
    study = _study(tmp_path, "kill")
    assert _states(study) == {"FAIL": 1, "COMPLETE": 1}
    done = study.get_trials(states=(TrialState.COMPLETE,))[0]
    assert done.params["eta"] == 0.5
    assert Path(done.user_attrs["run_dir"]) == run_dir  # resumed, not restarted
    rows = RunDir(run_dir, resume=True).read_metrics()
    assert [r["epoch"] for r in rows] == list(range(40))


def test_nsga2_baseline_four_trials(tmp_path: Path, table: Path) -> None:
    args = ["--mode", "nsga2", "--n-trials", "4", "--population", "2", "--proxy-epochs", "1"]
    assert sweep.main([*args, *SEARCH, *TRAIN, *_worker(tmp_path, table, "ga")]) == 0
    study = _study(tmp_path, "ga")
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 4
    space = from_mapping(sweep.SweepConfig, study.user_attrs["sweep_config"], "s").space_obj()
    for t in trials:
        assert set(t.params) == set(space.slots)
        assert all(t.params[s] in space.candidates[s] for s in space.slots)
        assert t.user_attrs["latency_source"] == "table"
        assert t.values[1] == pytest.approx(t.user_attrs["predicted_ms"])
        assert t.values[0] == pytest.approx(t.user_attrs["proxy_quality"])
        assert t.user_attrs["measured_ms"] > 0
    df = sweep.trials_frame(study)
    assert df["pareto"].any() and len(df) == 4
    again = sweep.remeasure({"ga": df}, reps=2, rounds=1, threads=1)["ga"]
    assert (again["measured_ms"] > 0).all() and "trial_measured_ms" in again
    # a re-proposed genotype is found, so its score is reused instead of trained again
    first = trials[0]
    assert sweep.evaluated(study, first.params, number=-1).number == first.number
    assert sweep.evaluated(study, {**first.params, "drm.3": "nope"}, number=-1) is None


def test_front_data_pareto_and_hypervolume(tmp_path: Path) -> None:
    import pandas as pd

    def frame(mode: str, quality: list[float], ms: list[float]) -> pd.DataFrame:
        n = len(quality)
        return pd.DataFrame(
            {
                "mode": [mode] * n,
                "trial": list(range(n)),
                "eta": [float(i) for i in range(n)] if mode == "darts" else [None] * n,
                "quality": quality,
                "latency_ms": ms,
                "measured_ms": ms,
                "wall_s": [2.0] * n,
            }
        )

    # (21 dB, 4 ms) is dominated; eta=3 coincides with eta=1 (same genotype, same numbers)
    a = frame("darts", [20.0, 22.0, 21.0, 22.0], [1.0, 3.0, 4.0, 3.0])
    b = frame("nsga2", [19.0, 23.0], [0.5, 5.0])
    points, summary = sweep.front_data({"A": a, "B": b})
    assert points[points["study"] == "A"]["pareto"].tolist() == [True, True, False, True]
    assert points[points["study"] == "B"]["pareto"].tolist() == [True, True]
    assert points[points["study"] == "A"]["label"].tolist()[0] == "eta=0"
    ref = (19.0 - 1e-9, 5.0 * 1.05)
    # A: (1 ms, 20 dB) to 3 ms, then 22 dB to the reference latency
    hv_a = (3.0 - 1.0) * (20.0 - ref[0]) + (ref[1] - 3.0) * (22.0 - ref[0])
    row = summary.set_index("study")
    assert row.loc["A", "hypervolume"] == pytest.approx(hv_a)
    assert row.loc["A", "pareto"] == 2 and row.loc["B", "trials"] == 2
    assert row.loc["A", "wall_s_total"] == pytest.approx(8.0)
    rows = sweep.front_rows(points)
    assert rows[rows["study"] == "A"]["label"].tolist() == ["eta=0", "eta=1,3"]
    assert pareto_mask([1.0, 1.0], [2.0, 2.0]) == [True, True]  # ties do not dominate
    png = sweep.draw_fronts(points, tmp_path / "f.png", title="t")
    assert png.is_file() and png.stat().st_size > 1000
    md = markdown_table(summary, ["study", "hypervolume"])
    assert md.startswith("| study | hypervolume |")


def test_bad_settings_are_clear_errors(tmp_path: Path, table: Path, capsys, monkeypatch) -> None:
    w = _worker(tmp_path, table, "bad")
    assert sweep.main(["--mode", "nsga2", "--eta", "1", *w]) == 2
    assert "DARTS mode" in capsys.readouterr().err
    assert sweep.main(["--eta", "1", "--set", "epochz=3", *w]) == 2
    err = capsys.readouterr().err
    assert "epochz" in err and "valid keys" in err
    assert sweep.main(["--eta", "1", "--beta1", "0.5", *w]) == 2
    assert "--retrain-epochs" in capsys.readouterr().err
    import nas.latency.table

    monkeypatch.setattr(nas.latency.table, "default_table_dir", lambda: tmp_path / "empty")
    no_table = [a for a in w if a not in ("--allow-foreign-table", str(table), "--latency-table")]
    assert sweep.main(["--eta", "1", *SEARCH, *no_table, "--study", "nt"]) == 2
    assert "python -m nas.profile" in capsys.readouterr().err


def test_quality_is_psnr_with_ground_truth_else_mef_ssim(tmp_path: Path) -> None:
    from nas.sweep.trials import best_val_quality

    with_gt = RunDir(tmp_path / "a")
    with_gt.save_config({"kind": "train"})
    with_gt.write_metrics([{"epoch": 0, "val_psnr": 20.5}, {"epoch": 1, "val_psnr": 21.5}])
    assert best_val_quality(with_gt.path) == (21.5, "psnr")
    real = RunDir(tmp_path / "b")
    real.save_config({"kind": "train"})
    real.write_metrics([{"epoch": 0, "val_mef_ssim": 0.91}, {"epoch": 1, "val_mef_ssim": 0.93}])
    assert best_val_quality(real.path) == (0.93, "mef_ssim")
    empty = RunDir(tmp_path / "c")
    empty.save_config({"kind": "train"})
    with pytest.raises(RuntimeError, match="no validation quality"):
        best_val_quality(empty.path)


def test_eta_benchmark_searches_are_a_sweep_study() -> None:
    """The shipped sweep-eta-cpu config runs the searches of search-eta-cpu."""
    import yaml

    from nas.config import load_yaml_config
    from nas.search import SearchConfig

    root = Path(__file__).resolve().parent.parent / "nas" / "configs"
    sc = from_mapping(
        sweep.SweepConfig, yaml.safe_load((root / "sweep-eta-cpu.yaml").read_text()), "s"
    )
    bench = load_yaml_config(SearchConfig, root / "search-eta-cpu.yaml")
    for eta in sc.eta:
        assert sc.search_config(eta) == dataclasses.replace(bench, eta=eta, seed=sc.seed)


def test_failed_spawned_worker_fails_the_command(tmp_path: Path, table: Path, capfd, monkeypatch):
    """``--n-workers 2`` whose workers fail fast (their latency table is missing): the
    command exits 1 and names each failed worker, instead of exiting 0."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.chdir(tmp_path)
    w = _worker(tmp_path, table, "dead")
    w[w.index(str(table))] = str(tmp_path / "no-such-table.csv")
    args = ["--eta", "0", "1", *SEARCH, *w, "--n-workers", "2", "--no-report"]
    assert sweep.main(args) == 1
    err = capfd.readouterr().err
    assert "worker 0 of study dead exited with status 2" in err
    assert "worker 1 of study dead exited with status 2" in err
    assert "no-such-table.csv" in err  # the workers' own one-line errors


def test_exit_status_names_the_failed_worker(tmp_path: Path, table: Path, capsys, monkeypatch):
    """One of three spawned workers fails (killed by a signal): exit 1, that worker named."""
    import nas.sweep.cli

    seen = {}

    def spawn(opts):
        seen["n"] = opts.n_workers
        return {0: 0, 1: -9, 2: 0}

    monkeypatch.setattr(nas.sweep.cli, "spawn_workers", spawn)
    args = ["--eta", "0", *SEARCH, *_worker(tmp_path, table, "sig"), "--n-workers", "3"]
    assert sweep.main([*args, "--no-report"]) == 1
    err = capsys.readouterr().err
    assert seen["n"] == 3 and "worker 1 of study sig exited with status -9" in err
    assert "worker 0 " not in err and "worker 2 " not in err
    monkeypatch.setattr(nas.sweep.cli, "spawn_workers", lambda opts: {0: 0, 1: 0, 2: 0})
    assert sweep.main([*args, "--no-report"]) == 0
