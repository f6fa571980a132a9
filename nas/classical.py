"""Classical (non-learned) multi-exposure fusion: Mertens' exposure fusion and the plain average.

These are *not* torch modules. They have no weights, nothing to train, search or export, and a
small interface of their own, :class:`ClassicalFusion`::

    from nas.classical import Mertens
    m = Mertens()                             # or create_classical("mertens")
    fused = m.fuse(under, over)               # (B, 3, H, W) in [0, 1] -> (B, 3, H, W) in [0, 1]
    fused = m.fuse_sequence([f1, f2, f3])     # N exposures of one scene, any order
    print(m.describe())

Inputs are float tensors ``(B, 3, H, W)`` (or ``(3, H, W)``) in ``[0, 1]``, sRGB, RGB order, on
any device; the result has the input's shape, dtype and device. :class:`Mertens` computes on
the CPU (NumPy / OpenCV: tensors are copied to the host and back); :class:`Average` computes in
torch on the input's device.

They sit in the model registry (:mod:`nas.baselines.registry`) beside the learned baselines
with ``kind="classical"``: ``nas.evaluate --models mertens average`` and ``nas.fuse --model
mertens`` take them by name (through :func:`nas.baselines.create_fusion` /
``nas.models.resolve_model(ref, allow_classical=True)``); ``create_model`` and the plain
``resolve_model`` refuse them, so training, search and export say clearly that there is
nothing to train. :meth:`ClassicalFusion.as_module` wraps a method in a parameter-free
``nn.Module`` (``forward(under, over)``) for code that only knows networks (the latency
harness, tiling).

Methods
-------
``mertens``
    T. Mertens, J. Kautz, F. Van Reeth, "Exposure fusion", Pacific Graphics 2007, through
    OpenCV's ``cv2.createMergeMertens(contrast_weight, saturation_weight, exposure_weight)``.
    Weight exponents (1, 1, 1) -- the paper's and the authors' MATLAB code's defaults. Note
    that OpenCV's own default is (1, 1, **0**): well-exposedness switched off; we pass all
    three explicitly.

    Input convention (checked against OpenCV 4/5): ``MergeMertens.process`` takes a list of
    3-channel images and converts each with ``convertTo(CV_32F, 1/255)`` whatever its depth,
    so it expects 0-255 values: ``uint8``, or ``float32`` on the 0-255 scale (``float32`` in
    [0, 1] would be scaled to [0, 1/255] and wreck the well-exposedness weight). ``uint8`` and
    ``float32`` holding the same integer values give bit-identical results. We pass
    **float32 on the 0-255 scale, not rounded** ("8-bit-equivalent float32": exactly an 8-bit
    image's values for inputs read from 8-bit files, no quantisation loss for others), in
    **BGR** order (OpenCV's convention; the result is flipped back to RGB -- the weights are
    symmetric in the channels up to float rounding, ~1e-5). The result is float32 on the
    [0, 1] scale; the Laplacian-pyramid blend can overshoot it slightly, so it is **clipped
    to [0, 1]**.

``average``
    The mean of the exposures, ``(under + over) / 2`` (for N frames: their sum / N), in the
    input dtype on the input's device. The floor every learned method must beat.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "CLASSICAL_METHODS",
    "Average",
    "ClassicalFusion",
    "ClassicalModule",
    "Mertens",
    "MertensDefault",
    "create_classical",
    "list_classical",
]


class ClassicalFusion:
    """Base of the classical fusion methods (see the module docstring).

    Subclasses set :attr:`name`, :attr:`paper`, :attr:`summary` and implement either
    :meth:`_fuse_arrays` (one scene as NumPy arrays, run on the CPU for each batch item) or
    :meth:`_fuse_tensors` (the whole batch as tensors, on their device).
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    kind: ClassVar[str] = "classical"

    # --- the interface --------------------------------------------------------------------

    def fuse(self, under: Tensor, over: Tensor) -> Tensor:
        """Fuse one pair: ``(B, 3, H, W)`` (or ``(3, H, W)``) in [0, 1], same shape -> same
        shape, dtype and device, in [0, 1]."""
        return self.fuse_sequence([under, over])

    def fuse_sequence(self, frames: Sequence[Tensor]) -> Tensor:
        """Fuse N >= 2 exposures of one scene (any order), each ``(B, 3, H, W)`` or
        ``(3, H, W)`` in [0, 1], all the same shape; returns that shape in [0, 1]."""
        xs, squeeze = _check_frames(frames, self.name)
        with torch.no_grad():
            out = self._fuse_tensors(xs)
        return out[0] if squeeze else out

    def __call__(self, under: Tensor, over: Tensor) -> Tensor:
        return self.fuse(under, over)

    def settings(self) -> dict[str, Any]:
        """The method's parameters (``{}`` when it has none)."""
        return {}

    def describe(self) -> str:
        """One line: name, what it does, its parameters and its source."""
        s = ", ".join(f"{k}={v}" for k, v in self.settings().items())
        return (
            f"{self.name} (classical, no weights): {self.summary}"
            + (f" [{s}]" if s else "")
            + (f" -- {self.paper}" if self.paper else "")
        )

    def as_module(self) -> ClassicalModule:
        """A parameter-free ``nn.Module`` whose ``forward(under, over)`` is :meth:`fuse`."""
        return ClassicalModule(self)

    def __repr__(self) -> str:
        s = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({s})"

    # --- implementation hooks -------------------------------------------------------------

    def _fuse_tensors(self, frames: list[Tensor]) -> Tensor:
        """Default: each batch item through :meth:`_fuse_arrays` on the CPU."""
        ref = frames[0]
        arrs = [
            f.detach().to("cpu", torch.float32).clamp(0.0, 1.0).permute(0, 2, 3, 1).numpy()
            for f in frames
        ]
        outs = [
            np.asarray(self._fuse_arrays([a[i] for a in arrs]), dtype=np.float32)
            for i in range(ref.shape[0])
        ]
        out = torch.from_numpy(np.ascontiguousarray(np.stack(outs))).permute(0, 3, 1, 2)
        return out.clamp_(0.0, 1.0).to(device=ref.device, dtype=ref.dtype)

    def _fuse_arrays(self, frames: list[np.ndarray]) -> np.ndarray:
        """One scene: N ``(H, W, 3)`` float32 RGB arrays in [0, 1] -> ``(H, W, 3)``."""
        raise NotImplementedError(f"{type(self).__name__} implements neither fuse hook")


class ClassicalModule(nn.Module):
    """``nn.Module`` adapter of a :class:`ClassicalFusion` (no parameters, any device).

    ``.to()``, ``.eval()``, ``deepcopy`` and ``parameters()`` work as for a network, so the
    latency harness and the tiling of :mod:`nas.tiling` can run a classical method unchanged.
    """

    def __init__(self, method: ClassicalFusion) -> None:
        super().__init__()
        self.method = method

    def forward(self, under: Tensor, over: Tensor) -> Tensor:
        return self.method.fuse(under, over)

    def extra_repr(self) -> str:
        return repr(self.method)


def _check_frames(frames: Sequence[Tensor], name: str) -> tuple[list[Tensor], bool]:
    if isinstance(frames, Tensor) or len(frames) < 2:
        n = "a tensor" if isinstance(frames, Tensor) else f"{len(frames)}"
        raise ValueError(f"{name}: needs a sequence of at least 2 exposures, got {n}")
    squeeze = frames[0].dim() == 3
    xs = []
    for i, f in enumerate(frames):
        if not isinstance(f, Tensor) or not f.is_floating_point():
            raise ValueError(f"{name}: exposure {i} must be a float tensor, got {type(f)}")
        x = f[None] if f.dim() == 3 else f
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(
                f"{name}: exposure {i} must be (B, 3, H, W) or (3, H, W) RGB, got {tuple(f.shape)}"
            )
        if xs and (x.shape != xs[0].shape or f.dim() != frames[0].dim()):
            raise ValueError(
                f"{name}: exposures differ in shape: {tuple(frames[0].shape)} vs {tuple(f.shape)}"
            )
        xs.append(x)
    return xs, squeeze


class Mertens(ClassicalFusion):
    """Mertens exposure fusion through OpenCV (module docstring: input/output conventions).

    Args:
        contrast_weight, saturation_weight, exposure_weight: the exponents of the three
            quality measures (None: :attr:`default_weights`, the paper's all 1).
    """

    name = "mertens"
    paper = 'Mertens, Kautz & Van Reeth, "Exposure fusion", Pacific Graphics 2007 (OpenCV)'
    summary = "Laplacian-pyramid blend weighted by contrast, saturation, well-exposedness"

    default_weights: ClassVar[tuple[float, float, float]] = (1.0, 1.0, 1.0)
    """(contrast, saturation, exposure) exponents used where an argument is None."""

    def __init__(
        self,
        contrast_weight: float | None = None,
        saturation_weight: float | None = None,
        exposure_weight: float | None = None,
    ) -> None:
        given = (contrast_weight, saturation_weight, exposure_weight)
        contrast_weight, saturation_weight, exposure_weight = (
            d if v is None else v for v, d in zip(given, self.default_weights)
        )
        for k, v in (
            ("contrast_weight", contrast_weight),
            ("saturation_weight", saturation_weight),
            ("exposure_weight", exposure_weight),
        ):
            if not (float(v) >= 0.0):
                raise ValueError(f"mertens: {k} must be >= 0, got {v!r}")
        self.contrast_weight = float(contrast_weight)
        self.saturation_weight = float(saturation_weight)
        self.exposure_weight = float(exposure_weight)

    def settings(self) -> dict[str, Any]:
        return {
            "contrast_weight": self.contrast_weight,
            "saturation_weight": self.saturation_weight,
            "exposure_weight": self.exposure_weight,
        }

    def _fuse_arrays(self, frames: list[np.ndarray]) -> np.ndarray:
        cv2 = _cv2()
        merge = cv2.createMergeMertens(
            self.contrast_weight, self.saturation_weight, self.exposure_weight
        )
        # 0-255 float32 in BGR: what process() expects (it divides every input by 255)
        bgr = [np.ascontiguousarray(f[..., ::-1] * np.float32(255.0)) for f in frames]
        out = merge.process(bgr)
        return np.clip(out[..., ::-1], 0.0, 1.0)


class MertensDefault(Mertens):
    """Mertens through OpenCV with OpenCV's own default weights, ``createMergeMertens()``:
    contrast 1, saturation 1, exposure **0**. What a user who calls OpenCV gets, and the bar a
    searched net must clear (``nas.pyramid.mertens_fuse`` is the same algorithm in torch)."""

    name = "mertens-default"
    summary = "Mertens with OpenCV's default weights (contrast 1, saturation 1, exposure 0)"
    default_weights = (1.0, 1.0, 0.0)


class Average(ClassicalFusion):
    """The mean of the exposures, computed in torch on the input's device."""

    name = "average"
    paper = ""
    summary = "mean of the exposures, (under + over) / 2"

    def _fuse_tensors(self, frames: list[Tensor]) -> Tensor:
        total = functools.reduce(lambda a, b: a + b, frames)
        return (total / len(frames)).clamp_(0.0, 1.0)


CLASSICAL_METHODS: dict[str, type[ClassicalFusion]] = {
    Mertens.name: Mertens,
    MertensDefault.name: MertensDefault,
    Average.name: Average,
}
"""Every classical method by name (registered in :mod:`nas.baselines.registry`)."""


def list_classical() -> list[str]:
    """Names of the classical methods, sorted."""
    return sorted(CLASSICAL_METHODS)


def create_classical(name: str, **kwargs: Any) -> ClassicalFusion:
    """Build classical method ``name`` with ``kwargs`` (e.g. Mertens' weights)."""
    try:
        cls = CLASSICAL_METHODS[name]
    except KeyError:
        raise KeyError(
            f"unknown classical method {name!r}; valid: {', '.join(list_classical())}"
        ) from None
    return cls(**kwargs)


@functools.lru_cache(maxsize=1)
def _cv2() -> Any:
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise RuntimeError(
            "the mertens method needs OpenCV: pip install opencv-python-headless "
            f"({type(e).__name__}: {e})"
        ) from None
    return cv2
