"""HyperP_MB: DenseFuse trained with multi-task dynamic hyper-parameters (Im et al., 2023)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nas.baselines.registry import register_model
from nas.color import fuse_in_lab

__all__ = ["HyperPMB"]


def _conv_layer(c_in: int, c_out: int, relu: bool = True) -> nn.Sequential:
    """DenseFuse ConvLayer: reflection pad 1, conv3x3, ReLU (linear when ``relu`` is False)."""
    layers: list[nn.Module] = [nn.ReflectionPad2d(1), nn.Conv2d(c_in, c_out, 3)]
    return nn.Sequential(*layers, nn.ReLU()) if relu else nn.Sequential(*layers)


class _Encoder(nn.Module):
    """C1 1->16, then a dense block of three ConvLayers each adding 16: (B,1,H,W)->(B,64,H,W)."""

    def __init__(self, width: int = 16, n_dense: int = 3):
        super().__init__()
        self.c1 = _conv_layer(1, width)
        self.dense = nn.ModuleList(_conv_layer(width * (i + 1), width) for i in range(n_dense))

    def forward(self, x: Tensor) -> Tensor:
        x = self.c1(x)
        for layer in self.dense:
            x = torch.cat([x, layer(x)], dim=1)
        return x


@register_model(
    "hyperp-mb",
    paper="Im et al., Multi-task learning approach using dynamic hyperparameter for "
    "multi-exposure fusion (HyperP_MB), Mathematics 2023",
    color_space="lab-l",
    loss="hyperp-mb",
    ref_params=88_000,
)
class HyperPMB(nn.Module):
    """HyperP_MB: a DenseFuse network on the CIELAB L channel with sum fusion.

    Paper: Im et al., Mathematics 11:1620, 2023
    (``papers/hyperp-mb-multitask-dynamic-hyperparameter.txt``); the network is DenseFuse's.
    From the paper: ConvLayer = reflection padding, conv3x3, ReLU; encoder C1 + DenseBlock of
    three ConvLayers; element-wise sum of the two encoders' features; a decoder of four
    ConvLayers; only the L channel goes through the net, a and b are the mean of the inputs'.
    **[reading]** (BASELINES.md): two *unshared* encoders (under, over), 1->16 then dense
    16->32->48->64; decoder 64->64->32->16->1 whose last layer is linear, then clamp to [0, 1].
    The net sees ``L / 100`` in [0, 1]; the last layer's bias starts at 0.5 so the clamp does
    not swallow every gradient at initialisation.

    Parameters: 88,225 (BASELINES.md: about 88 k).

    Shapes: ``forward(under, over)``, sRGB (B, 3, H, W) in [0, 1], any H, W >= 2 (reflection
    padding) -> fused sRGB (B, 3, H, W) in [0, 1]. :meth:`fuse_l` is the L-only network.
    """

    def __init__(self, widths: tuple[int, ...] = (64, 64, 32, 16)):
        super().__init__()
        self.enc_under, self.enc_over = _Encoder(), _Encoder()
        dec: list[nn.Module] = [_conv_layer(a, b) for a, b in zip(widths[:-1], widths[1:])]
        self.decoder = nn.Sequential(*dec, _conv_layer(widths[-1], 1, relu=False))
        # [reading] the linear last layer starts at mid-grey (bias 0.5): with PyTorch's default
        # init its output is slightly negative everywhere, the clamp to [0, 1] then passes no
        # gradient and the network never trains.
        nn.init.constant_(self.decoder[-1][1].bias, 0.5)

    def fuse_l(self, l_under: Tensor, l_over: Tensor) -> Tensor:
        """Fuse ``L / 100`` maps (B, 1, H, W) in [0, 1] -> (B, 1, H, W) in [0, 1]."""
        return self.decoder(self.enc_under(l_under) + self.enc_over(l_over)).clamp(0.0, 1.0)

    def forward(self, under: Tensor, over: Tensor) -> Tensor:
        return fuse_in_lab(under, over, self.fuse_l)
