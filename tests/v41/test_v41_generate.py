"""``v4stack generate`` on a DeepSeek-V4.1 checkpoint runs through the engine (``LLMEngine.from_model_dir``, as
for V4): its greedy tokens are the model's own greedy drive (prefill, then one token per step on its state, as
the golden runner drives it), on the device and disk Engram tiers; the CLI (host tier) streams that text."""

from __future__ import annotations

import pytest
import torch

from v4stack.cli.main import main
from v4stack.config.engram_placement import EngramPlacement
from v4stack.engine.config import EngineConfig, SchedulerConfig
from v4stack.engine.llm_engine import LLMEngine
from v4stack.engine.sampling_params import SamplingParams
from v4stack.engine.tokenizer import Tokenizer
from v4stack.modelio.loader import load_model
from v4stack.modelio.writer import write_v41_checkpoint

PROMPT, NEW = "The king said to the queen", 6


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_v41_checkpoint(tmp_path_factory.mktemp("v41_gen"), seed=11)


@pytest.fixture(scope="module")
def expected(ckpt):
    """Greedy ids by hand: one prefill of the prompt, then each argmax fed back (the golden runner's drive)."""
    model = load_model(ckpt, progress=False)
    ids = Tokenizer(ckpt).encode(PROMPT)
    state = model.new_state()
    logits, out = model(state, torch.tensor(ids)).logits, []
    for _ in range(NEW):
        out.append(int(logits[0].argmax()))
        logits = model(state, torch.tensor(out[-1:])).logits
    return ids, out


# one prefill chunk: in reference numerics a chunked prefill agrees with one prefill within the golden band, not
# bitwise (fp32 chunked == prefill is tests/v41/test_v41_golden.py), and random weights make greedy near-ties
@pytest.mark.parametrize("tier, chunk", [("device", 2048), ("disk", 2048)])
def test_greedy_equals_the_models_own_drive(ckpt, expected, tier, chunk):
    ids, want = expected
    config = EngineConfig(numerics="reference", scheduler=SchedulerConfig(max_num_batched_tokens=chunk),
                          engram=EngramPlacement(tier, cache_bytes=1 << 14))
    engine = LLMEngine.from_model_dir(ckpt, config)
    engine.add_request("g", ids, SamplingParams(temperature=0.0, max_tokens=NEW, ignore_eos=True))
    outs = []
    while engine.has_unfinished():
        outs.extend(engine.step())
    assert [t for o in outs for t in o.outputs[0].token_ids_delta] == want
    assert outs[-1].outputs[0].finish_reason == "length" and all(o.outputs[0].finish_reason is None for o in outs[:-1])
    assert "".join(o.outputs[0].text_delta for o in outs) == Tokenizer(ckpt).decode(want)


def test_cli_generate_streams_the_greedy_text(ckpt, expected, capsys):
    _, want = expected
    code = main(["generate", "--model", str(ckpt), "--prompt", PROMPT, "--max-tokens", str(NEW),
                 "--temperature", "0", "--engram", "host"])
    out, err = capsys.readouterr()
    assert code == 0, err
    text = Tokenizer(ckpt).decode(want)
    eos = Tokenizer(ckpt).eos_id
    if eos in want:  # generation stops at EOS: only the text before it
        text = Tokenizer(ckpt).decode(want[:want.index(eos)])
    assert out == PROMPT + text + "\n"
    assert "engram host" in err
