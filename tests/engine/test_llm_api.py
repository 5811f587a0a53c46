"""The offline LLM and the async engine as a user calls them: output shape, n, refusals, failures, aborts."""

import asyncio

import pytest
import torch

from tests.engine.engine_harness import CACHE_BYTES
from v4stack.config.numerics import Numerics
from v4stack.config.validation import ContextLengthError, ParameterError
from v4stack.engine.async_engine import AsyncLLMEngine
from v4stack.engine.config import EngineConfig, SchedulerConfig
from v4stack.engine.llm import LLM
from v4stack.engine.llm_engine import EngineFullError, LLMEngine
from v4stack.engine.sampling_params import SamplingParams
from v4stack.engine.tokenizer import Tokenizer
from v4stack.modelio.loader import load_model


@pytest.fixture(scope="module")
def engine_parts(tiny_checkpoint):
    return load_model(tiny_checkpoint, Numerics.exact_fp32(), progress=False), Tokenizer(tiny_checkpoint)


def new_engine(engine_parts, **config):
    model, tok = engine_parts
    return LLMEngine(model, tok, EngineConfig(numerics="fp32", **config), available_bytes=4 * CACHE_BYTES)


def test_generate_returns_vllm_shaped_outputs_in_prompt_order(engine_parts):
    llm = LLM(engine=new_engine(engine_parts))
    outs = llm.generate(["Once upon", "a"], SamplingParams(temperature=0, max_tokens=5, ignore_eos=True), use_tqdm=False)
    assert [o.prompt for o in outs] == ["Once upon", "a"]
    for o in outs:
        c = o.outputs[0]
        assert o.finished and c.finish_reason == "length" and len(c.token_ids) == 5
        assert c.text == llm.engine.tokenizer.decode(c.token_ids)


def test_n_completions_with_a_seed_are_distinct_and_reproducible(engine_parts):
    llm = LLM(engine=new_engine(engine_parts))
    params = SamplingParams(n=3, temperature=1.0, seed=4, max_tokens=8, ignore_eos=True)
    first = llm.generate("Once", params, use_tqdm=False)[0]
    again = llm.generate("Once", params, use_tqdm=False)[0]
    assert [c.index for c in first.outputs] == [0, 1, 2]
    assert len({tuple(c.token_ids) for c in first.outputs}) > 1
    assert [c.token_ids for c in first.outputs] == [c.token_ids for c in again.outputs]


def test_logprobs_and_stop_token_ids(engine_parts):
    llm = LLM(engine=new_engine(engine_parts))
    greedy = llm.generate("Once", SamplingParams(temperature=0, max_tokens=6, ignore_eos=True, logprobs=3),
                          use_tqdm=False)[0].outputs[0]
    assert len(greedy.logprobs) == 6
    for token, entry in zip(greedy.token_ids, greedy.logprobs):
        assert entry[token].rank == 1 and len(entry) == 3  # greedy: the chosen token is the top one
    stop_at = greedy.token_ids[2]
    cut = llm.generate("Once", SamplingParams(temperature=0, max_tokens=6, ignore_eos=True, stop_token_ids=[stop_at]),
                       use_tqdm=False)[0].outputs[0]
    assert cut.token_ids == greedy.token_ids[:greedy.token_ids.index(stop_at) + 1]
    assert cut.finish_reason == "stop" and cut.stop_reason == stop_at


def test_requests_that_cannot_be_served_are_refused_before_running(engine_parts):
    engine = new_engine(engine_parts, max_model_len=64, scheduler=SchedulerConfig(max_waiting_requests=2))
    with pytest.raises(ContextLengthError, match="context limit is 64"):
        engine.add_request("long", list(range(3, 70)), SamplingParams(max_tokens=1))
    with pytest.raises(ContextLengthError):
        engine.add_request("room", list(range(3, 40)), SamplingParams(max_tokens=40))
    with pytest.raises(ParameterError, match="prompt"):
        engine.add_request("empty", [], SamplingParams())
    with pytest.raises(ParameterError, match="prompt token id"):
        engine.add_request("oov", [3, 10**6], SamplingParams())
    engine.add_request("a", [3, 4], SamplingParams(max_tokens=2))
    with pytest.raises(ParameterError, match="request_id"):
        engine.add_request("a", [3, 4], SamplingParams(max_tokens=2))
    with pytest.raises(EngineFullError):
        engine.add_request("b", [3, 4], SamplingParams(max_tokens=2, n=2))
    assert engine.num_waiting == 1  # nothing of the refused requests was queued


def test_a_failing_step_finishes_its_requests_with_a_reason_and_the_engine_goes_on(engine_parts):
    engine = new_engine(engine_parts)
    engine.add_request("doomed", [3, 4, 5], SamplingParams(max_tokens=4))
    real = engine.runner.execute
    engine.runner.execute = lambda sched: (_ for _ in ()).throw(RuntimeError("simulated kernel fault"))
    (out,) = engine.step()
    assert out.finished and out.outputs[0].finish_reason == "error"
    assert "simulated kernel fault" in out.outputs[0].error
    assert engine.cache.held_blocks() == {g: 0 for g in engine.cache.pools}
    engine.runner.execute = real
    engine.add_request("fine", [3, 4, 5], SamplingParams(max_tokens=2, temperature=0))
    while engine.has_unfinished():
        outs = engine.step()
    assert outs[0].outputs[0].finish_reason == "length"


def test_async_streams_are_independent_and_an_abandoned_stream_frees_its_blocks(engine_parts):
    aengine = AsyncLLMEngine(new_engine(engine_parts)).start()

    async def collect(rid, seed):
        text, ids = "", []
        async for out in aengine.generate(rid, "Once", SamplingParams(temperature=1.0, seed=seed, max_tokens=6,
                                                                      ignore_eos=True)):
            text += out.outputs[0].text_delta
            ids += out.outputs[0].token_ids_delta
        return text, ids

    async def abandon():
        stream = aengine.generate("gone", "Once", SamplingParams(max_tokens=500, ignore_eos=True))
        await stream.__anext__()
        await stream.aclose()  # what a disconnecting client does

    async def main():
        results = await asyncio.gather(*(collect(f"s{i}", i % 4) for i in range(8)))
        await abandon()
        for _ in range(100):
            if not aengine.engine.has_unfinished():
                break
            await asyncio.sleep(0.05)
        return results

    try:
        results = asyncio.run(main())
    finally:
        aengine.shutdown()
    assert all(len(ids) == 6 for _, ids in results)
    assert [r[1] for r in results[:4]] == [r[1] for r in results[4:]]  # same seed, same tokens
    assert not aengine.engine.has_unfinished()
    assert aengine.engine.cache.held_blocks() == {g: 0 for g in aengine.engine.cache.pools}


def test_async_refuses_bad_requests_synchronously(engine_parts):
    aengine = AsyncLLMEngine(new_engine(engine_parts, max_model_len=16)).start()

    async def main():
        with pytest.raises(ContextLengthError):
            async for _ in aengine.generate("x", list(range(3, 30)), SamplingParams()):
                pass
    try:
        asyncio.run(main())
    finally:
        aengine.shutdown()
