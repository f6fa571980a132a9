"""Deformable convolution (DCNv1 / DCNv2) in pure PyTorch, or torchvision's kernel on CUDA.

:func:`deform_conv2d` is a drop-in replacement for ``torchvision.ops.deform_conv2d``: same
signature, argument semantics, offset / mask layout and boundary handling, but built only
from ordinary differentiable torch ops, so it runs wherever torch runs (CPU, CUDA, ...),
needs no compiled extension, and autograd provides gradients w.r.t. every tensor argument.
Where torchvision imports, CUDA tensors go to its compiled kernel instead (see
:data:`BACKENDS`; the two agree to float precision); while exporting, a third kernel runs,
the ``grid_sample`` backend. Arguments are validated before any of them runs.

Layout (identical to torchvision)
---------------------------------
* ``input``  ``(B, C_in, H, W)``
* ``weight`` ``(C_out, C_in // groups, kh, kw)``; ``groups = C_in // weight.shape[1]``.
* ``offset`` ``(B, 2 * og * kh * kw, H_out, W_out)`` with ``og`` offset groups. For offset
  group ``g`` and kernel tap ``(i, j)`` let ``m = g * kh * kw + i * kw + j``; channel ``2m``
  is the row displacement ``dy`` and ``2m + 1`` the column displacement ``dx``.
* ``mask``   ``(B, og * kh * kw, H_out, W_out)`` (channel ``m``) or ``None``.
* Input channels ``[g * C_in / og, (g + 1) * C_in / og)`` use offset group ``g``.

For output pixel ``(y, x)`` and tap ``(i, j)`` the sample position is::

    p = (y * stride_h - pad_h + i * dil_h + dy,  x * stride_w - pad_w + j * dil_w + dx)

and the sampled value is the bilinear interpolation of the (unpadded) input at ``p`` where each
of the four integer neighbours lying outside ``[0, H-1] x [0, W-1]`` contributes zero (so a
sample with ``p_y <= -1``, ``p_y >= H``, ``p_x <= -1`` or ``p_x >= W`` is zero). The value is
multiplied by the mask (if any), then contracted with the convolution weights; bias is added.

Algorithm
---------
Let ``K = kh * kw``, ``L = H_out * W_out`` and ``og_v = lcm(og, groups)`` ("virtual" channel
slices: each slice of ``C_in / og_v`` channels lies in one offset group and one weight group).

1. *Pixel rows.* The input is rearranged once into a matrix with one row per pixel and the
   ``C_in / og_v`` channels of a slice contiguous, every image plane framed by zeros (one
   row / column before, two after): ``(B * og_v * (H + 3) * (W + 3), C_in / og_v)``.
2. *Sampling table.* For every (image, output position, slice, tap) the row indices of the
   four bilinear neighbours and their weights (bilinear weight times mask). Positions are
   first clamped into ``[-1, H] x [-1, W]``; that leaves every sample that touches the image
   unchanged and moves every other one to where all its weight falls on the zero frame, so
   neighbours outside the image need neither validity masks nor index clamping: they read
   zeros (value and gradient match the definition above). The table is computed with long
   contiguous elementwise ops in the offset's own ``(b, g, k, l)`` layout and only written
   out interleaved, ``(b, l, g, k, corner)``.
3. *Deformed im2col.* One ``F.embedding_bag(mode="sum", per_sample_weights=...)`` call turns
   the table into the column matrix ``(n, og_v * K * C_in / og_v)``: a fused gather of four
   contiguous channel rows plus weighted sum per (position, slice, tap), with no ``(4, ...)``
   intermediate. ``embedding_bag`` is differentiable w.r.t. both the rows (-> input) and the
   per-sample weights (-> offset, mask).
4. *Matmul.* One GEMM (batched over weight groups) with the weight permuted to the column
   order gives ``(C_out, n)``; bias is added by ``addmm``.

Blocking. Under autograd every image is one block with its own pixel-row matrix (so the
gradient of each ``embedding_bag`` call w.r.t. its rows stays image-sized). Without autograd
(inference) the sampling table of the whole batch is built first, then the gathers + matmuls
run in blocks of positions, each matmul writing its slice of the output in place (no output
transpose). On CPU the table is built in sub-blocks of at most 32768 entries, which torch
runs single-threaded: its ~25 small elementwise ops then add no thread synchronisation
points, which cost a lot on a loaded machine. Gather blocks hold ~2M column elements (8 MB
in float32): the matmul finds them in (L3) cache, and there are few parallel regions. On CUDA the
blocks only bound temporary memory.

Performance (CPU, B x 64 x 128 x 128, 64 -> 64 channels, 3x3, mask, inference; measured on a
2-core Xeon shared with other jobs, see ``benchmarks/bench_deform_conv.py``): about 2.1-2.3x
the time of ``F.conv2d`` of the same shape with 1 thread, or with 2 threads and
``OMP_WAIT_POLICY=PASSIVE``; roughly half of it is the GEMM, which alone costs about as much as
the convolution. With 2 threads and GNU OpenMP's default busy-waiting on a heavily loaded
machine the ratio degrades (4-6x seen), because every parallel region needs both threads
scheduled. Forward + backward is about 4.5-5x conv2d's (which computes no offset / mask
gradients); ``embedding_bag``'s backward (a sort plus a segmented reduction) dominates it.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["BACKENDS", "deform_backend", "deform_backend_for", "deform_conv2d"]

BACKENDS: tuple[str, ...] = ("auto", "torch", "torchvision", "grid_sample")
"""Which kernel :func:`deform_conv2d` runs. ``auto`` (default): torchvision's compiled kernel
for CUDA tensors when torchvision imports, this module's pure-PyTorch path otherwise;
``torch``: always the pure path; ``torchvision``: always torchvision's (an error when it does
not import); ``grid_sample``: the export kernel (one ``F.grid_sample`` per offset group, no
Python loops over sizes), e.g. to time or check what an exported graph computes. Set with the
``NAS_DEFORM_BACKEND`` environment variable or :func:`deform_backend`. Exporting
(torch.export / ONNX tracing) ignores this setting and always runs ``grid_sample``. Every
kernel gets the same arguments, validated once before dispatch."""
_backend = os.environ.get("NAS_DEFORM_BACKEND", "auto")
_TV_OPS: list[Any] = []  # [module or None], filled on first use


def _torchvision_ops() -> Any:
    """``torchvision.ops`` if torchvision imports beside this torch build, else None."""
    if not _TV_OPS:
        try:
            import torchvision.ops as tv_ops
        except Exception:  # noqa: BLE001 - ImportError, or a build that does not match torch
            tv_ops = None
        _TV_OPS.append(tv_ops)
    return _TV_OPS[0]


def _check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"deform backend must be one of {BACKENDS}, got {name!r}")
    return name


@contextlib.contextmanager
def deform_backend(name: str) -> Iterator[None]:
    """Run :func:`deform_conv2d` with backend ``name`` inside the ``with`` block."""
    global _backend
    old, _backend = _backend, _check_backend(name)
    try:
        yield
    finally:
        _backend = old


def deform_backend_for(device: torch.device | str) -> str:
    """The kernel :func:`deform_conv2d` runs for tensors on ``device`` outside an export:
    ``"torch"``, ``"torchvision"`` or ``"grid_sample"`` (recorded in latency-table sidecars,
    since they differ in speed)."""
    name = _check_backend(_backend)
    if name == "grid_sample":
        return name
    if name == "torchvision":
        if _torchvision_ops() is None:
            raise RuntimeError(
                "deform backend 'torchvision' requested (NAS_DEFORM_BACKEND or "
                "deform_backend()) but torchvision does not import beside this torch build"
            )
        return "torchvision"
    if name == "auto" and torch.device(device).type == "cuda" and _torchvision_ops() is not None:
        return "torchvision"
    return "torch"


# CPU, no autograd: sampling-table entries (positions * og * K) per table sub-block (torch
# runs elementwise ops of fewer elements than its parallel grain size, 32768, on one thread)
# and column elements (positions * og * K * C_in / og) per gather + matmul block.
_TABLE_ELEMS_CPU = 32768
_GATHER_ELEMS_CPU = 1 << 21
# Accelerators, no autograd: column elements per block (bounds temporary memory).
_CHUNK_ELEMS_GPU = 1 << 26


def _pair(v: int | tuple[int, int] | list[int], name: str) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    t = tuple(int(a) for a in v)
    if len(t) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
    return (t[0], t[1])


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


@dataclass(frozen=True)
class _DeformCall:
    """One validated :func:`deform_conv2d` call, as :func:`_check_args` returns it; every
    kernel takes one. Tensors as passed; stride, padding and dilation as ``(h, w)`` pairs."""

    input: Tensor
    offset: Tensor
    weight: Tensor
    bias: Tensor | None
    mask: Tensor | None
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    og: int  # offset groups
    groups: int  # weight groups
    H_out: int
    W_out: int


def _check_args(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: int | tuple[int, int],
    padding: int | tuple[int, int],
    dilation: int | tuple[int, int],
    mask: Tensor | None,
) -> _DeformCall:
    """Validate :func:`deform_conv2d`'s arguments (every backend, before dispatch).

    Raises ``ValueError`` naming the argument and the shapes involved.
    """
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    dh, dw = _pair(dilation, "dilation")
    if sh <= 0 or sw <= 0:
        raise ValueError(f"stride must be positive, got {(sh, sw)}")
    if dh <= 0 or dw <= 0:
        raise ValueError(f"dilation must be positive, got {(dh, dw)}")
    if ph < 0 or pw < 0:
        raise ValueError(f"padding must be non-negative, got {(ph, pw)}")
    if input.dim() != 4:
        raise ValueError(f"input must be 4-D (B, C_in, H, W), got shape {_shape(input)}")
    if weight.dim() != 4:
        raise ValueError(
            f"weight must be 4-D (C_out, C_in // groups, kh, kw), got shape {_shape(weight)}"
        )
    if offset.dim() != 4:
        raise ValueError(
            f"offset must be 4-D (B, 2 * offset_groups * kh * kw, H_out, W_out), "
            f"got shape {_shape(offset)}"
        )
    B, C, H, W = input.shape
    C_out, Cpg, kh, kw = weight.shape
    K = kh * kw
    if Cpg <= 0 or K <= 0 or C_out <= 0:
        raise ValueError(f"weight has an empty dimension: shape {_shape(weight)}")
    if C % Cpg != 0:
        raise ValueError(
            f"input channels ({C}, input shape {_shape(input)}) are not divisible by "
            f"weight.shape[1] ({Cpg}, weight shape {_shape(weight)})"
        )
    groups = C // Cpg
    if C_out % groups != 0:
        raise ValueError(
            f"weight out-channels ({C_out}, weight shape {_shape(weight)}) are not divisible "
            f"by groups ({groups})"
        )
    if offset.shape[1] == 0 or offset.shape[1] % (2 * K) != 0:
        raise ValueError(
            f"offset channels ({offset.shape[1]}, offset shape {_shape(offset)}) must be a "
            f"positive multiple of 2 * kh * kw = {2 * K}"
        )
    og = offset.shape[1] // (2 * K)
    if C % og != 0:
        raise ValueError(
            f"input channels ({C}, input shape {_shape(input)}) are not divisible by the "
            f"number of offset groups ({og}, from offset shape {_shape(offset)})"
        )
    H_out = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    W_out = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if H_out <= 0 or W_out <= 0:
        raise ValueError(
            f"computed output size ({H_out}, {W_out}) is empty for input shape "
            f"{_shape(input)} and weight shape {_shape(weight)}"
        )
    if offset.shape[0] != B or offset.shape[2] != H_out or offset.shape[3] != W_out:
        raise ValueError(
            f"offset shape {_shape(offset)} does not match (B={B}, {2 * og * K}, "
            f"H_out={H_out}, W_out={W_out}) computed from input shape {_shape(input)}"
        )
    if mask is not None and _shape(mask) != (B, og * K, H_out, W_out):
        raise ValueError(
            f"mask shape {_shape(mask)} does not match expected {(B, og * K, H_out, W_out)} "
            f"(B, offset_groups * kh * kw, H_out, W_out)"
        )
    if bias is not None and _shape(bias) != (C_out,):
        raise ValueError(f"bias shape {_shape(bias)} does not match expected ({C_out},)")

    return _DeformCall(
        input, offset, weight, bias, mask, (sh, sw), (ph, pw), (dh, dw), og, groups, H_out, W_out
    )


def deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    mask: Tensor | None = None,
) -> Tensor:
    """Deformable 2-D convolution, compatible with ``torchvision.ops.deform_conv2d``.

    Args:
        input: ``(B, C_in, H, W)``.
        offset: ``(B, 2 * og * kh * kw, H_out, W_out)``; channel ``2m`` is ``dy`` and
            ``2m + 1`` is ``dx`` for ``m = g * kh * kw + i * kw + j``.
        weight: ``(C_out, C_in // groups, kh, kw)``.
        bias: ``(C_out,)`` or ``None``.
        stride, padding, dilation: int or ``(h, w)``.
        mask: ``(B, og * kh * kw, H_out, W_out)`` modulation scalars (DCNv2) or ``None``.

    Returns:
        ``(B, C_out, H_out, W_out)`` with ``H_out = (H + 2 pad_h - dil_h (kh - 1) - 1) //
        stride_h + 1`` (same for ``W_out``).
    """
    call = _check_args(input, offset, weight, bias, stride, padding, dilation, mask)
    backend = deform_backend_for(input.device)
    if backend == "grid_sample" or torch.compiler.is_exporting() or torch.jit.is_tracing():
        # torch.export / ONNX tracing would specialise the loops below to the example's shapes
        return _grid_sample_kernel(call)
    if backend == "torchvision":
        return _torchvision_ops().deform_conv2d(
            input, offset, weight, bias, call.stride, call.padding, call.dilation, mask
        )
    return _DeformConv(call).run(input)


def _base_positions(call: _DeformCall) -> tuple[Tensor, Tensor]:
    """Undeformed sample rows / columns ``(K, L)`` of every tap at every output position.

    Sizes are read from the tensors (``H_out, W_out`` from the offset), so they stay symbolic
    while exporting.
    """
    (sh, sw), (ph, pw), (dh, dw) = call.stride, call.padding, call.dilation
    kh, kw = call.weight.shape[-2:]
    H_out, W_out = call.offset.shape[-2:]
    device, dtype = call.offset.device, call.offset.dtype
    ys = torch.arange(H_out, device=device, dtype=dtype) * sh - ph
    xs = torch.arange(W_out, device=device, dtype=dtype) * sw - pw
    ki = torch.arange(kh, device=device, dtype=dtype) * dh
    kj = torch.arange(kw, device=device, dtype=dtype) * dw
    base_y = (ki.view(kh, 1, 1, 1) + ys.view(1, 1, H_out, 1)).expand(kh, kw, H_out, W_out)
    base_x = (kj.view(1, kw, 1, 1) + xs.view(1, 1, 1, W_out)).expand(kh, kw, H_out, W_out)
    K, L = kh * kw, H_out * W_out
    return base_y.reshape(K, L), base_x.reshape(K, L)


def _sampling_table(
    off: Tensor,
    m: Tensor | None,
    base_y: Tensor,
    base_x: Tensor,
    plane0: int,
    H: int,
    W: int,
    rep: int,
    n_rows: int,
    idx_dtype: torch.dtype,
    w_dtype: torch.dtype,
    differentiable: bool,
    out: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Bilinear sampling table over the zero-framed pixel-row matrix, for a block of positions.

    The pixel-row matrix (see :class:`_DeformConv`) holds, for each of the
    ``B * og * rep`` channel slices, the ``(H + 3) * (W + 3)`` pixels of the image framed by
    one zero row / column above / left and two below / right. Sample positions are clamped
    into ``[-1, H] x [-1, W]`` first: that leaves every sample that touches the image
    unchanged and turns every other one into a sample whose weight falls entirely on the
    zero frame (its value and gradient are zero either way). After clamping, all four
    neighbours ``(y0 + {0, 1}, x0 + {0, 1})`` lie inside the framed plane, so out-of-range
    neighbours need no validity masks: they read zeros.

    Everything is computed in the offset's native ``(b, g, k, l)`` layout (long contiguous
    rows); only the final write interleaves into the ``(b, l, g, r, k, corner)`` order that
    the gather needs.

    Args:
        off: ``(Bb, og, K, 2, n)`` offsets (dy, dx) of ``Bb`` consecutive images and ``n``
            output positions.
        m: ``(Bb, og, K, n)`` mask or ``None``.
        base_y, base_x: ``(K, n)`` undeformed sample positions of those output positions.
        plane0: index of the first image's planes in the pixel-row matrix.
        rep: virtual groups per offset group (see :class:`_DeformConv`).
        n_rows: number of rows of the pixel-row matrix.
        out: optional ``(idx, wts)`` buffers of shape ``(Bb, n, og, rep, K, 4)`` to write into
            (only without ``differentiable``).

    Returns:
        ``(idx, wts)``, both ``(Bb * n * og * rep * K, 4)``: row indices into the pixel-row
        matrix of the neighbours (y0x0, y0x1, y1x0, y1x1) and their bilinear weights times
        the mask. ``wts`` is differentiable w.r.t. ``off`` and ``m`` iff ``differentiable``.
    """
    Bb, og, K, _, n = off.shape
    og_v = og * rep
    dev = off.device
    Wp = W + 3
    plane_size = (H + 3) * Wp

    # Clamped positions, their integer parts and fractions, each (Bb, og, K, n).
    py = (off[:, :, :, 0] + base_y).clamp_(-1.0, float(H))
    px = (off[:, :, :, 1] + base_x).clamp_(-1.0, float(W))
    y0 = torch.floor(py)
    x0 = torch.floor(px)
    ly = py - y0
    lx = px - x0
    if m is not None:
        wy1 = ly * m
        wy0 = m - wy1
    else:
        wy1 = ly
        wy0 = 1.0 - ly
    wx1 = lx
    wx0 = 1.0 - lx

    total = Bb * n * og_v * K
    shape = (Bb, og, rep, K, n)
    # Outputs are allocated in gather order (Bb, n, og, rep, K, 4) and written through a
    # (Bb, og, rep, K, 4, n) view.
    with torch.no_grad():
        # Flat index of the (y0, x0) neighbour: row y0 + 1, column x0 + 1 of its plane.
        plane = (
            torch.arange(plane0, plane0 + Bb, device=dev, dtype=idx_dtype).view(Bb, 1, 1, 1) * og_v
            + torch.arange(0, og_v, rep, device=dev, dtype=idx_dtype).view(1, og, 1, 1)
        ) * plane_size + (Wp + 1)
        i00 = torch.add(x0.to(idx_dtype), y0.to(idx_dtype), alpha=Wp).add_(plane)
        # Guard against NaN offsets (whose float -> int cast is undefined): keep the gather
        # in bounds; the NaN weights still propagate to the output.
        i00.clamp_(0, n_rows - Wp - 2)
        if rep > 1:
            step = torch.arange(rep, device=dev, dtype=idx_dtype) * plane_size
            i00 = i00.unsqueeze(2) + step.view(rep, 1, 1)
        else:
            i00 = i00.unsqueeze(2)
        if out is None:
            idx = torch.empty(Bb, n, og, rep, K, 4, device=dev, dtype=idx_dtype)
        else:
            idx = out[0]
        idx_v = idx.permute(0, 2, 3, 4, 5, 1)
        for j, d in enumerate((0, 1, Wp, Wp + 1)):
            torch.add(i00, d, out=idx_v[..., j, :])

    corners = ((wy0, wx0), (wy0, wx1), (wy1, wx0), (wy1, wx1))
    if differentiable:
        wts = torch.stack([a * b for a, b in corners], dim=3).to(w_dtype)  # (Bb, og, K, 4, n)
        wts = wts.unsqueeze(2).expand(Bb, og, rep, K, 4, n).permute(0, 5, 1, 2, 3, 4)
        return idx.view(total, 4), wts.reshape(total, 4)
    wts = torch.empty(Bb, n, og, rep, K, 4, device=dev, dtype=w_dtype) if out is None else out[1]
    wts_v = wts.permute(0, 2, 3, 4, 5, 1)
    for j, (a, b) in enumerate(corners):
        a = a.unsqueeze(2).expand(shape)
        b = b.unsqueeze(2).expand(shape)
        torch.mul(a, b, out=wts_v[..., j, :])
    return idx.reshape(total, 4), wts.reshape(total, 4)


def _pixel_rows(input: Tensor, og_v: int, differentiable: bool) -> Tensor:
    """Pixel-row matrix.

    Args:
        input: ``(Bb, C, H, W)``.

    Returns:
        ``(Bb * og_v * (H + 3) * (W + 3), C / og_v)``: for each image and channel slice, the
        pixels of the plane framed by zeros (one row / column before, two after), channels
        contiguous.
    """
    Bb, C, H, W = input.shape
    Cv = C // og_v
    planes = input.reshape(Bb, og_v, Cv, H, W).permute(0, 1, 3, 4, 2)
    if differentiable:
        rows = F.pad(planes, (0, 0, 1, 2, 1, 2))
    else:
        # Same as F.pad, but faster on CPU: only the frame is zeroed.
        shape = (Bb, og_v, H + 3, W + 3, Cv)
        rows = torch.empty(shape, device=input.device, dtype=input.dtype)
        rows[:, :, :1].zero_()
        rows[:, :, H + 1 :].zero_()
        rows[:, :, 1 : H + 1, :1].zero_()
        rows[:, :, 1 : H + 1, W + 1 :].zero_()
        rows[:, :, 1 : H + 1, 1 : W + 1].copy_(planes)
    return rows.view(Bb * og_v * (H + 3) * (W + 3), Cv)


class _DeformConv:
    """One call of the pure-PyTorch kernel (module docstring, *Algorithm*), in parts.

    Construction fixes the call's sizes and the views every part shares; :meth:`run` picks
    the autograd path (:meth:`forward_per_image`) or the inference path (:meth:`batch_table`
    then :meth:`forward_blocks`). Sizes: ``K = kh * kw`` taps, ``L = H_out * W_out`` output
    positions, ``og_v = lcm(og, groups)`` virtual channel slices of ``Cv = C / og_v``
    channels, ``rep = og_v / og`` of them per offset group, ``Dg = (og_v / groups) * K * Cv``
    columns per weight group and ``D = groups * Dg`` per output position.
    """

    def __init__(self, call: _DeformCall) -> None:
        input, offset, weight, mask = call.input, call.offset, call.weight, call.mask
        bias = call.bias
        og, groups, H_out, W_out = call.og, call.groups, call.H_out, call.W_out
        B, C, H, W = input.shape
        C_out, _, kh, kw = weight.shape
        self.B, self.H, self.W, self.C_out, self.H_out, self.W_out = B, H, W, C_out, H_out, W_out
        self.og, self.groups = og, groups
        self.K = K = kh * kw
        self.L = L = H_out * W_out
        self.dtype, self.bias = input.dtype, bias
        # Virtual offset groups: og_v = lcm(og, groups) channel slices, so that every slice
        # lies in one offset group and in one weight group (og_v divides C since og and
        # groups do).
        self.og_v = og_v = og * groups // math.gcd(og, groups)
        self.rep = og_v // og
        Cv = C // og_v
        plane_rows = og_v * (H + 3) * (W + 3)  # pixel rows per image
        self.needs_grad = torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (input, offset, weight, bias, mask)
        )
        # Under autograd each image has its own pixel-row matrix, else the batch shares one.
        self.n_rows = plane_rows if self.needs_grad else B * plane_rows
        self.idx_dtype = torch.int32 if self.n_rows < 2**31 - 1 else torch.int64

        self.off = offset.reshape(B, og, K, 2, L)  # (B, og, K, 2, L)
        self.msk = None if mask is None else mask.reshape(B, og, K, L)  # (B, og, K, L)
        self.base_y, self.base_x = _base_positions(call)  # (K, L) each
        # Weight as (groups, C_out // groups, Dg) matching the column order
        # (og_v / groups, K, Cv) within one weight group.
        self.Opg = C_out // groups
        self.Dg = (og_v // groups) * K * Cv
        self.D = groups * self.Dg  # columns per output position
        self.w2 = (
            weight.reshape(groups, self.Opg, og_v // groups, Cv, K)
            .permute(0, 1, 2, 4, 3)
            .reshape(groups, self.Opg, self.Dg)
        )
        self.per_pos = og_v * K  # table rows per output position

    def run(self, input: Tensor) -> Tensor:
        """The convolution of ``input`` ``(B, C, H, W)``: ``(B, C_out, H_out, W_out)``."""
        if self.needs_grad:
            return self.forward_per_image(input)
        idx_all, wts_all = self.batch_table(input.device)
        return self.forward_blocks(input, idx_all, wts_all)

    def table(
        self, b: int, l0: int, l1: int, out: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        """Sampling table (:func:`_sampling_table`) of image ``b``, positions ``[l0, l1)``."""
        return _sampling_table(
            self.off[b : b + 1, ..., l0:l1],
            None if self.msk is None else self.msk[b : b + 1, ..., l0:l1],
            self.base_y[:, l0:l1],
            self.base_x[:, l0:l1],
            0 if self.needs_grad else b,
            self.H,
            self.W,
            self.rep,
            self.n_rows,
            self.idx_dtype,
            self.dtype,
            differentiable=self.needs_grad,
            out=out,
        )

    def project(
        self, rows: Tensor, idx: Tensor, wts: Tensor, nb: int, out: Tensor | None
    ) -> Tensor:
        """Gather + matmul of ``nb`` images' blocks of ``n`` positions: ``(nb, C_out, n)``.

        ``out`` (no autograd only): ``(nb, C_out, n)`` destination; contiguous if ``nb > 1``.
        """
        C_out, Dg, bias = self.C_out, self.Dg, self.bias
        n = idx.shape[0] // (nb * self.per_pos)
        # Deformed im2col: (nb * n * og_v * K, Cv) == (nb, n, groups, Dg).
        cols = F.embedding_bag(idx, rows, mode="sum", per_sample_weights=wts)
        if self.groups == 1:
            # (C_out, Dg) @ (Dg, n): the columns enter transposed (no copy), and the result
            # is already in output layout.
            w = self.w2[0]
            if nb == 1:
                # 2-D views only: autograd's mm backward then yields the columns' gradient
                # directly in their (n, Dg) layout.
                colsT, out2 = cols.view(n, Dg).t(), None if out is None else out[0]
                if bias is None:
                    res = torch.mm(w, colsT, out=out2)
                else:
                    res = torch.addmm(bias.view(C_out, 1), w, colsT, out=out2)
                return res.unsqueeze(0)
            colsT = cols.view(nb, n, Dg).transpose(1, 2)
            w = w.expand(nb, C_out, Dg)
            if bias is None:
                return torch.bmm(w, colsT, out=out)
            return torch.baddbmm(bias.view(1, C_out, 1), w, colsT, out=out)
        # (groups, Opg, Dg) @ (nb, groups, Dg, n) -> (nb, groups, Opg, n)
        res = torch.matmul(self.w2, cols.view(nb, n, self.groups, Dg).permute(0, 2, 3, 1))
        if bias is not None:
            res = res + bias.view(1, self.groups, self.Opg, 1)
        res = res.reshape(nb, C_out, n)
        return res if out is None else out.copy_(res)

    def forward_per_image(self, input: Tensor) -> Tensor:
        """Autograd path: one block per image, each with its own pixel-row matrix, so that
        the gradient w.r.t. the pixel rows of each embedding_bag call stays image-sized."""
        outs = []
        for b, image in enumerate(input.unbind(0)):
            rows = _pixel_rows(image[None], self.og_v, True)
            outs.append(self.project(rows, *self.table(b, 0, self.L), 1, None))
        return torch.cat(outs).view(self.B, self.C_out, self.H_out, self.W_out)

    def _blocking(self, device: torch.device) -> tuple[int, int]:
        """``(positions per table sub-block, column elements per gather block)``.

        CPU: the table is built in sub-blocks of at most _TABLE_ELEMS_CPU entries: torch runs
        elementwise ops that small on one thread, so the ~25 table ops add no thread
        synchronisation points, and the single-threaded work comes in one stretch. The gather
        and the matmul run multi-threaded, in blocks of _GATHER_ELEMS_CPU column elements:
        large enough for few parallel regions (each needs all intra-op threads scheduled,
        which is slow on a loaded machine, and idle OpenMP workers spin), small enough for the
        columns to stay in cache and for the allocator to reuse their memory.
        """
        if device.type == "cpu":
            return max(1, _TABLE_ELEMS_CPU // self.per_pos), _GATHER_ELEMS_CPU
        return max(1, _CHUNK_ELEMS_GPU // self.D), _CHUNK_ELEMS_GPU

    def batch_table(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """Inference path, first part: the sampling table of the whole batch, ``(idx, wts)``
        each ``(B * L * og_v * K, 4)``, built in sub-blocks of positions (:meth:`_blocking`)."""
        B, L, og, rep, K = self.B, self.L, self.og, self.rep, self.K
        tchunk, _ = self._blocking(device)
        if tchunk >= L:
            tables = [self.table(b, 0, L) for b in range(B)]
            idx_all = torch.cat([t[0] for t in tables]) if B > 1 else tables[0][0]
            wts_all = torch.cat([t[1] for t in tables]) if B > 1 else tables[0][1]
            return idx_all, wts_all
        idx_all = torch.empty(B, L, og, rep, K, 4, device=device, dtype=self.idx_dtype)
        wts_all = torch.empty(B, L, og, rep, K, 4, device=device, dtype=self.dtype)
        for b in range(B):
            for t0 in range(0, L, tchunk):
                t1 = min(L, t0 + tchunk)
                self.table(b, t0, t1, out=(idx_all[b : b + 1, t0:t1], wts_all[b : b + 1, t0:t1]))
        return idx_all.view(-1, 4), wts_all.view(-1, 4)

    def forward_blocks(self, input: Tensor, idx_all: Tensor, wts_all: Tensor) -> Tensor:
        """Inference path, second part: the gathers and matmuls in blocks of whole images (or
        of positions of one image if an image is larger than a block), each matmul writing
        its part of the output ``(B, C_out, H_out, W_out)`` in place."""
        B, L, D, per_pos = self.B, self.L, self.D, self.per_pos
        _, cap = self._blocking(input.device)
        rows = _pixel_rows(input, self.og_v, False)
        out = torch.empty(B, self.C_out, L, device=input.device, dtype=input.dtype)
        if L * D <= cap:
            nb = max(1, cap // (L * D))
            for b0 in range(0, B, nb):
                b1 = min(B, b0 + nb)
                r0, r1 = b0 * L * per_pos, b1 * L * per_pos
                self.project(rows, idx_all[r0:r1], wts_all[r0:r1], b1 - b0, out[b0:b1])
        else:
            n_blocks = -(-L * D // cap)  # ceil; equal-sized blocks
            chunk = -(-L // n_blocks)
            for b in range(B):
                for l0 in range(0, L, chunk):
                    l1 = min(L, l0 + chunk)
                    r0, r1 = (b * L + l0) * per_pos, (b * L + l1) * per_pos
                    o = out[b : b + 1, :, l0:l1]
                    self.project(rows, idx_all[r0:r1], wts_all[r0:r1], 1, o)
        return out.view(B, self.C_out, self.H_out, self.W_out)


def _grid_sample_kernel(call: _DeformCall) -> Tensor:
    """The ``grid_sample`` backend: :func:`deform_conv2d` without Python loops or size casts.

    Same layout and boundary rule
    (each bilinear neighbour outside the image contributes zero: ``F.grid_sample`` with zero
    padding, ``align_corners=False``). Every tap of every offset group is sampled with one
    ``grid_sample`` call, the samples are multiplied by the mask and contracted with the
    weights. Built only from ops that ``torch.export`` keeps symbolic in the batch and spatial
    sizes, and that ONNX has (``GridSample``); exports always run it.
    """
    input, offset, weight, bias, mask = call.input, call.offset, call.weight, call.bias, call.mask
    B, C, H, W = input.shape
    C_out, Cpg, kh, kw = weight.shape
    K, og, groups = kh * kw, call.og, call.groups
    H_out, W_out = offset.shape[-2:]
    base_y, base_x = _base_positions(call)
    off = offset.reshape(B, og, K, 2, H_out, W_out)
    py = off[:, :, :, 0] + base_y.reshape(1, 1, K, H_out, W_out)
    px = off[:, :, :, 1] + base_x.reshape(1, 1, K, H_out, W_out)
    # pixel index p -> normalised coordinate (2 p + 1) / size - 1 (align_corners=False)
    gy = (2.0 * py + 1.0) / H - 1.0
    gx = (2.0 * px + 1.0) / W - 1.0
    grid = torch.stack([gx, gy], dim=-1).reshape(B * og, K * H_out, W_out, 2)
    x = input.reshape(B * og, C // og, H, W)
    samples = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    samples = samples.reshape(B, og, C // og, K, H_out, W_out)
    if mask is not None:
        samples = samples * mask.reshape(B, og, 1, K, H_out, W_out)
    cols = samples.reshape(B, groups, Cpg * K, H_out * W_out)  # channel c = g * Cpg + i
    w = weight.reshape(groups, C_out // groups, Cpg * K)
    out = torch.matmul(w.unsqueeze(0), cols).reshape(B, C_out, H_out, W_out)
    if bias is not None:
        out = out + bias.view(1, C_out, 1, 1)
    return out
