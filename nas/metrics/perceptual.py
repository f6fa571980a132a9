"""LPIPS (Zhang et al. 2018, AlexNet, v0.1); needs pretrained weights that are not shipped.

Part of :mod:`nas.metrics`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from nas.metrics.basic import MetricUnavailable, _check_min_size, _check_pair

# --------------------------------------------------------------------------------------------
# LPIPS (needs pretrained weights that cannot be shipped or downloaded here)
# --------------------------------------------------------------------------------------------


_LPIPS_SHIFT = (-0.030, -0.088, -0.188)  # LPIPS ScalingLayer (inputs in [-1, 1])
_LPIPS_SCALE = (0.458, 0.448, 0.450)
# torchvision AlexNet ``features`` convs: (index, stride, padding); ReLU after each; max-pools
# (3, stride 2) after convs 0 and 3.  LPIPS taps relu1..relu5 (after convs 0, 3, 6, 8, 10).
_ALEX_CONVS = ((0, 4, 2), (3, 1, 2), (6, 1, 1), (8, 1, 1), (10, 1, 1))
_LPIPS_CHANNELS = (64, 192, 384, 256, 256)


def _lpips_required_keys() -> list[str]:
    keys = [f"features.{i}.{p}" for i, _, _ in _ALEX_CONVS for p in ("weight", "bias")]
    return keys + [f"lin{i}.model.1.weight" for i in range(5)]


def _load_lpips_weights(weights_path: str | Path | Sequence[str | Path]) -> dict[str, Tensor]:
    """Merge the given state-dict file(s) into the key layout of :func:`_lpips_required_keys`."""
    paths = [weights_path] if isinstance(weights_path, str | Path) else list(weights_path)
    merged: dict[str, Tensor] = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise MetricUnavailable(f"LPIPS weights file not found: {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise MetricUnavailable(f"{path} does not hold a state dict (got {type(state)})")
        for key, val in state.items():
            if not isinstance(val, Tensor):
                continue
            m = re.fullmatch(r"(?:net\.slice\d\.|module\.features\.)(\d+)\.(weight|bias)", key)
            if m:  # a saved ``lpips.LPIPS`` module (net.sliceN.<i>) or a DataParallel AlexNet
                key = f"features.{m.group(1)}.{m.group(2)}"
            merged[key] = val
    missing = [k for k in _lpips_required_keys() if k not in merged]
    if missing:
        raise MetricUnavailable(
            f"LPIPS weights in {[str(p) for p in paths]} lack {missing}; expected torchvision "
            "AlexNet 'features.*' and LPIPS v0.1 'lin0..lin4.model.1.weight' tensors"
        )
    return {k: merged[k] for k in _lpips_required_keys()}


def lpips(
    fused: Tensor,
    reference: Tensor,
    weights_path: str | Path | Sequence[str | Path] | None = None,
) -> Tensor:
    """LPIPS, Zhang, Isola, Efros, Shechtman & Wang, CVPR 2018 -- AlexNet, v0.1.

    LPIPS needs ImageNet-pretrained AlexNet features plus the learned linear calibration
    layers; neither is shipped with this package nor can be downloaded here, so without
    ``weights_path`` this raises :class:`MetricUnavailable` (no number is ever made up).

    With ``weights_path`` (one file, or a sequence of files whose state dicts are merged) it
    runs the LPIPS forward pass: inputs ``[0, 1] -> [-1, 1]``, ScalingLayer
    ``(x - shift) / scale`` (shift -.030 -.088 -.188, scale .458 .448 .450), torchvision AlexNet
    ``features`` (keys ``features.{0,3,6,8,10}.{weight,bias}``; a saved ``lpips.LPIPS`` module's
    ``net.sliceN.<i>.*`` keys are accepted too), relu1..relu5 activations unit-normalised over
    channels (``x / (||x|| + 1e-10)``), squared differences weighted by the 1x1 linear layers
    (keys ``lin{0..4}.model.1.weight``, as in the official ``weights/v0.1/alex.pth``),
    averaged spatially and summed over the five layers.  This forward pass follows the
    reference ``lpips`` package's architecture, but it has **not** been checked against that
    package's numbers here (no weights are available in this environment).

    Range ``[0, inf)`` (typically 0-0.7); **lower is better**; identical images give 0.
    Differentiable.

    Args:
        fused: ``(B, 3, H, W)`` RGB in ``[0, 1]``, H, W >= 31.
        reference: same shape as ``fused``.
        weights_path: state-dict file(s) holding the AlexNet and LPIPS linear weights.

    Returns:
        ``(B,)`` tensor, dtype of ``fused``.

    Raises:
        MetricUnavailable: no ``weights_path``, a missing file, or missing keys.
        ValueError: malformed inputs (checked first).
    """
    fused, reference = _check_pair(fused, "fused", reference, "reference", channels=(3,))
    _check_min_size(fused, "fused", 31, "LPIPS (AlexNet)")
    if weights_path is None:
        raise MetricUnavailable(
            "LPIPS needs pretrained weights (ImageNet AlexNet backbone + LPIPS v0.1 linear "
            "layers) that cannot be downloaded here: pass weights_path=<file(s)>."
        )
    state = _load_lpips_weights(weights_path)
    dt, dev = fused.dtype, fused.device
    state = {k: v.to(device=dev, dtype=dt) for k, v in state.items()}
    shift = torch.tensor(_LPIPS_SHIFT, dtype=dt, device=dev).view(1, 3, 1, 1)
    scale = torch.tensor(_LPIPS_SCALE, dtype=dt, device=dev).view(1, 3, 1, 1)

    def features(x: Tensor) -> list[Tensor]:
        h = ((2.0 * x - 1.0) - shift) / scale
        taps = []
        for n, (idx, stride, pad) in enumerate(_ALEX_CONVS):
            if n in (1, 2):
                h = F.max_pool2d(h, kernel_size=3, stride=2)
            h = F.relu(
                F.conv2d(
                    h,
                    state[f"features.{idx}.weight"],
                    state[f"features.{idx}.bias"],
                    stride=stride,
                    padding=pad,
                )
            )
            taps.append(h)
        return taps

    total = torch.zeros(fused.shape[0], dtype=dt, device=dev)
    for n, (f0, f1) in enumerate(zip(features(fused), features(reference), strict=True)):
        n0 = f0 / (torch.sqrt(torch.sum(f0**2, dim=1, keepdim=True)) + 1e-10)
        n1 = f1 / (torch.sqrt(torch.sum(f1**2, dim=1, keepdim=True)) + 1e-10)
        lin = state[f"lin{n}.model.1.weight"]
        total = total + F.conv2d((n0 - n1) ** 2, lin).mean(dim=(1, 2, 3))
    return total
