"""The black-box baseline: one NSGA-II trial proxy-trains a genotype sampled directly from the
search space and scores it by its validation PSNR and table-predicted latency; genotypes the
sampler proposes again reuse their first score."""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.sweep.trials import (
    TrialContext,
    _genotype_str,
    _latency_attrs,
    _resumable,
    best_val_quality,
)
from nas.utils import size_text


def evaluated(study: optuna.Study, params: Mapping[str, Any], number: int) -> FrozenTrial | None:
    """A complete trial (not ``number``) with the same parameters, or None.

    NSGA-II proposes genotypes it has already evaluated (small spaces, converged
    populations); their scores are reused instead of training them again.
    """
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.number != number and t.params == dict(params) and "cached_from" not in t.user_attrs:
            return t
    return None


def run_nsga2_trial(number: int, choice: Mapping[str, str], ctx: TrialContext) -> dict:
    """Proxy-train the genotype ``choice`` (slot -> op); returns values (PSNR, latency ms).

    The latency objective is the table prediction when this worker has a table, else the
    measurement; both are stored as user attributes.
    """
    from nas.genotype import Genotype, build
    from nas.latency import predict
    from nas.train import run_train
    from nas.utils import resolve_device

    sc, opts = ctx.sc, ctx.opts
    t0 = time.perf_counter()
    space = sc.space_obj()
    g = Genotype(space.name, space.arch, tuple((s, choice[s]) for s in space.slots))
    prev = _resumable(ctx.user_attrs.get("run_dir"))
    name = prev.name if prev else f"{opts.study}-t{number:03d}"
    runs_dir = Path(prev.parent) if prev else Path(opts.runs_dir)
    arch_file = runs_dir / name / "genotype.yaml"
    g.to_yaml(arch_file)
    ctx.set_attr("run_dir", str(runs_dir / name))
    tcfg = sc.train_config(
        str(arch_file), sc.proxy_epochs, run_name=name, runs_dir=str(runs_dir), device=opts.device
    )
    run = run_train(tcfg, resume=prev is not None, progress=opts.progress)
    device = resolve_device(opts.device)
    size = sc.latency_input()
    attrs: dict[str, Any] = {
        "run_dir": str(run),
        "genotype": _genotype_str(g),
        "genotype_yaml": g.to_yaml(),
        "latency_input": size_text(size),
        "device": str(device),
        "host": socket.gethostname(),
        "quality_source": f"proxy training ({sc.proxy_epochs} epochs, crmef loss), best val",
    }
    attrs["proxy_quality"], attrs["quality_metric"] = best_val_quality(run)
    attrs.update(_latency_attrs(sc, build(g), size, device))
    attrs["predicted_ms"] = None
    if ctx.table is not None:
        attrs["predicted_ms"] = float(predict(g, size, ctx.table))
        attrs["latency_table"] = ctx.table.name
    attrs["latency_source"] = "table" if attrs["predicted_ms"] is not None else "measured"
    latency = attrs["predicted_ms"] if attrs["predicted_ms"] is not None else attrs["measured_ms"]
    attrs["wall_s"] = round(time.perf_counter() - t0, 2)
    return {"values": [attrs["proxy_quality"], latency], "attrs": attrs}
