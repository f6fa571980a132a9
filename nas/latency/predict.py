"""Latency prediction from a table: whole networks, and the supernet's differentiable penalty.

* :func:`predict` -- a derived network (or a genotype, built with
  :func:`nas.genotype.build`) is traced; its latency is the sum of the table entries of the
  units it executes, optionally corrected by the table's affine calibration
  (``a * sum + b``, fitted by ``python -m nas.profile --validate``).
* :func:`expected_latency` -- the CRMEF relaxation ``R(alpha; LAT)``: the fixed units' latency
  plus, for every slot, ``softmax(alpha_slot) . LAT(candidates at the slot's shapes)`` summed
  over all instances of the slot (SRSM slots occur 2 x cascades times with one shared alpha).
  The per-candidate latencies are a constant tensor built once per (supernet, table, input
  size) by tracing the supernet; each call is one dot product per slot, differentiable with
  respect to alpha.
* :class:`LatencyPenalty` -- ``expected_latency / expected_latency(uniform alpha)``: 1.0 means
  "as slow as the uniform-alpha supernet" on any device, so the trade-off weight eta means the
  same on a laptop CPU and on an H100. The raw milliseconds are kept for logging.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor, nn

from nas.latency.keys import MissingLatencyEntry
from nas.latency.table import Calibration, LatencyTable, calibration_scope
from nas.latency.trace import UnitCall, trace_units
from nas.space import shipped_spaces
from nas.supernet import ChoiceSupernet, Supernet


def _arch_of(net: object):
    arch = getattr(net, "arch", None)
    return arch if arch is not None and hasattr(arch, "channels") else None


def calibration_for(table: LatencyTable, arch, input_size: tuple[int, int]) -> Calibration | None:
    """The table's calibration for this architecture (``ArchConfig``: width, aligned or
    misaligned), input size, the table's batch and statistic; None if there is none."""
    if arch is None:
        return None
    return table.calibration(
        calibration_scope(arch.channels, arch.misaligned, input_size, table.batch, table.statistic)
    )


def unit_latencies(calls: list[UnitCall], table: LatencyTable) -> list[float]:
    """Table latency (ms, the table's statistic) of each traced call; a missing row raises
    :class:`~nas.latency.table.MissingLatencyEntry`."""
    return [table.lookup_key(c.key) for c in calls]


@lru_cache(maxsize=256)
def _genotype_calls(genotype, input_size: tuple[int, int]) -> tuple:
    from nas.genotype import build

    with torch.random.fork_rng(devices=[]):  # building must not advance the global RNG
        net = build(genotype)
    return tuple(c.key for c in trace_units(net, input_size, batch=1)), net.arch


def predict(
    genotype_or_net,
    input_size: tuple[int, int],
    table: LatencyTable,
    calibrated: bool = True,
) -> float:
    """Predicted latency (ms) of a derived network at ``input_size`` with the table's batch.

    Args:
        genotype_or_net: a :class:`~nas.genotype.Genotype` (built at its own width) or any
            network of units (``CRMEFNet``, a baseline; a supernet gives the sum of *all*
            candidates, use :func:`expected_latency` for it).
        input_size: (H, W) of the network input.
        table: the device's latency table.
        calibrated: apply the table's calibration for this network kind, width and input
            size when the table has one (else the plain sum).
    """
    input_size = (int(input_size[0]), int(input_size[1]))
    if isinstance(genotype_or_net, nn.Module):
        keys = [c.key for c in trace_units(genotype_or_net, input_size, batch=1)]
        arch = _arch_of(genotype_or_net)
    else:
        keys, arch = _genotype_calls(genotype_or_net, input_size)
    try:
        raw = sum(table.lookup_key(k) for k in keys)
    except MissingLatencyEntry as e:
        space = None
        if arch is not None:
            name = getattr(genotype_or_net, "space", None)
            shipped = set(shipped_spaces())
            if not isinstance(name, str) or name not in shipped:
                name = "crmef-misaligned" if arch.misaligned else "crmef"
            space = [name]
        chans = [arch.channels] if arch else None
        raise _with_context(e, table, space, chans, input_size) from None
    cal = calibration_for(table, arch, input_size) if calibrated else None
    return float(cal.apply(raw)) if cal is not None else float(raw)


@dataclass(frozen=True)
class SlotLatency:
    """Constants of :func:`expected_latency` for one (supernet, table, input size).

    Attributes:
        fixed_ms: total latency of the fixed (non-slot) units.
        slots: ``{slot: (n_candidates,) float64 tensor}``: each candidate's latency at the
            slot's shapes, summed over the slot's instances, in ``space.candidates[slot]``
            order.
        calibration: the affine correction applied on top (None: raw sum).
    """

    fixed_ms: float
    slots: Mapping[str, Tensor]
    calibration: Calibration | None = None

    def total(self, weights: Mapping[str, Tensor]) -> Tensor:
        """``fixed + sum_s weights[s] . slots[s]`` (then calibrated), a 0-d tensor."""
        out = None
        for s, lat in self.slots.items():
            w = weights[s]
            term = torch.dot(w, lat.to(device=w.device, dtype=w.dtype))
            out = term if out is None else out + term
        if out is None:
            out = torch.zeros(())
        out = out + self.fixed_ms
        return self.calibration.apply(out) if self.calibration is not None else out

    def uniform_ms(self) -> float:
        """The expected latency at uniform alpha (softmax = 1/n per slot)."""
        w = {s: torch.full_like(v, 1.0 / len(v)) for s, v in self.slots.items()}
        return float(self.total(w))


@dataclass(frozen=True)
class ChoiceLatency:
    """Constants of :func:`expected_latency` for a :class:`~nas.supernet.ChoiceSupernet`:
    one :class:`SlotLatency` per variant, mixed as the supernet mixes the variants.

    ``total(weights) = sum_v p_v(weights) * parts[v].total(weights)``, where ``p_v`` is the
    product of the variant's choice weights (``weights["choice.<k>"]``).
    """

    supernet: ChoiceSupernet
    parts: tuple[SlotLatency, ...]

    def total(self, weights: Mapping[str, Tensor]) -> Tensor:
        out = None
        for p, part in zip(self.supernet.variant_weights(weights), self.parts):
            term = p * part.total(weights)
            out = term if out is None else out + term
        return out

    def uniform_ms(self) -> float:
        """The expected latency at uniform alpha, over the ops and the choices."""
        sm = self.supernet.softmax_weights()
        return float(self.total({k: torch.full_like(v, 1.0 / len(v)) for k, v in sm.items()}))

    def variant_ms(self, weights: Mapping[str, Tensor]) -> list[float]:
        """Each variant's expected latency under the op weights (ms)."""
        return [float(part.total(weights)) for part in self.parts]


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _with_context(
    e: MissingLatencyEntry,
    table: LatencyTable,
    spaces: list[str] | None,
    channels: list[int] | None,
    input_size: tuple[int, int],
) -> MissingLatencyEntry:
    if e.key is None:
        return e
    msg = table.missing_message(e.key, spaces, channels, input_size)
    return MissingLatencyEntry(msg, e.key)


def slot_latency(
    supernet: Supernet,
    table: LatencyTable,
    input_size: tuple[int, int],
    calibrated: bool = True,
) -> SlotLatency:
    """Build (or fetch from the cache) the constants of :func:`expected_latency`.

    The cache holds weak references to the supernet and the table (an entry goes with
    either) and is keyed by the input size, ``calibrated`` and the table's statistic; an entry
    built before the table's revision changed (rows or calibrations) is rebuilt. Building
    traces the supernet once at batch 1.
    """
    input_size = (int(input_size[0]), int(input_size[1]))
    if isinstance(supernet, ChoiceSupernet):
        parts = tuple(slot_latency(n, table, input_size, calibrated) for n in supernet.nets)
        return ChoiceLatency(supernet, parts)
    per_table = _CACHE.setdefault(supernet, weakref.WeakKeyDictionary()).setdefault(table, {})
    key = (input_size, calibrated, table.statistic)
    hit = per_table.get(key)
    if hit is not None and hit[0] == table.revision:
        return hit[1]
    space = supernet.space
    index = {s: {op: i for i, op in enumerate(space.candidates[s])} for s in space.slots}
    sums = {s: torch.zeros(len(space.candidates[s]), dtype=torch.float64) for s in space.slots}
    fixed = 0.0
    for c in trace_units(supernet, input_size, batch=1):
        try:
            ms = table.lookup_key(c.key)
        except MissingLatencyEntry as e:
            raise _with_context(e, table, [space.name], [space.arch.channels], input_size) from None
        if c.slot is None:
            fixed += ms
        else:
            # the candidate's name is its key in the MixedOp (table names carry a style prefix)
            sums[c.slot][index[c.slot][c.path.rsplit(".", 1)[-1]]] += ms
    cal = calibration_for(table, supernet.arch, input_size) if calibrated else None
    result = SlotLatency(fixed, sums, cal)
    per_table[key] = (table.revision, result)
    return result


def expected_latency(
    supernet: Supernet,
    table: LatencyTable,
    input_size: tuple[int, int],
    weights: Mapping[str, Tensor] | None = None,
    calibrated: bool = True,
) -> Tensor:
    """The supernet's expected latency ``R(alpha; LAT)`` in ms, differentiable w.r.t. alpha.

    ``fixed + sum_slots softmax(alpha_slot) . LAT_slot`` where ``LAT_slot[o]`` is candidate
    ``o``'s table latency at the slot's shapes summed over the slot's instances. At a one-hot
    alpha it equals :func:`predict` of the derived network.

    Args:
        weights: ``{slot: (n,) weights}`` to use instead of ``supernet.softmax_weights()``.
    """
    const = slot_latency(supernet, table, input_size, calibrated)
    return const.total(weights if weights is not None else supernet.softmax_weights())


MAX_ENUMERATED = 200_000
"""Op combinations per variant that :func:`derive_for_target` enumerates exhaustively."""


def derive_for_target(
    supernet: ChoiceSupernet,
    genotype,
    table: LatencyTable,
    input_size: tuple[int, int],
    target_ms: float,
    tolerance: tuple[float, float | None] = (0.25, 0.25),
):
    """The most probable derived net of ``supernet`` whose predicted latency meets a target.

    The probability of a net is the product of its ops' and its choices' softmax weights (the
    supernet's distribution); a net meets ``target_ms`` when its predicted latency ``T``
    satisfies ``T <= (1 + above) * target`` and, unless ``below`` is None, ``T >= (1 - below)
    * target`` (``tolerance = (above, below)``). Per variant, every op combination is
    enumerated when there are at most :data:`MAX_ENUMERATED` (latencies add up per slot, so
    this is exact); above that the variant keeps ``genotype``'s ops. When no net meets the
    target, the one closest to it in ``|log(T / target)|`` is taken.

    Returns:
        (the chosen genotype, a record: target, whether it was met, the chosen options, each
        variant's best net with its predicted ms and log-probability).
    """
    import dataclasses
    import itertools

    above, below = tolerance
    lo = -math.inf if below is None else (1 - below) * target_ms
    hi = (1 + above) * target_ms
    space = supernet.space
    weights = {k: w.detach().double() for k, w in supernet.softmax_weights().items()}
    slots = list(space.slots)
    n_comb = math.prod(len(space.candidates[s]) for s in slots)
    if n_comb <= MAX_ENUMERATED:
        idx = torch.tensor(
            list(itertools.product(*(range(len(space.candidates[s])) for s in slots)))
        )
    else:  # keep the derived ops
        idx = torch.tensor([[space.candidates[s].index(genotype[s]) for s in slots]])
    logp_ops = sum(weights[s].log()[idx[:, i]] for i, s in enumerate(slots))
    const = slot_latency(supernet, table, input_size)
    rows = []
    for a, p_v, part in zip(supernet.assignments, supernet.variant_weights(weights), const.parts):
        ms = torch.full((len(idx),), part.fixed_ms, dtype=torch.float64)
        for i, s in enumerate(slots):
            ms = ms + part.slots[s].double()[idx[:, i]]
        if part.calibration is not None:
            ms = part.calibration.apply(ms)
        logp = logp_ops + math.log(max(float(p_v), 1e-300))
        ok = (ms >= lo) & (ms <= hi)
        if ok.any():
            j = int(torch.where(ok, logp, torch.full_like(logp, -math.inf)).argmax())
        else:
            j = int((ms / target_ms).log().abs().argmin())
        ops = tuple((s, space.candidates[s][int(idx[j, i])]) for i, s in enumerate(slots))
        arch = dataclasses.replace(genotype.arch, **a)
        g = dataclasses.replace(genotype, arch=arch, ops=ops)
        rows.append((bool(ok.any()), float(logp[j]), float(ms[j]), a, g))
    met = [r for r in rows if r[0]]
    if met:
        best = max(met, key=lambda r: r[1])
    else:
        best = min(rows, key=lambda r: abs(math.log(r[2] / target_ms)))
    note = {
        "target_ms": float(target_ms),
        "met": bool(met),
        "chosen": dict(best[3]),
        "variants": [
            {**a, "predicted_ms": round(ms, 3), "log_prob": round(lp, 3), "met": ok}
            for ok, lp, ms, a, _ in rows
        ],
    }
    return best[4], note


PENALTY_FORMS: tuple[str, ...] = ("normalised", "paper", "log", "abs", "hinge")
"""``normalised``: E[LAT] / E_uniform[LAT] (device-independent eta); ``paper``: Eq. 5 of the
CRMEF paper, the alpha-weighted table latencies of the searched slots in milliseconds;
``log``: log(E[LAT] / reference), the additive form of FBNet's and ProxylessNAS'
multiplicative log / power terms (a relative gradient, dT / T); ``abs``: TuNAS' absolute
reward ``|E[LAT] / T0 - 1|`` around a target T0; ``hinge``: ``max(0, E[LAT] / T0 - 1)``, no
pull towards T0 from below."""
TARGET_FORMS: tuple[str, ...] = ("abs", "hinge")
"""The forms that need a target latency T0 (``target_ms``)."""


class LatencyPenalty:
    """The latency term R(alpha) of the search objective, in one of five forms.

    ``form="normalised"`` (default): ``expected_latency(alpha) / expected_latency(uniform)``.
    1.0 is the latency of the supernet at uniform alpha (its state at initialisation, where
    alpha ~ 1e-3 N(0, 1)), so ``eta * penalty`` is the same trade-off on every device; the
    value ranges over ``[min_ms / uniform_ms, max_ms / uniform_ms]``.

    ``form="paper"``: the CRMEF paper's Eq. 5 as written, ``sum_slots sum_o softmax(alpha)_o *
    LAT(o)`` over every searched slot instance, in **milliseconds** of the table (its batch,
    its input size), without the fixed parts and without calibration. Its eta depends on the
    device and the input size: the paper's 0.5 / 1 were tuned for its GPU table (batch 16,
    128 x 128), where the slot latencies sum to a few ms.

    ``form="log"``: ``log(E[LAT] / T_ref)`` (T_ref: ``target_ms`` when given, else the
    uniform-alpha latency). FBNet multiplies the task loss by ``alpha * log(LAT)^beta`` and
    ProxylessNAS by ``(LAT / T)^w``; added instead, the log keeps their property that matters
    for grading: its gradient is relative (``dT / T``), so eta trades *fractions* of latency
    for loss, and a 10 ms net is pushed as hard to 5 ms as a 1 s net to 0.5 s.

    ``form="abs"`` (TuNAS): ``|E[LAT] / T0 - 1|`` with ``T0 = target_ms``; pulls the expected
    latency to the target from both sides (eta is TuNAS' beta; TuNAS uses a negative beta on
    a reward, the same thing). ``form="hinge"``: ``max(0, E[LAT] / T0 - 1)``, a budget: free
    below T0, so quality decides there.

    Usage::

        penalty = LatencyPenalty(supernet, table, (128, 128))
        loss = task_loss + eta * penalty()     # differentiable w.r.t. the alphas
        log(penalty.last_ms)                   # raw expected latency (ms) of that call

    Attributes:
        reference_ms: expected latency at uniform alpha (the normaliser).
        last_ms: the raw expected latency (ms) of the latest call.
    """

    def __init__(
        self,
        supernet: Supernet,
        table: LatencyTable,
        input_size: tuple[int, int],
        calibrated: bool = True,
        form: str = "normalised",
        target_ms: float | None = None,
    ) -> None:
        if form not in PENALTY_FORMS:
            raise ValueError(f"latency penalty form must be one of {PENALTY_FORMS}, got {form!r}")
        if form in TARGET_FORMS and not (target_ms is not None and target_ms > 0):
            raise ValueError(f"latency penalty {form!r} needs a target latency > 0 (target_ms)")
        if form == "paper" and isinstance(supernet, ChoiceSupernet):
            raise ValueError(
                "latency penalty 'paper' sums slot latencies of one network; a space with "
                "choices has several: use normalised, log, abs or hinge"
            )
        self.target_ms = None if target_ms is None else float(target_ms)
        self.supernet = supernet
        self.table = table
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.form = form
        self.calibrated = calibrated and form != "paper"
        self.reference_ms = self._const().uniform_ms()
        if not self.reference_ms > 0:
            raise ValueError(f"uniform-alpha latency must be positive, got {self.reference_ms}")
        self.last_ms = float("nan")

    def _const(self) -> SlotLatency | ChoiceLatency:
        return slot_latency(self.supernet, self.table, self.input_size, self.calibrated)

    def expected_ms(self, weights: Mapping[str, Tensor] | None = None) -> Tensor:
        """The raw expected latency (ms), differentiable."""
        w = weights if weights is not None else self.supernet.softmax_weights()
        return self._const().total(w)

    def slot_ms(self, weights: Mapping[str, Tensor] | None = None) -> Tensor:
        """Eq. 5: the alpha-weighted table latencies of the searched slots (ms), differentiable."""
        w = weights if weights is not None else self.supernet.softmax_weights()
        const = self._const()
        return const.total(w) - const.fixed_ms

    def __call__(self, weights: Mapping[str, Tensor] | None = None) -> Tensor:
        """The penalty (0-d tensor) in this form; also sets :attr:`last_ms`."""
        ms = self.expected_ms(weights)
        self.last_ms = float(ms.detach())
        if self.form == "paper":
            return ms - self._const().fixed_ms  # uncalibrated in this form: the slot sum
        if self.form == "log":
            return torch.log(ms / (self.target_ms or self.reference_ms))
        if self.form == "abs":
            return (ms / self.target_ms - 1.0).abs()
        if self.form == "hinge":
            return torch.relu(ms / self.target_ms - 1.0)
        return ms / self.reference_ms

    def __repr__(self) -> str:
        return (
            f"LatencyPenalty(form={self.form!r}, table={self.table.name!r}, "
            f"input_size={self.input_size}, "
            f"reference_ms={self.reference_ms:.3f}"
            + (f", target_ms={self.target_ms:g})" if self.target_ms is not None else ")")
        )
