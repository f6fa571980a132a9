"""The CRMEF hyper-architecture, its continuous relaxation (``MixedOp``) and the supernet.

One network class, :class:`CRMEFNet`, describes the hyper-architecture; its searchable slots
are filled by a ``make_slot(slot, C_in, C_out)`` callable. The supernet fills every slot with
a :class:`MixedOp` over the slot's candidates; a derived network (:func:`nas.genotype.build`)
fills it with the single chosen op from the same registry. Forward semantics are therefore
identical: the supernet at a one-hot alpha *is* the derived net.

Data flow for a pair (under, over), RGB (B, 3, H, W) in [0, 1]::

    under ─ SRSM ─ SRSM ─┐                      (cascades per image, own weights each)
    over  ─ SRSM ─ SRSM ─┴─ [DASM: pyramid, deformable PCD alignment] ─ DRM ─ fused

The modules come in two build styles (``style`` of :class:`~nas.space.ArchConfig`), with the
same slots in the same places:

* ``lean`` (:mod:`nas.modules`, ops :mod:`nas.ops.conv` / :mod:`nas.ops.deform`; LeakyReLU
  inside every weighted op, residual ops one convolution plus a skip):

  SRSM (scene relighting): stem conv3x3 -> slot ``srsm.feat1`` -> max+avg pool (1/2) ->
  slot ``srsm.feat2`` (2C -> C) -> slot ``srsm.conv`` (+ residual) -> upsample, conv3x3,
  sigmoid -> 3-channel illumination map L -> ``I * L`` (or ``I / L``, see ``relight``).
  DASM (misaligned spaces only): shared pyramid features of both relit images, deformable
  alignment of the under features to the over (reference) frame at 1/4, 1/2, 1/1 and a
  cascade (slots ``dasm.*``), ``F_A = A(F_U, F_O) + F_O``.
  DRM (detail repletion, width C): stem -> slots ``drm.0..3`` with residual connections
  around (0, 1) and (2, 3) -> conv3x3, sigmoid -> map L -> ``clamp(base / L, 0, 1)``.

* ``authors`` (the default of the shipped spaces and the published genotypes;
  :mod:`nas.modules_authors`, ops :mod:`nas.ops.authors`): what the CRMEF authors' released
  code computes. PReLU instead of LeakyReLU, no activation inside the ops, residual ops
  ``conv3x3(PReLU(conv_k(x) + x))``, deformable ops starting at offset 0 and mask 0.5. SRSM
  as above with a PReLU after each slot. DRM of the aligned network at D = 2C with
  BatchNorm + PReLU after every slot, head ``clamp(s / (sigmoid(conv1x1(x)) + 1e-5), 0, 1)``
  on ``s = under + over``; the DRM after alignment at width C,
  ``input = lrelu(aligned) + ref``, head ``sigmoid(conv1x1(input * x))`` (no division).
  See :mod:`nas.modules_authors`.

With ``head: pyramid`` or ``head: fast`` (:mod:`nas.heads`) the DRM's illumination head is
replaced: the body's features steer a Laplacian-pyramid blend of the inputs (``fast``: the
pyramid at the body's scale, full-resolution detail added back).

The architecture weights of the SRSM slots are shared by all SRSM instances (the genotype has
one op per slot *position*, as the paper's Fig. 11 and its published genotypes do); every
instance has its own convolution weights.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from nas.heads import Downsample, FastHead, PyramidHead
from nas.modules import (
    DASMMerge,
    DASMOffset,
    DASMPyramid,
    DRMHead,
    DRMStem,
    DRMStemAligned,
    SRSMHead,
    SRSMPool,
    SRSMStem,
)
from nas.modules_authors import DRMA, SRSMA
from nas.ops import call_slot, create_op, get_op_spec
from nas.space import ArchConfig, SearchSpace, load_space

SlotFactory = Callable[[str, int, int], nn.Module]
"""``make_slot(slot_name, C_in, C_out) -> module`` mapping (B, C_in, h, w) to (B, C_out, h, w)."""


def check_pair(under: Tensor, over: Tensor) -> None:
    """Raise ``ValueError`` unless under/over are (B, 3, H, W) tensors of the same shape."""
    for name, t in (("under", under), ("over", over)):
        if not isinstance(t, Tensor) or t.dim() != 4 or t.shape[1] != 3:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name} must be an RGB batch of shape (B, 3, H, W), got {shape}")
    if under.shape != over.shape:
        raise ValueError(
            f"under and over must have the same shape, got {tuple(under.shape)} "
            f"and {tuple(over.shape)}"
        )


class SRSM(nn.Module):
    """Scene relighting sub-module: (B, 3, H, W) -> relit (B, 3, H, W)."""

    def __init__(self, C: int, relight: str, make_slot: SlotFactory) -> None:
        super().__init__()
        self.stem = SRSMStem(C)
        self.feat1 = make_slot("srsm.feat1", C, C)
        self.pool = SRSMPool(C)
        self.feat2 = make_slot("srsm.feat2", 2 * C, C)
        self.conv = make_slot("srsm.conv", C, C)
        self.head = SRSMHead(C, relight)

    def forward(self, x: Tensor) -> Tensor:
        f = self.feat2(self.pool(self.feat1(self.stem(x))))
        return self.head(self.conv(f), f, x)


class DASM(nn.Module):
    """Deformable aligning sub-module (pyramid, cascading, deformable; slots ``dasm.*``).

    Aligns the under features to the over (reference) frame; returns the aligned full-scale
    features and the reference features, both (B, C, H, W).
    """

    def __init__(self, C: int, make_slot: SlotFactory, style: str = "lean") -> None:
        super().__init__()
        authors = style == "authors"
        self.pyramid = DASMPyramid(C, relu_block=authors)
        self.off3 = DASMOffset(C, with_coarse=False)
        self.l3 = make_slot("dasm.l3", C, C)
        self.off2 = DASMOffset(C, with_coarse=True)
        self.l2 = make_slot("dasm.l2", C, C)
        self.merge2 = DASMMerge(C, pre_act=authors)
        self.off1 = DASMOffset(C, with_coarse=True)
        self.l1 = make_slot("dasm.l1", C, C)
        self.merge1 = DASMMerge(C, act=not authors)
        self.off_cas = DASMOffset(C, with_coarse=False)
        self.cascade = make_slot("dasm.cascade", C, C)

    def forward(self, under: Tensor, over: Tensor) -> tuple[Tensor, Tensor]:
        nbr, ref = self.pyramid(under), self.pyramid(over)
        o3 = self.off3(nbr[2], ref[2])
        f3 = call_slot(self.l3, nbr[2], o3)
        o2 = self.off2(nbr[1], ref[1], o3)
        f2 = self.merge2(call_slot(self.l2, nbr[1], o2), f3)
        o1 = self.off1(nbr[0], ref[0], o2)
        f1 = self.merge1(call_slot(self.l1, nbr[0], o1), f2)
        oc = self.off_cas(f1, ref[0])
        return call_slot(self.cascade, f1, oc), ref[0]


class DRM(nn.Module):
    """Detail repletion module: four slots with residual connections, division head."""

    def __init__(self, C: int, make_slot: SlotFactory, aligned_features: bool) -> None:
        super().__init__()
        self.stem = DRMStemAligned(C) if aligned_features else DRMStem(C)
        self.op0 = make_slot("drm.0", C, C)
        self.op1 = make_slot("drm.1", C, C)
        self.op2 = make_slot("drm.2", C, C)
        self.op3 = make_slot("drm.3", C, C)
        self.head = DRMHead(C)

    out_channels_of = staticmethod(lambda C, aligned_features: C)
    """Width of :meth:`features` for a module of width C."""

    def _body(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        feat, base = self.stem(a, b)
        x0 = self.op0(feat)
        x1 = self.op1(x0) + x0
        x2 = self.op2(x1)
        return self.op3(x2), x2, base

    def features(self, a: Tensor, b: Tensor) -> Tensor:
        """The features the illumination head reads, ``op3(x2) + x2``: (B, C, H, W)."""
        f, r, _ = self._body(a, b)
        return f + r

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        f, r, base = self._body(a, b)
        return self.head(f, r, base)


class CRMEFNet(nn.Module):
    """The hyper-architecture with its slots filled by ``make_slot``.

    ``forward(under, over)``: RGB (B, 3, H, W) in [0, 1], any H x W, -> fused (B, 3, H, W)
    in [0, 1].
    """

    def __init__(self, arch: ArchConfig, make_slot: SlotFactory) -> None:
        super().__init__()
        self.arch = arch
        C = arch.channels
        srsm, drm = (SRSMA, DRMA) if arch.style == "authors" else (SRSM, DRM)
        self.srsm_under = nn.ModuleList(
            srsm(C, arch.relight, make_slot) for _ in range(arch.cascades)
        )
        self.srsm_over = nn.ModuleList(
            srsm(C, arch.relight, make_slot) for _ in range(arch.cascades)
        )
        self.dasm = DASM(C, make_slot, arch.style) if arch.misaligned else None
        self.drm = drm(C, make_slot, aligned_features=arch.misaligned)
        # head: pyramid -- the body steers a Mertens-initialised pyramid blend (nas.heads)
        self.down = Downsample(arch.scale) if arch.scale > 1 else None
        self.head = None
        if arch.head in ("pyramid", "fast"):
            D = drm.out_channels_of(C, arch.misaligned)
            self.head = (PyramidHead if arch.head == "pyramid" else FastHead)(D, arch.scale)
            self.drm.head = None  # the illumination head is replaced, not computed

    def forward(self, under: Tensor, over: Tensor) -> Tensor:
        if not torch.fx._symbolic_trace.is_fx_symbolic_tracing():
            check_pair(under, over)
        x_under, x_over = under, over
        if self.down is not None:
            under, over = self.down(under, over)
        lo_under, lo_over = under, over
        for su, so in zip(self.srsm_under, self.srsm_over):
            under, over = su(under), so(over)
        if self.dasm is not None:
            under, over = self.dasm(under, over)
        if self.head is None:
            return self.drm(under, over)
        feat = self.drm.features(under, over)
        if isinstance(self.head, FastHead):
            return self.head(x_under, x_over, feat, lo_under, lo_over)
        return self.head(x_under, x_over, feat)


class MixedOp(nn.Module):
    """Continuous relaxation of one slot: ``sum_o softmax(alpha)_o * op_o(x)``.

    ``alpha`` is the slot's architecture parameter. The owning :class:`Supernet` registers
    it (one per slot, shared by every instance of the slot) and binds it here with
    :meth:`bind`; the MixedOp only reads it, so a forward pass changes no state.
    """

    def __init__(
        self,
        slot: str,
        candidates: tuple[str, ...],
        C_in: int,
        C_out: int,
        alpha: Tensor | None = None,
        style: str = "lean",
    ) -> None:
        super().__init__()
        self.slot = slot
        self.ops = nn.ModuleDict(
            {name: create_op(name, C_in, C_out, style=style) for name in candidates}
        )
        self.takes_offset_feat = any(get_op_spec(n).takes_offset_feat for n in candidates)
        self._alpha: tuple[Tensor, ...] = ()
        if alpha is not None:
            self.bind(alpha)

    def bind(self, alpha: Tensor) -> None:
        """Read the weights from ``alpha`` (kept in a tuple: not registered as this module's
        parameter, so it is saved and optimised once, by its owner)."""
        if alpha.shape != (len(self.ops),):
            raise ValueError(
                f"slot {self.slot}: alpha of shape {tuple(alpha.shape)} for {len(self.ops)} ops"
            )
        self._alpha = (alpha,)

    def weights(self) -> Tensor:
        """``softmax(alpha)``, differentiable w.r.t. alpha."""
        if not self._alpha:
            raise RuntimeError(f"MixedOp {self.slot!r} has no alpha bound (Supernet binds it)")
        return torch.softmax(self._alpha[0], dim=0)

    def forward(self, x: Tensor, offset_feat: Tensor | None = None) -> Tensor:
        w = self.weights()
        return sum(wi * call_slot(op, x, offset_feat) for wi, op in zip(w, self.ops.values()))

    def extra_repr(self) -> str:
        return f"slot={self.slot!r}"


def _alpha_key(slot: str) -> str:
    return slot.replace(".", "__")


class Supernet(CRMEFNet):
    """The CRMEF supernet of a search space: every slot a :class:`MixedOp`.

    Architecture weights: one ``alpha`` vector per slot (``arch_parameters()``), kept apart
    from the convolution weights (``weight_parameters()``) so each optimiser sees only its
    own. ``alpha`` starts at 1e-3 * N(0, 1), i.e. near-uniform softmax.
    """

    def __init__(
        self,
        space: SearchSpace | str,
        alpha_init_std: float = 1e-3,
        alphas: nn.ParameterDict | None = None,
    ) -> None:
        space = load_space(space)
        if space.choices:
            raise ValueError(
                f"space {space.name!r} searches {sorted(space.choices)}: build its supernet "
                f"with make_supernet() (a ChoiceSupernet)"
            )
        super().__init__(
            space.arch,
            lambda slot, ci, co: MixedOp(
                slot, space.candidates[slot], ci, co, style=space.arch.style
            ),
        )
        self.space = space
        self._shared: tuple[nn.ParameterDict, ...] = ()
        if alphas is None:
            self.alphas = nn.ParameterDict(
                {
                    _alpha_key(s): nn.Parameter(
                        alpha_init_std * torch.randn(len(space.candidates[s]))
                    )
                    for s in space.slots
                }
            )
        else:  # owned (registered, saved, optimised) by a ChoiceSupernet
            self._shared = (alphas,)
        self._bind_alphas()

    def _bind_alphas(self) -> None:
        for _, m in self.mixed_ops():
            m.bind(self.alpha(m.slot))

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        # a conversion that replaces Parameter objects (e.g. to the meta device) must leave
        # every MixedOp reading its slot's current alpha
        out = super()._apply(fn, recurse)
        self._bind_alphas()
        return out

    def derived_arch(self) -> ArchConfig:
        """The architecture options of the derived net (a plain space's own)."""
        return self.space.arch

    def alpha(self, slot: str) -> nn.Parameter:
        """The architecture weights of ``slot`` (one entry per candidate, in space order)."""
        return (self._shared[0] if self._shared else self.alphas)[_alpha_key(slot)]

    def arch_parameters(self) -> list[nn.Parameter]:
        return list((self._shared[0] if self._shared else self.alphas).values())

    def weight_parameters(self) -> list[nn.Parameter]:
        """The trainable convolution weights (frozen parameters, e.g. the authors' discarded
        layers, are left out)."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch and p.requires_grad]

    def softmax_weights(self) -> dict[str, Tensor]:
        """``{slot: softmax(alpha)}``, differentiable w.r.t. the alphas."""
        return {s: torch.softmax(self.alpha(s), dim=0) for s in self.space.slots}

    def mixed_ops(self) -> Iterator[tuple[str, MixedOp]]:
        """(module path, MixedOp) for every slot instance in the network."""
        for name, m in self.named_modules():
            if isinstance(m, MixedOp):
                yield name, m

    @torch.no_grad()
    def set_onehot(self, choice: Mapping[str, str], margin: float = 1e4) -> None:
        """Set alphas so softmax is exactly one-hot at ``choice[slot]`` (e.g. a genotype)."""
        for s in self.space.slots:
            a = self.alpha(s)
            a.fill_(-margin)
            a[self.space.candidates[s].index(choice[s])] = 0.0


def _choice_key(name: str) -> str:
    return f"choice__{name}"


class ChoiceSupernet(nn.Module):
    """The supernet of a space with whole-network ``choices`` (processing scale, width, head).

    One :class:`Supernet` per variant (:meth:`~nas.space.SearchSpace.variants`), each with its
    own convolution weights; all share the op alphas of every slot, and each choice ``k`` has
    an alpha vector of its own. The output is the variants' outputs mixed by the product of
    their choices' softmax weights::

        fused = sum_v  prod_k softmax(alpha_k)[v_k] * supernet_v(under, over)

    so the search weighs a cheap low-resolution body against a dear one as it weighs ops. It
    has the interface of :class:`Supernet` (``alpha``, ``softmax_weights``, ``set_onehot``,
    ``arch_parameters``, ``weight_parameters``, ``mixed_ops``); ``softmax_weights`` also holds
    ``"choice.<k>"`` entries.
    """

    def __init__(self, space: SearchSpace | str, alpha_init_std: float = 1e-3) -> None:
        super().__init__()
        space = load_space(space)
        if not space.choices:
            raise ValueError(f"space {space.name!r} has no choices: use Supernet")
        self.space = space
        self.arch = space.arch
        self.choices = dict(space.choices)
        sizes = {_alpha_key(s): len(space.candidates[s]) for s in space.slots}
        sizes.update({_choice_key(k): len(v) for k, v in self.choices.items()})
        self.alphas = nn.ParameterDict(
            {k: nn.Parameter(alpha_init_std * torch.randn(n)) for k, n in sizes.items()}
        )
        variants = space.variants()
        self.assignments = [a for a, _ in variants]
        self.nets = nn.ModuleList(Supernet(v, alphas=self.alphas) for _, v in variants)

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        out = super()._apply(fn, recurse)
        for net in self.nets:  # children convert before the alphas they read
            net._bind_alphas()
        return out

    def alpha(self, slot: str) -> nn.Parameter:
        """The architecture weights of an op slot, or of a choice (``"choice.scale"``)."""
        if slot.startswith("choice."):
            return self.alphas[_choice_key(slot[len("choice.") :])]
        return self.alphas[_alpha_key(slot)]

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alphas.values())

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.alphas.values()}
        return [p for p in self.parameters() if id(p) not in arch and p.requires_grad]

    def softmax_weights(self) -> dict[str, Tensor]:
        """``{slot: softmax(alpha)}`` and ``{"choice.<k>": softmax(alpha_k)}``."""
        out = {s: torch.softmax(self.alpha(s), dim=0) for s in self.space.slots}
        for k in self.choices:
            out[f"choice.{k}"] = torch.softmax(self.alpha(f"choice.{k}"), dim=0)
        return out

    def variant_weights(self, weights: Mapping[str, Tensor] | None = None) -> list[Tensor]:
        """The mixing weight of every variant (0-d tensors summing to 1), from ``weights``
        (default: :meth:`softmax_weights`)."""
        w = weights if weights is not None else self.softmax_weights()
        out = []
        for a in self.assignments:
            p = None
            for k, v in a.items():
                term = w[f"choice.{k}"][self.choices[k].index(v)]
                p = term if p is None else p * term
            out.append(p)
        return out

    def mixed_ops(self) -> Iterator[tuple[str, MixedOp]]:
        for name, m in self.named_modules():
            if isinstance(m, MixedOp):
                yield name, m

    def derived_arch(self) -> ArchConfig:
        """The space's arch with the argmax value of every choice."""
        pick = {
            k: v[int(torch.argmax(self.alpha(f"choice.{k}")).item())]
            for k, v in self.choices.items()
        }
        return dataclasses.replace(self.arch, **pick)

    def variant(self, arch: ArchConfig) -> Supernet:
        """The variant supernet of ``arch`` (a derived net's options)."""
        for a, net in zip(self.assignments, self.nets):
            if all(getattr(arch, k) == v for k, v in a.items()):
                return net
        raise KeyError(f"{self.space.name}: no variant for {arch}")

    @torch.no_grad()
    def set_onehot(self, choice: Mapping[str, Any], margin: float = 1e4) -> None:
        """One-hot op alphas at ``choice[slot]``; ``choice`` may also name choices (``scale``
        or ``choice.scale``: value), one-hot too."""
        for s in self.space.slots:
            a = self.alpha(s)
            a.fill_(-margin)
            a[self.space.candidates[s].index(choice[s])] = 0.0
        for k, values in self.choices.items():
            v = choice.get(k, choice.get(f"choice.{k}"))
            if v is not None:
                a = self.alpha(f"choice.{k}")
                a.fill_(-margin)
                a[values.index(v)] = 0.0

    def forward(self, under: Tensor, over: Tensor) -> Tensor:
        check_pair(under, over)
        out = None
        for p, net in zip(self.variant_weights(), self.nets):
            y = p * net(under, over)
            out = y if out is None else out + y
        return out


def make_supernet(space: SearchSpace | str, alpha_init_std: float = 1e-3) -> nn.Module:
    """The supernet of ``space``: a :class:`ChoiceSupernet` when it has ``choices``, else a
    :class:`Supernet`."""
    space = load_space(space)
    cls = ChoiceSupernet if space.choices else Supernet
    return cls(space, alpha_init_std)
