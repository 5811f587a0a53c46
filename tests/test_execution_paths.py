"""Prefill, token-by-token decode, chunked prefill and batched forwards compute the same thing (fp32 oracle
numerics, random checkpoints of several shapes), and sequences in one batch do not see each other."""

import pytest
import torch

from v4stack.config import Numerics
from v4stack.model import ForwardBatch
from v4stack.modelio.writer import tiny_config, write_checkpoint
from v4stack.modelio.loader import load_model

TOL = 1e-4
PROMPT_LEN = 300  # crosses the 128 window twice and two HCA groups, leaves a partial CSA group (300 % 4 == 0 -> +1)

SHAPES = {
    "flash": {},
    "pro": dict(compress_ratios=(128, 128, 4, 128, 0), num_hash_layers=1, num_attention_heads=4, o_groups=2,
                index_topk=16, routed_scaling_factor=2.5, hc_mult=4),
    "no_mtp_wide": dict(hidden_size=256, num_hidden_layers=3, compress_ratios=(4, 0, 128), num_nextn_predict_layers=0,
                        index_n_heads=8, num_experts_per_tok=3, n_routed_experts=6),
}


@pytest.fixture(scope="module", params=sorted(SHAPES))
def model(request, tmp_path_factory):
    cfg = tiny_config(**SHAPES[request.param])
    path = write_checkpoint(tmp_path_factory.mktemp(request.param), cfg, seed=hash(request.param) % 1000)
    return load_model(path, Numerics.exact_fp32(), progress=False)


def _prompt(seed, n=PROMPT_LEN + 1, vocab=512):
    return torch.randint(3, vocab, (n,), generator=torch.Generator().manual_seed(seed))


def _all_logits(model, pieces):
    state, out = model.new_state(), []
    for piece in pieces:
        out.append(model(ForwardBatch.build([state], [piece]), logit_rows=torch.arange(piece.numel())).logits)
    return torch.cat(out), state


def test_prefill_decode_chunked_agree(model):
    ids = _prompt(1)
    full, _ = _all_logits(model, [ids])
    assert full.shape[0] == ids.numel()
    one_by_one, _ = _all_logits(model, list(ids.split(1)))
    chunked, _ = _all_logits(model, list(ids.split([5, 3, 120, 1, 64, 60, 48])))
    assert (one_by_one - full).abs().max() < TOL
    assert (chunked - full).abs().max() < TOL
    assert torch.equal(one_by_one.argmax(-1), full.argmax(-1))


def test_batched_sequences_are_independent(model):
    a, b, c = _prompt(2), _prompt(3, 77), _prompt(4, 140)
    alone = [model(ForwardBatch.build([model.new_state()], [x])).logits[0] for x in (a, b, c)]
    states = [model.new_state() for _ in range(3)]
    together = model(ForwardBatch.build(states, [a, b, c])).logits
    assert (together - torch.stack(alone)).abs().max() < TOL
    # continue: one sequence decodes while another prefills a chunk and the third decodes two draft tokens
    nxt = [torch.tensor([7]), _prompt(5, 30), torch.tensor([11, 12])]
    step = model(ForwardBatch.build(states, nxt)).logits
    for i, (x, n) in enumerate(zip((a, b, c), nxt)):
        ref = model(ForwardBatch.build([model.new_state()], [torch.cat([x, n])])).logits[0]
        assert (step[i] - ref).abs().max() < TOL
    assert [s.num_tokens for s in states] == [a.numel() + 1, b.numel() + 30, c.numel() + 2]


def test_mtp_prefill_matches_mtp_decode(model):
    if not model.mtp:
        pytest.skip("no MTP block")
    ids = _prompt(6, 160)
    out = model(ForwardBatch.build([model.new_state()], [ids]), logit_rows=torch.arange(ids.numel()))
    nxt = torch.cat([ids[1:], torch.tensor([5])])
    all_rows = torch.arange(ids.numel())
    full = model.mtp_forward(ForwardBatch.build([model.new_state()], [nxt], is_mtp=True), out.hidden, all_rows)
    state, rows = model.new_state(), []
    for i in range(ids.numel()):
        rows.append(model.mtp_forward(ForwardBatch.build([state], [nxt[i:i + 1]], is_mtp=True), out.hidden[i:i + 1]))
    assert (torch.cat(rows) - full).abs().max() < TOL


def test_batch_rejects_bad_input(model):
    state = model.new_state()
    with pytest.raises(ValueError, match="non-empty"):
        ForwardBatch.build([state], [torch.tensor([], dtype=torch.long)])
    with pytest.raises(ValueError, match="only once"):
        ForwardBatch.build([state, state], [torch.tensor([1]), torch.tensor([2])])
