"""MEF-CL's fusion network (Liu et al., AAAI 2023)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nas.baselines.registry import register_model

__all__ = ["MEFCL"]


def _conv(c_in: int, c_out: int) -> nn.Sequential:
    """Reflection pad 1 + 3x3 conv, stride 1 (keeps H x W)."""
    return nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(c_in, c_out, 3))


@register_model(
    "mef-cl",
    paper="Liu et al., Multi-exposure image fusion via contrastive learning (MEF-CL), AAAI 2023",
    color_space="rgb",
    loss="mef-cl",
    ref_params=660_000,
)
class MEFCL(nn.Module):
    """MEF-CL: a 10-layer "fully connected" DenseNet that fuses two RGB exposures end to end.

    Paper: Liu et al., AAAI 2023 (``papers/mef-cl-contrastive-learning.txt``). The paper fixes
    10 layers of 3x3 stride-1 convs, LeakyReLU(0.2) on the first 9 and tanh on the last, but no
    widths. **[reading]** (BASELINES.md, after U2Fusion by the same author): input
    ``cat(under, over)`` = 6 RGB channels; L1 6->44; L2..L6 dense layers, each taking the
    concatenation of all previous outputs (44, 88, 132, 176, 220 channels) and adding 44
    (264 after L6); L7..L10 264->128->64->32->3; reflection padding 1; no normalisation; output
    ``tanh(x) / 2 + 0.5``.

    Parameters: 661,379 (BASELINES.md: about 0.66 M).

    Shapes: ``forward(under, over)``, each sRGB (B, 3, H, W) in [0, 1], any H, W >= 2
    (reflection padding needs 2 pixels) -> fused sRGB (B, 3, H, W) in [0, 1].
    """

    def __init__(self, growth: int = 44, n_dense: int = 5, widths: tuple[int, ...] = (128, 64, 32)):
        super().__init__()
        self.first = _conv(6, growth)
        self.dense = nn.ModuleList(_conv(growth * (i + 1), growth) for i in range(n_dense))
        c = growth * (n_dense + 1)
        tail: list[nn.Module] = []
        for w in widths:
            tail += [_conv(c, w), nn.LeakyReLU(0.2)]
            c = w
        self.tail = nn.Sequential(*tail, _conv(c, 3))
        self.act = nn.LeakyReLU(0.2)

    def forward(self, under: Tensor, over: Tensor) -> Tensor:
        feats = [self.act(self.first(torch.cat([under, over], dim=1)))]
        for layer in self.dense:
            feats.append(self.act(layer(torch.cat(feats, dim=1))))
        return torch.tanh(self.tail(torch.cat(feats, dim=1))) / 2 + 0.5
