"""The ops registry: one table ``name -> OpSpec``, each with up to two constructors
``(C_in, C_out, stride=1)``, one per build style.

Every candidate operation of every search space is built here (:func:`create_op`), in the
supernet, in the derived networks and in the latency profiler, so a latency-table entry and
a network layer are the same module measured and used.

The table follows DARTS' ``OPS`` dict (one signature for every constructor). Each entry's
:class:`OpSpec` says what the op is (family, kernel, dilation) so that code can reason about
ops without parsing names, and holds the constructor of each style: ``factory`` for
``style="lean"`` (:mod:`nas.ops.conv`, :mod:`nas.ops.deform`) and ``authors_factory`` for
``style="authors"`` (:mod:`nas.ops.authors`, what the CRMEF authors' released code computes
for that name; the default style of the shipped spaces and published genotypes). The same
name is a different computation, with a different latency-table name
(``authors.<name>``), in each style; ``skip`` is shared.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

OpFactory = Callable[..., nn.Module]
"""``factory(C_in: int, C_out: int, stride: int = 1) -> nn.Module``."""


@dataclass(frozen=True)
class OpSpec:
    """What a registered op is.

    Attributes:
        name: registry name, e.g. ``"resdilconv_5"``.
        family: ``conv``, ``dilconv``, ``resconv``, ``resdilconv``, ``skip`` or ``deform``.
        kernel: kernel size (0 for ``skip``).
        dilation: dilation of the kernel (1 for plain, 2 for dilated ops).
        takes_offset_feat: ``forward(x, offset_feat)`` accepts a second tensor from which the
            op predicts its sampling offsets (deformable ops, used by the alignment module).
        factory: the constructor (``style: lean``).
        authors_factory: the constructor of the op as the CRMEF authors' code builds it
            (``style: authors``; :mod:`nas.ops.authors`); None where both styles share
            ``factory``.
    """

    name: str
    family: str
    kernel: int
    dilation: int
    takes_offset_feat: bool
    factory: OpFactory
    authors_factory: OpFactory | None = None

    @property
    def parameter_free(self) -> bool:
        """True for ops that hold no weights when C_in == C_out (``skip``)."""
        return self.family == "skip"


_REGISTRY: dict[str, OpSpec] = {}


def register_op(
    name: str,
    factory: OpFactory,
    *,
    family: str,
    kernel: int = 0,
    dilation: int = 1,
    takes_offset_feat: bool = False,
    authors: OpFactory | None = None,
) -> OpSpec:
    """Add ``name`` to the registry; re-registering a name is an error.

    ``authors`` is the constructor of the authors'-style variant (same signature).
    """
    if name in _REGISTRY:
        raise ValueError(f"op {name!r} is already registered")
    spec = OpSpec(name, family, kernel, dilation, takes_offset_feat, factory, authors)
    _REGISTRY[name] = spec
    return spec


def list_ops(pattern: str = "*") -> list[str]:
    """Registered op names matching an fnmatch ``pattern``, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def get_op_spec(name: str) -> OpSpec:
    """The :class:`OpSpec` of ``name``; an unknown name raises ``KeyError`` listing valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown op {name!r}; valid ops: {', '.join(list_ops())}") from None


STYLES: tuple[str, ...] = ("lean", "authors")
"""How the ops (and the fixed modules around them) are built; see :class:`nas.space.ArchConfig`."""


def create_op(name: str, C_in: int, C_out: int, stride: int = 1, style: str = "lean") -> nn.Module:
    """Build op ``name`` mapping ``(B, C_in, H, W)`` to ``(B, C_out, H/stride, W/stride)``.

    ``style="authors"`` builds the variant of the CRMEF authors' released code where the op
    has one (:mod:`nas.ops.authors`).
    """
    if style not in STYLES:
        raise ValueError(f"op {name!r}: style must be one of {STYLES}, got {style!r}")
    if C_in <= 0 or C_out <= 0:
        raise ValueError(f"op {name!r}: channels must be positive, got C_in={C_in}, C_out={C_out}")
    if stride not in (1, 2):
        raise ValueError(f"op {name!r}: stride must be 1 or 2, got {stride}")
    spec = get_op_spec(name)
    if style == "authors" and spec.authors_factory is not None:
        return spec.authors_factory(C_in, C_out, stride)
    return spec.factory(C_in, C_out, stride)
