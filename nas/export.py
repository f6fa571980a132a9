"""``python -m nas.export RUN``: derive and export the compact network of a search run.

From the run's last complete checkpoint: the genotype (``genotype.yaml``), the derived
network's weights inherited from the supernet (``derived_init.pt``: a state dict plus the
genotype, the starting point for retraining), and ``export.yaml`` with its parameter count,
MACs (thop) and FLOPs (torch's FlopCounterMode, interpolation and deformable sampling
counted), and the latency predicted by this device's table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

from nas.genotype import Genotype, count_parameters, extract
from nas.runs import RunDir, RunError
from nas.space import SearchSpace
from nas.supernet import Supernet
from nas.utils import atomic_torch_save, atomic_write_text


def load_search_run(path: str | Path) -> tuple[RunDir, Supernet, dict[str, Any]]:
    """The run folder, its supernet restored from the last checkpoint, and its config."""
    run = RunDir(path, resume=True)
    cfg = run.load_config()
    space_file = run.path / "space.yaml"
    if not space_file.is_file():
        raise RunError(f"{space_file} is missing: {run.path} is not a search run")
    space = SearchSpace.from_yaml(space_file)
    ckpt = run.load_checkpoint("last")
    if ckpt is None:
        raise RunError(f"{run.path} has no checkpoint yet (checkpoints/last.pt)")
    net = Supernet(space)
    net.load_state_dict(ckpt["task"]["supernet"])
    return run, net, cfg


def size_report(net: torch.nn.Module, input_size: tuple[int, int]) -> dict[str, Any]:
    """Parameters, thop MACs and FlopCounterMode FLOPs of a two-input model at batch 1."""
    from nas.flops import count_flops, count_macs_thop

    return {
        "params": count_parameters(net),
        "input_size": list(input_size),
        "macs_thop": int(count_macs_thop(net, input_size)),
        "flops": int(count_flops(net, input_size).total_flops),
    }


def predicted_latency(
    genotype: Genotype, input_size: tuple[int, int], cfg: dict[str, Any]
) -> dict[str, Any]:
    """Table-predicted latency of the derived net, or the reason it is not available."""
    try:
        from nas.latency import LatencyTable, predict

        table = LatencyTable.load(
            path=cfg.get("latency_table"),
            device=cfg.get("latency_device") or cfg.get("device"),
            allow_foreign=bool(cfg.get("allow_foreign_table")),
        )
        return {"predicted_ms": float(predict(genotype, input_size, table)), "table": table.name}
    except Exception as e:  # noqa: BLE001 - report, do not fail the export
        return {"predicted_ms": None, "table": None, "note": f"{type(e).__name__}: {e}"}


def export_run(path: str | Path, max_skip: int | None = None) -> dict[str, Any]:
    """Derive the run's genotype and write genotype.yaml, derived_init.pt, export.yaml."""
    from nas.search import derive_genotype

    run, net, cfg = load_search_run(path)
    if max_skip is None:
        max_skip = cfg.get("max_skip")
    genotype = derive_genotype(net, max_skip)
    derived = extract(net, genotype)
    genotype.to_yaml(run.path / "genotype.yaml")
    atomic_torch_save(
        {"genotype": genotype.to_dict(), "state_dict": derived.state_dict()},
        run.path / "derived_init.pt",
    )
    size = int(cfg.get("latency_input") or cfg.get("crop") or 128)
    report: dict[str, Any] = {
        "run": str(run.path),
        "genotype": genotype.to_dict(),
        **size_report(derived, (size, size)),
        **predicted_latency(genotype, (size, size), cfg),
    }
    atomic_write_text(run.path / "export.yaml", yaml.safe_dump(report, sort_keys=False))
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nas.export", description=__doc__)
    p.add_argument("run", help="a search run folder (results/runs/<name>)")
    p.add_argument("--max-skip", type=int, help="cap parameter-free ops at derivation")
    args = p.parse_args(argv)
    try:
        report = export_run(args.run, args.max_skip)
    except (RunError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(yaml.safe_dump(report, sort_keys=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
