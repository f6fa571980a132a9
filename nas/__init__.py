"""mef-nas: hardware-aware neural architecture search for multi-exposure image fusion.

The package is organised around one ops registry (:mod:`nas.ops`) that builds every
candidate operation, in the supernet (:mod:`nas.supernet`), in the derived networks
(:mod:`nas.genotype`) and in the latency profiler (:mod:`nas.latency`).
"""

from __future__ import annotations

__version__ = "0.1.0"
