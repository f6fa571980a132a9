"""The architecture step of bi-level DARTS, and the alpha diagnostics a search logs.

:class:`Architect` (as DARTS' ``architect.py``, Liu et al. 2019) owns the architecture
optimiser (Adam on the supernet's alphas) and computes the alpha gradient of

    L_val(w*(alpha), alpha) + latency term(alpha)

either to first order (``w* = w``) or to second order, through one virtual SGD step of the
weights, ``w* = w - xi * (grad_w L_train(w, alpha) + wd * w + momentum * buf)``, with the
Hessian-vector product approximated by a central finite difference.

:func:`alpha_diagnostics` summarises the current alphas per epoch (mean softmax entropy, how
many slots a parameter-free op wins, the derived genotype and every softmax weight);
:func:`alpha_softmax` is the softmax table they, and the alpha heat map, are made from.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor

from nas.derive import derive_genotype
from nas.engine import Batch
from nas.ops import get_op_spec
from nas.supernet import Supernet

ORDERS = ("first", "second")
"""The alpha gradient's order: DARTS' first-order approximation or the unrolled step."""
LossFn = Callable[[Batch], Tensor]
"""``batch -> scalar``: the task loss of the supernet on a batch."""
TermFn = Callable[[], Tensor]
"""``() -> scalar``: a term added to the architecture objective (the latency term)."""


class ArchSettings(Protocol):
    """What :class:`Architect` reads from its settings (a :class:`nas.search.SearchConfig`):
    the gradient ``order`` (:data:`ORDERS`), Adam's learning rate and weight decay on the
    alphas, and the weight optimiser's SGD momentum and weight decay (for the virtual step)."""

    order: str
    a_lr: float
    a_weight_decay: float
    w_momentum: float
    w_weight_decay: float


class Architect:
    """One architecture (alpha) step per call of :meth:`step` (bi-level DARTS).

    Args:
        net: the supernet; its :meth:`~nas.supernet.Supernet.arch_parameters` are stepped.
        cfg: the settings (:class:`ArchSettings`); Adam on the alphas with betas
            ``(0.5, 0.999)``, as DARTS.
        loss: the task loss of ``net`` on a batch (train and validation).
        latency_term: ``() -> scalar`` latency term added to the validation loss (a zero
            tensor without a latency penalty).

    ``loss`` and ``latency_term`` are called anew at every step, so a caller may pass
    closures that read state it changes later (the loss' criterion, the latency scale). As in
    DARTS, the weight optimiser is an argument of :meth:`step`: the second-order step reads
    its learning rate (``xi``) and SGD momentum buffers.
    """

    def __init__(
        self, net: Supernet, cfg: ArchSettings, loss: LossFn, latency_term: TermFn
    ) -> None:
        if cfg.order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {cfg.order!r}")
        self.net = net
        self.loss = loss
        self.latency_term = latency_term
        self.order = cfg.order
        self.w_momentum = cfg.w_momentum
        self.w_weight_decay = cfg.w_weight_decay
        self.optimizer = torch.optim.Adam(
            net.arch_parameters(), lr=cfg.a_lr, betas=(0.5, 0.999), weight_decay=cfg.a_weight_decay
        )

    def step(self, batch: Batch, val_batch: Batch, w_opt: torch.optim.Optimizer) -> float:
        """One Adam step of the alphas on ``val_batch`` (``batch``: the training batch of the
        virtual weight step with ``w_opt``'s learning rate, second order only); returns the
        validation loss (without the latency term)."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.order == "second":
            val_loss = self.unrolled_grads(batch, val_batch, w_opt)
        else:
            val_loss = self.first_order_grads(val_batch)
        self.optimizer.step()
        return val_loss

    def first_order_grads(self, val_batch: Batch) -> float:
        """First-order DARTS: accumulate ``grad_alpha (L_val(w, alpha) + latency term)`` into
        the alphas' ``.grad``; returns ``L_val``."""
        val_loss = self.loss(val_batch)
        (val_loss + self.latency_term()).backward(inputs=self.net.arch_parameters())
        return float(val_loss.detach())

    def unrolled_grads(self, batch: Batch, val_batch: Batch, w_opt: torch.optim.Optimizer) -> float:
        """Second-order DARTS: set the alphas' ``.grad`` to
        ``grad_alpha L_val(w - xi grad_w L_train(w, alpha), alpha)`` (+ the latency term's).

        The implicit term ``-xi * H_{alpha,w} grad_{w'} L_val`` is the finite difference
        ``(grad_alpha L_train(w+) - grad_alpha L_train(w-)) / (2 r)`` with
        ``w± = w ± r grad_{w'} L_val`` and ``r = 0.01 / ||grad_{w'} L_val||`` (Liu et al.
        2019). The weights are restored exactly afterwards; returns ``L_val`` at ``w'``.
        """
        weights = self.net.weight_parameters()
        alphas = self.net.arch_parameters()
        xi = w_opt.param_groups[0]["lr"]
        backup = self._virtual_step(batch, weights, w_opt)
        val_loss = self.loss(val_batch)
        objective = val_loss + self.latency_term()
        out = torch.autograd.grad(objective, alphas + weights, allow_unused=True)
        d_alpha = _zeros_for_none(out[: len(alphas)], alphas)
        d_w = _zeros_for_none(out[len(alphas) :], weights)
        r = 0.01 / (torch.cat([g.flatten() for g in d_w]).norm() + 1e-12)
        g_pos = self._alpha_grads_at(batch, weights, backup, d_w, +r)
        g_neg = self._alpha_grads_at(batch, weights, backup, d_w, -r)
        with torch.no_grad():
            for p, b in zip(weights, backup):
                p.copy_(b)
        for a, da, gp, gn in zip(alphas, d_alpha, g_pos, g_neg):
            a.grad = da - xi * (gp - gn) / (2 * r)
        return float(val_loss.detach())

    def _virtual_step(
        self, batch: Batch, weights: list[Tensor], w_opt: torch.optim.Optimizer
    ) -> list[Tensor]:
        """Move ``weights`` in place by one SGD step of ``w_opt`` (its learning rate and
        momentum buffers, weight decay) on ``batch``; returns copies of the weights before
        it."""
        xi = w_opt.param_groups[0]["lr"]
        grads = torch.autograd.grad(self.loss(batch), weights, allow_unused=True)
        backup = [p.detach().clone() for p in weights]
        with torch.no_grad():
            for p, g in zip(weights, grads):
                step = (g if g is not None else torch.zeros_like(p)) + self.w_weight_decay * p
                buf = w_opt.state.get(p, {}).get("momentum_buffer")
                if buf is not None:
                    step = step + self.w_momentum * buf
                p.sub_(xi * step)
        return backup

    def _alpha_grads_at(
        self,
        batch: Batch,
        weights: list[Tensor],
        backup: list[Tensor],
        direction: list[Tensor],
        scale: Tensor,
    ) -> list[Tensor]:
        """``grad_alpha L_train`` on ``batch`` with the weights set to ``backup + scale *
        direction`` (left there)."""
        with torch.no_grad():
            for p, b, g in zip(weights, backup, direction):
                p.copy_(b + scale * g)
        alphas = self.net.arch_parameters()
        gs = torch.autograd.grad(self.loss(batch), alphas, allow_unused=True)
        return _zeros_for_none(gs, alphas)

    def state_dict(self) -> dict[str, Any]:
        """The architecture optimiser's state."""
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)


def _zeros_for_none(grads: tuple[Tensor | None, ...], params: list[Tensor]) -> list[Tensor]:
    """``grads`` with every ``None`` (a parameter the loss does not use) as zeros."""
    return [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params)]


def alpha_softmax(supernet: Supernet) -> dict[str, dict[str, float]]:
    """``{slot: {option: softmax(alpha)}}`` of every slot (op slots and, in spaces with
    searched choices, ``choice.<key>`` slots), options in the space's order."""
    return {
        s: dict(zip(supernet.space.options[s], w.tolist()))
        for s, w in supernet.softmax_weights().items()
    }


@torch.no_grad()
def alpha_diagnostics(supernet: Supernet, max_skip: int | None = None) -> dict[str, Any]:
    """What a search logs about its alphas each epoch (one ``metrics.csv`` row's columns).

    * ``alpha_entropy``: the mean over slots of the entropy (nats) of softmax(alpha) (its
      maximum, ``log(#candidates)``, is the uniform alpha);
    * ``skip_wins``: how many slots of the derived genotype hold a parameter-free op (the
      collapse watch);
    * ``genotype``: the derived ops (:func:`nas.derive.derive_genotype` with ``max_skip``,
      what ``genotype.yaml`` holds), space-separated in slot order;
    * ``w:<slot>:<op>``: every softmax weight, rounded to 5 decimals.
    """
    weights = {s: w.detach() for s, w in supernet.softmax_weights().items()}
    ent = [float(-(w * w.clamp_min(1e-12).log()).sum()) for w in weights.values()]
    row: dict[str, Any] = {"alpha_entropy": sum(ent) / len(ent)}
    g = derive_genotype(supernet, max_skip)
    row["skip_wins"] = sum(get_op_spec(op).parameter_free for _, op in g.ops)
    row["genotype"] = " ".join(op for _, op in g.ops)
    for slot, ws in alpha_softmax(supernet).items():
        for op, wi in ws.items():
            row[f"w:{slot}:{op}"] = round(wi, 5)
    return row
