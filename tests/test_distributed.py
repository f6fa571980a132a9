"""Data-parallel retraining: sharding, single-process no-ops, 2-rank gloo DDP == 1 process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nas import distributed, train
from nas.data import SeededSampler, build_dataset, make_loader
from nas.genotype import Genotype
from nas.runs import RunDir
from nas.space import load_space

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_shards_split_each_global_batch() -> None:
    """Rank r's i-th batch of B/K lies in the single-process i-th batch of B; together: all."""
    n, batch, world = 22, 4, 2
    base = SeededSampler(n, shuffle=True, seed=3)
    for epoch in (0, 1):
        base.set_epoch(epoch)
        order = list(base)
        single = [order[i * batch : (i + 1) * batch] for i in range(n // batch)]
        per_rank = []
        for r in range(world):
            s = distributed.ShardedSampler(SeededSampler(n, shuffle=True, seed=3), r, world)
            s.set_epoch(epoch)
            idx = list(s)
            assert len(idx) == len(s) == n // world
            b = batch // world
            per_rank.append([idx[i * b : (i + 1) * b] for i in range(len(idx) // b)])
        for i, full in enumerate(single):
            union = per_rank[0][i] + per_rank[1][i]
            assert sorted(union) == sorted(full), (epoch, i)
        assert len(per_rank[0]) == len(per_rank[1]) == len(single)  # same number of steps


def test_single_process_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    env = distributed.setup("cpu")
    assert not env.distributed and env.is_main and distributed.is_main()
    assert distributed.reduce_logs({"a": 1.5}) == {"a": 1.5}
    assert distributed.broadcast_object("x") == "x"
    net = torch.nn.Linear(2, 2)
    assert distributed.wrap_model(net, env) is net
    ds = build_dataset("synthetic", "train", 16, False, 0, length=8)
    a = distributed.make_sharded_loader(ds, 4, env, seed=1)
    b = make_loader(ds, 4, shuffle=True, seed=1, drop_last=True)
    for x, y in zip(a, b):
        assert x["name"] == y["name"]
        assert torch.equal(x["under"], y["under"])


def test_batch_must_divide_by_ranks() -> None:
    with pytest.raises(ValueError, match="not divisible"):
        distributed.per_rank_batch(5, 2)


def _genotype(tmp_path: Path) -> Path:
    space = load_space("tiny")
    g = Genotype(space.name, space.arch, tuple((s, space.candidates[s][0]) for s in space.slots))
    g.to_yaml(tmp_path / "g.yaml")
    return tmp_path / "g.yaml"


TRAIN_ARGS = [
    "--preset",
    "tiny",
    "--loss",
    "l1",
    "--epochs",
    "1",
    "--crop",
    "32",
    "--batch",
    "4",
    "--samples-per-epoch",
    "8",
    "--device",
    "cpu",
    "--no-progress",
]


def test_ddp_two_ranks_match_one_process(tmp_path: Path) -> None:
    """torchrun, 2 gloo ranks on 127.0.0.1, global batch 4 (2 per rank), L1 loss, 1 epoch."""
    g = _genotype(tmp_path)
    common = [*TRAIN_ARGS, "--arch", str(g), "--runs-dir", str(tmp_path)]
    assert train.main([*common, "--run-name", "single"]) == 0
    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(_free_port()),
        "-m",
        "nas.train",
        *common,
        "--run-name",
        "ddp",
    ]
    out = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.stdout.count("training finished") == 2  # both ranks return
    assert out.stdout.count("epoch 1/1") == 1  # rank 0 alone logs
    a = torch.load(tmp_path / "single" / "checkpoints" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "ddp" / "checkpoints" / "last.pt", weights_only=False)
    wa, wb = a["task"]["model"], b["task"]["model"]
    assert wa.keys() == wb.keys()
    diff = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    print(f"DDP(2 ranks) vs 1 process: max |weight difference| = {diff:.3g}")
    assert diff < 1e-5
    moved = max(float((wa[k] - v).abs().max()) for k, v in _init_weights(g).items())
    assert moved > 1e-4  # the comparison is not vacuous: training changed the weights
    ra = RunDir(tmp_path / "single", resume=True).read_metrics()
    rb = RunDir(tmp_path / "ddp", resume=True).read_metrics()
    assert abs(ra[0]["train_loss"] - rb[0]["train_loss"]) < 1e-5  # logs averaged over ranks
    assert abs(ra[0]["val_psnr"] - rb[0]["val_psnr"]) < 1e-3


def _init_weights(g: Path) -> dict[str, torch.Tensor]:
    """The initial weights run_train gives the genotype (seed, resolve, fresh build)."""
    from nas.models import build_arch, resolve_model
    from nas.utils import seed_everything

    seed_everything(0)
    model, _ = build_arch(resolve_model(str(g)).arch)
    return model.state_dict()
