"""Data-parallel retraining helpers: ``torchrun --nproc-per-node K -m nas.train ...``.

:func:`nas.train.run_train` calls :func:`setup` first. Without torchrun (``WORLD_SIZE``
unset or 1) nothing changes: one process, no process group. Under torchrun every rank

* joins the process group from the torchrun environment (``env://``: ``MASTER_ADDR``,
  ``MASTER_PORT``, ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``): NCCL on CUDA (one GPU per
  local rank), gloo on CPU;
* reads its shard of the *same* seeded per-epoch order (:class:`ShardedSampler` over the
  loaders' :class:`~nas.data.SeededSampler` order), so each global batch of ``B`` samples
  is split ``B / K`` per rank and the union of the ranks' step-``i`` batches is exactly the
  single-process step-``i`` batch;
* trains a :class:`~torch.nn.parallel.DistributedDataParallel` wrapper (:func:`wrap_model`);
  DDP averages the gradients, so for a per-sample *mean* loss the update equals the
  single-process update on the whole global batch (up to floating-point summation order).
  Batch-coupled terms are not equivalent: the WGAN-GP critic's random interpolation draws
  differ per rank (its gradients are averaged with :func:`average_gradients`), and
  BatchNorm statistics are per rank;
* logs and writes only on rank 0 (:func:`is_main`); the engine averages each step's
  scalar logs over the ranks (:func:`reduce_logs`) so rank 0's metrics are global ones
  and a non-finite loss on any rank stops every rank.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, Sampler

__all__ = [
    "DistEnv",
    "ShardedSampler",
    "average_gradients",
    "barrier",
    "broadcast_object",
    "cleanup",
    "env_world_size",
    "is_distributed",
    "is_main",
    "make_sharded_loader",
    "rank",
    "reduce_logs",
    "setup",
    "world_size",
    "wrap_model",
]


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands: ``rank`` of ``world_size``, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when unset)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def is_distributed() -> bool:
    """Whether a process group is initialised with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on rank 0 (and in a single process): the rank that logs and writes files."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (``obj`` itself in one process), e.g. a run name."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def setup(device: torch.device | str) -> DistEnv:
    """Join the torchrun process group when ``WORLD_SIZE > 1``; return this rank's env.

    Args:
        device: the device the run asked for (already resolved, e.g. by
            :func:`nas.utils.resolve_device`). On CUDA each rank takes ``cuda:LOCAL_RANK``.

    Returns:
        :class:`DistEnv` (``world_size == 1`` and the device unchanged outside torchrun).
    """
    device = torch.device(device)
    ws = env_world_size()
    if ws <= 1:
        return DistEnv(device=device)
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT", "RANK") if k not in os.environ]
        if missing:
            raise RuntimeError(
                f"WORLD_SIZE={ws} but {', '.join(missing)} not set: start with "
                "`torchrun --nproc-per-node K -m nas.train ...`"
            )
        dist.init_process_group(backend=backend, init_method="env://")
    return DistEnv(dist.get_rank(), dist.get_world_size(), local, device, backend)


def cleanup(barrier: bool = True) -> None:
    """Leave the process group (no-op when none). After a run that finished on every rank,
    wait for all first (``barrier``): a rank that tears down its gloo connections while
    another still uses them aborts the process at exit. After an error, leave at once (the
    other ranks may never reach a barrier)."""
    if dist.is_available() and dist.is_initialized():
        if barrier:
            dist.barrier()
        dist.destroy_process_group()


def wrap_model(model: nn.Module, env: DistEnv) -> nn.Module:
    """``DistributedDataParallel(model)`` when distributed, else ``model`` itself.

    DDP broadcasts rank 0's parameters and buffers at construction, so every rank starts
    from the same weights.
    """
    if not env.distributed:
        return model
    ids = [env.device.index] if env.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """All-reduce-mean the ``.grad`` of ``params`` (for modules not wrapped in DDP).

    Parameters without a gradient on this rank are treated as zero gradients so every rank
    takes part in the same collectives.
    """
    if not is_distributed():
        return
    ws = dist.get_world_size()
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad.div_(ws)


def reduce_logs(logs: Mapping[str, float]) -> dict[str, float]:
    """Mean of each scalar log over the ranks (identity in one process).

    Every rank must pass the same keys. A NaN on any rank makes the mean NaN on all ranks,
    so the engine's non-finite guard stops them together.
    """
    if not is_distributed() or not logs:
        return dict(logs)
    keys = sorted(logs)
    backend = dist.get_backend()
    dev = (
        torch.device("cuda", torch.cuda.current_device())
        if backend == "nccl"
        else torch.device("cpu")
    )
    t = torch.tensor([float(logs[k]) for k in keys], dtype=torch.float64, device=dev)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


class ShardedSampler(Sampler[int]):
    """Rank ``rank``'s shard of a base sampler's per-epoch order.

    The base order (e.g. :class:`~nas.data.SeededSampler`, shuffled by ``(seed, epoch)``) is
    the same on every rank; it is cut to a multiple of ``world_size`` and rank ``r`` takes
    ``order[r::world_size]``. With per-rank batches of ``B / world_size`` (and
    ``drop_last``), rank ``r``'s ``i``-th batch holds samples of the single-process
    ``i``-th batch of size ``B`` only, and the ranks together hold all of it.
    """

    def __init__(self, base: Sampler[int], rank: int, world_size: int) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"bad rank {rank} for world_size {world_size}")
        self.base = base
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base) // self.world_size  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        order = list(iter(self.base))
        usable = (len(order) // self.world_size) * self.world_size
        return iter(order[:usable][self.rank :: self.world_size])


def per_rank_batch(global_batch: int, world: int) -> int:
    """``global_batch / world``; an error when it does not divide evenly."""
    if global_batch % world:
        raise ValueError(
            f"--batch {global_batch} (the global batch) is not divisible by the "
            f"{world} ranks; choose a multiple of {world}"
        )
    return global_batch // world


def make_sharded_loader(
    dataset: Dataset,
    global_batch: int,
    env: DistEnv,
    shuffle: bool = True,
    seed: int = 0,
    num_workers: int = 0,
    *,
    drop_last: bool = True,
) -> Any:
    """:func:`nas.data.make_loader` for this rank: its shard, ``global_batch / K`` a batch.

    In one process this *is* ``make_loader(dataset, global_batch, ...)``.
    """
    from nas.data import make_loader
    from nas.data.base import sample_seed
    from nas.data.loader import EpochDataLoader, SeededSampler, _seed_worker

    if not env.distributed:
        return make_loader(
            dataset,
            global_batch,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
            num_workers=num_workers,
        )
    batch = per_rank_batch(global_batch, env.world_size)
    base = SeededSampler(len(dataset), shuffle=shuffle, seed=seed)  # type: ignore[arg-type]
    sampler = ShardedSampler(base, env.rank, env.world_size)
    g = torch.Generator()
    g.manual_seed(sample_seed(seed, 0, 0x3037))
    return EpochDataLoader(
        dataset,
        seed=seed,
        batch_size=batch,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=env.device.type == "cuda",
        worker_init_fn=_seed_worker if num_workers > 0 else None,
        generator=g,
        persistent_workers=False,
    )


def steps_per_epoch(n_samples: int, global_batch: int, drop_last: bool = True) -> int:
    """Optimiser steps per epoch of the single-process loader (for checks and docs)."""
    return n_samples // global_batch if drop_last else math.ceil(n_samples / global_batch)
