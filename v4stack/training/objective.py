"""The training objective of a V4 model: next-token loss, the MTP block's loss and the indexer's loss.

    L = CE(main logits[t], x[t+1]) + mtp_weight * CE(MTP logits[t], x[t+2]) + index_weight * KL_index
        + balance_weight * sum over noaux gates of E * sum_e f_e P_e

KL_index (as in DeepSeek sparse attention training): for each CSA query, the target is the main
attention's distribution over the visible compressed entries (softmax of scale * q.k per head, averaged
over heads, no gradient); the prediction is softmax of the indexer's scores over the same entries.
Queries with no visible entry are skipped.

The noaux router bias is not trained by gradients: ``balance_routers`` nudges each bias by
``rate * sign(mean load - load)`` after every step (DeepSeek-V3's auxiliary-loss-free balancing). At the
demo's scale the gate logits move faster than that bias can follow, so a small balance loss is added too
(DeepSeek-V3's complementary loss over the batch): f_e = share of routed slots taken by expert e, P_e =
mean normalised score of e, minimal (= 1) when both are uniform. Hash layers route by token id and have
neither.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from v4stack.model.batch import ForwardBatch
from v4stack.model.moe import Gate
from v4stack.model.transformer import DeepseekV4
from v4stack.ops.reference.moe import gate_scores
from v4stack.training.probed_attention import probing


@dataclass(frozen=True)
class ObjectiveConfig:
    mtp_weight: float = 0.3
    index_weight: float = 0.1
    balance_weight: float = 1e-2
    balance_rate: float = 1e-2


@dataclass
class IndexerKL:
    """Collects KL(attention || indexer) over the CSA layers of one forward (an ``IndexerProbe``)."""

    scale: float
    total: torch.Tensor = field(default_factory=lambda: torch.zeros(()))
    rows: int = 0

    def __call__(self, key, q: torch.Tensor, entries: torch.Tensor, scores: torch.Tensor) -> None:
        live = torch.isfinite(scores).any(dim=1)  # [S] queries with a visible entry
        if not bool(live.any()):
            return
        q, scores = q[live], scores[live]
        hidden = ~torch.isfinite(scores)  # [S', N]
        with torch.no_grad():
            logits = torch.einsum("shd,nd->shn", q.float(), entries.float()) * self.scale
            target = logits.masked_fill(hidden[:, None, :], float("-inf")).softmax(-1).mean(1)  # [S', N]
        log_pred = scores.masked_fill(hidden, float("-inf")).log_softmax(-1)
        term = target * (target.clamp_min(1e-30).log() - log_pred)
        self.total = self.total + term.masked_fill(hidden, 0.0).sum()
        self.rows += int(live.sum())

    def mean(self) -> torch.Tensor:
        return self.total / max(self.rows, 1)


@dataclass
class StepLosses:
    total: torch.Tensor
    main: float
    mtp: float
    index: float


def _masked_ce(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Weighted mean cross-entropy over the targets [N] (sum of weight x loss over sum of weights; a plain mean
    when ``weights`` is None)."""
    if weights is None:
        return F.cross_entropy(logits, targets)
    per_token = F.cross_entropy(logits, targets, reduction="none")
    return (per_token * weights).sum() / weights.sum().clamp_min(1.0)


def sequence_losses(model: DeepseekV4, tokens: torch.Tensor, objective: ObjectiveConfig,
                    router_loads: dict | None = None, loss_mask: torch.Tensor | None = None) -> StepLosses:
    """tokens [B, S+2] (each row starts with BOS) -> losses of one training forward (autograd on).

    Main model: inputs tokens[:, :S], targets tokens[:, 1:S+1]. MTP: next ids tokens[:, 1:S+1] at the same
    rows, targets tokens[:, 2:S+2]. ``router_loads``: if given, filled with per-gate expert counts.
    ``loss_mask`` [B, S+2] (weights >= 0, aligned with ``tokens``): the next-token and MTP losses are the
    weighted means of the targets' losses, so targets at 0 do not count (chat fine-tuning: the prompt) and a
    target at 5 counts five times; None = every target once."""
    batch_size, seq = tokens.shape[0], tokens.shape[1] - 2
    states = [model.new_state() for _ in range(batch_size)]
    probe = IndexerKL(model.cfg.head_dim ** -0.5)
    loads = router_loads if router_loads is not None else {}
    balance: list[torch.Tensor] = []
    hooks = _watch_routers(model, loads, balance)
    try:
        batch = ForwardBatch.build(states, list(tokens[:, :seq]))
        rows = torch.arange(batch_size * seq)
        with probing(model, probe):
            out = model.run(batch, logit_rows=rows)
        main_w = None if loss_mask is None else loss_mask[:, 1:seq + 1].reshape(-1).float()
        main = _masked_ce(out.logits, tokens[:, 1:seq + 1].reshape(-1), main_w)
        total = main + objective.index_weight * probe.mean()
        if balance and objective.balance_weight > 0:
            total = total + objective.balance_weight * torch.stack(balance).sum()
        mtp_value = 0.0
        if model.mtp and objective.mtp_weight > 0:
            mtp_batch = ForwardBatch.build(states, list(tokens[:, 1:seq + 1]), is_mtp=True)
            mtp_logits = model.run_mtp(mtp_batch, out.hidden, logit_rows=rows)
            mtp_w = None if loss_mask is None else loss_mask[:, 2:].reshape(-1).float()
            mtp = _masked_ce(mtp_logits, tokens[:, 2:].reshape(-1), mtp_w)
            total = total + objective.mtp_weight * mtp
            mtp_value = float(mtp.detach())
    finally:
        for h in hooks:
            h.remove()
    return StepLosses(total, float(main.detach()), mtp_value, float(probe.mean().detach()))


def _watch_routers(model: DeepseekV4, loads: dict, balance: list) -> list:
    """Hooks on every noaux gate: add its expert counts to ``loads[name]`` and its balance term
    E * sum_e f_e P_e to ``balance``."""
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, Gate) and not module.hashed:
            def hook(mod, args, output, name=name):
                experts = output[1]  # [T, k]
                n_exp = mod.bias.numel()
                counts = torch.bincount(experts.flatten(), minlength=n_exp).float()
                loads[name] = loads.get(name, 0) + counts
                scores = gate_scores(F.linear(args[0].float(), mod.weight.float()), mod.score_func)  # [T, E]
                share = counts / counts.sum()
                balance.append(n_exp * (share * (scores / scores.sum(-1, keepdim=True)).mean(0)).sum())
            hooks.append(module.register_forward_hook(hook))
    return hooks


@torch.no_grad()
def balance_routers(model: DeepseekV4, loads: dict, rate: float) -> float:
    """bias_e += rate * sign(mean - load_e) for each noaux gate; returns the worst max/mean load ratio."""
    worst = 0.0
    for name, counts in loads.items():
        gate = model.get_submodule(name)
        gate.bias += rate * torch.sign(counts.mean() - counts)
        worst = max(worst, float(counts.max() / counts.mean().clamp_min(1)))
    return worst
