"""Device fingerprints: which machine, settings and software a latency table belongs to.

A latency is only meaningful on the device it was measured on. Each table is named after a
*device fingerprint* and carries a sidecar describing the device in full.

Fingerprint grammar (lower case, ``-`` separated)::

    cpu-<cpu-model-slug>-t<threads>-<dtype>-torch<major.minor>
        e.g. cpu-intel-xeon-processor-t2-fp32-torch2.13
    cuda-<gpu-name-slug>-<dtype>-torch<major.minor>-cu<cuda version without dots>
        e.g. cuda-h100-80gb-hbm3-fp32-torch2.13-cu126

The CPU thread count is part of a CPU fingerprint (it changes latencies by up to its own
factor); for CUDA devices it is recorded in the sidecar only. A *table name* is the device
fingerprint plus the profiling settings that change what the rows mean, appended only when
they differ from the defaults (batch 16, input 128x128, full repetitions)::

    <fingerprint>                     the default table: batch 16, 128x128 scales
    <fingerprint>-b2-64x64            another batch / input size
    <fingerprint>-b1-64x64-quick      a ``--quick`` table (few repetitions)

so a quick table never overwrites a full one.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import socket
from functools import lru_cache
from typing import Any

import torch

from nas.accel import keep_freed_memory
from nas.utils import resolve_device  # noqa: F401  (re-exported: one implementation)

DEFAULT_BATCH = 16
DEFAULT_INPUT_SIZE = (128, 128)
QUICK_BATCH = 1
QUICK_INPUT_SIZE = (64, 64)

_DTYPES = {
    "float32": (torch.float32, "fp32"),
    "float16": (torch.float16, "fp16"),
    "bfloat16": (torch.bfloat16, "bf16"),
}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"float32"``/``"fp32"``/``torch.float32`` -> ``torch.float32`` (same for fp16, bf16)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    for name, (dt, short) in _DTYPES.items():
        if dtype in (name, short):
            return dt
    raise ValueError(f"unsupported dtype {dtype!r}; use one of {sorted(_DTYPES)}")


def dtype_short(dtype: str | torch.dtype) -> str:
    """Short name used in fingerprints: ``fp32``, ``fp16`` or ``bf16``."""
    dt = resolve_dtype(dtype)
    return next(short for d, short in _DTYPES.values() if d == dt)


def slugify(text: str, max_len: int = 48) -> str:
    """``"Intel(R) Xeon(R) CPU @ 2.20GHz"`` -> ``"intel-xeon-cpu-2-20ghz"``."""
    t = re.sub(r"\((r|tm|c)\)", "", text.lower())
    t = re.sub(r"[^a-z0-9]+", "-", t).strip("-")
    t = re.sub(r"-{2,}", "-", t)
    return t[:max_len].rstrip("-") or "unknown"


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (Linux), else ``platform``'s best guess."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    name = line.split(":", 1)[1].strip()
                    if name:
                        return name
    except OSError:
        pass
    if platform.system() == "Darwin":
        try:
            import subprocess

            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"],
                capture_output=True,
                text=True,
                timeout=5,
            )
            if out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown-cpu"


def _torch_minor() -> str:
    m = re.match(r"(\d+)\.(\d+)", torch.__version__)
    return f"{m.group(1)}.{m.group(2)}" if m else torch.__version__


def _gpu_slug(name: str) -> str:
    return slugify(re.sub(r"(?i)^nvidia\s+", "", name))


def device_fingerprint(
    device: str | torch.device | None = None,
    threads: int | None = None,
    dtype: str | torch.dtype = "float32",
) -> str:
    """The fingerprint of ``device`` (see the module docstring).

    Args:
        device: ``cpu``, ``cuda`` or ``cuda:N``; ``None`` picks CUDA when present.
        threads: CPU threads (default: ``torch.get_num_threads()``); ignored for CUDA.
        dtype: the profiled dtype.
    """
    dev = resolve_device(device)
    tail = f"{dtype_short(dtype)}-torch{_torch_minor()}"
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
        cu = (torch.version.cuda or "").replace(".", "")
        return f"cuda-{_gpu_slug(name)}-{tail}" + (f"-cu{cu}" if cu else "")
    threads = torch.get_num_threads() if threads is None else int(threads)
    return f"cpu-{slugify(cpu_model())}-t{threads}-{tail}"


def table_name(
    fingerprint: str,
    batch: int = DEFAULT_BATCH,
    input_size: tuple[int, int] = DEFAULT_INPUT_SIZE,
    quick: bool = False,
) -> str:
    """File stem of a table: the fingerprint plus non-default settings (module docstring)."""
    name = fingerprint
    if int(batch) != DEFAULT_BATCH or tuple(input_size) != DEFAULT_INPUT_SIZE:
        name += f"-b{int(batch)}-{int(input_size[0])}x{int(input_size[1])}"
    if quick:
        name += "-quick"
    return name


def device_info(
    device: str | torch.device | None = None,
    threads: int | None = None,
    dtype: str | torch.dtype = "float32",
) -> dict[str, Any]:
    """Everything the sidecar records about the device and software (YAML-safe values),
    including the allocator setting every timing run uses (:func:`nas.accel.keep_freed_memory`,
    turned on here if it was not yet)."""
    dev = resolve_device(device)
    threads = torch.get_num_threads() if threads is None else int(threads)
    info: dict[str, Any] = {
        "device_fingerprint": device_fingerprint(dev, threads, dtype),
        "device_type": dev.type,
        "device": str(dev),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "dtype": str(resolve_dtype(dtype)).replace("torch.", ""),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "allocator": keep_freed_memory(),
    }
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        info["device_name"] = props.name
        info["gpu_name"] = props.name
        info["gpu_capability"] = f"{props.major}.{props.minor}"
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
    else:
        info["device_name"] = cpu_model()
    return info


def now_iso() -> str:
    """Local time with offset, seconds precision."""
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")
