"""LCNDR: coordinated network for detail-refinement MEF (Li et al., TCSVT 2022), reconstructed."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas.baselines.registry import register_model
from nas.color import fuse_in_ycbcr

__all__ = ["LCNDR", "edge_gradient_max"]


def _cbr(c_in: int, c_out: int, k: int = 3, stride: int = 1, act: bool = True) -> nn.Sequential:
    """conv k x k (same padding) + BatchNorm (+ LeakyReLU)."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, k, stride, k // 2), nn.BatchNorm2d(c_out)]
    return nn.Sequential(*layers, nn.LeakyReLU()) if act else nn.Sequential(*layers)


def edge_gradient_max(x: Tensor, eps: float = 1e-6) -> Tensor:
    """ERM's spatial gradient filter FG (LCNDR Eqs. 4-5), per channel.

    ``g(i, j) = sqrt((p(i,j) - p(i,j-1))^2 + (p(i,j) - p(i+1,j))^2)`` from the left and below
    neighbours (replicate border, so border differences are 0), then the 2-tap diagonal max
    ``FG(i, j) = max(g(i, j), g(i+1, j+1))``. (B, C, H, W) -> (B, C, H, W), >= 0. ``eps`` inside
    the root keeps the gradient finite where both differences vanish.
    """
    left = F.pad(x, (1, 0, 0, 0), mode="replicate")[..., :, :-1]
    below = F.pad(x, (0, 0, 0, 1), mode="replicate")[..., 1:, :]
    g = torch.sqrt((x - left) ** 2 + (x - below) ** 2 + eps)
    diag = F.pad(g, (0, 1, 0, 1), mode="replicate")[..., 1:, 1:]
    return torch.maximum(g, diag)


class _CoordAttention(nn.Module):
    """Coordinate attention (Hou et al., CVPR 2021): x * a_h(H) * a_w(W), (B,C,H,W) -> same."""

    def __init__(self, c: int, mid: int = 8):
        super().__init__()
        self.squeeze = _cbr(c, mid, 1)
        self.conv_h, self.conv_w = nn.Conv2d(mid, c, 1), nn.Conv2d(mid, c, 1)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        pooled = torch.cat([x.mean(dim=3, keepdim=True), x.mean(dim=2).unsqueeze(-1)], dim=2)
        y_h, y_w = self.squeeze(pooled).split([h, w], dim=2)
        return x * torch.sigmoid(self.conv_h(y_h)) * torch.sigmoid(self.conv_w(y_w)).transpose(2, 3)


class _PoolingExtractor(nn.Module):
    """CEM's multi-dimensional pooling feature extractor P: (B, C, H, W) -> (B, 3C, H, W).

    Shallow conv3x3, conv3x3, conv1x1; [max-pool 2 | avg-pool 2] concatenated, twice
    (C -> 2C -> 4C channels at H/4); conv3x3 4C->C, conv1x1 C->2C; bilinear upsampling; the
    shallow features are concatenated back (the "direct connection from the shallow layers").
    H and W must be multiples of 4.
    """

    def __init__(self, c: int):
        super().__init__()
        self.shallow = nn.Sequential(_cbr(c, c), _cbr(c, c), _cbr(c, c, 1))
        self.deep = nn.Sequential(_cbr(4 * c, c), _cbr(c, 2 * c, 1))

    @staticmethod
    def _pool(x: Tensor) -> Tensor:
        return torch.cat([F.max_pool2d(x, 2), F.avg_pool2d(x, 2)], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        s = self.shallow(x)
        d = self.deep(self._pool(self._pool(s)))
        d = F.interpolate(d, size=s.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([d, s], dim=1)


class _SelfAttention(nn.Module):
    """SAM: F0 = conv3x3; max-pool 4, conv3x3 stride 2 (H/8); softmax(q^T k) applied to v;
    bilinear upsampling; + F0. (B, C_in, H, W) -> (B, C, H, W); H, W multiples of 8.

    At most ``max_tokens`` positions attend to each other: a larger H/8 x W/8 grid is first
    adaptively max-pooled down (memory O(max_tokens^2) instead of O((HW/64)^2)).
    """

    def __init__(self, c_in: int, c: int, qk: int = 8, max_tokens: int = 4096):
        super().__init__()
        self.f0 = _cbr(c_in, c)
        self.reduce = nn.Sequential(nn.MaxPool2d(4), _cbr(c, c, stride=2))
        self.q, self.k, self.v = nn.Conv2d(c, qk, 1), nn.Conv2d(c, qk, 1), nn.Conv2d(c, c, 1)
        self.max_tokens = max_tokens

    def forward(self, x: Tensor) -> Tensor:
        f0 = self.f0(x)
        r = self.reduce(f0)
        h, w = r.shape[-2:]
        if h * w > self.max_tokens:
            s = math.sqrt(h * w / self.max_tokens)
            r = F.adaptive_max_pool2d(r, (max(1, int(h / s)), max(1, int(w / s))))
        b, _, h, w = r.shape
        q, k, v = self.q(r).flatten(2), self.k(r).flatten(2), self.v(r).flatten(2)
        attn = torch.softmax(q.transpose(1, 2) @ k, dim=-1)  # (B, N, N), rows sum to 1
        out = (v @ attn.transpose(1, 2)).view(b, -1, h, w)
        return F.interpolate(out, size=f0.shape[-2:], mode="bilinear", align_corners=False) + f0


class _EdgeRevision(nn.Module):
    """ERM (reconstruction): ``w = head(F + FG(F))`` with FG = :func:`edge_gradient_max`.

    Two conv3x3 (C->16 with BN + LeakyReLU, 16->1 with BN), then sigmoid and tanh as the
    released code's output head: (B, C, H, W) -> (B, 1, H, W) in (0, tanh(1)).
    """

    def __init__(self, c: int, mid: int = 16):
        super().__init__()
        self.convs = nn.Sequential(_cbr(c, mid), _cbr(mid, 1, act=False))

    def forward(self, feats: Tensor) -> Tensor:
        return torch.tanh(torch.sigmoid(self.convs(feats + edge_gradient_max(feats))))


@register_model(
    "lcndr",
    paper="Li et al., Learning a coordinated network for detail-refinement multi-exposure "
    "image fusion (LCNDR), IEEE TCSVT 2022",
    color_space="ycbcr-y",
    loss="lcndr",
    ref_params=100_000,
    global_context=True,
)
class LCNDR(nn.Module):
    """LCNDR: two shared-weight branches (CEM + SAM + ERM) predict a map per exposure.

    Paper: Li et al., TCSVT 2022 (``papers/lcndr-coordinated-network-detail-refinement.txt``).
    The released code is an early version without the edge revision module, so this network is
    a **reconstruction** from the paper text and BASELINES.md:

    * Per branch, weights shared by both branches [code]: conv3x3 1->32 giving Ĩ.
    * CEM (Eq. 1) ``P(Ĩ) + cat(CA_1(Ĩ), CA_2(Ĩ), CA_3(Ĩ))``: three coordinate-attention blocks in
      parallel, concatenated (96 ch), added element-wise to the pooling feature extractor P
      (:class:`_PoolingExtractor`: two conv3x3 + conv1x1, [max | avg] pooling twice, conv3x3 +
      conv1x1, bilinear upsampling, concatenated with the shallow features: 64 + 32 = 96 ch).
    * SAM (Eq. 2-3, :class:`_SelfAttention`) on ``cat(Ĩ, other exposure's Y)`` (33 ch), the
      cross-exposure input of the released code [code]: conv3x3 F0, max-pool 4, conv3x3
      stride 2 (the code's overall 1/8 reduction), 1x1 query/key (8 ch) and value (32 ch),
      softmax attention, bilinear upsampling, + F0 -> 32 ch. Inputs above 512 x 512 pixels
      (more than ``max_tokens`` = 4096 positions at 1/8) are pooled further before attending,
      to bound memory (the paper does not say how it handles large images).
    * ERM (Eq. 4-5, :class:`_EdgeRevision`) on ``F = cat(CEM, SAM)`` (128 ch): the per-pixel
      gradient magnitude from left / below neighbours and the 2-tap diagonal max give FG(F);
      **[reading]** it revises the features residually, ``F + FG(F)`` (FG alone would be 0 in
      flat regions and the map could not follow exposure there), and the paper's two conv3x3
      produce the branch's map; sigmoid then tanh as the code's head.
    * BN + LeakyReLU(0.01) after the convs inside the modules.
    * Combination, Table VI "(d)" [code]: ``Y_F = w_O * Y_O + (w_U + Y_U)``, clamped to [0, 1]
      (the code does not clamp), computed like the code on Y mapped to [-1, 1] (``2Y - 1``;
      in [0, 1] the same rule would start near saturation, since w_U > 0 is added).
    * Colour: Cb / Cr by the same formula as FFMEF (:func:`nas.color.fuse_chroma`; the paper's
      Eq. 10 is that formula with tau = 128).

    Parameters: 100,955 (BASELINES.md: about 0.1 M for the code version, which has 107,204).

    Shapes: ``forward(under, over)``, sRGB (B, 3, H, W) in [0, 1], any H x W (padded inside by
    replication to a multiple of 8, at least 16, and cropped back) -> fused sRGB (B, 3, H, W)
    in [0, 1]. :meth:`fuse_y` is the Y-only network.
    """

    def __init__(self, channels: int = 32, max_tokens: int = 4096):
        super().__init__()
        c = channels
        self.head = nn.Conv2d(1, c, 3, padding=1)
        self.coord_att = nn.ModuleList(_CoordAttention(c) for _ in range(3))
        self.pooling = _PoolingExtractor(c)
        self.attention = _SelfAttention(c + 1, c, max_tokens=max_tokens)
        self.edge = _EdgeRevision(3 * c + c)

    def _branch(self, y: Tensor, y_other: Tensor) -> Tensor:
        x = self.head(y)
        cem = self.pooling(x) + torch.cat([ca(x) for ca in self.coord_att], dim=1)
        sam = self.attention(torch.cat([x, y_other], dim=1))
        return self.edge(torch.cat([cem, sam], dim=1))

    def fuse_y(self, y_under: Tensor, y_over: Tensor) -> Tensor:
        """Fuse two Y channels (B, 1, H, W) in [0, 1] -> (B, 1, H, W) in [0, 1]."""
        h, w = y_under.shape[-2:]
        # pad to a multiple of 8 and at least 16, so the attention grid has >= 2 positions
        pad = (0, max(16, w + (-w) % 8) - w, 0, max(16, h + (-h) % 8) - h)
        yu, yo = (F.pad(2 * y - 1, pad, mode="replicate") for y in (y_under, y_over))
        w_over, w_under = self._branch(yo, yu), self._branch(yu, yo)
        fused = w_over * yo + (w_under + yu)  # in the code's [-1, 1] scale
        fused = F.pad(fused, (0, -pad[1], 0, -pad[3]))  # crop back (export-friendly slicing)
        return ((fused + 1) / 2).clamp(0.0, 1.0)

    def forward(self, under: Tensor, over: Tensor) -> Tensor:
        return fuse_in_ycbcr(under, over, self.fuse_y)
