"""Fusion of exposures with any network, tiled for images of any size (library code).

:func:`fuse_pair` fuses one (under, over) pair, in overlapping tiles when it is larger than
``tile``; :func:`fuse_images` / :func:`fuse_images_info` reduce two or more exposures to pairs
(``rule``); :func:`fuse_classical` runs a classical method (:mod:`nas.classical`) on them.
The command line around it is :mod:`nas.fuse` (``python -m nas.fuse``); the evaluation of
:mod:`nas.mefb` and the demo call this module directly.

Tiling (``tile``, ``overlap``)
------------------------------
Images larger than ``tile`` pixels on a side are fused in overlapping tiles, so memory stays
bounded by one tile whatever the image size. Tiles start on multiples of 8 pixels (the largest
downsampling factor of the networks: 2 for the CRMEF relighting pool, 4 for the alignment
pyramid, 8 for LCNDR's padding), so pooling and upsampling grids line up with the whole-image
ones. Where tiles overlap their outputs are blended with a separable linear ramp: along an
axis, a tile's weight is 0 within 3/8 of the overlap from its inner edge, rises linearly over
the middle quarter of the overlap and is 1 beyond; image borders get weight 1. The weights of
two neighbours sum to one, so where they agree the blend is exact and where they do not the
seam is smooth. A pixel takes its value only from tiles in which it lies at least
``3/8 * overlap`` pixels from the tile edge: that context must cover the network's receptive
field for the tiled result to equal the whole-image one.

Default ``overlap=64`` (at least 24 px of context; 1.3x the work of untiled fusion at
``tile=512``). Receptive fields measured on the registry networks (radius of the input
region that moves one output pixel by more than 1e-4 / 1e-6 of the largest gradient; exact
support in brackets): crmef-general 7 / 11 px (27), crmef-misaligned 11 / 25 px (59) at zero
offsets (learned deformable offsets reach further), ffmef 14 / 17 px (21, with whole-image
normalisation statistics, below), mef-cl 9 / 10 px (10), hyperp-mb 8 px. Measured tiled vs
untiled max abs difference on a 96 x 80 pair, tile 48: overlap 32 (12 px of context) gives
3e-7 (crmef-general), 2e-5 (crmef-misaligned), 2e-5 (ffmef), 1e-6 (mef-cl); overlap 16 (6 px)
is too small (3e-4, 3e-4, 3e-2). Raise ``overlap`` for trained misaligned nets with large
offsets; ``tile=0`` disables tiling.

Networks with *global* operations are handled as follows:

* instance normalisation (FFMEF): the per-channel statistics of every normalisation call are
  taken once from the whole image (from a copy downscaled to at most ``stats_max_pixels``
  pixels when it is larger) and reused by every tile, so tiles are normalised like the whole
  image would be; up to ``stats_max_pixels`` the tiled result then equals the untiled one
  within the receptive-field tolerance above (above it, the statistics are approximate);
* attention and coordinate pooling over the whole image (LCNDR): each tile sees only itself;
  the tiled result approximates the whole-image one (``python -m nas.fuse`` prints a note).
  Use ``tile=0`` (or a tile larger than the image) when memory allows;
* a Laplacian-pyramid blend of the whole image (genotypes with a ``pyramid`` or ``fast`` head,
  :attr:`nas.models.ResolvedModel.pyramid_blend`): each tile would build its own pyramid and
  its own coarse weights (``tests/test_fuse.py`` shows the shipped fast net's tiles differ), so
  ``python -m nas.fuse`` and the MEFB protocol run them whole, as Mertens. The fast head's
  body runs at 1/2 to 1/16 scale, so its memory stays small; a pyramid head's full-size body
  needs memory in proportion to the image.

More than two exposures (``rule``)
----------------------------------
The networks take a pair (under, over). With N > 2 inputs:

* ``extremes`` (default): fuse the darkest and the brightest image by mean luminance (Rec. 709
  luma); the others are ignored. CRMEF and the baselines are trained on the pair of largest
  exposure ratio, so this is the input they know best.
* ``sequential``: sort by mean luminance, fuse the two darkest, then fuse that result (as the
  under-exposed input) with the next brighter image, and so on.
* ``all`` (classical methods only, and their default): every exposure at once,
  :meth:`~nas.classical.ClassicalFusion.fuse_sequence` (Mertens is made for N exposures).

Classical methods
-----------------
``mertens`` and ``average`` have no weights (never "untrained") and are never tiled (they are
cheap and Mertens' Laplacian pyramid spans the whole image); ``tile``/``overlap`` do not
apply to them. Mertens computes on the CPU whatever ``device`` says.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas.data.io import PairSizeError

if TYPE_CHECKING:
    from nas.classical import ClassicalFusion

__all__ = [
    "ALL_RULE",
    "DEFAULT_ALIGN",
    "DEFAULT_OVERLAP",
    "DEFAULT_STATS_MAX_PIXELS",
    "DEFAULT_TILE",
    "RULES",
    "FuseError",
    "FuseResult",
    "fuse_classical",
    "fuse_images",
    "fuse_images_info",
    "fuse_pair",
    "global_norm_stats",
    "mean_luminance",
    "order_exposures",
    "tile_spans",
    "tile_weights",
]

DEFAULT_TILE = 512
"""Tile side in pixels (``--tile``); 0 disables tiling."""
DEFAULT_OVERLAP = 64
"""Overlap of neighbouring tiles in pixels (``--overlap``); see the module docstring."""
DEFAULT_ALIGN = 8
"""Tiles start on multiples of this many pixels (largest downsampling factor of the nets)."""
DEFAULT_STATS_MAX_PIXELS = 1 << 20
"""Instance-norm statistics are taken from the whole image up to this many pixels."""
RULES = ("extremes", "sequential")
"""How N > 2 exposures are reduced to pairs (``--rule``)."""
ALL_RULE = "all"
"""``--rule all``: every exposure at once (classical methods, which take N frames)."""

_NORM_TYPES = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
_CONTEXT_FRACTION = 0.375
"""A tile's weight is 0 within this fraction of the overlap from its inner edges."""


class FuseError(ValueError):
    """The fusion cannot be done as asked; the message says why."""


# --- exposure order -----------------------------------------------------------------------


def mean_luminance(image: Tensor) -> float:
    """Mean Rec. 709 luma of a ``(3, H, W)`` (or ``(1, 3, H, W)``) image in ``[0, 1]``."""
    x = image[0] if image.dim() == 4 else image
    w = torch.tensor([0.2126, 0.7152, 0.0722], dtype=x.dtype, device=x.device).view(3, 1, 1)
    return float((x * w).sum(0).mean())


def order_exposures(images: Sequence[Tensor], rule: str = "extremes") -> list[int]:
    """Indices of the images the rule fuses, darkest first.

    ``extremes``: ``[darkest, brightest]``; ``sequential``: all, sorted by mean luminance
    (ties keep the input order). A single image gives ``[0]``.
    """
    if rule not in RULES:
        raise FuseError(f"unknown rule {rule!r}; valid rules: {', '.join(RULES)}")
    if len(images) == 0:
        raise FuseError("no images to fuse")
    order = sorted(range(len(images)), key=lambda i: (mean_luminance(images[i]), i))
    if rule == "extremes" and len(order) > 2:
        return [order[0], order[-1]]
    return order


# --- tiling -------------------------------------------------------------------------------


def tile_spans(length: int, tile: int, overlap: int, align: int = DEFAULT_ALIGN) -> list[int]:
    """Start positions of the tiles along one axis of ``length`` pixels.

    Every start is a multiple of ``align``; neighbours overlap by at least ``overlap``; the last
    tile ends at ``length`` (so it may be up to ``align - 1`` pixels longer than ``tile``). One
    tile ``[0]`` when ``tile <= 0`` or ``length <= tile``.
    """
    if tile <= 0 or length <= tile:
        return [0]
    step = tile - overlap
    if step <= 0:
        raise FuseError(f"overlap ({overlap}) must be smaller than the tile ({tile})")
    last = (length - tile) // align * align
    starts = list(range(0, last, step))
    starts.append(last)
    return sorted(set(starts))


def _ramp(n: int, lo_edge: bool, hi_edge: bool, overlap: int, dtype: torch.dtype) -> Tensor:
    """1-D blending weights of one tile of ``n`` pixels (see the module docstring)."""
    w = torch.ones(n, dtype=dtype)
    if overlap <= 0:
        return w
    margin = overlap * _CONTEXT_FRACTION
    width = overlap - 2.0 * margin
    d = torch.arange(n, dtype=torch.float64) + 0.5  # distance of pixel centres to the low edge
    if lo_edge:
        w = w * ((d - margin) / width).clamp(0.0, 1.0).to(dtype)
    if hi_edge:
        w = w * ((n - d - margin) / width).clamp(0.0, 1.0).to(dtype)
    return w


def tile_weights(
    size: tuple[int, int], box: tuple[int, int, int, int], overlap: int, dtype=torch.float32
) -> Tensor:
    """Blending window ``(h, w)`` of the tile ``box = (y0, y1, x0, x1)`` in an image of ``size``.

    Edges on the image border get no ramp; inner edges ramp over the middle quarter of the overlap.
    """
    H, W = size
    y0, y1, x0, x1 = box
    wy = _ramp(y1 - y0, y0 > 0, y1 < H, overlap, dtype)
    wx = _ramp(x1 - x0, x0 > 0, x1 < W, overlap, dtype)
    return wy[:, None] * wx[None, :]


# --- global normalisation statistics ------------------------------------------------------


def _norm_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, _NORM_TYPES)]


def _moments(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-(sample, channel) mean and biased variance over the spatial dimensions (float32)."""
    dims = tuple(range(2, x.dim()))
    xf = x.float()
    return xf.mean(dims), xf.var(dims, unbiased=False)


@contextlib.contextmanager
def global_norm_stats(
    model: nn.Module,
    under: Tensor,
    over: Tensor,
    max_pixels: int = DEFAULT_STATS_MAX_PIXELS,
    device: torch.device | str | None = None,
) -> Iterator[int]:
    """Make the instance norms of ``model`` use whole-image statistics inside the block.

    One forward pass over the whole pair (downscaled, antialiased, to at most ``max_pixels``
    pixels when larger) records the mean and variance of every call of every
    ``nn.InstanceNorm*`` module, in call order; inside the block, the i-th call of each module
    in a forward pass normalises with the i-th recorded statistics instead of its input's, so a
    tile is normalised as the whole image is. Yields the number of norm modules (0: nothing to
    do, no extra pass). The statistics pass runs on ``device`` (default: the inputs'). The
    model must make the same sequence of norm calls in every forward (true of every network
    here: no data-dependent control flow around the norms).
    """
    norms = _norm_modules(model)
    if not norms:
        yield 0
        return
    H, W = under.shape[-2:]
    if H * W > max_pixels:
        s = math.sqrt(max_pixels / (H * W))
        size = (max(1, int(H * s)), max(1, int(W * s)))
        under, over = (
            F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
            for x in (under, over)
        )
    if device is not None:
        under, over = under.to(device), over.to(device)
    stats: dict[int, list[tuple[Tensor, Tensor]]] = {id(m): [] for m in norms}

    def record(m: nn.Module, args: tuple) -> None:
        stats[id(m)].append(_moments(args[0]))

    handles = [m.register_forward_pre_hook(record) for m in norms]
    try:
        with torch.no_grad():
            model(under, over)
    finally:
        for h in handles:
            h.remove()

    counters = {id(m): 0 for m in norms}

    def renormalise(m: nn.Module, args: tuple, _out: Tensor) -> Tensor:
        """Forward hook: the module's output replaced by its input normalised with the
        recorded statistics of this call."""
        x = args[0]
        calls = stats[id(m)]
        i = counters[id(m)] % len(calls)  # wraps at the end of each forward pass
        counters[id(m)] += 1
        mean, var = calls[i]
        shape = mean.shape + (1,) * (x.dim() - 2)
        if mean.shape[0] != x.shape[0]:
            raise RuntimeError("global_norm_stats: batch size differs from the stats pass")
        scale = torch.rsqrt(var + m.eps).to(x.dtype).view(shape)
        y = (x - mean.to(x.dtype).view(shape)) * scale
        if m.affine:
            y = y * m.weight.view(1, -1, *([1] * (x.dim() - 2))) + m.bias.view(
                1, -1, *([1] * (x.dim() - 2))
            )
        return y

    handles = [m.register_forward_hook(renormalise) for m in norms]
    try:
        yield len(norms)
    finally:
        for h in handles:
            h.remove()


# --- fusion -------------------------------------------------------------------------------


def _batched(x: Tensor, name: str) -> Tensor:
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4 or x.shape[1] != 3:
        raise FuseError(
            f"{name} must be an RGB image (3, H, W) or (B, 3, H, W), got {tuple(x.shape)}"
        )
    return x


@torch.no_grad()
def fuse_pair(
    model: nn.Module,
    under: Tensor,
    over: Tensor,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    *,
    device: torch.device | str | None = None,
    align: int = DEFAULT_ALIGN,
    stats_max_pixels: int = DEFAULT_STATS_MAX_PIXELS,
) -> Tensor:
    """Fuse one pair, tiled when larger than ``tile``.

    Args:
        model: ``forward(under, over) -> fused``, RGB (B, 3, H, W) in [0, 1]; put in eval mode.
        under, over: (3, H, W) or (B, 3, H, W) of the same shape, in [0, 1]; under is darker.
        tile: tile side (rounded up to a multiple of ``align``); ``<= 0``: no tiling.
        overlap: overlap of neighbouring tiles (rounded up to a multiple of ``align``).
        device: where the model runs (default: the device of its parameters); the inputs and
            the output stay where they are, only one tile at a time is moved.
        align: tiles start on multiples of this.
        stats_max_pixels: see :func:`global_norm_stats`.

    Returns:
        The fused image, shaped like ``under``, on ``under``'s device, float32 in [0, 1].
    """
    squeeze = under.dim() == 3
    u, o = _batched(under, "under"), _batched(over, "over")
    if u.shape != o.shape:
        raise FuseError(f"under and over differ in shape: {tuple(u.shape)} vs {tuple(o.shape)}")
    model.eval()
    if device is None:
        p = next(iter(model.parameters()), None)
        device = p.device if p is not None else u.device
    device = torch.device(device)
    B, _, H, W = u.shape
    if tile > 0:
        tile = -(-tile // align) * align
    overlap = -(-max(overlap, 0) // align) * align
    ys, xs = tile_spans(H, tile, overlap, align), tile_spans(W, tile, overlap, align)
    if len(ys) == 1 and len(xs) == 1:
        out = model(u.to(device), o.to(device)).to(u.device, torch.float32)
        return out[0] if squeeze else out

    out = torch.zeros(B, 3, H, W, dtype=torch.float32, device=u.device)
    wsum = torch.zeros(1, 1, H, W, dtype=torch.float32, device=u.device)
    th, tw = min(tile, H), min(tile, W)
    with global_norm_stats(model, u, o, stats_max_pixels, device):
        for y0 in ys:
            y1 = H if y0 == ys[-1] else y0 + th
            for x0 in xs:
                x1 = W if x0 == xs[-1] else x0 + tw
                sl = (..., slice(y0, y1), slice(x0, x1))
                y = model(u[sl].to(device), o[sl].to(device)).to(u.device, torch.float32)
                w = tile_weights((H, W), (y0, y1, x0, x1), overlap).to(u.device)
                out[sl] += y * w
                wsum[sl] += w
    out = out / wsum.clamp_min(1e-12)
    return out[0] if squeeze else out


def _check_images(images: Sequence[Tensor], names: Sequence[str] | None) -> None:
    """At least two ``(3, H, W)`` images of one size (else FuseError / PairSizeError)."""
    if len(images) < 2:
        raise FuseError(f"need at least two exposures to fuse, got {len(images)}")
    names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
    ref = images[0]
    for i, img in enumerate(images):
        if img.dim() != 3 or img.shape[0] != 3:
            raise FuseError(f"{names[i]}: expected a (3, H, W) image, got {tuple(img.shape)}")
        if img.shape != ref.shape:
            raise PairSizeError(
                f"image sizes differ: '{names[0]}' is {ref.shape[2]}x{ref.shape[1]} (W x H) but "
                f"'{names[i]}' is {img.shape[2]}x{img.shape[1]}; all exposures must have the "
                "same size (align and crop them first)"
            )


@dataclass
class FuseResult:
    """What :func:`fuse_images_info` did."""

    image: Tensor
    used: list[int]
    luminance: list[float]


def fuse_images_info(
    model: nn.Module,
    images: Sequence[Tensor],
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    *,
    rule: str = "extremes",
    names: Sequence[str] | None = None,
    **kwargs,
) -> FuseResult:
    """:func:`fuse_images` that also says which images were used (darkest first)."""
    _check_images(images, names)
    used = order_exposures(images, rule)
    fused = images[used[0]]
    for j in used[1:]:
        fused = fuse_pair(model, fused, images[j], tile, overlap, **kwargs)
    return FuseResult(fused, used, [mean_luminance(images[i]) for i in used])


def fuse_classical(
    method: ClassicalFusion,
    images: Sequence[Tensor],
    rule: str = ALL_RULE,
    *,
    names: Sequence[str] | None = None,
    device: torch.device | str | None = None,
) -> FuseResult:
    """Fuse ``(3, H, W)`` exposures with a classical method (never tiled).

    ``rule="all"``: every exposure at once (:meth:`ClassicalFusion.fuse_sequence`, darkest
    first); ``extremes`` / ``sequential``: as for networks, pair by pair. ``device``: where
    the tensors go (Mertens itself computes on the CPU); the result is on the CPU.
    """
    _check_images(images, names)
    dev = torch.device(device) if device is not None else images[0].device
    moved = [x.to(dev) for x in images]
    if rule == ALL_RULE:
        used = order_exposures(moved, "sequential")
        fused = method.fuse_sequence([moved[i] for i in used])
        return FuseResult(fused.cpu(), used, [mean_luminance(moved[i]) for i in used])
    res = fuse_images_info(method.as_module(), moved, 0, 0, rule=rule, names=names, device=dev)
    res.image = res.image.cpu()
    return res


def fuse_images(model: nn.Module, images: Sequence[Tensor], *args: Any, **kwargs: Any) -> Tensor:
    """Fuse two or more exposures ``(3, H, W)`` in [0, 1] of one scene into one ``(3, H, W)``:
    :func:`fuse_images_info`'s image (same arguments: tiling, ``rule``, ``names``, and
    ``device``, ``align``, ``stats_max_pixels`` of :func:`fuse_pair`).

    Raises:
        PairSizeError: images differ in size (a ``ValueError``).
        FuseError: fewer than two images, an unknown rule, ...
    """
    return fuse_images_info(model, images, *args, **kwargs).image
