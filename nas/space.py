"""Search spaces: YAML files -> validated, frozen dataclasses.

A search space names the hyper-architecture's options (width, SRSM cascade count, how the
relighting map is applied, whether the deformable alignment module is present) and, for each
searchable slot, the candidate ops from the registry. Example (``nas/spaces/crmef.yaml``)::

    name: crmef
    channels: 32
    cascades: 2
    relight: multiply
    misaligned: false
    slots:
      srsm.feat1: [conv_1, conv_3, conv_5, conv_7, dilconv_3, dilconv_5, dilconv_7]
      ...

Slot names are fixed by the hyper-architecture (:data:`SRSM_SLOTS`, :data:`DASM_SLOTS`,
:data:`DRM_SLOTS`); unknown keys, unknown slots and unknown ops are errors that list the valid
choices.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nas.ops import STYLES, get_op_spec, list_ops

SRSM_SLOTS: tuple[str, ...] = ("srsm.feat1", "srsm.feat2", "srsm.conv")
"""Scene relighting: feature op at full scale, op after max/avg pooling, refinement op."""
DASM_SLOTS: tuple[str, ...] = ("dasm.l3", "dasm.l2", "dasm.l1", "dasm.cascade")
"""Deformable alignment: pyramid levels 1/4, 1/2, 1/1, then the cascading alignment."""
DRM_SLOTS: tuple[str, ...] = ("drm.0", "drm.1", "drm.2", "drm.3")
"""Detail repletion: four ops with residual connections around pairs."""

RELIGHT_MODES = ("multiply", "divide")
HEADS = ("crmef", "pyramid", "fast")
PYRAMID_HEADS = ("pyramid", "fast")
"""Heads that blend a Laplacian pyramid of the whole image: a net with one must run whole (tiles
would each build their own pyramid), and its exported graph follows the pyramid's shape."""
SCALES = (1, 2, 4, 8, 16)
CHOOSABLE = ("scale", "channels", "head")
"""The :class:`ArchConfig` fields a space may search (its ``choices``), in variant order."""
SPACES_DIR = Path(__file__).resolve().parent / "spaces"
"""The shipped spaces: package data (``nas/spaces/*.yaml``), found the same way from a source
checkout and from an installed wheel."""


def shipped_spaces() -> list[str]:
    """Names of the spaces shipped with the package (``load_space`` takes them bare)."""
    return sorted(f.stem for f in SPACES_DIR.glob("*.yaml"))


class SpaceError(ValueError):
    """A search-space file or mapping is invalid; the message names the key and the file."""


def slot_names(misaligned: bool) -> tuple[str, ...]:
    """The slots of the hyper-architecture, in forward order."""
    return SRSM_SLOTS + (DASM_SLOTS if misaligned else ()) + DRM_SLOTS


@dataclass(frozen=True)
class ArchConfig:
    """The non-searchable options shared by a space, its supernet and its derived nets.

    Attributes:
        channels: feature width C of every module.
        cascades: SRSM sub-modules per image (the paper uses 2).
        relight: how the SRSM applies its illumination map: ``"multiply"`` (I * L, the
            paper's Eq. 1 and the authors' code) or ``"divide"`` (I / max(L, eps), the
            Retinex form). It does not change the detail module's head: that divides by its
            map in the lean style and in the authors' aligned network, while the authors'
            network after alignment ends in ``sigmoid(conv1x1(input * x))``, no division.
        misaligned: include the deformable alignment module (DASM).
        style: how the modules and ops are built. ``authors``: as the CRMEF authors'
            released code builds them (:mod:`nas.modules_authors`, :mod:`nas.ops.authors`:
            PReLU, BatchNorm + PReLU after every detail slot, residual ops with a fixed 3x3
            convolution, the detail module at 2C); the published general net is C = 64.
            ``lean``: this toolkit's smaller form (LeakyReLU inside every op, residual ops
            of one convolution, every module at C). Files without the key are ``lean``.
        head: how the fused image is made. ``crmef`` (the paper's): the detail module's
            illumination head. ``pyramid``: the detail module's features predict a
            correction of Mertens' weight map per exposure and pyramid level, and the output
            is a Laplacian-pyramid blend of the input exposures (:class:`nas.heads.PyramidHead`;
            with a zero correction, exactly OpenCV's Mertens fusion). ``fast``: the same
            blend built at the body's scale, with full-resolution detail added back by a
            per-pixel blend of the inputs under the upsampled finest weights
            (:class:`nas.heads.FastHead`); its full-resolution cost is two bilinear
            upsamplings.
        scale: processing scale of the network body (SRSM, DASM, DRM) for the ``pyramid``
            and ``fast`` heads: the body sees the pair downsampled by 1, 2, 4, 8 or 16 and its
            weight corrections are upsampled to every pyramid level (``pyramid``: the blend
            itself is at full resolution; ``fast``: at the body's scale). The ``crmef`` head
            needs 1.
    """

    channels: int = 32
    cascades: int = 2
    relight: str = "multiply"
    misaligned: bool = False
    style: str = "lean"
    head: str = "crmef"
    scale: int = 1

    @classmethod
    def parse(
        cls, data: Mapping[str, Any], extra_keys: set[str], source: str, error: type[Exception]
    ) -> ArchConfig:
        """The ArchConfig fields of a YAML mapping that may also hold ``extra_keys``; an
        unknown key or a bad value is an ``error`` naming ``source``."""
        arch_keys = {f.name for f in dataclasses.fields(cls)}
        valid = extra_keys | arch_keys
        unknown = sorted(set(data) - valid)
        if unknown:
            raise error(f"{source}: unknown key(s) {unknown}; valid keys: {sorted(valid)}")
        try:
            return cls(**{k: data[k] for k in arch_keys if k in data})
        except SpaceError as e:
            raise error(f"{source}: {e}") from None

    def __post_init__(self) -> None:
        if not isinstance(self.channels, int) or self.channels < 2:
            raise SpaceError(f"channels must be an integer >= 2, got {self.channels!r}")
        if not isinstance(self.cascades, int) or self.cascades < 1:
            raise SpaceError(f"cascades must be an integer >= 1, got {self.cascades!r}")
        if self.relight not in RELIGHT_MODES:
            raise SpaceError(f"relight must be one of {RELIGHT_MODES}, got {self.relight!r}")
        if self.style not in STYLES:
            raise SpaceError(f"style must be one of {STYLES}, got {self.style!r}")
        if not isinstance(self.misaligned, bool):
            raise SpaceError(f"misaligned must be true or false, got {self.misaligned!r}")
        if self.head not in HEADS:
            raise SpaceError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.scale not in SCALES:
            raise SpaceError(f"scale must be one of {SCALES}, got {self.scale!r}")
        if self.scale != 1 and self.head == "crmef":
            raise SpaceError(
                f"scale {self.scale} needs head: pyramid or fast (the crmef head is full-size)"
            )

    @property
    def slots(self) -> tuple[str, ...]:
        return slot_names(self.misaligned)


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space: architecture options and candidate ops per slot.

    ``choices`` (optional) makes whole-network options searched too, as FBNetV2 and
    Once-for-All search input resolution and width: ``{"scale": (2, 4, 8), "channels": (8,
    16)}`` (fields of :data:`CHOOSABLE`). Every combination is a *variant*, a plain space of
    its own (:meth:`variants`); ``arch`` holds the first value of each choice. The supernet of
    such a space (:class:`nas.supernet.ChoiceSupernet`) mixes its variants' outputs.
    """

    name: str
    arch: ArchConfig
    candidates: Mapping[str, tuple[str, ...]]
    description: str = ""
    choices: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    @property
    def slots(self) -> tuple[str, ...]:
        return self.arch.slots

    @property
    def options(self) -> dict[str, tuple[str, ...]]:
        """Labels of everything the search weighs: ``{slot: candidates}`` and, per choice,
        ``{"choice.<k>": ("<k>=<value>", ...)}`` (the keys of a supernet's softmax weights)."""
        out = {s: tuple(self.candidates[s]) for s in self.slots}
        out.update({f"choice.{k}": tuple(f"{k}={v}" for v in vs) for k, vs in self.choices.items()})
        return out

    def variants(self) -> list[tuple[dict[str, Any], SearchSpace]]:
        """``(assignment, plain space)`` of every combination of the choices (product in
        :data:`CHOOSABLE` order); one ``({}, self)`` for a space without choices."""
        if not self.choices:
            return [({}, self)]
        names = [k for k in CHOOSABLE if k in self.choices]
        out = []
        for values in itertools.product(*(self.choices[k] for k in names)):
            a = dict(zip(names, values))
            arch = dataclasses.replace(self.arch, **a)
            out.append((a, dataclasses.replace(self, arch=arch, choices={})))
        return out

    def expand(self, channels: Iterable[int] = ()) -> list[SearchSpace]:
        """The plain spaces to profile: every variant, each at every width of ``channels``
        unless the space searches the width itself (then at its own widths)."""
        widths = [int(c) for c in channels]
        out = []
        for _, v in self.variants():
            if widths and "channels" not in self.choices:
                out.extend(v.with_channels(c) for c in widths)
            else:
                out.append(v)
        return out

    def with_channels(self, channels: int) -> SearchSpace:
        """The same space at another width."""
        return dataclasses.replace(self, arch=dataclasses.replace(self.arch, channels=channels))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            **dataclasses.asdict(self.arch),
            **({"choices": {k: list(v) for k, v in self.choices.items()}} if self.choices else {}),
            "slots": {s: list(self.candidates[s]) for s in self.slots},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> SearchSpace:
        """Validate a mapping (as read from YAML); errors name ``source`` and the bad key."""
        if not isinstance(data, Mapping):
            raise SpaceError(
                f"{source}: expected a mapping at top level, got {type(data).__name__}"
            )
        arch = ArchConfig.parse(
            data, {"name", "description", "slots", "choices"}, source, SpaceError
        )
        choices = _parse_choices(data.get("choices"), arch, source)
        if choices:
            arch = dataclasses.replace(arch, **{k: v[0] for k, v in choices.items()})
        if "name" not in data or "slots" not in data:
            raise SpaceError(f"{source}: 'name' and 'slots' are required")
        slots = data["slots"]
        if not isinstance(slots, Mapping):
            raise SpaceError(f"{source}: 'slots' must map slot names to lists of ops")
        expected = arch.slots
        extra = sorted(set(slots) - set(expected))
        if extra:
            raise SpaceError(
                f"{source}: unknown slot(s) {extra} for misaligned={arch.misaligned}; "
                f"valid slots: {list(expected)}"
            )
        missing = [s for s in expected if s not in slots]
        if missing:
            raise SpaceError(f"{source}: missing slot(s) {missing}")
        candidates: dict[str, tuple[str, ...]] = {}
        for slot in expected:
            ops = slots[slot]
            if isinstance(ops, str):
                ops = [ops]
            if not ops or not all(isinstance(o, str) for o in ops):
                raise SpaceError(f"{source}: slot {slot!r} needs a non-empty list of op names")
            if len(set(ops)) != len(ops):
                raise SpaceError(f"{source}: slot {slot!r} lists an op twice: {ops}")
            for op in ops:
                try:
                    get_op_spec(op)
                except KeyError:
                    raise SpaceError(
                        f"{source}: slot {slot!r}: unknown op {op!r}; valid ops: {list_ops()}"
                    ) from None
            candidates[slot] = tuple(ops)
        return cls(str(data["name"]), arch, candidates, str(data.get("description", "")), choices)

    @classmethod
    def from_yaml(cls, path: str | Path) -> SearchSpace:
        """Load ``path``; a bare name such as ``crmef`` is a shipped space
        (:func:`shipped_spaces`)."""
        p = Path(path)
        if not p.exists() and not p.suffix:
            p = SPACES_DIR / f"{p}.yaml"
        if not p.exists():
            raise FileNotFoundError(
                f"search space {str(path)!r} not found; shipped: {shipped_spaces()}"
            )
        try:
            data = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise SpaceError(f"{p}: not valid YAML: {e}") from None
        return cls.from_dict(data, source=str(p))


def _parse_choices(raw: Any, arch: ArchConfig, source: str) -> dict[str, tuple[Any, ...]]:
    """Validate a space's ``choices`` mapping; every combination must be a valid arch."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise SpaceError(f"{source}: 'choices' must map {list(CHOOSABLE)} to lists of values")
    out: dict[str, tuple[Any, ...]] = {}
    for k in CHOOSABLE:
        if k not in raw:
            continue
        v = raw[k]
        if not isinstance(v, list) or not v or len(set(v)) != len(v):
            raise SpaceError(f"{source}: choices.{k} must be a non-empty list without repeats")
        out[k] = tuple(v)
    unknown = sorted(set(raw) - set(CHOOSABLE))
    if unknown:
        raise SpaceError(
            f"{source}: choices: unknown key(s) {unknown}; searchable: {list(CHOOSABLE)}"
        )
    for values in itertools.product(*out.values()):
        try:
            dataclasses.replace(arch, **dict(zip(out, values)))
        except SpaceError as e:
            raise SpaceError(f"{source}: choices: {e}") from None
    return out


def load_space(path_or_name: str | Path | SearchSpace) -> SearchSpace:
    """A :class:`SearchSpace` from a path, a shipped name, or an existing space."""
    if isinstance(path_or_name, SearchSpace):
        return path_or_name
    return SearchSpace.from_yaml(path_or_name)
