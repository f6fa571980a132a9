"""The models of one comparison: references resolved, row names, groups, eta, trained check.

Shared by the evaluation protocols (:mod:`nas.evaluate`'s table, :mod:`nas.mefb`'s real
pairs) and the plots: what a model *is* in a comparison comes from the registry's metadata
(:func:`nas.baselines.registry_info`) and from the run it was found in
(:meth:`nas.runs.Run.origin_of`), never from its name.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from nas.models import ResolvedModel, resolve_model
from nas.report import slug
from nas.runs import Run

EVAL_DIR = Path("results") / "eval"
BASELINE_GROUP = "baseline"
CLASSICAL_GROUP = "classical"


class UntrainedModelError(ValueError):
    """Untrained models were given without ``allow_untrained``; the message names them."""


Log = Callable[[str], None]


def quiet(msg: str) -> None:
    """A :data:`Log` that says nothing."""


# --- model bookkeeping -------------------------------------------------------------------


def model_group(resolved: ResolvedModel) -> str:
    """``baseline`` (a fixed registry network: MEF-CL, FFMEF, LCNDR, HyperP_MB), ``crmef`` (the
    paper's published genotypes from the registry), ``classical`` (Mertens, the average:
    :mod:`nas.classical`), ``searched`` (a genotype that comes from a search run) or
    ``derived`` (any other genotype). Registered models carry their group in the registry."""
    info = resolved.registry_info
    if info is not None:
        return info.group
    return "searched" if Run.origin_of(resolved.source) is not None else "derived"


def search_eta(resolved: ResolvedModel) -> float:
    """The eta of the search run the model's genotype comes from (NaN when unknown)."""
    run = Run.origin_of(resolved.source)
    eta = None if run is None else run.eta
    return float("nan") if eta is None else eta


def resolve_models(
    refs: Sequence[str | Path | ResolvedModel],
    channels: int | None = None,
    model_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[ResolvedModel]:
    """Resolve every reference (already resolved models pass through); row names made unique.

    Args:
        refs: model references or :class:`~nas.models.ResolvedModel`.
        channels: width of the ``crmef-*`` registry models (the fixed baselines keep their
            papers' widths, as in ``nas.train --channels``).
        model_kwargs: ``{registry name: {keyword: value}}`` for registry models.

    Raises:
        ModelRefError: a reference cannot be resolved (the message lists the valid names).
        ValueError: no model; ``channels`` without a ``crmef-*`` name; ``model_kwargs`` for a
            name that is not among ``refs``.
    """
    from nas.baselines import list_models, width_kwargs

    if not refs:
        raise ValueError("no model to evaluate: give at least one RUN_OR_NAME")
    per_name = {str(k): dict(v) for k, v in (model_kwargs or {}).items()}
    names = {str(r) for r in refs if not isinstance(r, ResolvedModel)}
    unused = sorted(set(per_name) - names)
    if unused:
        raise ValueError(
            f"model_kwargs for {unused}, which are not among the models {sorted(names)}"
        )
    if channels is not None and not any(width_kwargs(n, channels) for n in names):
        raise ValueError(
            f"--channels sets the width of the registry models that have one "
            f"({', '.join(n for n in list_models() if width_kwargs(n, 1))}); none given "
            f"({sorted(names)})"
        )
    out: list[ResolvedModel] = []
    for ref in refs:
        if isinstance(ref, ResolvedModel):
            out.append(ref)
            continue
        kw = {**width_kwargs(str(ref), channels), **per_name.get(str(ref), {})}
        out.append(resolve_model(ref, allow_classical=True, **kw))
    seen: dict[str, int] = {}
    for r in out:  # unique row names
        n = seen.get(r.name, 0) + 1
        seen[r.name] = n
        if n > 1:
            r.name = f"{r.name}#{n}"
    return out


def check_trained(models: Sequence[ResolvedModel], allow_untrained: bool, log: Log) -> list[str]:
    """Names of the untrained models: an :class:`UntrainedModelError` unless
    ``allow_untrained``, otherwise a warning (also through ``log``)."""
    untrained = [r.name for r in models if not r.trained]
    if untrained and not allow_untrained:
        raise UntrainedModelError(
            f"untrained model(s): {', '.join(untrained)}. Their quality numbers would say "
            "nothing about the architecture: pass a training run folder (or its model .pt) "
            "for each, e.g. `python -m nas.train --arch NAME` first, or --allow-untrained "
            "(allow_untrained=True) to evaluate them anyway, flagged"
        )
    if untrained:
        msg = (
            f"WARNING: untrained model(s) {', '.join(untrained)}: random weights, their "
            "quality numbers are meaningless (latency, params and FLOPs are valid)"
        )
        warnings.warn(msg, stacklevel=3)
        log(msg)
    return untrained


def is_derived(model: torch.nn.Module) -> bool:
    arch = getattr(model, "arch", None)
    return arch is not None and hasattr(arch, "channels") and hasattr(arch, "misaligned")


def genotype_text(r: ResolvedModel) -> str:
    g = r.genotype
    if g is None and (r.arch or {}).get("kind") == "registry":
        from nas.genotype import REFERENCE_GENOTYPES

        g = REFERENCE_GENOTYPES.get(str(r.arch.get("name")))
    if g is None:
        return ""
    width = getattr(getattr(r.model, "arch", None), "channels", g.arch.channels)
    return f"C{width}: " + " ".join(op for _, op in g.ops)


def default_out_dir(names: Sequence[str]) -> Path:
    """``results/eval/<model names joined by _>`` (shortened with a hash when long)."""
    joined = "_".join(slug(n, 24) for n in names)
    if len(joined) > 64:
        h = hashlib.sha1(joined.encode()).hexdigest()[:8]
        joined = f"{joined[:55].rstrip('_-')}-{h}"
    return EVAL_DIR / joined
