"""Retraining on the shared engine: tiny runs, resume, losses, model references."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nas import train
from nas.genotype import CRMEF_GENERAL, build
from nas.models import ModelRefError, resolve_model
from nas.runs import RunDir

FAST = [
    "--preset",
    "tiny",
    "--epochs",
    "2",
    "--crop",
    "32",
    "--batch",
    "2",
    "--samples-per-epoch",
    "4",
    "--device",
    "cpu",
    "--no-progress",
]


def _run(tmp_path: Path, name: str, *extra: str) -> Path:
    assert train.main([*FAST, "--runs-dir", str(tmp_path), "--run-name", name, *extra]) == 0
    return tmp_path / name


def test_genotype_trains_with_crmef_loss_and_critic(tmp_path: Path) -> None:
    g = tmp_path / "g.yaml"
    CRMEF_GENERAL.with_channels(8).to_yaml(g)
    run = _run(tmp_path, "g", "--arch", str(g))
    rows = RunDir(run, resume=True).read_metrics()
    assert [r["epoch"] for r in rows] == [0, 1]
    assert {"train_loss", "critic_loss", "val_psnr", "val_ssim", "lr"} <= set(rows[0])
    assert (run / "checkpoints" / "best.pt").is_file()
    trained = resolve_model(run)
    assert trained.trained and trained.genotype == CRMEF_GENERAL.with_channels(8)
    # the resolved model carries the best checkpoint's weights
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=False)
    state = best.get("task", best)["model"]
    for k, v in trained.model.state_dict().items():
        torch.testing.assert_close(v, state[k])
    fresh = build(CRMEF_GENERAL.with_channels(8)).eval()
    fresh.load_state_dict(state)
    u, o = torch.rand(2, 1, 3, 20, 28)
    torch.testing.assert_close(trained.model.eval()(u, o), fresh(u, o))


@pytest.fixture
def tasks(monkeypatch) -> list[train.TrainTask]:
    """The :class:`~nas.train.TrainTask` objects the runs of a test build."""
    made: list[train.TrainTask] = []
    original = train.TrainTask.__init__

    def init(self, *args, **kwargs) -> None:
        original(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(train.TrainTask, "__init__", init)
    return made


def _logged_loss_is_the_loss(task: train.TrainTask, run: Path) -> None:
    """The last logged validation loss is the run's loss object on its validation batches
    with the final weights (what the last epoch's evaluation computed)."""
    from nas.engine import validation_scores

    logged = RunDir(run, resume=True).read_metrics()[-1]["val_loss"]
    again = validation_scores(task.model, task.loss, task.eval_batches, torch.device("cpu"))
    assert logged == pytest.approx(again["val_loss"], rel=1e-6)


@pytest.mark.parametrize(
    "arch,cls", [("ffmef", "FFMEFLoss"), ("hyperp-mb", "HyperPMBLoss")], ids=["ffmef", "hyperp"]
)
def test_baseline_trains_with_its_paper_loss(tmp_path: Path, tasks, arch: str, cls: str) -> None:
    import nas.losses

    run = _run(tmp_path, arch, "--arch", arch)
    cfg = RunDir(run, resume=True).load_config()
    assert cfg["loss_name"] == arch and cfg["kind"] == "train"
    (task,) = tasks
    assert type(task.loss) is getattr(nas.losses, cls)
    assert task.critic is None and task.critic_opt is None
    _logged_loss_is_the_loss(task, run)


def test_same_loss_for_every_architecture(tmp_path: Path, tasks) -> None:
    from nas.losses import CRMEFLoss, PatchGANCritic

    run = _run(tmp_path, "ff-crmef", "--arch", "ffmef", "--loss", "crmef", "--set", "beta1=0.5")
    assert RunDir(run, resume=True).load_config()["loss_name"] == "crmef"
    (task,) = tasks
    loss = task.loss
    assert type(loss) is CRMEFLoss and (loss.beta1, loss.beta2) == (0.5, 0.05)
    assert isinstance(loss.adversarial.critic, PatchGANCritic)
    assert task.critic is loss.adversarial.critic  # the critic the run trains
    rows = RunDir(run, resume=True).read_metrics()
    assert all(r["critic_loss"] != "" for r in rows)
    _logged_loss_is_the_loss(task, run)


def test_mef_cl_without_vgg_weights_says_infonce_is_dropped(tmp_path: Path, capsys) -> None:
    run = _run(tmp_path, "mefcl", "--arch", "mef-cl", "--epochs", "1")
    assert "infonce" in capsys.readouterr().err.lower()
    assert RunDir(run, resume=True).load_config()["loss_dropped_terms"] == ["infonce"]


class _Interrupt(Exception):
    pass


def test_resume_equals_uninterrupted(tmp_path: Path, monkeypatch) -> None:
    args = ["--arch", "crmef-general", "--channels", "8", "--epochs", "3"]
    full = _run(tmp_path, "full", *args)
    original = train.TrainTask.after_checkpoint

    def crash(self, run, epoch, row):
        original(self, run, epoch, row)
        if epoch == 0:
            raise _Interrupt

    monkeypatch.setattr(train.TrainTask, "after_checkpoint", crash)
    with pytest.raises(_Interrupt):
        train.main([*FAST, "--runs-dir", str(tmp_path), "--run-name", "cut", *args])
    monkeypatch.setattr(train.TrainTask, "after_checkpoint", original)
    assert (
        train.main(
            [
                *FAST[:-1],
                "--resume",
                "--run-name",
                "cut",
                "--runs-dir",
                str(tmp_path),
                "--no-progress",
                "--epochs",
                "3",
            ]
        )
        == 0
    )
    a = torch.load(full / "checkpoints" / "last.pt", weights_only=False)["task"]["model"]
    b = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=False)
    for k, v in a.items():
        torch.testing.assert_close(b["task"]["model"][k], v, rtol=0, atol=0, msg=k)


def test_existing_run_is_not_overwritten(tmp_path: Path, capsys) -> None:
    _run(tmp_path, "once", "--arch", "ffmef", "--epochs", "1")
    before = (tmp_path / "once" / "checkpoints" / "last.pt").read_bytes()
    rc = train.main([*FAST, "--runs-dir", str(tmp_path), "--run-name", "once", "--arch", "ffmef"])
    assert rc == 2 and "--resume" in capsys.readouterr().err
    assert (tmp_path / "once" / "checkpoints" / "last.pt").read_bytes() == before


def test_unknown_model_lists_valid_names(tmp_path: Path, capsys) -> None:
    assert train.main([*FAST, "--runs-dir", str(tmp_path), "--arch", "unet-9000"]) == 2
    err = capsys.readouterr().err
    assert "unet-9000" in err and "ffmef" in err and "mef-cl" in err
    with pytest.raises(ModelRefError):
        resolve_model(tmp_path / "missing.pt")


@pytest.mark.parametrize(
    "extra,expect",
    [
        (["--loss", "nope"], "unknown loss 'nope'; valid losses:"),
        (["--loss", "mef-ssim", "--set", "loss_args={bogus: 1}"], "unknown arguments ['bogus']"),
        (["--set", "epochz=3"], "epochz"),
        (["--config", "no-such-config.yaml"], "config file not found"),
        (["--arch", "unet-9000"], "unet-9000"),
    ],
)
def test_user_errors_are_one_line(tmp_path: Path, capsys, extra: list[str], expect: str) -> None:
    """A mistake of the user (bad loss, loss argument, key, config file, model): exit 2 and
    one line on stderr, no traceback."""
    assert train.main([*FAST, "--runs-dir", str(tmp_path), "--arch", "ffmef", *extra]) == 2
    err = capsys.readouterr().err
    assert expect in err and err.startswith("error: ") and err.count("\n") == 1
    assert "Traceback" not in err


@pytest.mark.parametrize("kind", [RuntimeError, KeyError, TypeError])
def test_bugs_keep_their_traceback(tmp_path: Path, monkeypatch, kind: type) -> None:
    """A RuntimeError / KeyError / TypeError from the code (a bug, not a user error)
    propagates instead of becoming a one-line exit 2."""

    def broken(*args, **kwargs):
        raise kind("a bug inside the training code")

    monkeypatch.setattr(train.TrainTask, "train_step", broken)
    with pytest.raises(kind, match="a bug inside"):
        train.main([*FAST, "--runs-dir", str(tmp_path), "--arch", "ffmef", "--epochs", "1"])


def test_best_score_names_its_metric_and_old_checkpoints_load(tmp_path: Path) -> None:
    """``TrainTask.best_score`` holds the best validation score and ``best_metric`` which one
    (``val_psnr`` with ground truth, else ``val_mef_ssim``); a checkpoint written before the
    rename (``best_psnr``) still resumes."""
    run = _run(tmp_path, "b", "--arch", "ffmef", "--epochs", "2")
    # last.pt of epoch 1 is written after that epoch's best check: the best of epochs 0 and 1
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=False)["task"]
    assert state["best_metric"] == "val_psnr" and "best_psnr" not in state
    rows = RunDir(run, resume=True).read_metrics()
    assert state["best_score"] == pytest.approx(max(r["val_psnr"] for r in rows))
    # an old checkpoint: the same state under the old key
    old = {k: v for k, v in state.items() if k not in ("best_score", "best_metric")}
    old["best_psnr"] = state["best_score"]
    cfg = train.TrainConfig(device="cpu", epochs=1)
    model = resolve_model("ffmef").model
    task = train.TrainTask(model, {"kind": "registry"}, train.make_loss("ffmef", cfg), cfg,
                           torch.device("cpu"), [])  # fmt: skip
    task.load_state_dict(old)
    assert task.best_score == state["best_score"] and task.best_metric is None
    task.load_state_dict(state)
    assert task.best_metric == "val_psnr"
    # without ground truth the score is MEF-SSIM, and so named
    task.best_score, task.best_metric = -float("inf"), None
    task.after_checkpoint(RunDir(run, resume=True), 1, {"val_mef_ssim": 0.9})
    assert (task.best_score, task.best_metric) == (0.9, "val_mef_ssim")
    assert torch.load(run / "checkpoints" / "best.pt", weights_only=False)["val_mef_ssim"] == 0.9
