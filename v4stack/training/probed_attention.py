"""Training's view into the CSA indexer: the attention's queries and entries beside the indexer's full scores.

The indexer's loss (``objective.IndexerKL``) compares, per CSA query, the main attention's distribution over the
visible compressed entries with the indexer's score distribution. Inference never materialises either (the
indexer keeps only its top-k, scored slice by slice), so the inference model carries no hook for it: training
turns each CSA layer's :class:`Attention` into a :class:`ProbedAttention` (the same module, its
``_choose_entries`` overridden), the way ``make_trainable`` swaps every ``Linear`` for a ``TrainableLinear``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

from v4stack.model.attention import Attention
from v4stack.ops.key_rows import as_tensor

# probe((layer, seq), q [S, H, d], entries [N, d], scores [S, N] with -inf at invisible entries)
IndexerProbe = Callable[[tuple, torch.Tensor, torch.Tensor, torch.Tensor], None]


class ProbedAttention(Attention):
    """An :class:`Attention` whose indexer step also hands its inputs to ``probe`` (when one is set).

    The selection is the inference one computed from the whole [S, N] score matrix (``Indexer.scores`` then
    ``Indexer.top``), which is what the probe needs; training sequences are short, so the matrix is small. Decode
    steps go through the per-sequence path (``batched_decode`` off) so every CSA query reaches the probe."""

    batched_decode = False
    probe: IndexerProbe | None = None

    def _choose_entries(self, iq, iw, index_keys, positions, q, entries, key) -> torch.Tensor:
        scores = self.indexer.scores(iq, iw, index_keys, positions)
        if self.probe is not None:
            self.probe(key, q, as_tensor(entries), scores)  # the entries joined [N, d] (ops.key_rows)
        return self.indexer.top(scores, positions)


def probe_csa_layers(model: nn.Module) -> int:
    """Turn every CSA attention (one with an indexer) of ``model`` into a :class:`ProbedAttention` in place
    (same parameters, buffers and submodules); returns how many. Idempotent."""
    count = 0
    for module in model.modules():
        if isinstance(module, Attention) and module.indexer is not None:
            if not isinstance(module, ProbedAttention):
                module.__class__ = ProbedAttention  # the subclass adds no state: a class swap keeps every tensor
            count += 1
    return count


@contextmanager
def probing(model: nn.Module, probe: IndexerProbe) -> Iterator[None]:
    """Within the block, every :class:`ProbedAttention` of ``model`` calls ``probe``; raises if the model has CSA
    layers that were not converted (their indexer loss would silently be missing)."""
    layers = [m for m in model.modules() if isinstance(m, Attention) and m.indexer is not None]
    unprobed = [m.layer_id for m in layers if not isinstance(m, ProbedAttention)]
    if unprobed:
        raise ValueError(f"CSA layers {unprobed} are not probed: build the model with training.make_trainable")
    for m in layers:
        m.probe = probe
    try:
        yield
    finally:
        for m in layers:
            m.probe = None
