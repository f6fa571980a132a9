"""The CRMEF hyper-architecture as the authors' released code builds it (``style: authors``).

The slots are the lean style's (same names, same place in the data flow, same genotype), but
both what fills them and what surrounds them differ: the ops are :mod:`nas.ops.authors`'s
(same registry names, another computation), and the computation around the slots is the
authors' (every piece a profiled :class:`~nas.ops.Unit` named ``fixed.authors.*``). With
the published general genotype at C = 64 the network has the published 1,879,330 parameters.

Widths: C is the relighting width (and the alignment width); the detail module of the aligned
network runs at 2C, the one after alignment at C, as in the authors' code.

SRSM (one PReLU slope, a single parameter, shared by the whole sub-module)::

    a = act(conv3x3(x))                              3 -> C
    a = act(act(feat1(a)))                           slot srsm.feat1, C -> C
    a = act(feat2(cat(maxpool(a), avgpool(a))))      slot srsm.feat2, 2C -> C at 1/2
    a = act(conv(a)) + a                             slot srsm.conv, C -> C at 1/2
    L = sigmoid(conv3x3(upsample(a)))                C -> 3 at full size
    out = x * L                                      (x / L with relight: divide)

DRM (aligned; D = 2C; BatchNorm + PReLU after every slot, residuals around (1) and (3))::

    s = u + o;  x = act(bn(conv3x3(conv3x3(s))))     3 -> C -> D
    x = act(bn(op0(x)));  x = act(bn(op1(x)) + x)
    x = act(bn(op2(x)));  x = act(bn(op3(x)) + x)
    out = clamp(s / (sigmoid(conv1x1(x)) + 1e-5), 0, 1)

DRM after alignment (width C): ``input = lrelu(aligned) + ref``, ``x = act(bn(conv3x3(input)))``,
the same four slots, ``out = sigmoid(conv1x1(input * x))``.

Parameters the authors' code creates but whose outputs its forward pass discards (a 1x1 conv
per SRSM, a BatchNorm of the detail head) are kept, frozen (``requires_grad=False``), in
``unused`` modules so that parameter counts equal the published ones; they are never computed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas.modules import _resize_to, relight
from nas.ops.conv import NEG_SLOPE
from nas.ops.unit import Unit

EPS_AUTHORS = 1e-5
"""Added to the detail module's illumination map before division (the authors' constant)."""


def _conv(C_in: int, C_out: int, k: int = 3) -> nn.Conv2d:
    return nn.Conv2d(C_in, C_out, k, 1, (k - 1) // 2)


def _frozen(modules: dict[str, nn.Module]) -> nn.ModuleDict:
    """Modules whose parameters exist (and count) but are never used or trained."""
    out = nn.ModuleDict(modules)
    out.requires_grad_(False)
    return out


class SRSMStemA(Unit):
    """``prelu(conv3x3(x))``: (B, 3, H, W) -> (B, C, H, W) with the sub-module's shared slope."""

    op_name = "fixed.authors.srsm_stem"

    def __init__(self, C: int, slope: nn.Parameter) -> None:
        super().__init__(3, C)
        self.conv, self.slope = _conv(3, C), slope

    def forward(self, x: Tensor) -> Tensor:
        return F.prelu(self.conv(x), self.slope)


class PReLUA(Unit):
    """PReLU applied ``times`` times, plus an optional residual: ``prelu(x) + res``.

    x (and res): (B, C, H, W) -> (B, C, H, W). ``slope`` is shared with the owning module.
    """

    def __init__(self, C: int, slope: nn.Parameter, times: int = 1, residual: bool = False) -> None:
        super().__init__(C, C)
        self.slope, self.times, self.residual = slope, times, residual
        self.op_name = (
            "fixed.authors.prelu" + ("2" if times == 2 else "") + ("_add" if residual else "")
        )

    def forward(self, x: Tensor, res: Tensor | None = None) -> Tensor:
        for _ in range(self.times):
            x = F.prelu(x, self.slope)
        return x + res if self.residual and res is not None else x


class SRSMPoolA(Unit):
    """Max- and average-pooling (3x3, stride 2, zero padding counted in the average) concatenated:
    (B, C, H, W) -> (B, 2C, ceil(H/2), ceil(W/2))."""

    op_name = "fixed.authors.srsm_pool"

    def __init__(self, C: int) -> None:
        super().__init__(C, 2 * C, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([F.max_pool2d(x, 3, 2, 1), F.avg_pool2d(x, 3, 2, 1)], dim=1)


class SRSMHeadA(Unit):
    """``relight(image, sigmoid(conv3x3(upsample(a))))``: a (B, C, H/2, W/2), image
    (B, 3, H, W) -> (B, 3, H, W)."""

    def __init__(self, C: int, mode: str) -> None:
        super().__init__(C, 3)
        self.mode = mode
        self.op_name = "fixed.authors.srsm_head" + ("_divide" if mode == "divide" else "")
        self.conv = _conv(C, 3)

    def forward(self, a: Tensor, image: Tensor) -> Tensor:
        return relight(image, torch.sigmoid(self.conv(_resize_to(a, image))), self.mode)


class SRSMA(nn.Module):
    """Scene relighting sub-module, authors' style: (B, 3, H, W) -> relit (B, 3, H, W)."""

    def __init__(self, C: int, relight_mode: str, make_slot) -> None:
        super().__init__()
        # one PReLU slope for the whole sub-module (as nn.PReLU() initialises it), held by
        # every unit that applies it: a shared parameter counts (and trains) once
        self.slope = nn.Parameter(torch.full((1,), 0.25))
        act = self.slope
        self.stem = SRSMStemA(C, act)
        self.feat1 = make_slot("srsm.feat1", C, C)
        self.post1 = PReLUA(C, act, times=2)
        self.pool = SRSMPoolA(C)
        self.feat2 = make_slot("srsm.feat2", 2 * C, C)
        self.post2 = PReLUA(C, act)
        self.conv = make_slot("srsm.conv", C, C)
        self.post3 = PReLUA(C, act, residual=True)
        self.head = SRSMHeadA(C, relight_mode)
        self.unused = _frozen({"att_l1": nn.Conv2d(C, C, 1)})

    def forward(self, x: Tensor) -> Tensor:
        a = self.post1(self.feat1(self.stem(x)))
        a = self.post2(self.feat2(self.pool(a)))
        a = self.post3(self.conv(a), a)
        return self.head(a, x)


class DRMStemA(Unit):
    """``s = u + o``; ``x = act(bn(conv3x3(conv3x3(s))))``, 3 -> C -> D.

    u, o: (B, 3, H, W) -> x (B, D, H, W), s (B, 3, H, W).
    """

    op_name = "fixed.authors.drm_stem"

    def __init__(self, C: int, D: int) -> None:
        super().__init__(3, D)
        self.conv1, self.conv2 = _conv(3, C), _conv(C, D)
        self.bn, self.act = nn.BatchNorm2d(D), nn.PReLU()

    def forward(self, u: Tensor, o: Tensor) -> tuple[Tensor, Tensor]:
        s = u + o
        return self.act(self.bn(self.conv2(self.conv1(s)))), s


class DRMStemAlignedA(Unit):
    """``input = lrelu(aligned) + ref``; ``x = act(bn(conv3x3(input)))``, C -> C.

    aligned, ref: (B, C, H, W) -> x (B, C, H, W), input (B, C, H, W).
    """

    op_name = "fixed.authors.drm_stem_aligned"

    def __init__(self, C: int) -> None:
        super().__init__(C, C)
        self.conv, self.bn, self.act = _conv(C, C), nn.BatchNorm2d(C), nn.PReLU()

    def forward(self, aligned: Tensor, ref: Tensor) -> tuple[Tensor, Tensor]:
        inp = F.leaky_relu(aligned, NEG_SLOPE) + ref
        return self.act(self.bn(self.conv(inp))), inp


class BNPReLUA(Unit):
    """``act(bn(x))`` or, with a residual, ``act(bn(x) + res)``: (B, D, H, W) -> (B, D, H, W)."""

    def __init__(self, D: int, residual: bool = False) -> None:
        super().__init__(D, D)
        self.residual = residual
        self.op_name = "fixed.authors.bn_prelu" + ("_add" if residual else "")
        self.bn, self.act = nn.BatchNorm2d(D), nn.PReLU()

    def forward(self, x: Tensor, res: Tensor | None = None) -> Tensor:
        y = self.bn(x)
        return self.act(y + res if self.residual and res is not None else y)


class DRMHeadA(Unit):
    """``clamp(s / (sigmoid(conv1x1(x)) + 1e-5), 0, 1)``: x (B, D, H, W), s (B, 3, H, W)
    -> (B, 3, H, W)."""

    op_name = "fixed.authors.drm_head"

    def __init__(self, D: int) -> None:
        super().__init__(D, 3)
        self.conv = nn.Conv2d(D, 3, 1)

    def forward(self, x: Tensor, s: Tensor) -> Tensor:
        return (s / (torch.sigmoid(self.conv(x)) + EPS_AUTHORS)).clamp(0.0, 1.0)


class DRMHeadAlignedA(Unit):
    """``sigmoid(conv1x1(input * x))``: x, input (B, C, H, W) -> (B, 3, H, W)."""

    op_name = "fixed.authors.drm_head_aligned"

    def __init__(self, C: int) -> None:
        super().__init__(C, 3)
        self.conv = nn.Conv2d(C, 3, 1)

    def forward(self, x: Tensor, inp: Tensor) -> Tensor:
        return torch.sigmoid(self.conv(inp * x))


class DRMA(nn.Module):
    """Detail repletion, authors' style: four slots, BatchNorm + PReLU after each."""

    def __init__(self, C: int, make_slot, aligned_features: bool) -> None:
        super().__init__()
        D = self.out_channels_of(C, aligned_features)
        self.aligned_features = aligned_features
        self.stem = DRMStemAlignedA(C) if aligned_features else DRMStemA(C, D)
        self.op0 = make_slot("drm.0", D, D)
        self.post0 = BNPReLUA(D)
        self.op1 = make_slot("drm.1", D, D)
        self.post1 = BNPReLUA(D, residual=True)
        self.op2 = make_slot("drm.2", D, D)
        self.post2 = BNPReLUA(D)
        self.op3 = make_slot("drm.3", D, D)
        self.post3 = BNPReLUA(D, residual=True)
        self.head = DRMHeadAlignedA(D) if aligned_features else DRMHeadA(D)
        self.unused = _frozen({"head_bn": nn.BatchNorm2d(3)})

    @staticmethod
    def out_channels_of(C: int, aligned_features: bool) -> int:
        """Width of :meth:`features` for a module of width C (2C for aligned inputs)."""
        return C if aligned_features else 2 * C

    def _body(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        x, base = self.stem(a, b)
        x = self.post0(self.op0(x))
        x = self.post1(self.op1(x), x)
        x = self.post2(self.op2(x))
        return self.post3(self.op3(x), x), base

    def features(self, a: Tensor, b: Tensor) -> Tensor:
        """The last slot's features, the head's input: (B, D, H, W)."""
        return self._body(a, b)[0]

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return self.head(*self._body(a, b))
