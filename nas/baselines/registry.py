"""Model registry in timm style: ``register_model`` / ``create_model`` / ``list_models``.

Every fixed network the toolkit trains or evaluates is registered here under a short name, with
a little metadata (paper, colour space, the name of its paper's loss in :mod:`nas.losses`)::

    @register_model("mef-cl", paper="...", color_space="rgb", loss="mef-cl")
    class MEFCL(nn.Module): ...

    @register_model("crmef-general", loss="crmef")   # plain factory functions work too
    def _crmef_general(**kwargs) -> nn.Module: ...

    model = create_model("mef-cl")                   # -> nn.Module
    list_models("crmef-*")                           # -> ["crmef-general", ...]

Every registered model maps ``forward(under, over)``, sRGB (B, 3, H, W) in [0, 1] of any
H x W, to the fused sRGB image (B, 3, H, W) in [0, 1].

Two kinds of entry (:attr:`ModelInfo.kind`, :data:`KINDS`):

* ``"network"``: a learned fusion network; the factory returns an ``nn.Module``;
* ``"classical"``: a non-learned method of :mod:`nas.classical` (``mertens``, ``average``,
  registered at the end of this module); the factory returns a
  :class:`~nas.classical.ClassicalFusion` (``fuse(under, over)``, no weights).

:func:`list_models` lists both (``kind=`` filters); :func:`create_model` builds networks only
and refuses a classical name with a message naming :func:`create_fusion`, which builds either
kind. Callers tell the kinds apart with ``get_model_info(name).kind`` (or
:func:`is_classical`), never by name.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from torch import nn

__all__ = [
    "KINDS",
    "ModelInfo",
    "register_model",
    "create_fusion",
    "create_model",
    "list_models",
    "get_model_info",
    "is_classical",
    "is_model",
]

KINDS: tuple[str, ...] = ("network", "classical")
GROUPS: tuple[str, ...] = ("baseline", "crmef", "classical")
"""The kinds of registry entry (see the module docstring)."""

ModelFactory = Callable[..., nn.Module]
F = TypeVar("F", bound=ModelFactory)


@dataclass(frozen=True)
class ModelInfo:
    """What a registered model is.

    Attributes:
        name: registry name, e.g. ``"ffmef"``.
        factory: class or function called as ``factory(**kwargs) -> nn.Module``.
        paper: short citation of the paper the model comes from ("" if none).
        color_space: where the network fuses: ``"rgb"``, ``"ycbcr-y"`` or ``"lab-l"``.
        loss: name of the model's own training loss in :func:`nas.losses.build_loss`.
        ref_params: parameter count that the reference (BASELINES.md) states, or ``None``.
        extra: any further metadata passed to :func:`register_model`.
        kind: ``"network"`` (factory returns an ``nn.Module``) or ``"classical"`` (factory
            returns a :class:`~nas.classical.ClassicalFusion`; nothing to train).
        group: where the model stands in a comparison: ``"baseline"`` (a fixed network of
            another paper), ``"crmef"`` (a published CRMEF genotype) or ``"classical"``.
        width_param: the factory keyword that sets the network's width (``"channels"`` for
            the CRMEF genotypes; None: the paper's width is fixed).
        misaligned: the network aligns misaligned pairs (trains on misaligned data).
        global_context: the output depends on the whole image beyond normalisation
            statistics (tiling only approximates it).
    """

    name: str
    factory: ModelFactory
    paper: str = ""
    color_space: str = "rgb"
    loss: str = "l1"
    ref_params: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    kind: str = "network"
    group: str = "baseline"
    width_param: str | None = None
    misaligned: bool = False
    global_context: bool = False

    @property
    def classical(self) -> bool:
        """True for a classical (non-learned) method."""
        return self.kind == "classical"


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    name: str,
    *,
    paper: str = "",
    color_space: str = "rgb",
    loss: str = "l1",
    ref_params: int | None = None,
    kind: str = "network",
    group: str | None = None,
    width_param: str | None = None,
    misaligned: bool = False,
    global_context: bool = False,
    **extra: Any,
) -> Callable[[F], F]:
    """Decorator that registers a model class or factory function under ``name``.

    The decorated object is returned unchanged. Registering a name twice is an error.

    Args:
        name: registry name.
        paper, color_space, loss, ref_params, extra: metadata stored in :class:`ModelInfo`.
        kind: ``"network"`` (default) or ``"classical"``.
        group, width_param, misaligned, global_context: see :class:`ModelInfo` (``group``
            defaults to ``"classical"`` for classical methods, else ``"baseline"``).
    """
    if kind not in KINDS:
        raise ValueError(f"register_model({name!r}): kind must be one of {KINDS}, got {kind!r}")
    group = group or ("classical" if kind == "classical" else "baseline")
    if group not in GROUPS:
        raise ValueError(f"register_model({name!r}): group must be one of {GROUPS}, got {group!r}")

    def deco(factory: F) -> F:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        if not callable(factory):
            raise TypeError(f"register_model({name!r}) needs a class or function")
        _REGISTRY[name] = ModelInfo(
            name,
            factory,
            paper,
            color_space,
            loss,
            ref_params,
            dict(extra),
            kind,
            group,
            width_param,
            misaligned,
            global_context,
        )
        return factory

    return deco


def list_models(pattern: str = "*", kind: str | None = None) -> list[str]:
    """Registered names matching an fnmatch ``pattern``, sorted.

    Args:
        pattern: fnmatch pattern on the name.
        kind: ``None`` (every entry), ``"network"`` (learned nets, what ``create_model``
            builds) or ``"classical"``.
    """
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be None or one of {KINDS}, got {kind!r}")
    return sorted(
        n
        for n, info in _REGISTRY.items()
        if fnmatch.fnmatchcase(n, pattern) and (kind is None or info.kind == kind)
    )


def is_model(name: str) -> bool:
    """True if ``name`` is registered (either kind)."""
    return name in _REGISTRY


def is_classical(name: str) -> bool:
    """True if ``name`` is a registered classical (non-learned) method."""
    info = _REGISTRY.get(name)
    return info is not None and info.classical


def get_model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of ``name``; an unknown name raises ``KeyError`` naming valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        valid = ", ".join(list_models()) or "(none registered)"
        raise KeyError(f"unknown model {name!r}; valid models: {valid}") from None


def registry_info(name: str) -> ModelInfo | None:
    """The :class:`ModelInfo` of ``name`` when it is registered, else None (a run folder, a
    file, ...)."""
    return _REGISTRY.get(str(name))


def width_kwargs(name: str, channels: int | None) -> dict[str, int]:
    """``{width_param: channels}`` for a registered model whose width can be set (the CRMEF
    genotypes), ``{}`` otherwise or when ``channels`` is None: ``--channels`` leaves the
    fixed baselines at their papers' widths."""
    info = registry_info(name)
    if channels is None or info is None or info.width_param is None:
        return {}
    return {info.width_param: int(channels)}


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build registered *network* ``name`` with ``kwargs`` passed to its factory.

    Raises:
        KeyError: unknown name (the message lists the valid ones).
        TypeError: ``name`` is a classical method (use :func:`create_fusion`).
    """
    info = get_model_info(name)
    if info.classical:
        raise TypeError(
            f"{name!r} is a classical fusion method, not a network (no weights); build it "
            "with create_fusion(name)"
        )
    model = info.factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise TypeError(f"factory of model {name!r} returned {type(model).__name__}, not nn.Module")
    return model


def create_fusion(name: str, **kwargs: Any) -> Any:
    """Build registered ``name`` of either kind: an ``nn.Module`` for a network, a
    :class:`~nas.classical.ClassicalFusion` for a classical method."""
    info = get_model_info(name)
    if not info.classical:
        return create_model(name, **kwargs)
    from nas.classical import ClassicalFusion

    method = info.factory(**kwargs)
    if not isinstance(method, ClassicalFusion):
        raise TypeError(
            f"factory of classical method {name!r} returned {type(method).__name__}, "
            "not a ClassicalFusion"
        )
    return method


def _register_classical() -> None:
    """Register every method of :data:`nas.classical.CLASSICAL_METHODS` (kind classical)."""
    from nas.classical import CLASSICAL_METHODS

    for name, cls in CLASSICAL_METHODS.items():
        if name not in _REGISTRY:
            register_model(name, paper=cls.paper, loss="", kind="classical")(cls)


_register_classical()
