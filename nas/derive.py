"""Derivation: the discrete network a supernet's architecture weights (alpha) choose.

:func:`derive_genotype` takes the argmax op of every slot (:func:`nas.genotype.derive`),
optionally capping the number of parameter-free ops (P-DARTS' ``max_skip``).
:func:`derive_run` does it for a finished (or running) search run: it writes the run's
``genotype.yaml``, ``derived_init.pt`` (the derived net's weights inherited from the supernet)
and ``export.yaml`` (size, MACs, FLOPs, table-predicted latency).

Library code: :mod:`nas.search` (end of a search, per-epoch genotypes), :mod:`nas.export`
and anything else that derives import it from here (``nas.search`` re-exports the names).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from nas.genotype import Genotype, derive, extract
from nas.ops import get_op_spec
from nas.runs import Run, RunDir, RunError
from nas.space import SearchSpace
from nas.supernet import Supernet, make_supernet
from nas.utils import atomic_torch_save, atomic_write_text

if TYPE_CHECKING:
    from nas.search import SearchConfig

__all__ = ["derive_genotype", "derive_run", "load_search_run", "predicted_latency"]


def derive_genotype(supernet: Supernet, max_skip: int | None = None) -> Genotype:
    """Argmax per slot; with ``max_skip``, at most that many parameter-free ops (P-DARTS).

    Slots beyond the cap whose skip op is least confident (lowest softmax weight) get their
    best weighted op that is not parameter-free.
    """
    g = derive(supernet)
    if max_skip is None:
        return g
    weights = {s: w.detach() for s, w in supernet.softmax_weights().items()}
    cand = supernet.space.candidates
    skips = [(float(weights[s].max()), s) for s, op in g.ops if get_op_spec(op).parameter_free]
    choice = g.choice
    for _, slot in sorted(skips)[: max(0, len(skips) - max_skip)]:
        ranked = sorted(zip(weights[slot].tolist(), cand[slot]), reverse=True)
        alt = [op for _, op in ranked if not get_op_spec(op).parameter_free]
        if alt:
            choice[slot] = alt[0]
    return dataclasses.replace(g, ops=tuple((s, choice[s]) for s, _ in g.ops))


def load_search_run(path: str | Path) -> tuple[Run, Supernet]:
    """The search run and its supernet restored from the last checkpoint."""
    run = Run.load(path)
    if run.kind != "search":
        raise RunError(f"{run.path} is a {run.kind} run, not a search run")
    space_file = run.path / "space.yaml"
    if not space_file.is_file():
        raise RunError(f"{space_file} is missing: {run.path} is not a search run")
    space = SearchSpace.from_yaml(space_file)
    ckpt = RunDir(run.path, resume=True).load_checkpoint("last")
    if ckpt is None:
        raise RunError(f"{run.path} has no checkpoint yet (checkpoints/last.pt)")
    net = make_supernet(space)
    net.load_state_dict(ckpt["task"]["supernet"])
    return run, net


def predicted_latency(genotype: Genotype, cfg: SearchConfig) -> dict[str, Any]:
    """Table-predicted latency of the derived net at the run's
    :func:`nas.search.latency_size`, or the reason it is not available."""
    # nas.search imports this module: its helpers are imported when called
    from nas.search import latency_size, load_search_table

    try:
        from nas.latency import predict

        table = load_search_table(cfg, None if cfg.device == "auto" else cfg.device)
        ms = predict(genotype, latency_size(cfg), table)
        return {"predicted_ms": float(ms), "table": table.name}
    except Exception as e:  # noqa: BLE001 - report, do not fail the derivation
        return {"predicted_ms": None, "table": None, "note": f"{type(e).__name__}: {e}"}


def derive_run(
    path: str | Path, max_skip: int | None = None, supernet: Supernet | None = None
) -> dict[str, Any]:
    """Derive a search run's network: write ``genotype.yaml``, ``derived_init.pt`` (the
    derived net's weights inherited from the supernet, with its genotype) and ``export.yaml``
    (genotype, parameters, MACs, FLOPs, predicted latency at the run's latency size).

    Args:
        path: the search run folder.
        max_skip: cap on parameter-free ops (default: the run's ``max_skip``).
        supernet: the run's trained supernet when it is in memory (the end of
            :func:`nas.search.run_search`); default: restored from the last checkpoint.
    """
    from nas.flops import size_report
    from nas.search import SearchConfig, latency_size

    if supernet is None:
        run, supernet = load_search_run(path)
    else:
        run = Run.load(path)
    cfg = run.config_as(SearchConfig)
    genotype = derive_genotype(supernet, cfg.max_skip if max_skip is None else max_skip)
    target_note = None
    if cfg.target_ms and getattr(supernet, "choices", None):
        genotype, target_note = _meet_target(supernet, genotype, cfg)
    derived = extract(supernet, genotype).cpu()
    genotype.to_yaml(run.path / "genotype.yaml")
    atomic_torch_save(
        {"genotype": genotype.to_dict(), "state_dict": derived.state_dict()},
        run.path / "derived_init.pt",
    )
    size = latency_size(cfg)
    sizes, problem = size_report(derived, size)
    report: dict[str, Any] = {
        "run": str(run.path),
        "genotype": genotype.to_dict(),
        "params": int(sizes["params"]),
        "input_size": list(size),
        "macs_thop": _int_or_none(sizes["macs"]),
        "flops": _int_or_none(sizes["flops"]),
        **({"size_note": problem} if problem else {}),
        **predicted_latency(genotype, cfg),
        **({"target": target_note} if target_note else {}),
    }
    atomic_write_text(run.path / "export.yaml", yaml.safe_dump(report, sort_keys=False))
    return report


def _meet_target(
    supernet: Any, genotype: Genotype, cfg: SearchConfig
) -> tuple[Genotype, dict[str, Any]]:
    """With a target latency and searched choices, the derived net is the most probable one
    (ops and choices) whose predicted latency meets the target: within +-15 % for ``abs`` and
    ``log``, at most the target for ``hinge``; when none does, the closest."""
    from nas.latency.predict import derive_for_target
    from nas.search import latency_size, load_search_table

    table = load_search_table(cfg, None if cfg.device == "auto" else cfg.device)
    tol = (0.0, None) if cfg.latency_penalty == "hinge" else (0.15, 0.15)
    return derive_for_target(supernet, genotype, table, latency_size(cfg), cfg.target_ms, tol)


def _int_or_none(v: float) -> int | None:
    return None if v != v else int(v)
