"""One way to name a model everywhere (train, evaluate, fuse, export): ``RUN_OR_NAME``.

A model reference is one of:

* a registered model name: ``mef-cl``, ``ffmef``, ``lcndr``, ``hyperp-mb``, ``crmef-general``,
  ``crmef-misaligned`` (:func:`nas.baselines.list_models`);
* a genotype file (``genotype.yaml``): the derived network, freshly initialised;
* a search run folder: its genotype with the weights inherited from the supernet
  (``derived_init.pt``);
* a training run folder: the trained weights (``checkpoints/best.pt``, else ``last.pt``);
* a model file written by :func:`save_model` (``*.pt``: architecture + state dict);
* a classical (non-learned) method of :mod:`nas.classical` (``mertens``, ``average``), only
  where the caller accepts one: ``resolve_model(ref, allow_classical=True)`` (evaluate, fuse)
  gives a :class:`ResolvedModel` whose ``model`` is a
  :class:`~nas.classical.ClassicalFusion` (``arch = {"kind": "classical", "name": ...}``,
  ``trained`` true: there is nothing to train). Without the flag (train, search, export) a
  classical name is a :class:`ModelRefError` saying so, so ``model`` is always an
  ``nn.Module`` there.

Every model file stores its architecture next to the weights (``{"arch": ..., "state_dict":
...}``) so a file alone rebuilds the network; ``arch`` is ``{"kind": "genotype", "genotype":
{...}}`` or ``{"kind": "registry", "name": ..., "kwargs": {...}}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas.genotype import Genotype, build
from nas.utils import atomic_torch_save


class ModelRefError(ValueError):
    """A model reference cannot be resolved; the message says what was tried."""


@dataclass
class ResolvedModel:
    """A model and where it came from.

    ``model`` is an ``nn.Module``, or a :class:`~nas.classical.ClassicalFusion` when the
    reference named a classical method and the caller allowed it (``classical`` is then true;
    use :meth:`module` where an ``nn.Module`` is needed).
    """

    model: Any
    name: str
    arch: dict[str, Any]
    source: str
    trained: bool = False
    genotype: Genotype | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def classical(self) -> bool:
        """True when ``model`` is a classical (non-learned) method."""
        return (self.arch or {}).get("kind") == "classical"

    @property
    def registry_info(self) -> Any:
        """The registry's :class:`~nas.baselines.ModelInfo` of a registered model, else None."""
        from nas.baselines import registry_info

        arch = self.arch or {}
        registered = arch.get("kind") in ("registry", "classical")
        return registry_info(arch["name"]) if registered else None

    @property
    def misaligned(self) -> bool:
        """The network aligns misaligned pairs (its genotype's or its registry entry's flag)."""
        if self.genotype is not None:
            return bool(self.genotype.arch.misaligned)
        info = self.registry_info
        return bool(info is not None and info.misaligned)

    @property
    def pyramid_blend(self) -> bool:
        """The network blends a Laplacian pyramid of the whole image (a genotype whose head is
        in :data:`nas.space.PYRAMID_HEADS`): it runs whole, never in tiles."""
        from nas.space import PYRAMID_HEADS

        return self.genotype is not None and self.genotype.arch.head in PYRAMID_HEADS

    def module(self) -> nn.Module:
        """``model`` as an ``nn.Module`` (a classical method wrapped, parameter-free)."""
        return self.model.as_module() if self.classical else self.model


def arch_of_genotype(g: Genotype) -> dict[str, Any]:
    return {"kind": "genotype", "genotype": g.to_dict()}


def build_arch(arch: dict[str, Any], source: str = "<arch>") -> tuple[nn.Module, Genotype | None]:
    """Build the network an ``arch`` record describes."""
    from nas.baselines import create_model

    kind = arch.get("kind") if isinstance(arch, dict) else None
    if kind == "genotype":
        g = Genotype.from_dict(arch["genotype"], source=source)
        return build(g), g
    if kind == "registry":
        from nas.baselines import is_classical

        if is_classical(str(arch.get("name"))):
            raise ModelRefError(classical_message(str(arch["name"])))
        return create_model(arch["name"], **arch.get("kwargs", {})), None
    if kind == "classical":
        raise ModelRefError(classical_message(str(arch.get("name"))))
    raise ModelRefError(f"{source}: unknown architecture record {arch!r}")


def save_model(path: str | Path, model: nn.Module, arch: dict[str, Any], **extra: Any) -> Path:
    """Atomically write ``{"arch", "state_dict", **extra}``."""
    return atomic_torch_save({"arch": arch, "state_dict": model.state_dict(), **extra}, path)


def load_model_file(path: str | Path, map_location: Any = "cpu") -> ResolvedModel:
    p = Path(path)
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise ModelRefError(f"model file {p} cannot be read ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ModelRefError(f"model file {p} has no 'state_dict' (keys: {list(ckpt)[:8]})")
    arch = ckpt.get("arch")
    if arch is None and "genotype" in ckpt:  # a search run's derived_init.pt
        arch = {"kind": "genotype", "genotype": ckpt["genotype"]}
    if arch is None:
        raise ModelRefError(f"model file {p} does not record its architecture ('arch')")
    model, g = build_arch(arch, str(p))
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise ModelRefError(f"model file {p}: weights do not fit the architecture: {e}") from None
    return ResolvedModel(
        model,
        p.stem,
        arch,
        str(p),
        trained=True,
        genotype=g,
        info={k: v for k, v in ckpt.items() if k not in ("state_dict",)},
    )


def classical_message(name: str) -> str:
    """One line: ``name`` is a classical method, with nothing to train, search or export."""
    return (
        f"{name!r} is a classical fusion method (no learned weights): there is nothing to "
        f"train, search or export; use it directly with `python -m nas.evaluate --models "
        f"{name}` or `python -m nas.fuse --model {name} ...`"
    )


def resolve_model(
    ref: str | Path, *, allow_classical: bool = False, **kwargs: Any
) -> ResolvedModel:
    """Resolve a model reference (see the module docstring); ``kwargs`` go to registry models.

    Args:
        ref: a model reference.
        allow_classical: accept a classical method's name (``model`` is then a
            :class:`~nas.classical.ClassicalFusion`); otherwise it is a :class:`ModelRefError`.
        kwargs: keyword arguments of the registry factory.
    """
    from nas.baselines import create_fusion, is_classical, is_model, list_models

    s = str(ref)
    if is_classical(s):
        if not allow_classical:
            raise ModelRefError(classical_message(s))
        arch = {"kind": "classical", "name": s, "kwargs": dict(kwargs)}
        method = create_fusion(s, **kwargs)
        return ResolvedModel(
            method, s, arch, "registry", trained=True, info={"describe": method.describe()}
        )
    if is_model(s):
        arch = {"kind": "registry", "name": s, "kwargs": dict(kwargs)}
        model, g = build_arch(arch)
        return ResolvedModel(model, s, arch, "registry", genotype=g)
    p = Path(s)
    if p.is_dir():
        from nas.runs import Run

        run = Run.find(p)
        kind = run.kind if run is not None else None
        name = run.name if run is not None else p.name
        if kind == "train":
            for ck in ("best", "last"):
                f = p / "checkpoints" / f"{ck}.pt"
                if f.is_file():
                    r = _from_train_checkpoint(f)
                    r.name, r.source = name, str(p)
                    return r
            raise ModelRefError(f"training run {p} has no checkpoints/best.pt or last.pt yet")
        if (p / "derived_init.pt").is_file():
            r = load_model_file(p / "derived_init.pt")
            r.name, r.source, r.trained = name, str(p), False
            return r
        if (p / "genotype.yaml").is_file():
            return _from_genotype_file(p / "genotype.yaml", name)
        raise ModelRefError(f"{p} is a folder but not a search or training run")
    if p.is_file():
        if p.suffix in (".yaml", ".yml"):
            return _from_genotype_file(p, p.stem)
        return load_model_file(p)
    raise ModelRefError(
        f"cannot resolve model {s!r}: not a registered model ({', '.join(list_models())}), "
        "nor an existing genotype .yaml, run folder or model .pt file"
    )


def _from_genotype_file(path: Path, name: str) -> ResolvedModel:
    g = Genotype.from_yaml(path)
    arch = arch_of_genotype(g)
    return ResolvedModel(build(g), name, arch, str(path), genotype=g)


def _from_train_checkpoint(path: Path) -> ResolvedModel:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    state = ckpt.get("task", ckpt)
    if "model" not in state or "arch" not in state:
        raise ModelRefError(f"checkpoint {path} holds no trained model")
    model, g = build_arch(state["arch"], str(path))
    model.load_state_dict(state["model"])
    return ResolvedModel(model, path.stem, state["arch"], str(path), trained=True, genotype=g)
