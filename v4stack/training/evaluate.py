"""Held-out loss and the MTP head's greedy acceptance rate, measured through the inference path
(``DeepseekV4.forward`` / ``mtp_forward``, exactly what ``v4stack generate`` runs)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from v4stack.model.batch import ForwardBatch
from v4stack.model.decode_loop import prefill_then_decode, v4_forward
from v4stack.model.transformer import DeepseekV4


@dataclass(frozen=True)
class HeldOutLoss:
    per_window: list[float]  # mean cross-entropy per predicted token of each window, nats

    @property
    def nll(self) -> float:
        """Mean over all targets (windows are of equal length)."""
        return sum(self.per_window) / len(self.per_window)

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll)


@torch.no_grad()
def held_out_loss(model: DeepseekV4, windows: torch.Tensor) -> HeldOutLoss:
    """windows [n, L+1] (each a BOS then L tokens) -> next-token NLL of each window, prefilled from
    position 0 in a sequence of its own."""
    per_window = []
    for window in windows:
        out = model(ForwardBatch.build([model.new_state()], [window[:-1]]),
                    logit_rows=torch.arange(window.numel() - 1))
        per_window.append(float(F.cross_entropy(out.logits.float(), window[1:].to(out.logits.device))))
    return HeldOutLoss(per_window)


@torch.no_grad()
def masked_loss(model: DeepseekV4, samples: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """samples of (ids [n], mask [n]) -> mean next-token NLL over the targets whose mask is 1 (chat: the
    assistant's tokens), each sample prefilled from position 0 in a sequence of its own."""
    total, count = 0.0, 0.0
    for ids, mask in samples:
        out = model(ForwardBatch.build([model.new_state()], [ids[:-1]]), logit_rows=torch.arange(ids.numel() - 1))
        per_token = F.cross_entropy(out.logits.float(), ids[1:].to(out.logits.device), reduction="none")
        weights = mask[1:].to(per_token)
        total += float((per_token * weights).sum())
        count += float(weights.sum())
    return total / max(count, 1.0)


@dataclass(frozen=True)
class Acceptance:
    accepted: int
    drafted: int

    @property
    def rate(self) -> float:
        return self.accepted / max(self.drafted, 1)


@torch.no_grad()
def mtp_greedy_acceptance(model: DeepseekV4, prompts: list[torch.Tensor], new_tokens: int) -> Acceptance:
    """Greedy decoding with one MTP draft per step: after each main-model token g_t, the MTP block drafts
    g_{t+1} from (g_t, the main model's last hidden streams); the draft counts as accepted when the main
    model's own greedy choice at the next step equals it. Returns the counts over all prompts."""
    accepted = drafted = 0
    for prompt in prompts:
        state, draft = model.new_state(), None
        for step in prefill_then_decode(v4_forward(model, [state]), [prompt], new_tokens):
            if draft is not None:
                accepted += int(draft == int(step.tokens[0]))
                drafted += 1
            # MTP sees, at every row t, the id of row t+1: the prompt's own next ids, then the greedy token
            next_ids = torch.cat([prompt[1:], step.tokens]) if step.index == 0 else step.tokens
            draft = int(model.mtp_forward(ForwardBatch.build([state], [next_ids], is_mtp=True),
                                          step.output.hidden).argmax())
    return Acceptance(accepted, drafted)
