"""Speed settings for the accelerator: memory format, cuDNN autotuning, bf16 autocast, compile.

One place decides how a network runs fast on a device, so search, retraining, evaluation and
fusion agree:

* :func:`configure_device` turns on ``cudnn.benchmark`` on CUDA (the conv algorithms are
  autotuned once per input shape; search and training use fixed crop shapes) and, on CPU,
  :func:`keep_freed_memory`.
* :func:`keep_freed_memory` stops glibc's allocator from handing the feature maps of a large
  network back to the kernel after every call (``mallopt``: fixed mmap and trim thresholds
  of 1 GiB). Without it a net whose maps are tens of MB page-faults them in again on every
  call: a crmef-fast net at 1/2 scale and 1024x768 took 1.2 s per call instead of 0.95 s
  here. The profiler's timing harness and every CPU device configuration turn it on, so the
  latency table, the end-to-end checks and deployment run in the same allocator regime.
* :func:`channels_last_for` resolves the ``channels_last`` setting (``None`` = auto: on for
  CUDA, where cuDNN's NHWC convolution kernels are the fast ones, off on CPU);
  :func:`to_memory_format` converts a module or a batch.
* :func:`autocast` is the opt-in bf16 autocast (``amp: bf16``) of the search's weight step.
  It also runs on CPU (slowly, unless the CPU has bf16 units), so its effect can be tested
  without a GPU. bf16 keeps fp32's exponent range: no loss scaling is needed.
* :func:`prepare_inference` readies a derived network for timing or fusion: eval mode, no
  gradients, channels_last where it helps, optionally ``torch.compile`` (``compile=True``;
  ``"reduce-overhead"`` mode on CUDA captures CUDA graphs). Compilation is opt-in: whether it
  helps is device-specific and is measured by ``benchmarks/bench_inference.py``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys
from collections.abc import Iterator
from typing import TypeVar

import torch
from torch import nn

AMP_MODES = ("off", "bf16")

T = TypeVar("T")

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
_KEEP_BYTES = 1 << 30
_allocator_state: str | None = None


def keep_freed_memory() -> str:
    """Keep freed heap memory in the process (glibc on Linux; elsewhere nothing changes).

    Sets glibc's ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` to 1 GiB, which also turns off
    their dynamic adjustment: feature maps are then allocated from the heap and reused by the
    next call instead of being mapped, zero-filled and unmapped on every call. Idempotent.

    Returns:
        the allocator setting in words, as the run records store it
        (``"glibc: mmap/trim thresholds 1 GiB"`` or ``"default (...)"``).
    """
    global _allocator_state
    if _allocator_state is None:
        _allocator_state = _set_glibc_thresholds()
    return _allocator_state


def _set_glibc_thresholds() -> str:
    if not sys.platform.startswith("linux"):
        return f"default ({sys.platform})"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return "default (no glibc mallopt)"
    ok = all(mallopt(opt, _KEEP_BYTES) == 1 for opt in (_M_MMAP_THRESHOLD, _M_TRIM_THRESHOLD))
    return "glibc: mmap/trim thresholds 1 GiB" if ok else "default (mallopt refused)"


def configure_device(device: torch.device) -> None:
    """Process-wide settings for ``device``: cuDNN autotuning on CUDA; on CPU (and for the
    host side of CUDA runs) :func:`keep_freed_memory`."""
    keep_freed_memory()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def channels_last_for(setting: bool | None, device: torch.device) -> bool:
    """The ``channels_last`` setting resolved: ``None`` means on for CUDA, off elsewhere."""
    return device.type == "cuda" if setting is None else bool(setting)


def to_memory_format(obj: T, channels_last: bool) -> T:
    """``obj`` (a module, a 4-D tensor or a dict of tensors) in channels_last when asked.

    Modules are converted in place (``Module.to``); tensors that are not 4-D are left as they
    are. With ``channels_last=False`` ``obj`` is returned unchanged.
    """
    if not channels_last:
        return obj
    fmt = torch.channels_last
    if isinstance(obj, nn.Module):
        return obj.to(memory_format=fmt)  # type: ignore[return-value]
    if torch.is_tensor(obj):
        return obj.contiguous(memory_format=fmt) if obj.dim() == 4 else obj  # type: ignore
    if isinstance(obj, dict):
        return {k: to_memory_format(v, True) for k, v in obj.items()}  # type: ignore[return-value]
    return obj


def check_amp(amp: str) -> str:
    """``amp`` validated against :data:`AMP_MODES`."""
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {AMP_MODES}, got {amp!r}")
    return amp


@contextlib.contextmanager
def autocast(device: torch.device, amp: str) -> Iterator[None]:
    """bf16 autocast on ``device`` when ``amp == "bf16"``; otherwise nothing changes."""
    if check_amp(amp) == "off":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        yield


def prepare_inference(
    model: nn.Module,
    device: torch.device,
    channels_last: bool | None = None,
    compile: bool = False,
) -> nn.Module:
    """``model`` on ``device`` in eval mode without gradients, ready for repeated calls.

    Args:
        channels_last: memory format (None: :func:`channels_last_for`'s default).
        compile: wrap in ``torch.compile`` (``mode="reduce-overhead"`` on CUDA, which records
            CUDA graphs; the default mode on CPU). The first calls compile (seconds to
            minutes); time only after warm-up. Inputs must then be fed in the same memory
            format (:func:`to_memory_format`).
    """
    configure_device(device)
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    model = to_memory_format(model, channels_last_for(channels_last, device))
    if compile:
        mode = "reduce-overhead" if device.type == "cuda" else None
        model = torch.compile(model, mode=mode, dynamic=False)  # type: ignore[assignment]
    return model


def peak_memory_mb(device: torch.device) -> float | None:
    """Peak allocated accelerator memory since the last reset, in MiB (None on CPU)."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
