"""Chat fine-tuning pieces (v4stack.training): play dialogue -> exchanges -> encoded samples with an
assistant-token mask, packing, the vocabulary growth, the warm start from an official-layout checkpoint and
the masked objective."""

import pytest
import torch
from tokenizers import Tokenizer

from v4stack.chat import V4, V4_1, parse_completion
from v4stack.config.numerics import Numerics
from v4stack.model.transformer import DeepseekV4
from v4stack.modelio.writer import tiny_config, write_checkpoint
from v4stack.training import chat_data
from v4stack.training.init import init_parameters
from v4stack.training.objective import ObjectiveConfig, sequence_losses
from v4stack.training.trainable import export_tensors, make_trainable
from v4stack.training.vocab import add_chat_tokens, chat_tokens, grow_vocab_tensors
from v4stack.training.warm_start import read_logical, trainable_from

PLAY = """Dramatis Personae

ROMEO, son to Montague.

SCENE. Verona.

ACT I.

Scene I. A public place.

[Enter Sampson and Gregory.]

Sampson.
Gregory, o' my word, we'll not carry coals.

Gregory.
No, for then we should be colliers. [Aside.]

[Enter Abraham.]

Abraham.
Do you bite your thumb at us, sir?

Abraham.
I say again.

SCENE II. A street.

FIRST CITIZEN.
Clubs, bills, and partisans!

ACT FIRST

Lady Capulet.
What noise is here?
"""


def test_speeches_follow_acts_scenes_and_speakers():
    said = chat_data.speeches(PLAY)
    assert said == [(1, 1, "Sampson", "Gregory, o' my word, we'll not carry coals."),
                    (1, 1, "Gregory", "No, for then we should be colliers."),  # inline direction dropped
                    (1, 1, "Abraham", "Do you bite your thumb at us, sir?"),
                    (1, 1, "Abraham", "I say again."),
                    (1, 2, "FIRST CITIZEN", "Clubs, bills, and partisans!"),
                    (1, 0, "Lady Capulet", "What noise is here?")]


def test_exchanges_pair_different_speakers_within_a_scene():
    ex = chat_data.exchanges("Romeo And Juliet", PLAY)
    # Abraham -> Abraham is one speaker; scene 1 -> scene 2 and act heading break the chain
    assert [(e.asker, e.speaker) for e in ex] == [("Sampson", "Gregory"), ("Gregory", "Abraham")]
    assert ex[0].prompt.startswith("Gregory, o' my word") and ex[0].reply.startswith("No, for then")
    assert chat_data.reasoning(ex[1]) == "Abraham, to Gregory. Romeo And Juliet 1.1."


def test_play_titles_and_numerals():
    assert chat_data.play_title("henry_vi_part_3_gut.txt") == "Henry VI Part 3"
    assert chat_data.play_title("henry_viii_gut.txt") == "Henry VIII"
    assert chat_data.play_title("lear_gut.txt") == "Lear"
    assert [chat_data.roman_to_int(r) for r in ("IV", "IX", "XII", "3", "FIFTH")] == [4, 9, 12, 3, 5]


@pytest.fixture(scope="module")
def chat_tok(tmp_path_factory):
    d = write_checkpoint(tmp_path_factory.mktemp("byte"), tiny_config(vocab_size=400))
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    added = add_chat_tokens(tok, V4)
    return tok, added


def test_chat_tokens_become_single_new_ids(chat_tok):
    tok, added = chat_tok
    assert list(added.values()) == list(range(259, 259 + len(chat_tokens(V4))))  # after 3 specials + 256 bytes
    for text, i in added.items():
        assert tok.encode(text, add_special_tokens=False).ids == [i]
    assert V4_1.system_token in chat_tokens(V4_1) and V4_1.system_token not in chat_tokens(V4)
    with pytest.raises(ValueError, match="already holds"):
        add_chat_tokens(tok, V4)


@pytest.mark.parametrize("thinking", [False, True])
def test_encoded_sample_masks_exactly_the_assistant_turn(chat_tok, thinking):
    tok, added = chat_tok
    ex = chat_data.exchanges("Romeo And Juliet", PLAY)[0]
    s = chat_data.encode_sample(tok, ex, V4, thinking)
    ids, mask = s.ids.tolist(), s.mask.bool().tolist()
    opener = added[V4.think_open if thinking else V4.think_close]
    first = ids.index(added[V4.assistant_token]) + 2  # after <｜Assistant｜> and the think token
    assert ids[0] == 0 and ids[first - 1] == opener and ids[-1] == 1  # BOS ... opener | completion ... EOS
    assert mask == [False] * first + [True] * (len(ids) - first)
    completion = tok.decode(ids[first:], skip_special_tokens=False)
    parsed = parse_completion(completion, fmt=V4, thinking=thinking)
    assert parsed.content == ex.reply
    assert parsed.reasoning_content == (chat_data.reasoning(ex) if thinking else "")  # chat mode: no reasoning


def test_close_weight_lands_on_the_assistant_think_close_only(chat_tok):
    tok, added = chat_tok
    ex = chat_data.exchanges("Romeo And Juliet", PLAY)[0]
    close = added[V4.think_close]
    think = chat_data.encode_sample(tok, ex, V4, thinking=True, close_weight=5.0)
    weighted = [i for i, w in zip(think.ids.tolist(), think.mask.tolist()) if w == 5.0]
    assert weighted == [close] and set(think.mask.tolist()) == {0.0, 1.0, 5.0}
    chat = chat_data.encode_sample(tok, ex, V4, thinking=False, close_weight=5.0)
    assert close in chat.ids.tolist() and set(chat.mask.tolist()) == {0.0, 1.0}  # chat mode: </think> is prompt


def test_mixed_samples_hold_every_exchange_thinking_and_the_share_asked(chat_tok):
    tok, added = chat_tok
    exs = chat_data.exchanges("Romeo And Juliet", PLAY) * 50  # 100 exchanges
    opener = added[V4.think_open]
    for share in (0.5, 0.75, 1.0):
        samples = chat_data.mixed_samples(tok, exs, V4, thinking_share=share, seed=1)
        thinking = sum(opener in s.ids.tolist() for s in samples)
        assert thinking == len(exs)
        assert abs(thinking / len(samples) - share) < 0.08, (share, thinking, len(samples))
    assert len(chat_data.mixed_samples(tok, exs, V4, thinking_share=0.5)) == 2 * len(exs)
    with pytest.raises(ValueError, match="thinking_share"):
        chat_data.mixed_samples(tok, exs, V4, thinking_share=0.3)


def test_weighted_loss_mask_counts_a_target_by_its_weight():
    """The loss is the weighted mean of the per-target losses: weight 3 counts a target three times, 0 not at all."""
    from v4stack.training.objective import _masked_ce

    logits, targets = torch.randn(4, 7, generator=torch.Generator().manual_seed(0)), torch.tensor([1, 2, 3, 4])
    per = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    got = _masked_ce(logits, targets, torch.tensor([1.0, 3.0, 0.0, 1.0]))
    assert torch.allclose(got, (per[0] + 3 * per[1] + per[3]) / 5)


def test_pack_rows_fills_rows_from_sample_starts_and_advances_the_cursor():
    samples = [chat_data.Sample(torch.arange(n) + 10 * n, torch.arange(n) % 2) for n in (3, 4, 5)]
    ids, mask, cursor = chat_data.pack_rows(samples, rows=2, length=6, order=torch.tensor([2, 0, 1]), cursor=1)
    # order[1:] = samples 0 (3 ids) + 1 (4 ids, cut) ; then samples 2 (5) + 0 (3, cut)
    assert ids[0].tolist() == [30, 31, 32, 40, 41, 42]
    assert ids[1].tolist() == [50, 51, 52, 53, 54, 30]
    assert mask[0].tolist() == [0, 1, 0, 0, 1, 0] and cursor == 5


def test_warm_start_round_trips_and_vocab_growth_adds_mean_rows(tmp_path):
    cfg = tiny_config(vocab_size=300, hc_mult=4, index_topk=4, sliding_window=16)
    d = write_checkpoint(tmp_path / "ckpt", cfg, seed=3)
    cfg2, tensors = read_logical(d)
    model = trainable_from(cfg2, tensors)
    (tmp_path / "again").mkdir()
    (tmp_path / "again" / "config.json").write_bytes((d / "config.json").read_bytes())
    from safetensors.torch import save_file

    save_file(export_tensors(model), str(tmp_path / "again" / "model.safetensors"))
    _, back = read_logical(tmp_path / "again")
    assert sorted(back) == sorted(tensors)
    assert all(torch.equal(back[k], tensors[k]) for k in tensors)  # exported values = the checkpoint's
    grown = grow_vocab_tensors(tensors, 310, cfg.n_routed_experts, seed=0)
    for name in ("embed.weight", "head.weight"):
        assert grown[name].shape == (310, cfg.hidden_size)
        assert torch.equal(grown[name][:300], tensors[name])
        assert torch.allclose(grown[name][300:], tensors[name].mean(0).expand(10, -1))
    table = grown["layers.0.ffn.gate.tid2eid"]
    assert table.shape == (310, cfg.num_experts_per_tok) and int(table.max()) < cfg.n_routed_experts
    assert all(len(set(row)) == len(row) for row in table[300:].tolist())  # distinct experts per token
    from dataclasses import replace

    trainable_from(replace(cfg2, vocab_size=310), grown)  # shapes fit a grown config
    with pytest.raises(ValueError, match="shape"):
        trainable_from(cfg2, grown)


def test_loss_mask_restricts_the_loss_to_marked_targets():
    cfg = tiny_config(hc_mult=4, index_topk=4, sliding_window=16)
    model = make_trainable(DeepseekV4(cfg, Numerics.exact_fp32()))
    init_parameters(model, 0)
    tokens = torch.randint(3, cfg.vocab_size, (2, 18), generator=torch.Generator().manual_seed(0))
    tokens[:, 0] = 0
    objective = ObjectiveConfig(index_weight=0.0, balance_weight=0.0)
    full = sequence_losses(model, tokens, objective)
    ones = sequence_losses(model, tokens, objective, loss_mask=torch.ones(tokens.shape))
    assert ones.main == pytest.approx(full.main, rel=1e-5) and ones.mtp == pytest.approx(full.mtp, rel=1e-5)
    first, second = torch.zeros(tokens.shape), torch.zeros(tokens.shape)
    first[:, :10] = 1   # main targets at positions 1..9 (9 per row), MTP targets 2..9 (8)
    second[:, 10:] = 1  # main targets 10..16 (7 per row), MTP targets 10..17 (8)
    a = sequence_losses(model, tokens, objective, loss_mask=first)
    b = sequence_losses(model, tokens, objective, loss_mask=second)
    assert a.main != pytest.approx(b.main, rel=1e-3)  # the mask selects different targets
    assert full.main == pytest.approx((9 * a.main + 7 * b.main) / 16, rel=1e-5)  # means over the selected ones
    assert full.mtp == pytest.approx((8 * a.mtp + 8 * b.mtp) / 16, rel=1e-5)
