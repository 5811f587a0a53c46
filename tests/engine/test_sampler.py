"""The batched sampler: each parameter's meaning, and per-request seeds independent of the batch."""

import math

import pytest
import torch

from v4stack.config.validation import ParameterError
from v4stack.engine.request import Request
from v4stack.engine.sampler import Sampler
from v4stack.engine.sampling_params import SamplingParams

V = 50


def req(params: SamplingParams, output=(), prompt=(5, 6), seed=0, rid="r") -> Request:
    r = Request(rid, list(prompt), params, eos_token_id=1, max_total_tokens=1000, generator=torch.Generator().manual_seed(seed))
    r.output_token_ids.extend(output)
    return r


def logits_with(peaks: dict[int, float]) -> torch.Tensor:
    row = torch.zeros(V)
    for t, v in peaks.items():
        row[t] = v
    return row


def test_greedy_picks_the_argmax():
    assert Sampler()(logits_with({9: 3.0, 4: 2.0})[None], [req(SamplingParams(temperature=0))])[0].token_id == 9


def test_top_k_and_top_p_and_min_p_restrict_the_draw():
    row = logits_with({10: 5.0, 11: 4.9, 12: 4.8})  # three plausible tokens, the rest unlikely but possible
    draws = lambda p: {Sampler()(row[None].clone(), [req(p, seed=s)])[0].token_id for s in range(60)}
    assert draws(SamplingParams(top_k=1)) == {10}
    assert draws(SamplingParams(top_k=2)) <= {10, 11}
    probs = torch.softmax(row, -1)
    assert probs[10] < 0.5 and draws(SamplingParams(top_p=probs[10].item() * 0.99)) == {10}
    assert draws(SamplingParams(min_p=0.5)) <= {10, 11, 12}
    assert len(draws(SamplingParams())) > 3  # unrestricted: tail tokens appear


def test_repetition_presence_and_frequency_penalties():
    row = logits_with({20: 2.0, 21: 1.9})
    # token 20 was generated twice: frequency 0.1*2 + presence 0.0 -> 1.8 < 1.9
    r = req(SamplingParams(temperature=0, frequency_penalty=0.1), output=[20, 20])
    assert Sampler()(row[None].clone(), [r])[0].token_id == 21
    r = req(SamplingParams(temperature=0, presence_penalty=0.15), output=[20])
    assert Sampler()(row[None].clone(), [r])[0].token_id == 21
    # repetition penalty covers the prompt too: 2.0 / 1.1 = 1.82 < 1.9
    r = req(SamplingParams(temperature=0, repetition_penalty=1.1), prompt=[20])
    assert Sampler()(row[None].clone(), [r])[0].token_id == 21


def test_min_tokens_masks_eos_and_stop_ids():
    row = logits_with({1: 9.0, 30: 8.0, 31: 7.0})
    r = req(SamplingParams(temperature=0, min_tokens=2, stop_token_ids=[30]), output=[4])
    assert Sampler()(row[None].clone(), [r])[0].token_id == 31
    r = req(SamplingParams(temperature=0, min_tokens=2, stop_token_ids=[30]), output=[4, 4])
    assert Sampler()(row[None].clone(), [r])[0].token_id == 1


def test_logprobs_are_raw_log_softmax_with_rank_and_top_n():
    row = logits_with({3: 2.0, 4: 1.0})
    out = Sampler()(row[None].clone(), [req(SamplingParams(temperature=0, logprobs=2, repetition_penalty=4.0),
                                           prompt=[3])])[0]
    lp = torch.log_softmax(row, -1)
    # the penalty moved the choice to token 4, but logprobs report the model's own distribution
    assert out.token_id == 4 and out.logprobs.rank == 2
    assert math.isclose(out.logprobs.logprob, lp[4].item(), rel_tol=1e-6)
    assert [t for t, _ in out.logprobs.top] == [3, 4]


def test_a_seeded_request_draws_the_same_tokens_whatever_the_batch():
    torch.manual_seed(0)
    rows = torch.randn(4, V)
    alone = [Sampler()(rows[2:3].clone(), [req(SamplingParams(seed=5), seed=5)])[0].token_id]
    mixed = Sampler()(rows.clone(), [req(SamplingParams(), seed=s) for s in (1, 2, 5, 3)])[2].token_id
    assert alone == [mixed]


@pytest.mark.parametrize("kwargs, param", [
    ({"temperature": float("nan")}, "temperature"), ({"temperature": -1}, "temperature"),
    ({"top_p": 0}, "top_p"), ({"top_p": 1.5}, "top_p"), ({"top_k": -2}, "top_k"), ({"min_p": 2}, "min_p"),
    ({"repetition_penalty": 0}, "repetition_penalty"), ({"presence_penalty": 3}, "presence_penalty"),
    ({"frequency_penalty": float("inf")}, "frequency_penalty"), ({"n": 0}, "n"), ({"n": 10_000}, "n"),
    ({"max_tokens": 0}, "max_tokens"), ({"max_tokens": 5, "min_tokens": 6}, "min_tokens"),
    ({"logprobs": 21}, "logprobs"), ({"stop": [""]}, "stop"), ({"stop_token_ids": [-1]}, "stop_token_ids"),
])
def test_invalid_parameters_are_one_line_errors_naming_the_parameter(kwargs, param):
    with pytest.raises(ParameterError) as err:
        SamplingParams(**kwargs)
    assert err.value.param == param and "\n" not in str(err.value) and str(err.value).startswith(param)
