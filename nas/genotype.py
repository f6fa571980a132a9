"""Genotypes: the searched architecture as a printable, hashable value.

A :class:`Genotype` records the space it came from, the architecture options (width,
cascades, relighting mode, alignment module) and one op per slot. It round-trips through
YAML, derives from a supernet (argmax of alpha per slot), builds the compact network from the
same ops registry (:func:`build`), carries a supernet's weights over to that network
(:func:`extract`), and draws itself as a graph of modules (:meth:`Genotype.to_networkx`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
import torch
import yaml
from torch import nn

from nas.ops import Unit, create_op, get_op_spec, list_ops
from nas.space import ArchConfig
from nas.supernet import CRMEFNet, Supernet
from nas.utils import atomic_write_text


class GenotypeError(ValueError):
    """A genotype file or mapping is invalid; the message names the source and the key."""


@dataclass(frozen=True)
class Genotype:
    """One op per slot of the CRMEF hyper-architecture.

    Attributes:
        space: name of the search space it was derived from (informational).
        arch: width, cascades, relighting mode, alignment module.
        ops: ``((slot, op), ...)`` in forward order of ``arch.slots``.
    """

    space: str
    arch: ArchConfig
    ops: tuple[tuple[str, str], ...]

    def __post_init__(self) -> None:
        slots = tuple(s for s, _ in self.ops)
        if slots != self.arch.slots:
            raise GenotypeError(
                f"genotype slots {list(slots)} do not match the architecture's "
                f"{list(self.arch.slots)} (misaligned={self.arch.misaligned})"
            )
        for slot, op in self.ops:
            try:
                get_op_spec(op)
            except KeyError:
                raise GenotypeError(
                    f"slot {slot!r}: unknown op {op!r}; valid ops: {list_ops()}"
                ) from None

    def __getitem__(self, slot: str) -> str:
        return dict(self.ops)[slot]

    def __str__(self) -> str:
        body = ", ".join(f"{s}={o}" for s, o in self.ops)
        return f"Genotype({self.space}, C={self.arch.channels}, {body})"

    @property
    def choice(self) -> dict[str, str]:
        return dict(self.ops)

    def with_channels(self, channels: int) -> Genotype:
        return dataclasses.replace(self, arch=dataclasses.replace(self.arch, channels=channels))

    # --- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"space": self.space, **dataclasses.asdict(self.arch), "ops": dict(self.ops)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> Genotype:
        if not isinstance(data, Mapping):
            raise GenotypeError(f"{source}: expected a mapping, got {type(data).__name__}")
        arch = ArchConfig.parse(data, {"space", "ops"}, source, GenotypeError)
        if not isinstance(data.get("ops"), Mapping):
            raise GenotypeError(f"{source}: 'ops' must map slot names to op names")
        ops = data["ops"]
        missing = [s for s in arch.slots if s not in ops]
        extra = sorted(set(ops) - set(arch.slots))
        if missing or extra:
            raise GenotypeError(
                f"{source}: slots missing {missing}, unknown {extra}; expected {list(arch.slots)}"
            )
        try:
            return cls(
                str(data.get("space", "custom")), arch, tuple((s, ops[s]) for s in arch.slots)
            )
        except GenotypeError as e:
            raise GenotypeError(f"{source}: {e}") from None

    def to_yaml(self, path: str | Path | None = None) -> str:
        """YAML text; written atomically to ``path`` when given."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            atomic_write_text(Path(path), text)
        return text

    @classmethod
    def from_yaml(cls, path: str | Path) -> Genotype:
        """Load a genotype file; errors name the file and the bad key."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"genotype file not found: {p}")
        return cls.from_yaml_text(p.read_text(), source=str(p))

    @classmethod
    def from_yaml_text(cls, text: str, source: str = "<yaml text>") -> Genotype:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise GenotypeError(f"{source}: not valid YAML: {e}") from None
        return cls.from_dict(data, source=source)

    # --- graph ---------------------------------------------------------------------------
    def to_networkx(self) -> nx.DiGraph:
        """The derived network as a directed graph of its modules.

        Nodes are the inputs (``under``, ``over``), every profiled unit (slot ops and fixed
        parts, by module path, with attributes ``op``, ``C_in``, ``C_out``, ``slot``) and the
        output; edges follow the data flow, traced with ``torch.fx`` with units as leaves.
        """
        return module_graph(build(self))


class _UnitTracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, Unit) or super().is_leaf_module(m, qualname)


def module_graph(net: CRMEFNet) -> nx.DiGraph:
    """Trace ``net`` (units as leaves) into a graph of units, inputs and the output."""
    graph = _UnitTracer().trace(net)
    modules = dict(net.named_modules())
    g = nx.DiGraph()
    sources: dict[torch.fx.Node, set[str]] = {}
    for node in graph.nodes:
        preds: set[str] = set()
        for arg in node.all_input_nodes:
            preds |= sources.get(arg, set())
        if node.op == "placeholder" or node.op == "call_module" or node.op == "output":
            name = node.target if node.op == "call_module" else node.name
            if node.op == "call_module":
                m = modules[node.target]
                g.add_node(name, op=m.op_name, C_in=m.C_in, C_out=m.C_out)
            else:
                g.add_node(name, op=node.op)
            g.add_edges_from((p, name) for p in preds)
            sources[node] = {name}
        else:
            sources[node] = preds
    return g


# --- building derived networks ----------------------------------------------------------


def build(genotype: Genotype) -> CRMEFNet:
    """The compact derived network: each slot is the chosen op from the registry."""
    choice = genotype.choice
    style = genotype.arch.style
    return CRMEFNet(
        genotype.arch, lambda slot, ci, co: create_op(choice[slot], ci, co, style=style)
    )


def derive(supernet: Supernet) -> Genotype:
    """Argmax of alpha per slot (and per choice, for a space with ``choices``)."""
    space = supernet.space
    ops = tuple(
        (s, space.candidates[s][int(torch.argmax(supernet.alpha(s)).item())]) for s in space.slots
    )
    return Genotype(space.name, supernet.derived_arch(), ops)


def extract(supernet: Supernet, genotype: Genotype | None = None) -> CRMEFNet:
    """The derived network of ``genotype`` (default: :func:`derive`) with the supernet's weights.

    Every weight of the chosen ops and of the fixed parts is copied; at a one-hot alpha the
    supernet and the returned network compute the same function.
    """
    genotype = genotype or derive(supernet)
    if hasattr(supernet, "variant"):  # a ChoiceSupernet: the chosen variant's weights
        supernet = supernet.variant(genotype.arch)
    net = build(genotype)
    src = supernet.state_dict()
    prefix_map: dict[str, str] = {}
    for path, m in supernet.mixed_ops():
        prefix_map[f"{path}.ops.{genotype[m.slot]}."] = f"{path}."
    state = {}
    for key, value in src.items():
        if key.startswith("alphas."):
            continue
        mapped = None
        for sp, dp in prefix_map.items():
            if key.startswith(sp):
                mapped = dp + key[len(sp) :]
                break
        if mapped is None and ".ops." in key:
            continue  # a candidate that was not chosen
        state[mapped or key] = value
    net.load_state_dict(state, strict=True)
    return net


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- the published reference genotypes (the authors' released derived networks) --------

_REF_ARCH = ArchConfig(
    channels=64, cascades=2, relight="multiply", misaligned=False, style="authors"
)

CRMEF_GENERAL = Genotype(
    "crmef-general",
    _REF_ARCH,
    (
        ("srsm.feat1", "conv_3"),
        ("srsm.feat2", "conv_3"),
        ("srsm.conv", "conv_3"),
        ("drm.0", "resdilconv_3"),
        ("drm.1", "resdilconv_3"),
        ("drm.2", "resconv_3"),
        ("drm.3", "resconv_3"),
    ),
)
"""General scenes: relighting slots all 3x3 conv; detail slots RDConv, RDConv, RConv, RConv."""

CRMEF_MISALIGNED = Genotype(
    "crmef-misaligned",
    dataclasses.replace(_REF_ARCH, misaligned=True),
    (
        ("srsm.feat1", "conv_3"),
        ("srsm.feat2", "conv_3"),
        ("srsm.conv", "dilconv_3"),
        ("dasm.l3", "deform_5"),
        ("dasm.l2", "deform_5"),
        ("dasm.l1", "deform_5"),
        ("dasm.cascade", "deform_3"),
        ("drm.0", "resconv_3"),
        ("drm.1", "resdilconv_3"),
        ("drm.2", "resdilconv_3"),
        ("drm.3", "resconv_3"),
    ),
)
"""Misaligned scenes: alignment deform 5x5 x3 + 3x3; relighting conv3, conv3, dilconv3;
detail RConv, RDConv, RDConv, RConv."""

REFERENCE_GENOTYPES: dict[str, Genotype] = {
    "crmef-general": CRMEF_GENERAL,
    "crmef-misaligned": CRMEF_MISALIGNED,
}
