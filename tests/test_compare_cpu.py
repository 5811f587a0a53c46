"""bench/compare_cpu.py's llama.cpp driver and its bytes-per-token accounting, without a llama.cpp build: the
llama.cpp benches are replaced by small shell scripts that behave like a native build on an AMX CPU (abort with
GGML_ASSERT(*cur_backend_id != -1) unless weight repacking is turned off)."""

from __future__ import annotations

import importlib.util
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ABORT = "ggml-backend.cpp:1294: GGML_ASSERT(*cur_backend_id != -1) failed"
# fake llama-bench / llama-batched-bench: abort like the AMX build unless repacking is off, else one JSON result
FAKE = """#!/usr/bin/env bash
echo "$@" >> "$(dirname "$0")/calls.log"
case " $* " in *" --repack 0 "*|*" --no-repack "*) ;; *) echo '{abort}' >&2; exit 134;; esac
{result}
"""


@pytest.fixture()
def compare(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("compare_cpu", ROOT / "bench" / "compare_cpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    results = {"llama-bench": "echo '[{\"avg_ts\": 40.0}]'",
               "llama-batched-bench": "echo 'main: info'; echo '{\"speed_tg\": 160.0}'"}
    for tool, result in results.items():
        (bin_dir / tool).write_text(FAKE.format(abort=ABORT, result=result))
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setattr(module, "LLAMA_BIN_DIRS", (tmp_path / "missing", bin_dir))
    return module, bin_dir


def _args(**kw):
    base = dict(threads=1, prompt=200, new=32, streams=16, prefill=2048, llama_no_repack=False, clock="wall")
    return types.SimpleNamespace(**{**base, **kw})


def test_llama_run_reruns_an_amx_abort_without_repacking(compare, tmp_path):
    module, bin_dir = compare
    a = _args()
    assert module.llama_bin_dir() == bin_dir  # the first directory with both benches
    decode = module.llama_run(tmp_path / "m.gguf", "decode", a)
    assert decode["tok_s"] == 40.0 and decode["step_s"] == pytest.approx(1 / 40)
    assert a.llama_no_repack  # later runs start without repacking
    streams = module.llama_run(tmp_path / "m.gguf", "streams", a)
    assert streams["tok_s"] == 160.0
    calls = (bin_dir / "calls.log").read_text().splitlines()
    # decode: aborted once, then rerun with --repack 0 at depth = the prompt length; streams: no-repack at once
    assert len(calls) == 3
    assert "--repack 0" not in calls[0] and "--repack 0" in calls[1] and "-d 200" in calls[1]
    assert "--no-repack" in calls[2] and "-npl 16" in calls[2]


def test_llama_cpu_clock_differences_two_runs(compare, tmp_path):
    """CPU clock: two runs per figure that differ only in the measured work, without llama-bench's warm-up; the
    fake bench burns CPU in proportion to the tokens it is asked for, so the difference is positive."""
    module, bin_dir = compare
    burn = 'n=$(echo " $* " | sed -E "s/.* -(n|ntg) ([0-9]+) .*/\\2/"); for i in $(seq $((n * 3000))); do :; done'
    for tool in ("llama-bench", "llama-batched-bench"):
        script = (bin_dir / tool).read_text()
        (bin_dir / tool).write_text(script.replace('echo "$@" >>', burn + '\necho "$@" >>'))
    a = _args(clock="cpu", llama_no_repack=True, new=8)
    decode = module.llama_run(tmp_path / "m.gguf", "decode", a)
    streams = module.llama_run(tmp_path / "m.gguf", "streams", a)
    assert decode["tok_s"] > 0 and streams["tok_s"] > 0
    calls = (bin_dir / "calls.log").read_text().splitlines()
    assert [("-n 16" in c, "-n 8" in c, "--no-warmup" in c) for c in calls[:2]] == [(True, False, True),
                                                                                    (False, True, True)]
    assert "-ntg 16" in calls[2] and "-ntg 8" in calls[3]


def test_llama_run_does_not_hide_other_failures(compare, tmp_path):
    module, bin_dir = compare
    (bin_dir / "llama-bench").write_text("#!/usr/bin/env bash\necho 'error: failed to load model' >&2; exit 1\n")
    a = _args()
    with pytest.raises(module.subprocess.CalledProcessError):
        module.llama_run(tmp_path / "m.gguf", "prefill", a)
    assert not a.llama_no_repack


def test_weight_bytes_count_the_head_but_not_the_lookup_tables(compare):
    """Of the vocabulary-sized tensors only the head is read per token (the embedding and the hash-routing table are
    looked up one row at a time): a larger vocabulary adds exactly the head's extra rows."""
    module, _ = compare
    from v4stack.modelio.writer import tiny_config

    small, large = tiny_config(vocab_size=512), tiny_config(vocab_size=1024)
    assert large.num_hash_layers > 0  # the tid2eid tables exist and grow with the vocabulary too
    extra_rows = large.vocab_size - small.vocab_size
    for engine, head_bytes in (("fp32", 4), ("reference", 2), ("fast", 2)):  # fp32 copy vs the stored bf16 head
        grown = module.weight_bytes_per_token(large, engine) - module.weight_bytes_per_token(small, engine)
        assert grown == pytest.approx(extra_rows * large.hidden_size * head_bytes), engine


def test_paired_ratios_pair_rounds_not_medians(compare):
    """Each ratio is the median of per-round ratios (both engines measured in the same round, under the same load),
    which differs from the ratio of the medians when the load drifts."""
    module, _ = compare
    fast = [{"tok_s": v} for v in (10.0, 40.0, 20.0)]
    llama = [{"tok_s": v} for v in (20.0, 40.0, 80.0)]  # per round: 0.5, 1.0, 0.25 -> median 0.5 (medians: 20/40)
    samples = {("fast", "decode"): fast, ("llama.cpp", "decode"): llama, ("fast", "streams"): fast[:2]}
    ratios = module.paired_ratios(samples, streams=16)
    assert ratios["decode"] == pytest.approx(0.5)
    assert ratios["fast 16 streams / llama.cpp batch 1"] == pytest.approx(0.75)  # rounds 1-2 only: 0.5, 1.0
    assert "prefill" not in ratios and "streams" not in ratios  # llama.cpp streams/prefill were not measured
