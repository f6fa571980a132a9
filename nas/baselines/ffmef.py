"""FFMEF: filter-dominated fusion (Zheng et al., CVPR workshops 2023)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas.baselines.registry import register_model
from nas.color import fuse_in_ycbcr

__all__ = ["FFMEF", "apply_pixel_filters"]


def apply_pixel_filters(img: Tensor, filters: Tensor) -> Tensor:
    """Filter ``img`` with one k x k kernel per pixel (F-Fusion's per-pixel convolution).

    Args:
        img: (B, 1, H, W) single-channel image.
        filters: (B, k*k, H, W) kernels, row-major over the k x k window; k odd.

    Returns:
        (B, 1, H, W): ``sum_ij filters[b, ij, y, x] * img_zero_padded[b, y+i-k//2, x+j-k//2]``.
    """
    b, kk, h, w = filters.shape
    k = int(round(kk**0.5))
    if k * k != kk or k % 2 == 0:
        raise ValueError(f"filters must have k*k channels with k odd, got {kk}")
    patches = F.unfold(img, kernel_size=k, padding=k // 2).view(b, kk, h, w)
    return (patches * filters).sum(dim=1, keepdim=True)


class _ResBlockIN(nn.Module):
    """conv3x3 -> InstanceNorm on half the channels -> LReLU(0.2) -> conv3x3 -> LReLU, + 1x1."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm = nn.InstanceNorm2d(c_out // 2, affine=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.conv1(x).chunk(2, dim=1)
        y = self.act(torch.cat([self.norm(a), b], dim=1))
        return self.act(self.conv2(y)) + self.shortcut(x)


def _conv_in_relu(c_in: int, c_out: int, k: int, transposed: bool = False) -> nn.Sequential:
    conv = nn.ConvTranspose2d if transposed else nn.Conv2d
    return nn.Sequential(
        conv(c_in, c_out, k, 1, k // 2), nn.InstanceNorm2d(c_out, affine=True), nn.ReLU()
    )


class _SkipFusion(nn.Module):
    """``a1 * body(cat) + a2 * y`` with learnable scalars a1 = 1.0, a2 = 0.5 at init [code]."""

    def __init__(self, c: int, residual: bool):
        super().__init__()
        self.body = _ResBlockIN(2 * c, c) if residual else _conv_in_relu(2 * c, c, 1)
        self.a1 = nn.Parameter(torch.tensor(1.0))
        self.a2 = nn.Parameter(torch.tensor(0.5))

    def forward(self, skip: Tensor, y: Tensor) -> Tensor:
        return self.a1 * self.body(torch.cat([skip, y], dim=1)) + self.a2 * y


class _Extractor(nn.Module):
    """Hierarchical representation extractor: a U-Net of residual blocks, all stride 1 [code].

    (B, C, H, W) -> (bottom, mid, top), each (B, C, H, W).
    """

    def __init__(self, c: int):
        super().__init__()
        self.enc1, self.enc2, self.bottom = (_ResBlockIN(c, c) for _ in range(3))
        self.dec2, self.dec1 = _ResBlockIN(c, c), _ResBlockIN(c, c)
        self.down1, self.down2 = _conv_in_relu(c, c, 3), _conv_in_relu(c, c, 3)
        self.up2, self.up1 = _conv_in_relu(c, c, 3, True), _conv_in_relu(c, c, 3, True)
        self.skips = nn.ModuleList(_SkipFusion(c, residual=False) for _ in range(6))
        self.fus2, self.fus1 = _SkipFusion(c, residual=True), _SkipFusion(c, residual=True)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        s = self.skips
        e1 = self.enc1(x)
        d1 = s[0](x, self.down1(e1))
        e2 = self.enc2(d1)
        d2 = s[2](x, s[1](d1, self.down2(e2)))
        bottom = self.bottom(d2)
        mid = self.fus2(e2, self.dec2(s[3](bottom, self.up2(bottom))))
        top = self.dec1(s[4](mid, self.up1(mid)))
        top = self.fus1(e1, s[5](bottom, top))
        return bottom, mid, top


class _FilterPredictor(nn.Module):
    """Spatial-adaptive filter predictor (SFP) of one level.

    Spatial attention ``1x1 2C->C, ReLU, 1x1 C->2, sigmoid`` reweights each image's features,
    then a head shared by both images, ``3x3 C->C, ReLU, kxk C->k^2, ReLU, 1x1 k^2->k^2`` (no
    softmax), predicts one k x k filter per pixel: (B, C, H, W) x 2 -> (B, k^2, H, W) x 2.
    """

    def __init__(self, c: int, k: int):
        super().__init__()
        self.attention = nn.Sequential(
            nn.Conv2d(2 * c, c, 1), nn.ReLU(), nn.Conv2d(c, 2, 1), nn.Sigmoid()
        )
        self.head = nn.Sequential(
            nn.Conv2d(c, c, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c, k * k, k, padding=k // 2),
            nn.ReLU(),
            nn.Conv2d(k * k, k * k, 1),
        )

    def forward(self, r0: Tensor, r1: Tensor) -> tuple[Tensor, Tensor]:
        a0, a1 = self.attention(torch.cat([r0, r1], dim=1)).chunk(2, dim=1)
        return self.head(r0 * a0), self.head(r1 * a1)


@register_model(
    "ffmef",
    paper="Zheng et al., Efficient multi-exposure image fusion via filter-dominated fusion "
    "and gradient-driven unsupervised learning (FFMEF), CVPR workshops 2023",
    color_space="ycbcr-y",
    loss="ffmef",
    ref_params=7_700,
)
class FFMEF(nn.Module):
    """FFMEF: predicts per-pixel filters from hierarchical features and filters the sources.

    Paper: Zheng et al., CVPRW 2023 (``papers/ffmef-filter-dominated-fusion.txt``); the paper
    defers the extractor to its supplement, so its layout is **[code]** (authors' release, per
    BASELINES.md): width C = 4; a 1x1 "preconv" 1->C shared by both images; a U-Net-like
    extractor of residual blocks (conv3x3, instance norm on half the channels, LeakyReLU(0.2),
    conv3x3, LeakyReLU, + 1x1 shortcut) whose "down"/"up" blocks have **stride 1** (conv /
    transposed conv 3x3 + instance norm + ReLU), with skip fusions ``a1 f(cat) + a2 y``
    (a1 = 1.0, a2 = 0.5 at init), giving bottom, mid and top feature levels per image; per level
    a spatial-adaptive filter predictor (:class:`_FilterPredictor`) with k = 1, 3, 5 for the
    top, mid and bottom levels; F-Fusion (Eq. 4)
    ``Y_f = sum_l alpha_l (f_l0 * Y_0 + f_l1 * Y_1)`` by per-pixel filtering via unfold, learnable
    alphas (0.6, 0.3, 0.1 at init), clamped to [0, 1]; Xavier-normal conv init [code].
    Colour (paper Eq. 1): only Y (BT.601, /255 as the code feeds it) goes through the net;
    Cb, Cr are fused by :func:`nas.color.fuse_chroma`.

    Parameters: 7,662 (BASELINES.md: about 7.7 k).

    Shapes: ``forward(under, over)``, sRGB (B, 3, H, W) in [0, 1], any H x W (everything is
    stride 1) -> fused sRGB (B, 3, H, W) in [0, 1]. :meth:`fuse_y` is the Y-only network.
    """

    def __init__(self, channels: int = 4, kernel_sizes: tuple[int, int, int] = (1, 3, 5)):
        super().__init__()
        self.preconv = nn.Conv2d(1, channels, 1)
        self.extractor = _Extractor(channels)
        # predictors[i] serves kernel_sizes[i]: top (k=1), mid (k=3), bottom (k=5)
        self.predictors = nn.ModuleList(_FilterPredictor(channels, k) for k in kernel_sizes)
        self.alpha = nn.Parameter(torch.tensor([0.6, 0.3, 0.1]))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def fuse_y(self, y0: Tensor, y1: Tensor) -> Tensor:
        """Fuse two Y channels (B, 1, H, W) -> (B, 1, H, W) in [0, 1]."""
        bottom0, mid0, top0 = self.extractor(self.preconv(y0))
        bottom1, mid1, top1 = self.extractor(self.preconv(y1))
        levels = ((top0, top1), (mid0, mid1), (bottom0, bottom1))
        fused = torch.zeros_like(y0)
        for alpha, predictor, (r0, r1) in zip(self.alpha, self.predictors, levels, strict=True):
            f0, f1 = predictor(r0, r1)
            fused = fused + alpha * (apply_pixel_filters(y0, f0) + apply_pixel_filters(y1, f1))
        return fused.clamp(0.0, 1.0)

    def forward(self, under: Tensor, over: Tensor) -> Tensor:
        return fuse_in_ycbcr(under, over, self.fuse_y)
