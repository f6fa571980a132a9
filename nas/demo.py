"""``python -m nas.demo``: the pipeline that exists, small, on photos bundled with scikit-image.

Steps: synthesise an under/over-exposed pair from a bundled photo, run the supernet of the
tiny and the general CRMEF space, derive a compact network and run it, and print shapes,
parameter counts and forward time on this machine.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from nas.genotype import REFERENCE_GENOTYPES, build, count_parameters, derive, extract
from nas.space import load_space
from nas.supernet import Supernet


def bundled_pair(size: int = 128, ev: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """An exposure pair from ``skimage.data.astronaut``: radiance scaled by 2^-ev and 2^+ev.

    Returns under, over: (1, 3, size, size) in [0, 1] (gamma 2.2 response, clipped, 8-bit).
    """
    from skimage import data
    from skimage.transform import resize

    photo = resize(data.astronaut(), (size, size), anti_aliasing=True)
    linear = np.clip(photo, 0, 1) ** 2.2

    def expose(k: float) -> torch.Tensor:
        img = np.round(np.clip(linear * 2.0**k, 0, 1) ** (1 / 2.2) * 255) / 255
        return torch.from_numpy(img).permute(2, 0, 1)[None].float()

    return expose(-ev), expose(ev)


def _time_forward(net: torch.nn.Module, u: torch.Tensor, o: torch.Tensor, reps: int = 5) -> float:
    net.eval()
    with torch.inference_mode():
        net(u, o)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            net(u, o)
            times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nas.demo", description=__doc__)
    parser.add_argument("--size", type=int, default=128, help="pair size in pixels")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    dev = torch.device(args.device)
    u, o = (t.to(dev) for t in bundled_pair(args.size))
    print(f"pair from skimage.data.astronaut: under mean {u.mean():.3f}, over mean {o.mean():.3f}")
    print(f"device {dev}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    for name in ("tiny", "crmef"):
        space = load_space(name)
        net = Supernet(space).to(dev)
        y = net(u, o)
        g = derive(net)
        derived = extract(net, g).to(dev)
        print(
            f"\n[{name}] supernet: {count_parameters(net):,} params, output {tuple(y.shape)}, "
            f"{_time_forward(net, u, o):.1f} ms/forward"
        )
        print(f"[{name}] derived at init: {g}")
        print(
            f"[{name}] derived net: {count_parameters(derived):,} params, "
            f"{_time_forward(derived, u, o):.1f} ms/forward"
        )
    for name, g in REFERENCE_GENOTYPES.items():
        net = build(g).to(dev)
        print(
            f"\n[{name}] published genotype (C={g.arch.channels}): "
            f"{count_parameters(net):,} params, {_time_forward(net, u, o):.1f} ms/forward"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
