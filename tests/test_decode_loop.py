"""The one prefill-then-decode loop (model/decode_loop.py) against forwards written out by hand."""

import pytest
import torch

from v4stack.config.numerics import Numerics
from v4stack.model import ForwardBatch
from v4stack.model.decode_loop import prefill_then_decode, v4_forward
from v4stack.modelio.loader import load_model


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return load_model(tiny_checkpoint, Numerics.exact_fp32(), progress=False)


def _prompts(model, lengths, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(3, model.cfg.vocab_size, (n,), generator=gen) for n in lengths]


def test_tokens_and_logits_equal_the_hand_written_loop(model):
    prompts = _prompts(model, (9, 14))                          # a batch of two lengths
    steps = list(prefill_then_decode(v4_forward(model, [model.new_state(), model.new_state()]), prompts, 5))
    assert [s.index for s in steps] == [0, 1, 2, 3, 4] and all(s.seconds > 0 for s in steps)
    states = [model.new_state(), model.new_state()]
    logits = model(ForwardBatch.build(states, prompts)).logits
    for step in steps:
        torch.testing.assert_close(step.output.logits, logits, rtol=0, atol=0)
        assert torch.equal(step.tokens, logits.argmax(-1))
        logits = model(ForwardBatch.build(states, list(step.tokens[:, None]))).logits


def test_chunked_prefill_gives_the_whole_prefill_tokens(model):
    prompt = _prompts(model, (23,))
    whole = [s.tokens for s in prefill_then_decode(v4_forward(model, [model.new_state()]), prompt, 4)]
    for chunk in (1, 5, 8):
        calls = []

        def forward(pieces, fwd=v4_forward(model, [model.new_state()])):
            calls.append(pieces[0].numel())
            return fwd(pieces)

        chunked = [s.tokens for s in prefill_then_decode(forward, prompt, 4, chunk=chunk)]
        assert chunked == whole
        assert calls[:-3] == [min(chunk, 23 - b) for b in range(0, 23, chunk)]  # then 3 one-token steps


def test_a_custom_choice_is_fed_back(model):
    prompt, fed = _prompts(model, (6,)), []
    inner = v4_forward(model, [model.new_state()])

    def forward(pieces):
        fed.append(pieces[0].tolist())
        return inner(pieces)

    seen = [int(s.tokens[0]) for s in prefill_then_decode(forward, prompt, 3,
                                                           choose=lambda logits: torch.full((logits.shape[0],), 7))]
    assert seen == [7, 7, 7] and fed == [prompt[0].tolist(), [7], [7]]


@pytest.mark.parametrize("prompts, new, chunk, match", [
    ([torch.tensor([1, 2])], 0, None, "new_tokens"),
    ([torch.tensor([], dtype=torch.long)], 2, None, "at least one token"),
    ([torch.tensor([1, 2]), torch.tensor([1, 2, 3])], 2, 2, "one length"),
])
def test_bad_arguments_are_refused_before_any_forward(prompts, new, chunk, match):
    def forward(pieces):
        raise AssertionError("no forward may run")

    with pytest.raises(ValueError, match=match):
        list(prefill_then_decode(forward, prompts, new, chunk=chunk))
