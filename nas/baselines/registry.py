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
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from torch import nn

__all__ = [
    "ModelInfo",
    "register_model",
    "create_model",
    "list_models",
    "get_model_info",
    "is_model",
]

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
    """

    name: str
    factory: ModelFactory
    paper: str = ""
    color_space: str = "rgb"
    loss: str = "l1"
    ref_params: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    name: str,
    *,
    paper: str = "",
    color_space: str = "rgb",
    loss: str = "l1",
    ref_params: int | None = None,
    **extra: Any,
) -> Callable[[F], F]:
    """Decorator that registers a model class or factory function under ``name``.

    The decorated object is returned unchanged. Registering a name twice is an error.

    Args:
        name: registry name.
        paper, color_space, loss, ref_params, extra: metadata stored in :class:`ModelInfo`.
    """

    def deco(factory: F) -> F:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        if not callable(factory):
            raise TypeError(f"register_model({name!r}) needs a class or function")
        _REGISTRY[name] = ModelInfo(
            name, factory, paper, color_space, loss, ref_params, dict(extra)
        )
        return factory

    return deco


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching an fnmatch ``pattern``, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def is_model(name: str) -> bool:
    """True if ``name`` is registered."""
    return name in _REGISTRY


def get_model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of ``name``; an unknown name raises ``KeyError`` naming valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        valid = ", ".join(list_models()) or "(none registered)"
        raise KeyError(f"unknown model {name!r}; valid models: {valid}") from None


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build registered model ``name`` with ``kwargs`` passed to its factory."""
    model = get_model_info(name).factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise TypeError(f"factory of model {name!r} returned {type(model).__name__}, not nn.Module")
    return model
