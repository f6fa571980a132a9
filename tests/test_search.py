"""The search: tiny end-to-end run, latency penalty effect, resume, NaN guard, bad config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from nas import search
from nas.engine import NonFiniteLossError
from nas.genotype import Genotype, build
from nas.latency import LatencyTable
from nas.latency.trace import trace_units
from nas.space import load_space
from nas.supernet import Supernet

CROP = 32
FAST = dict(
    space="tiny",
    epochs=3,
    warmup_epochs=1,
    batch=4,
    crop=CROP,
    samples_per_epoch=16,
    eval_batches=1,
    w_lr=0.05,
    a_lr=0.05,
    latency_input=CROP,
    device="cpu",
)


def rigged_table(path: Path) -> Path:
    """A table for the tiny space where cost grows steeply with kernel size (k^2 ms)."""
    net = Supernet("tiny")
    rows = {}
    for call in trace_units(net, (CROP, CROP), batch=1):
        op = call.op_name
        k = int(op.rsplit("_", 1)[1]) if op[-1].isdigit() else 1
        ms = 0.1 if op.startswith("fixed") or op == "skip" else float(k * k)
        rows[tuple(call.key)] = ms
    LatencyTable.from_rows(rows, batch=4).save(path)
    return path


@pytest.fixture(scope="module")
def table_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return rigged_table(tmp_path_factory.mktemp("lat") / "rigged.csv")


def _cfg(tmp_path: Path, table: Path, **kw) -> search.SearchConfig:
    return search.SearchConfig(
        **{**FAST, "runs_dir": str(tmp_path), "latency_table": str(table), **kw}
    )


def test_tiny_search_end_to_end(tmp_path: Path, table_path: Path) -> None:
    run = search.run_search(_cfg(tmp_path, table_path, run_name="r"), progress=False)
    for f in [
        "config.yaml",
        "space.yaml",
        "metrics.csv",
        "genotype.yaml",
        "alphas.png",
        "derived_init.pt",
        "export.yaml",
        "checkpoints/last.pt",
        "genotypes/epoch_003.yaml",
    ]:
        assert (run / f).is_file(), f
    g = Genotype.from_yaml(run / "genotype.yaml")
    net = build(g)
    state = torch.load(run / "derived_init.pt", weights_only=False)
    net.load_state_dict(state["state_dict"])
    u = torch.rand(1, 3, 24, 24)
    assert net(u, u).shape == u.shape
    rows = search.RunDir(run, resume=True).read_metrics()
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert {"train_loss", "val_loss", "expected_ms", "alpha_entropy", "skip_wins"} <= set(rows[-1])
    assert any(k.startswith("w:drm.0:") for k in rows[-1])
    assert "val_loss" not in rows[0] or rows[0]["val_loss"] == ""  # warm-up: weights only
    report = yaml.safe_load((run / "export.yaml").read_text())
    assert report["params"] > 0 and report["flops"] > 0 and report["predicted_ms"] > 0


def test_latency_penalty_lowers_expected_latency(tmp_path: Path, table_path: Path) -> None:
    lat = {}
    for eta in (0.0, 5.0):
        run = search.run_search(
            _cfg(tmp_path, table_path, eta=eta, run_name=f"eta{eta}", epochs=4), progress=False
        )
        lat[eta] = search.RunDir(run, resume=True).read_metrics()[-1]["expected_ms"]
    assert lat[5.0] < lat[0.0]


def test_alpha_never_touched_by_the_weight_optimiser(tmp_path: Path) -> None:
    cfg = search.SearchConfig(**{**FAST, "eta": 0.0})
    net = Supernet("tiny")
    task = search.SearchTask(net, cfg, None, torch.device("cpu"), [])
    opt_params = {id(p) for g in task.w_opt.param_groups for p in g["params"]}
    assert not opt_params & {id(a) for a in net.arch_parameters()}
    batch = {k: torch.rand(2, 3, 16, 16) for k in ("under", "over", "gt")}
    before = [a.detach().clone() for a in net.arch_parameters()]
    task.train_step(batch, None, epoch=0)  # warm-up step: weights only
    assert all(torch.equal(a, b) for a, b in zip(net.arch_parameters(), before))


def test_second_order_step_runs_and_moves_alpha(tmp_path: Path) -> None:
    cfg = search.SearchConfig(**{**FAST, "eta": 0.0, "order": "second", "warmup_epochs": 0})
    net = Supernet("tiny")
    task = search.SearchTask(net, cfg, None, torch.device("cpu"), [])
    batch = {k: torch.rand(2, 3, 16, 16) for k in ("under", "over", "gt")}
    weights_before = [p.detach().clone() for p in net.weight_parameters()]
    before = [a.detach().clone() for a in net.arch_parameters()]
    logs = task.train_step(batch, dict(batch), epoch=0)
    assert "val_loss" in logs
    assert any(not torch.equal(a, b) for a, b in zip(net.arch_parameters(), before))
    # the virtual step is undone: only the real weight step changed the weights
    assert any(not torch.equal(p, b) for p, b in zip(net.weight_parameters(), weights_before))


class _Interrupt(Exception):
    pass


def test_resume_equals_uninterrupted(tmp_path: Path, table_path: Path, monkeypatch) -> None:
    full = search.run_search(_cfg(tmp_path, table_path, run_name="full"), progress=False)
    original = search.SearchTask.after_checkpoint

    def crash_after_epoch_1(self, run, epoch, row):
        original(self, run, epoch, row)
        if epoch == 1:
            raise _Interrupt("killed")

    monkeypatch.setattr(search.SearchTask, "after_checkpoint", crash_after_epoch_1)
    with pytest.raises(_Interrupt):
        search.run_search(_cfg(tmp_path, table_path, run_name="cut"), progress=False)
    monkeypatch.setattr(search.SearchTask, "after_checkpoint", original)
    # a half-written checkpoint from a kill -9 is a stray temp file: ignored
    (tmp_path / "cut" / "checkpoints" / ".last.pt.abc.tmp").write_bytes(b"partial")
    assert (
        search.main(["--resume", "--run-name", "cut", "--runs-dir", str(tmp_path), "--no-progress"])
        == 0
    )
    a = torch.load(full / "checkpoints" / "last.pt", weights_only=False)["task"]["supernet"]
    b = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=False)
    b = b["task"]["supernet"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert (full / "genotype.yaml").read_text() == (tmp_path / "cut" / "genotype.yaml").read_text()


def test_nan_guard_keeps_last_good_checkpoint(tmp_path: Path, table_path: Path, monkeypatch):
    original = search.SearchTask._task_loss

    def nan_in_epoch_2(self, batch):
        loss = original(self, batch)
        return loss * float("nan") if self.w_sched.last_epoch >= 1 else loss

    monkeypatch.setattr(search.SearchTask, "_task_loss", nan_in_epoch_2)
    with pytest.raises(NonFiniteLossError, match="epoch 2.*last good checkpoint kept"):
        search.run_search(_cfg(tmp_path, table_path, run_name="nan"), progress=False)
    ckpt = torch.load(tmp_path / "nan" / "checkpoints" / "last.pt", weights_only=False)
    assert ckpt["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in ckpt["task"]["supernet"].values())


def test_missing_table_names_the_profile_command(tmp_path: Path, capsys, monkeypatch) -> None:
    import nas.latency.table

    monkeypatch.setattr(nas.latency.table, "default_table_dir", lambda: tmp_path / "empty")
    args = ["--preset", "tiny", "--epochs", "1", "--runs-dir", str(tmp_path), "--no-progress"]
    rc = search.main([*args, "--no-auto-profile"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "python -m nas.profile" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "empty").exists()  # nothing profiled


def test_local_table_fills_itself(tmp_path: Path, capsys, monkeypatch) -> None:
    """No table for this device at the latency size: the search profiles the rows it needs
    (and only those), then runs; a second search finds them."""
    import nas.latency.auto
    import nas.latency.table

    tables = tmp_path / "tables"
    monkeypatch.setattr(nas.latency.table, "default_table_dir", lambda: tables)
    monkeypatch.setattr(nas.latency.auto, "AUTO_REPS", 3)
    monkeypatch.setattr(nas.latency.auto, "AUTO_WARMUP", 1)
    args = ["--preset", "tiny", "--epochs", "1", "--warmup-epochs", "0", "--eta", "5"]
    args += ["--latency-input", "24", "40", "--runs-dir", str(tmp_path), "--no-progress"]
    assert search.main([*args, "--run-name", "a"]) == 0
    out = capsys.readouterr().out
    assert "profiling ['tiny'] at batch 1" in out and "profiled" in out
    (csv,) = tables.glob("*-b1-24x40.csv")
    table = LatencyTable.read(csv)
    net = Supernet("tiny")
    need = {c.key for c in trace_units(net, (24, 40), batch=1)}
    assert {e.key.unit_key for e in table} == need
    assert search.main([*args, "--run-name", "b"]) == 0
    assert "profiling" not in capsys.readouterr().out
    report = yaml.safe_load((tmp_path / "b" / "export.yaml").read_text())
    assert report["predicted_ms"] > 0 and report["table"] == csv.stem


def test_foreign_table_is_never_completed(tmp_path: Path, capsys) -> None:
    """Another device's table lacks the rows: a one-line error with the profile command, and
    the table file is left as it was (latencies do not transfer between devices)."""
    foreign = tmp_path / "foreign.csv"
    net = Supernet("tiny")
    rows = {tuple(c.key): 1.0 for c in trace_units(net, (CROP, CROP), batch=1)[:3]}
    t = LatencyTable.from_rows(rows, batch=1)
    t.meta.update(device_fingerprint="cuda-some-other-gpu-fp32-torch2.13", device_type="cuda")
    t.save(foreign)
    before = foreign.read_bytes()
    args = ["--preset", "tiny", "--epochs", "1", "--latency-table", str(foreign)]
    rc = search.main([*args, "--runs-dir", str(tmp_path), "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "cuda-some-other-gpu" in err and "nas.profile" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    rc = search.main([*args, "--allow-foreign-table", "--runs-dir", str(tmp_path), "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "has no entry for op" in err and "nas.profile --device cuda" in err
    assert len(err.strip().splitlines()) == 1
    assert foreign.read_bytes() == before


def test_paper_penalty_is_eq5_in_ms(table_path: Path) -> None:
    """``paper``: the alpha-weighted slot latencies (ms, no fixed parts); ``normalised``:
    E[LAT] / E_uniform[LAT]."""
    from nas.latency import LatencyPenalty
    from nas.latency.predict import slot_latency

    net = Supernet("tiny")
    table = LatencyTable.read(table_path)
    paper = LatencyPenalty(net, table, (CROP, CROP), form="paper")
    norm = LatencyPenalty(net, table, (CROP, CROP), form="normalised")
    const = slot_latency(net, table, (CROP, CROP), calibrated=False)
    w = net.softmax_weights()
    by_hand = sum(float((w[s].detach() * const.slots[s].float()).sum()) for s in net.space.slots)
    assert float(paper()) == pytest.approx(by_hand, rel=1e-5)
    assert float(norm()) == pytest.approx((by_hand + const.fixed_ms) / norm.reference_ms, rel=1e-5)
    paper().backward()
    assert all(net.alpha(s).grad is not None for s in net.space.slots)
    with pytest.raises(ValueError, match="form"):
        LatencyPenalty(net, table, (CROP, CROP), form="seconds")


def test_latency_input_takes_h_w() -> None:
    assert search.latency_size(search.SearchConfig(latency_input=[768, 1024])) == (768, 1024)
    assert search.latency_size(search.SearchConfig(latency_input=64)) == (64, 64)
    assert search.latency_size(search.SearchConfig(crop=48)) == (48, 48)
    with pytest.raises(ValueError, match="latency_input"):
        search.SearchConfig(latency_input=[1, 2, 3])
    with pytest.raises(ValueError, match="latency_penalty"):
        search.SearchConfig(latency_penalty="seconds")


def test_bad_config_key_lists_valid_keys(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("eta: 0.5\nepochz: 3\n")
    assert search.main(["--config", str(cfg), "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "epochz" in err and "valid keys" in err and "epochs" in err


def test_max_skip_caps_parameter_free_ops() -> None:
    net = Supernet(load_space("tiny"))
    with torch.no_grad():
        for s in net.space.slots:
            a = net.alpha(s)
            a.zero_()
            if "skip" in net.space.candidates[s]:
                a[net.space.candidates[s].index("skip")] = 1.0
    n_skip = sum(op == "skip" for _, op in search.derive_genotype(net).ops)
    assert n_skip == 3
    capped = search.derive_genotype(net, max_skip=1)
    assert sum(op == "skip" for _, op in capped.ops) == 1


@pytest.mark.parametrize("name", ["search-paper.yaml", "train-paper.yaml"])
def test_shipped_configs_load(name: str) -> None:
    from nas.config import load_yaml_config
    from nas.train import TrainConfig

    cls = search.SearchConfig if name.startswith("search") else TrainConfig
    cfg = load_yaml_config(cls, Path(__file__).resolve().parent.parent / "configs" / name)
    assert cfg.epochs >= 300


def test_metrics_genotype_columns_follow_max_skip() -> None:
    """``metrics.csv``'s ``genotype`` / ``skip_wins`` are derived as ``genotype.yaml`` is
    (``max_skip`` applied), so the two never disagree."""
    cfg = search.SearchConfig(**{**FAST, "eta": 0.0, "warmup_epochs": 0, "max_skip": 1})
    net = Supernet(load_space("tiny"))
    with torch.no_grad():
        for s in net.space.slots:
            a = net.alpha(s)
            a.zero_()
            if "skip" in net.space.candidates[s]:
                a[net.space.candidates[s].index("skip")] = 1.0
    task = search.SearchTask(net, cfg, None, torch.device("cpu"), [])
    task.eval_batches = [{k: torch.rand(2, 3, 16, 16) for k in ("under", "over", "gt")}]
    row = task.end_epoch(0)
    capped = search.derive_genotype(net, max_skip=1)
    assert row["genotype"] == " ".join(op for _, op in capped.ops)
    assert row["skip_wins"] == 1
    assert sum(op == "skip" for _, op in search.derive_genotype(net).ops) == 3  # uncapped


def _smooth(module: torch.nn.Module) -> None:
    """Replace every LeakyReLU by SiLU (in place): a twice-differentiable network."""
    for name, child in module.named_children():
        if isinstance(child, torch.nn.LeakyReLU):
            setattr(module, name, torch.nn.SiLU())
        else:
            _smooth(child)


def test_second_order_alpha_grad_equals_exact_unrolled_gradient() -> None:
    """The unrolled architecture gradient equals the exact float64 autograd gradient of
    ``L_val(w - xi * (grad_w L_train(w, a) + wd * w), a)`` w.r.t. alpha, on a tiny supernet.

    The step approximates the Hessian-vector product by a central difference of step
    ``0.01 / ||grad_w' L_val||``; made smooth (SiLU for LeakyReLU, squared error for L1), the
    network leaves that difference's truncation as the only gap (kinks inside the step would
    add more: with L1 and LeakyReLU the gap is several percent)."""
    from torch.func import functional_call

    torch.manual_seed(0)
    cfg = search.SearchConfig(
        **{**FAST, "eta": 0.0, "order": "second", "warmup_epochs": 0, "w_weight_decay": 3e-4}
    )
    net = Supernet("tiny").double()
    _smooth(net)
    task = search.SearchTask(net, cfg, None, torch.device("cpu"), [])
    task.criterion = lambda y, b: (y - b["gt"]).square().mean()
    g = torch.Generator().manual_seed(1)
    batch, val = (
        {
            k: torch.rand(2, 3, 12, 12, generator=g, dtype=torch.float64)
            for k in ("under", "over", "gt")
        }
        for _ in range(2)
    )
    net.train()
    with torch.no_grad():  # alphas away from uniform
        for a in net.arch_parameters():
            a.copy_(torch.randn(a.shape, generator=g, dtype=torch.float64))
    alphas = net.arch_parameters()
    w_ids = {id(p) for p in net.weight_parameters()}
    w = {n: p for n, p in net.named_parameters() if id(p) in w_ids}
    xi = task.w_opt.param_groups[0]["lr"]

    def loss(params: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> torch.Tensor:
        return task.criterion(functional_call(net, params, (b["under"], b["over"])), b)

    grads = torch.autograd.grad(
        loss(w, batch), list(w.values()), create_graph=True, allow_unused=True
    )
    stepped = {
        n: p - xi * ((gr if gr is not None else torch.zeros_like(p)) + cfg.w_weight_decay * p)
        for (n, p), gr in zip(w.items(), grads)
    }
    exact = torch.cat([e.flatten() for e in torch.autograd.grad(loss(stepped, val), alphas)])
    first = torch.cat([f.flatten() for f in torch.autograd.grad(loss(w, val), alphas)])

    before = [p.detach().clone() for p in net.weight_parameters()]
    for a in alphas:
        a.grad = None
    task._unrolled_arch_grads(batch, val)
    got = torch.cat([a.grad.flatten() for a in alphas])
    assert (got - exact).norm() < 1e-3 * exact.norm()
    assert (first - exact).norm() > 3e-2 * exact.norm()  # the unrolled term matters here
    # the virtual step is undone exactly
    assert all(torch.equal(p, b) for p, b in zip(net.weight_parameters(), before))
