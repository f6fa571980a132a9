"""Small shared helpers: atomic file writes, device selection, seeding."""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch


def _temp_file(path: Path, write: Callable[[IO[bytes]], Any]) -> str:
    """A complete, fsync'd temporary file next to ``path`` with the usual file mode, filled by
    ``write(fileobj)``; removed again if ``write`` fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp creates 0600
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Write a file through ``write(fileobj)`` into a temporary file, then ``os.replace``.

    The target is either the old complete file or the new complete file, never a partial
    one, even if the process is killed mid-write (a stray ``.<name>.*.tmp`` may remain).
    """
    return atomic_write_many([(path, write)])[0]


def atomic_write_many(
    items: Sequence[tuple[str | Path, str | bytes | Callable[[IO[bytes]], Any]]],
) -> list[Path]:
    """Write several files together: every one to a temporary file first (fsync'd), and only
    when all are complete replace the targets, in order. A failure while writing leaves
    every target as it was (files that belong together, e.g. a table and its sidecar, are
    never half new). Each item's content is text (UTF-8), bytes or a ``write(fileobj)``."""
    done: list[tuple[str, Path]] = []
    try:
        for path, data in items:
            if isinstance(data, str):
                data = data.encode("utf-8")
            write = data if callable(data) else (lambda f, b=data: f.write(b))
            done.append((_temp_file(Path(path), write), Path(path)))
        for tmp, path in done:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in done:
            Path(tmp).unlink(missing_ok=True)
        raise
    return [path for _, path in done]


def current_umask() -> int:
    """The process umask, read from ``/proc/self/status`` where the OS has it (the umask is
    never changed); elsewhere by setting and restoring it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    return atomic_write_many([(path, text)])[0]


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """Atomically ``torch.save`` ``obj`` to ``path``."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"``: CUDA when present, else CPU; ``"cuda"``: the current CUDA device.

    Asking for CUDA where this torch build has none is an error that says so.
    """
    if device is None or str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device {str(device)!r} requested but this torch build has no usable CUDA "
                f"(torch {torch.__version__}); use --device cpu"
            )
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    elif dev.type != "cpu":
        raise ValueError(f"unsupported device {str(device)!r}; use cpu, cuda or cuda:N")
    return dev


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) RNG states, for checkpoints."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def parse_size(value: Any) -> tuple[int, int]:
    """An input size as (H, W) from ``128``, ``[128]``, ``[768, 1024]`` or ``"768x1024"``."""
    if isinstance(value, str):
        parts: list[Any] = value.lower().replace(" ", "").split("x")
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        parts = [value]
    try:
        nums = [int(p) for p in parts]
    except (TypeError, ValueError):
        raise ValueError(f"not an input size (H W, HxW or one number): {value!r}") from None
    if len(nums) == 1:
        nums = nums * 2
    if len(nums) != 2 or min(nums) < 1:
        raise ValueError(f"not an input size (H W, HxW or one number): {value!r}")
    return nums[0], nums[1]


def size_text(size: tuple[int, int]) -> str:
    """``(768, 1024)`` -> ``"768x1024"`` (H x W), the form CSV columns and names use."""
    return f"{int(size[0])}x{int(size[1])}"
