"""Speed settings (:mod:`nas.accel`): channels_last, bf16 autocast of the weight step, compile.

The CPU tests exercise the same code paths the GPU takes (autocast and channels_last run on
CPU too); the CUDA tests are skipped where no GPU is present.
"""

from __future__ import annotations

import copy
import ctypes
import ctypes.util
import sys

import pytest
import torch

from nas.accel import (
    autocast,
    channels_last_for,
    check_amp,
    keep_freed_memory,
    prepare_inference,
    to_memory_format,
)
from nas.baselines import create_model
from nas.latency import device_info
from nas.search import SearchConfig, SearchTask
from nas.space import load_space
from nas.supernet import Supernet

CUDA = pytest.mark.cuda


def _batch(seed: int, n: int = 2, size: int = 32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.rand(n, 3, size, size, generator=g) for k in ("under", "over", "gt")}


def _task(device: str = "cpu", **cfg) -> SearchTask:
    torch.manual_seed(0)
    net = Supernet(load_space("tiny"))
    task = SearchTask(net, SearchConfig(eta=0.0, **cfg), None, torch.device(device), [])
    task.loss_ref = 0.1
    return task


def test_channels_last_default_follows_device():
    assert channels_last_for(None, torch.device("cuda")) is True
    assert channels_last_for(None, torch.device("cpu")) is False
    assert channels_last_for(True, torch.device("cpu")) is True
    assert channels_last_for(False, torch.device("cuda")) is False


def test_to_memory_format_converts_4d_tensors_and_modules_only():
    b = {"under": torch.rand(2, 3, 8, 8), "ev": torch.rand(2, 3), "name": "x"}
    out = to_memory_format(b, True)
    assert out["under"].is_contiguous(memory_format=torch.channels_last)
    assert not out["under"].is_contiguous()
    assert out["ev"] is b["ev"] and out["name"] == "x"
    assert torch.equal(out["under"], b["under"])
    conv = torch.nn.Conv2d(3, 4, 3)
    to_memory_format(conv, True)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert to_memory_format(b, False) is b


def test_amp_modes_are_checked():
    assert check_amp("bf16") == "bf16"
    with pytest.raises(ValueError, match="amp must be one of"):
        check_amp("fp16")
    with pytest.raises(ValueError, match="amp must be one of"):
        SearchConfig(amp="half")


def test_autocast_off_changes_nothing_and_bf16_computes_in_bf16():
    conv = torch.nn.Conv2d(3, 4, 3)
    x = torch.rand(1, 3, 8, 8)
    with autocast(torch.device("cpu"), "off"):
        assert torch.equal(conv(x), conv(x))
        assert conv(x).dtype == torch.float32
    with autocast(torch.device("cpu"), "bf16"):
        y = conv(x)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), conv(x), atol=0.02, rtol=0.02)


def test_channels_last_search_step_equals_contiguous_step():
    """One full bi-level step (alpha step then weight step) gives the same alphas, weights and
    logs in either memory format."""
    a, b = _task(channels_last=False), _task(channels_last=True)
    convs = [p for p in b.net.weight_parameters() if p.dim() == 4 and p.shape[-1] > 1]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert not any(p.is_contiguous() for p in convs)
    logs_a = a.train_step(_batch(1), _batch(2), epoch=99)
    logs_b = b.train_step(_batch(1), _batch(2), epoch=99)
    for k in logs_a:
        assert logs_b[k] == pytest.approx(logs_a[k], rel=1e-5)
    for pa, pb in zip(a.net.parameters(), b.net.parameters()):
        torch.testing.assert_close(pa, pb, atol=1e-5, rtol=1e-4)


def test_bf16_weight_step_leaves_the_alpha_step_in_fp32():
    """With amp=bf16 the alpha step (taken first, on the val batch) is bit-identical to fp32;
    the weight step's loss is close to fp32's and returned as fp32; the weights move alike."""
    fp32, bf16 = _task(amp="off"), _task(amp="bf16")
    logs32 = fp32.train_step(_batch(1), _batch(2), epoch=99)
    logs16 = bf16.train_step(_batch(1), _batch(2), epoch=99)
    assert logs16["val_loss"] == logs32["val_loss"]
    for a32, a16 in zip(fp32.net.arch_parameters(), bf16.net.arch_parameters()):
        assert a16.dtype == torch.float32
        assert torch.equal(a16, a32)
    assert logs16["train_loss"] == pytest.approx(logs32["train_loss"], rel=0.02)
    assert bf16._weight_loss(_batch(3)).dtype == torch.float32
    moved32 = torch.cat([p.detach().flatten() for p in fp32.net.weight_parameters()])
    moved16 = torch.cat([p.detach().flatten() for p in bf16.net.weight_parameters()])
    start = torch.cat([p.detach().flatten() for p in _task().net.weight_parameters()])
    d32, d16 = moved32 - start, moved16 - start
    cos = torch.nn.functional.cosine_similarity(d32, d16, dim=0)
    assert d32.norm() > 0 and cos > 0.95


def test_search_cli_takes_amp_and_channels_last():
    from nas.config import resolve
    from nas.search import PRESETS, build_parser

    args = build_parser().parse_args(["--preset", "tiny", "--amp", "bf16", "--channels-last"])
    cfg = resolve(SearchConfig, args, PRESETS)
    assert cfg.amp == "bf16" and cfg.channels_last is True
    args = build_parser().parse_args(["--no-channels-last"])
    assert resolve(SearchConfig, args, PRESETS).channels_last is False


@pytest.mark.parametrize(
    "compile", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["eager", "compiled"]
)
def test_prepare_inference_matches_eager_model(compile: bool):
    m = create_model("crmef-general", channels=8).eval()
    x = [torch.rand(1, 3, 32, 32) for _ in range(2)]
    with torch.no_grad():
        ref = m(*x)
    fast = prepare_inference(copy.deepcopy(m), torch.device("cpu"), True, compile=compile)
    assert not any(p.requires_grad for p in fast.parameters())
    with torch.inference_mode():
        y = fast(*(to_memory_format(t, True) for t in x))
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)


@CUDA
def test_cuda_search_step_bf16_channels_last():
    """On CUDA channels_last is the default; a bf16 step stays close to the fp32 step."""
    fp32 = _task("cuda", amp="off")
    bf16 = _task("cuda", amp="bf16")
    assert bf16.channels_last
    b, v = _batch(1), _batch(2)
    cuda = {k: t.cuda() for k, t in b.items()}, {k: t.cuda() for k, t in v.items()}
    logs32 = fp32.train_step(*copy.deepcopy(cuda), epoch=99)
    logs16 = bf16.train_step(*cuda, epoch=99)
    assert logs16["val_loss"] == pytest.approx(logs32["val_loss"], rel=1e-5)
    assert logs16["train_loss"] == pytest.approx(logs32["train_loss"], rel=0.02)
    for a32, a16 in zip(fp32.net.arch_parameters(), bf16.net.arch_parameters()):
        torch.testing.assert_close(a16, a32, atol=1e-6, rtol=1e-5)


@CUDA
def test_cuda_prepare_inference_matches_cpu():
    m = create_model("crmef-general", channels=8).eval()
    x = [torch.rand(1, 3, 64, 64) for _ in range(2)]
    with torch.no_grad():
        ref = m(*x)
    fast = prepare_inference(copy.deepcopy(m), torch.device("cuda"))
    with torch.inference_mode():
        y = fast(*(to_memory_format(t.cuda(), True) for t in x))
    torch.testing.assert_close(y.cpu(), ref, atol=1e-3, rtol=1e-3)


@CUDA
def test_cuda_tiny_search_runs_end_to_end(tmp_path):
    """The tiny preset searches on CUDA with bf16 and channels_last and derives a genotype."""
    from nas.config import from_mapping
    from nas.genotype import Genotype
    from nas.search import PRESETS, run_search

    cfg = from_mapping(SearchConfig, PRESETS["tiny"], "tiny")
    cfg = from_mapping(
        SearchConfig,
        dict(device="cuda", amp="bf16", eta=0.0, runs_dir=str(tmp_path), run_name="t"),
        "test",
        cfg,
    )
    path = run_search(cfg, progress=False)
    g = Genotype.from_yaml(path / "genotype.yaml")
    space = load_space("tiny")
    assert [s for s, _ in g.ops] == list(space.slots)
    assert all(op in space.candidates[s] for s, op in g.ops)
    # the genotype is the derivation of the supernet's final alphas (last checkpoint), as
    # the metrics' last row and the last per-epoch file say
    from nas.runs import RunDir
    from nas.search import derive_genotype

    net = Supernet(space)
    last = torch.load(path / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    net.load_state_dict(last["task"]["supernet"])
    assert g == derive_genotype(net, cfg.max_skip)
    assert RunDir(path, resume=True).read_metrics()[-1]["genotype"] == " ".join(
        op for _, op in g.ops
    )
    assert Genotype.from_yaml(path / "genotypes" / f"epoch_{cfg.epochs:03d}.yaml") == g


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (n, ctypes.c_size_t)
        for n in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def _mallinfo2():
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if not hasattr(libc, "mallinfo2"):
        pytest.skip("no glibc mallinfo2")
    libc.mallinfo2.restype = _MallInfo2
    return libc.mallinfo2()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator setting")
def test_keep_freed_memory_serves_feature_maps_from_the_heap():
    """After keep_freed_memory a 64 MB tensor comes from the heap (not a fresh mapping) and
    its memory stays in the process after it is freed, ready for the next call."""
    state = keep_freed_memory()
    assert state == keep_freed_memory() == "glibc: mmap/trim thresholds 1 GiB"
    before = _mallinfo2()
    x = torch.empty(16 * 2**20)  # 64 MB, far above glibc's default 128 KiB mmap threshold
    during = _mallinfo2()
    assert during.hblkhd - before.hblkhd < 2**20  # not mapped
    assert during.uordblks - before.uordblks >= 64 * 2**20  # in the heap
    del x
    after = _mallinfo2()
    assert after.arena >= during.arena  # kept, not trimmed
    assert device_info("cpu")["allocator"] == state
