"""The trainable twin (v4stack.training): fake quantisation, export round trip, learning, objective parts."""

import pytest
import torch

from v4stack.config.numerics import Numerics
from v4stack.model.batch import ForwardBatch
from v4stack.model.transformer import DeepseekV4
from v4stack.ops.batched import batched_ops
from v4stack.modelio.writer import tiny_config, write_tokenizer
from v4stack.training.fake_quant import fake_cast, fake_fp4, fake_fp8
from v4stack.training.init import init_parameters
from v4stack.training.objective import IndexerKL, ObjectiveConfig, balance_routers, sequence_losses
from v4stack.training.trainable import TrainableLinear, export_tensors, logical_name, make_trainable
from v4stack.weights.formats import dequant_fp4_weight, dequant_fp8_weight, quantize_fp4_weight, quantize_fp8_weight
from v4stack.modelio.loader import load_model

CFG = tiny_config(hc_mult=4, index_topk=4, sliding_window=16)  # window, CSA, HCA, CSA + MTP; 2 hash layers


def trainable(seed=0, ops=None):
    model = make_trainable(DeepseekV4(CFG, Numerics.exact_fp32(), ops))
    init_parameters(model, seed)
    return model


def test_fake_quant_is_the_checkpoint_grid_with_identity_gradient():
    w = (torch.randn(130, 96) * 0.05).requires_grad_()
    q, s = quantize_fp8_weight(w.detach(), 128)
    assert torch.equal(fake_fp8(w, 128), dequant_fp8_weight(q, s, 128).float())
    w4 = (torch.randn(8, 64) * 0.05).requires_grad_()
    assert torch.equal(fake_fp4(w4), dequant_fp4_weight(*quantize_fp4_weight(w4.detach())).float())
    assert torch.equal(fake_cast(w, torch.bfloat16), w.detach().bfloat16().float())
    grad = torch.randn_like(w)
    (fake_fp8(w, 128) * grad).sum().backward()
    assert torch.equal(w.grad, grad)  # straight through


def test_make_trainable_swaps_every_linear_and_keeps_official_names():
    model = trainable()
    from v4stack.model.linear import Linear

    assert not any(isinstance(m, Linear) for m in model.modules())
    assert any(isinstance(m, TrainableLinear) and m.fmt == "fp4" for m in model.modules())
    with torch.device("meta"):
        official = set(DeepseekV4(CFG).state_dict())
    trained = {logical_name(n) for n, _ in model.named_parameters()}
    not_trained = {n for n in official if n.endswith((".scale", "gate.bias", "tid2eid"))}
    assert trained == official - not_trained
    with pytest.raises(ValueError, match="exact_fp32"):
        make_trainable(DeepseekV4(CFG, Numerics.reference()))


def test_export_round_trip_computes_what_training_computed(tmp_path):
    """The exported official-layout checkpoint, loaded by the real loader, gives the trainable model's logits."""
    model = trainable(seed=3, ops=batched_ops())
    tensors = export_tensors(model)
    from safetensors.torch import save_file
    import json

    save_file(tensors, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(CFG.to_dict()))
    write_tokenizer(tmp_path, CFG.vocab_size)
    loaded = load_model(tmp_path, Numerics.exact_fp32())
    ids = torch.randint(3, CFG.vocab_size, (300,))
    rows = torch.arange(300)
    want = model(ForwardBatch.build([model.new_state()], [ids]), logit_rows=rows)
    got = loaded(ForwardBatch.build([loaded.new_state()], [ids]), logit_rows=rows)
    assert (want.logits - got.logits).abs().max() < 1e-4
    assert got.logits.std() > 0.1  # not a degenerate comparison


def test_a_few_steps_learn_a_repeated_batch():
    torch.manual_seed(0)
    model = trainable(seed=1, ops=batched_ops())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    tokens = torch.randint(3, CFG.vocab_size, (2, 66))
    tokens[:, 0] = 0
    first = None
    for _ in range(6):
        losses = sequence_losses(model, tokens, ObjectiveConfig())
        opt.zero_grad()
        losses.total.backward()
        opt.step()
        first = first if first is not None else (losses.main, losses.mtp)
    assert losses.main < first[0] - 0.5 and losses.mtp < first[1] - 0.3
    indexer_wq = model.layers[1].attn.indexer.wq_b.weight
    assert indexer_wq.grad is not None and indexer_wq.grad.abs().sum() > 0  # reached only through the KL


def test_indexer_kl_is_zero_when_the_indexer_matches_attention():
    probe = IndexerKL(scale=0.5)
    q, entries = torch.randn(5, 2, 8), torch.randn(6, 8)
    logits = (torch.einsum("shd,nd->shn", q, entries) * 0.5)
    visible = torch.tensor([0, 1, 2, 6, 6])
    hidden = torch.arange(6)[None, :] >= visible[:, None]
    target = logits.masked_fill(hidden[:, None], float("-inf")).softmax(-1).mean(1)
    scores = target.log().masked_fill(hidden, float("-inf"))
    probe(None, q, entries, scores)
    assert probe.rows == 4 and abs(float(probe.mean())) < 1e-5
    worse = IndexerKL(scale=0.5)
    worse(None, q, entries, torch.zeros(5, 6).masked_fill(hidden, float("-inf")))
    assert float(worse.mean()) > 1e-3


def test_router_balancing_moves_bias_against_load():
    model = trainable()
    name = "layers.2.ffn.gate"
    counts = torch.tensor([10.0, 0, 0, 0, 0, 0, 0, 6])
    before = model.get_submodule(name).bias.clone()
    worst = balance_routers(model, {name: counts}, 0.5)
    delta = model.get_submodule(name).bias - before
    assert delta[0] == -0.5 and delta[1] == 0.5 and delta[7] == -0.5
    assert worst == pytest.approx(10 / 2)


def test_the_indexer_probe_lives_in_training_not_in_the_inference_model():
    """make_trainable turns exactly the CSA attentions into ProbedAttention; the probe sees every CSA query with
    the same choice the inference indexer makes; a model that was not converted is refused, not silently unprobed."""
    from v4stack.model.attention import Attention
    from v4stack.training.probed_attention import ProbedAttention, probing

    model = trainable()
    csa = [m for m in model.modules() if isinstance(m, Attention) and m.indexer is not None]
    assert csa and all(isinstance(m, ProbedAttention) for m in csa)
    assert not any(isinstance(m, ProbedAttention) for m in model.modules() if isinstance(m, Attention)
                   and m.indexer is None)
    seen = []
    tokens = torch.randint(3, CFG.vocab_size, (1, 40))
    with probing(model, lambda key, q, entries, scores: seen.append((key, q.shape, entries.shape, scores.shape))):
        probed = model.run(ForwardBatch.build([model.new_state()], [tokens[0]])).logits
    for m in csa:
        m.__class__ = Attention
    plain_logits = model.run(ForwardBatch.build([model.new_state()], [tokens[0]])).logits
    assert torch.equal(probed, plain_logits)  # same top-k choice as the inference indexer
    for m in csa:
        m.__class__ = ProbedAttention
    assert sorted({k[0] for k, *_ in seen}) == sorted(m.layer_id for m in csa)
    for _, q_shape, e_shape, s_shape in seen:
        assert s_shape == (40, e_shape[0]) and q_shape[0] == 40
    assert all(m.probe is None for m in csa)  # unset after the block
    plain = DeepseekV4(CFG, Numerics.exact_fp32())
    with pytest.raises(ValueError, match="not probed"):
        with probing(plain, lambda *a: None):
            pass
