"""Does bf16 autocast of the weight step change the derived genotype beyond seed noise?

Runs the same search (``--preset``, default ``tiny``) with ``amp: off`` and ``amp: bf16`` for
each of ``--seeds``, and counts the slots whose derived op differs:

* **amp effect**: fp32 vs bf16 at the same seed (same data, same initial weights);
* **seed noise**: fp32 at one seed vs fp32 at another.

bf16 is within noise when the mean amp effect is no larger than the mean seed noise. The
latency penalty is the preset's (``eta``, default 0.5, with the local table; rows it lacks are
profiled first).

    python benchmarks/amp_genotype.py --device cuda
    python benchmarks/amp_genotype.py --device cpu --seeds 0 1 2

Writes ``results/amp/<device>-<preset>.md`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from nas.config import from_mapping  # noqa: E402
from nas.genotype import Genotype  # noqa: E402
from nas.search import PRESETS, SearchConfig, run_search  # noqa: E402
from nas.utils import atomic_write_text, resolve_device  # noqa: E402


def search(preset: str, amp: str, seed: int, eta: float, device: str, runs: Path) -> Genotype:
    cfg = from_mapping(SearchConfig, PRESETS[preset], f"preset {preset!r}")
    cfg = from_mapping(
        SearchConfig,
        dict(
            amp=amp,
            seed=seed,
            eta=eta,
            device=device,
            runs_dir=str(runs),
            run_name=f"{amp}-s{seed}",
        ),
        "amp_genotype",
        cfg,
    )
    path = run_search(cfg, progress=False)
    return Genotype.from_yaml(path / "genotype.yaml")


def differing(a: Genotype, b: Genotype) -> int:
    """Slots whose op differs."""
    return sum(x != y for x, y in zip(a.ops, b.ops))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--eta", type=float, default=0.5)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    t0 = time.perf_counter()
    found: dict[tuple[str, int], Genotype] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for amp in ("off", "bf16"):
                found[amp, seed] = search(args.preset, amp, seed, args.eta, str(device), Path(tmp))
    effect = [differing(found["off", s], found["bf16", s]) for s in args.seeds]
    noise = [
        differing(found["off", a], found["off", b])
        for a, b in itertools.combinations(args.seeds, 2)
    ]
    slots = len(found["off", args.seeds[0]].ops)
    if not noise:
        verdict = "not judged (one seed gives no noise estimate)"
    elif statistics.mean(effect) <= statistics.mean(noise):
        verdict = "within seed noise"
    else:
        verdict = "beyond seed noise"
    lines = [
        f"# bf16 weight step vs fp32: derived genotypes, preset {args.preset}, eta {args.eta:g}",
        "",
        f"device {device}; {slots} slots; {time.perf_counter() - t0:.0f} s; command: "
        "`python benchmarks/amp_genotype.py "
        + " ".join(sys.argv[1:] if argv is None else argv)
        + "`",
        "",
        "| seed | fp32 genotype | bf16 genotype | slots differing |",
        "|---:|---|---|---:|",
    ]
    for s, e in zip(args.seeds, effect):
        ops32 = " ".join(op for _, op in found["off", s].ops)
        ops16 = " ".join(op for _, op in found["bf16", s].ops)
        lines.append(f"| {s} | {ops32} | {ops16} | {e} |")
    lines += [
        "",
        f"- amp effect (fp32 vs bf16, same seed): mean {statistics.mean(effect):.2f} of {slots} "
        f"slots ({effect})",
        f"- seed noise (fp32, seed vs seed): mean {statistics.mean(noise or [0]):.2f} of {slots} "
        f"slots ({noise})",
        f"- verdict: bf16 is **{verdict}**",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    out = args.out or ROOT / "results" / "amp" / f"{device.type}-{args.preset}.md"
    atomic_write_text(out, text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
