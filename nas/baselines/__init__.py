"""Fixed (hand-designed) MEF networks the searched ones are compared against, and their registry.

Importing this package registers the four baselines of BASELINES.md::

    mef-cl      MEFCL      RGB end to end, dense 10-layer net            661,379 params
    ffmef       FFMEF      Y channel, per-pixel predicted filters          7,662 params
    lcndr       LCNDR      Y channel, CEM + SAM + ERM (reconstruction)   100,955 params
    hyperp-mb   HyperPMB   CIELAB L channel, DenseFuse                    88,225 params

Usage (timm style)::

    from nas.baselines import create_model, list_models
    model = create_model("ffmef")            # forward(under, over) -> fused, RGB in [0, 1]
    list_models()                            # every registered name
    get_model_info("ffmef").loss             # "ffmef": the paper's loss in nas.losses

Further models (the CRMEF genotypes) register themselves with :func:`register_model`. The
classical methods of :mod:`nas.classical` (``mertens``, ``average``) are registered with
``kind="classical"``: ``list_models(kind="network")`` lists only the networks,
``create_model`` refuses a classical name and ``create_fusion`` builds either kind.
"""

from __future__ import annotations

from nas.baselines import crmef as _crmef  # noqa: F401  (registers crmef-*)
from nas.baselines.ffmef import FFMEF
from nas.baselines.hyperp_mb import HyperPMB
from nas.baselines.lcndr import LCNDR
from nas.baselines.mef_cl import MEFCL
from nas.baselines.registry import (
    ModelInfo,
    create_fusion,
    create_model,
    get_model_info,
    is_classical,
    is_model,
    list_models,
    register_model,
    registry_info,
    width_kwargs,
)

__all__ = [
    "FFMEF",
    "HyperPMB",
    "LCNDR",
    "MEFCL",
    "ModelInfo",
    "create_fusion",
    "create_model",
    "get_model_info",
    "registry_info",
    "width_kwargs",
    "is_classical",
    "is_model",
    "list_models",
    "register_model",
]
