"""The v4stack command line as a user runs it (subprocess, real files)."""

import shutil
import subprocess
import sys

import torch
from safetensors.torch import load_file, save_file

from tests.conftest import golden_case

ROOT_CMD = [sys.executable, "-m", "v4stack.cli.main"]


def run(*args, env_extra=None, timeout=300):
    import os

    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([*ROOT_CMD, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)


def test_generate_greedy_is_deterministic(tiny_checkpoint):
    a = run("generate", "--model", tiny_checkpoint, "--prompt", "Once", "--max-tokens", "6", "--temperature", "0")
    b = run("generate", "--model", tiny_checkpoint, "--prompt", "Once", "--max-tokens", "6", "--temperature", "0")
    assert a.returncode == 0, a.stderr
    assert a.stdout.startswith("Once") and a.stdout == b.stdout
    assert "6 tok generated" in a.stderr
    assert "generate: prefill" not in a.stderr  # a prompt that fits one step prints no prefill progress


def test_generate_shows_progress_of_a_chunked_prefill(tiny_checkpoint):
    """A prompt longer than a step's token budget: one progress line per chunk before the first token, on
    stderr, and (fp32) the same greedy text as an unchunked prefill gives, the prompt echoed once."""
    prompt = "Once upon a time a king"
    res = run("generate", "--model", tiny_checkpoint, "--prompt", prompt, "--max-tokens", "3", "--temperature", "0",
              "--numerics", "fp32", "--max-num-batched-tokens", "4")
    assert res.returncode == 0, res.stderr
    n = int(res.stderr.split("| prompt ")[1].split(" tok")[0])
    progress = [line for line in res.stderr.splitlines() if line.startswith("generate: prefill")]
    assert n > 8 and len(progress) == (n - 1) // 4          # every chunk but the one that samples the first token
    assert progress[0].startswith(f"generate: prefill 4/{n} prompt tokens (")
    assert progress[-1].startswith(f"generate: prefill {4 * len(progress)}/{n} prompt tokens")
    assert res.stdout.count(prompt) == 1 and res.stdout.startswith(prompt)
    whole = run("generate", "--model", tiny_checkpoint, "--prompt", prompt, "--max-tokens", "3", "--temperature", "0",
                "--numerics", "fp32")
    assert whole.stdout == res.stdout


def test_generate_takes_sampling_defaults_from_generation_config(tiny_checkpoint, tmp_path):
    model = tmp_path / "greedy"
    shutil.copytree(tiny_checkpoint, model)
    (model / "generation_config.json").write_text('{"temperature": 0.0, "top_p": 0.9}')
    outs = {run("generate", "--model", model, "--prompt", "Once", "--max-tokens", "8", "--seed", seed).stdout
            for seed in (1, 2, 3)}
    assert len(outs) == 1  # greedy from the checkpoint's defaults: the seed does not matter
    sampled = {run("generate", "--model", model, "--prompt", "Once", "--max-tokens", "8", "--seed", seed,
                   "--temperature", "1.0").stdout for seed in (1, 2, 3)}
    assert len(sampled) > 1  # a flag overrides the default
    (model / "generation_config.json").write_text("{not json")
    res = run("generate", "--model", model, "--max-tokens", "2")
    assert res.returncode == 3 and "not valid JSON" in res.stderr  # data unreadable


def test_generate_missing_default_model_is_a_clear_error(tmp_path):
    res = run("generate", "--max-tokens", "2", env_extra={"V4STACK_DEFAULT_MODEL": str(tmp_path / "gone")})
    assert res.returncode == 3  # data missing
    assert "the default model is not at" in res.stderr and "--model" in res.stderr and "Traceback" not in res.stderr


def test_generate_bad_model_is_a_clear_error(tmp_path):
    res = run("generate", "--model", tmp_path / "nope", "--max-tokens", "2")
    assert res.returncode == 3  # data missing
    assert "no config.json" in res.stderr and "Traceback" not in res.stderr


def test_make_checkpoint_with_overrides(tmp_path):
    out = tmp_path / "ck"
    res = run("make-checkpoint", out, "--shards", "2", "--set", "hidden_size=256", "--set", "compress_ratios=[4,0,128,4,0]")
    assert res.returncode == 0, res.stderr
    assert (out / "model.safetensors.index.json").exists()
    res = run("generate", "--model", out, "--max-tokens", "2", "--numerics", "fp32")
    assert res.returncode == 0, res.stderr


def test_check_golden_passes_on_a_case():
    case = golden_case("flash_like")
    res = run("check-golden", case, "--paths", "chunked", "--numerics", "fp32")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "flash_like [fp32, chunked] PASS" in res.stdout and "step_logits max |d|" in res.stdout
    assert "[1/1] flash_like [fp32, chunked] running" in res.stderr          # progress, on stderr
    assert "check-golden: 1 checks on 1 cases, 0 failed" in res.stdout


def test_check_golden_catches_a_dropped_attention_sink(tmp_path):
    """A plausible bug (no sink logit in layer 2) must fail the fp32 comparison."""
    case = tmp_path / "flash_like_nosink"
    shutil.copytree(golden_case("flash_like"), case)
    tensors = load_file(str(case / "model.safetensors"))
    tensors["layers.2.attn.attn_sink"] = torch.full_like(tensors["layers.2.attn.attn_sink"], -1e4)
    save_file(tensors, str(case / "model.safetensors"))
    res = run("check-golden", case, "--paths", "chunked", "--numerics", "fp32")
    assert res.returncode == 1
    assert "FAIL" in res.stdout
