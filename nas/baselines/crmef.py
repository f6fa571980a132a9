"""CRMEF's own published derived networks as fixed baselines (retrained here like the others).

``crmef-general`` and ``crmef-misaligned`` are the two genotypes the authors released (see
:data:`nas.genotype.REFERENCE_GENOTYPES`), built by the same derived-net builder as the
genotypes this toolkit searches. ``channels`` (default 64, the paper's "C64") sets the width;
``style`` (default ``authors``: the authors' released code, 1,879,330 parameters for the general
net at C = 64) can be ``lean`` (this toolkit's smaller form, see :class:`nas.space.ArchConfig`).
"""

from __future__ import annotations

import dataclasses

from torch import nn

from nas.baselines.registry import register_model
from nas.genotype import CRMEF_GENERAL, CRMEF_MISALIGNED, Genotype, build

_PAPER = "Liu et al., Searching a Compact Architecture for Robust MEF (CRMEF), TCSVT 2024"


@register_model(
    "crmef-general",
    paper=_PAPER,
    color_space="rgb",
    loss="crmef",
    group="crmef",
    width_param="channels",
)
def crmef_general(channels: int = 64, style: str = "authors") -> nn.Module:
    """General scenes: relighting slots all 3x3 conv; detail RDConv, RDConv, RConv, RConv."""
    return build(_at(CRMEF_GENERAL.with_channels(channels), style))


@register_model(
    "crmef-misaligned",
    paper=_PAPER,
    color_space="rgb",
    loss="crmef",
    group="crmef",
    width_param="channels",
    misaligned=True,
)
def crmef_misaligned(channels: int = 64, style: str = "authors") -> nn.Module:
    """Misaligned scenes: deformable alignment (5x5 x3, 3x3) before the detail module."""
    return build(_at(CRMEF_MISALIGNED.with_channels(channels), style))


def _at(genotype: Genotype, style: str) -> Genotype:
    return dataclasses.replace(genotype, arch=dataclasses.replace(genotype.arch, style=style))
