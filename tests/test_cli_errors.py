"""Every bad input the CLI can meet gives one line on stderr and the documented exit code (README "Exit codes").

The table runs ``v4stack.cli.main.main(argv)`` in-process (no weights load on any of these paths, so it is
fast); a few rows at the end go through a real subprocess to prove no traceback reaches the terminal.
Each row: argv, environment overrides, expected exit code, text the one-line message must contain.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from v4stack.cli.main import main
from v4stack.config.default_model import BUNDLED_MODELS, DEMO_NAME

DEMO = BUNDLED_MODELS / DEMO_NAME
OK, FAILED, USAGE, DATA = 0, 1, 2, 3
PLAN = ["plan", "--model", "v4-flash", "--hardware", "h200", "--devices", "8"]
GEN = ["generate"]
NON_UTF8_PROMPT = b"The king \xff\xfe said".decode("utf-8", "surrogateescape")  # what Python makes of such argv


def _model_with(tmp: Path, config_edit=None, files=("tokenizer.json", "tokenizer_config.json"),
                generation_config: str | None = None) -> Path:
    """A model folder without weights (every row fails before weights load): the demo's config.json with
    ``config_edit`` applied (a dict to merge, or raw text), its tokenizer files and generation_config."""
    d = tmp / "model"
    d.mkdir()
    cfg = json.loads((DEMO / "config.json").read_text())
    if isinstance(config_edit, str):
        (d / "config.json").write_text(config_edit)
    else:
        cfg.update(config_edit or {})
        (d / "config.json").write_text(json.dumps(cfg))   # json writes NaN/Infinity literals, as a hand edit may
    for name in files:
        shutil.copy(DEMO / name, d / name)
    if generation_config is not None:
        (d / "generation_config.json").write_text(generation_config)
    return d


def _v41_model(tmp: Path) -> Path:
    """A DeepSeek-V4.1 model folder (config.json only: refused before tokenizer and weights)."""
    from v4stack.modelio.writer import tiny_v41_config

    d = tmp / "v41"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(tiny_v41_config()))
    return d


def _golden_case_without_fp32(tmp: Path) -> Path:
    d = tmp / "case"
    d.mkdir()
    (d / "golden.safetensors").write_bytes(b"")
    return d


def _golden_case_with(tmp: Path, header: bytes | None = None, raw: bytes | None = None) -> Path:
    """A case folder whose golden.safetensors is ``raw`` bytes, or a safetensors file with the JSON ``header``."""
    d = tmp / "case"
    d.mkdir()
    data = raw if raw is not None else struct.pack("<Q", len(header)) + header
    (d / "golden.safetensors").write_bytes(data)
    return d


def _tiers_file(tmp: Path, text: str) -> Path:
    path = tmp / "tiers.json"
    path.write_text(text)
    return path


# (id, argv builder (tmp_path -> argv), env, exit code, message part)
ROWS = [
    # ---- generate: sampling parameters, refused at parse time
    ("temperature-nan", GEN + ["--temperature", "nan"], {}, USAGE, "--temperature: 'nan' is not allowed"),
    ("temperature-inf", GEN + ["--temperature", "inf"], {}, USAGE, "--temperature: 'inf'"),
    ("temperature-neg", GEN + ["--temperature", "-0.5"], {}, USAGE, "expected a finite number >= 0"),
    ("temperature-text", GEN + ["--temperature", "hot"], {}, USAGE, "--temperature: 'hot'"),
    ("top-p-zero", GEN + ["--top-p", "0"], {}, USAGE, "expected a finite number > 0 and <= 1"),
    ("top-p-big", GEN + ["--top-p", "1.5"], {}, USAGE, "--top-p: '1.5'"),
    ("top-p-nan", GEN + ["--top-p", "NaN"], {}, USAGE, "--top-p: 'NaN'"),
    ("max-tokens-zero", GEN + ["--max-tokens", "0"], {}, USAGE, "--max-tokens: '0' is not allowed (expected an integer >= 1)"),
    ("max-tokens-neg", GEN + ["--max-tokens", "-3"], {}, USAGE, "--max-tokens: '-3'"),
    ("max-tokens-float", GEN + ["--max-tokens", "1.5"], {}, USAGE, "--max-tokens: '1.5'"),
    ("seed-text", GEN + ["--seed", "abc"], {}, USAGE, "--seed: 'abc'"),
    ("seed-huge", GEN + ["--seed", str(1 << 64)], {}, USAGE, "<= 18446744073709551615"),
    ("numerics-unknown", GEN + ["--numerics", "bf16"], {}, USAGE, "--numerics: invalid choice: 'bf16'"),
    ("platform-unknown", GEN + ["--platform", "tpu"], {}, USAGE, "--platform: invalid choice: 'tpu'"),
    ("prompt-not-utf8", GEN + ["--prompt", NON_UTF8_PROMPT], {}, USAGE, "expected UTF-8 text; character 9"),
    ("unknown-flag", GEN + ["--temp", "1", "--bogus"], {}, USAGE, "unrecognized arguments: --bogus"),
    # ---- generate: the context limit, refused before weights load
    ("max-tokens-beyond-context", GEN + ["--max-tokens", "100000"], {}, USAGE,
     "the prompt has 4 tokens and 100000 more were requested (100004 in all), but the model's context limit is "
     "4096 tokens"),
    ("prompt-beyond-context", GEN + ["--prompt", "word " * 5000, "--max-tokens", "1"], {}, USAGE,
     "but the model's context limit is 4096 tokens"),
    ("max-model-len-zero", GEN + ["--max-model-len", "0"], {}, USAGE, "--max-model-len: '0'"),
    ("max-model-len-above-model", GEN + ["--max-model-len", "5000"], {}, USAGE,
     "--max-model-len: 5000 is not allowed (expected an integer >= 1 and <= 4096)"),
    ("max-model-len-binds", GEN + ["--max-model-len", "8", "--max-tokens", "8"], {}, USAGE,
     "(12 in all), but the model's context limit is 8 tokens"),
    # ---- generate: the model's files
    ("model-missing", lambda t: GEN + ["--model", str(t / "nope")], {}, DATA, "no config.json"),
    ("config-not-json", lambda t: GEN + ["--model", str(_model_with(t, "{oops"))], {}, DATA,
     "config.json: not valid JSON"),
    ("config-not-object", lambda t: GEN + ["--model", str(_model_with(t, "[1, 2]"))], {}, DATA,
     "config.json: expected a JSON object"),
    ("config-max-pos-nan", lambda t: GEN + ["--model", str(_model_with(t, {"max_position_embeddings": float("nan")}))],
     {}, DATA, "config.json: config field 'max_position_embeddings': expected int, found nan"),
    ("config-max-pos-zero", lambda t: GEN + ["--model", str(_model_with(t, {"max_position_embeddings": 0}))],
     {}, DATA, "config field 'max_position_embeddings': 0 must be a positive integer"),
    ("config-eps-zero", lambda t: GEN + ["--model", str(_model_with(t, {"rms_norm_eps": 0}))], {}, DATA,
     "config field 'rms_norm_eps': 0.0 must be a finite number > 0"),
    ("config-theta-inf", lambda t: GEN + ["--model", str(_model_with(t, {"rope_theta": float("inf")}))], {}, DATA,
     "config field 'rope_theta': inf must be a finite number > 0"),
    ("config-o-groups-zero", lambda t: GEN + ["--model", str(_model_with(t, {"o_groups": 0}))], {}, DATA,
     "config field 'o_groups': 0 must be a positive integer"),
    ("config-hidden-neg", lambda t: GEN + ["--model", str(_model_with(t, {"hidden_size": -256}))], {}, DATA,
     "config field 'hidden_size': -256"),
    ("config-route-scale-nan", lambda t: GEN + ["--model", str(_model_with(t, {"routed_scaling_factor": float("nan")}))],
     {}, DATA, "config field 'routed_scaling_factor': nan must be a finite number > 0"),
    ("config-yarn-factor-neg", lambda t: GEN + ["--model", str(_model_with(t, {"rope_scaling": {
        "type": "yarn", "factor": -16.0, "beta_fast": 32.0, "beta_slow": 1.0,
        "original_max_position_embeddings": 4096}}))], {}, DATA, "config field 'rope_scaling.factor': -16.0"),
    ("config-eos-out-of-vocab", lambda t: GEN + ["--model", str(_model_with(t, {"eos_token_id": 99999}))], {}, DATA,
     "config field 'eos_token_id': 99999 must be below vocab_size=4108"),
    ("no-tokenizer", lambda t: GEN + ["--model", str(_model_with(t, files=()))], {}, DATA, "no tokenizer.json"),
    ("generation-config-nan", lambda t: GEN + ["--model", str(_model_with(t, generation_config='{"temperature": NaN}'))],
     {}, DATA, "generation_config.json: temperature: nan is not allowed"),
    ("generation-config-not-json", lambda t: GEN + ["--model", str(_model_with(t, generation_config="{"))], {}, DATA,
     "generation_config.json: not valid JSON"),
    # ---- environment variables
    ("threads-text", GEN + ["--max-tokens", "0"], {"V4STACK_THREADS": "abc"}, USAGE, "--max-tokens"),  # args first
    ("threads-abc", ["plan", "--model", "v4-flash", "--hardware", "h200", "--devices", "8"],
     {"V4STACK_THREADS": "abc"}, USAGE, "V4STACK_THREADS: 'abc' is not allowed (expected an integer >= 1)"),
    ("threads-zero", PLAN, {"V4STACK_THREADS": "0"}, USAGE, "V4STACK_THREADS: '0'"),
    ("threads-neg", PLAN, {"V4STACK_THREADS": "-2"}, USAGE, "V4STACK_THREADS: '-2'"),
    ("debug-bad", PLAN, {"V4STACK_DEBUG": "maybe"}, USAGE, "V4STACK_DEBUG: 'maybe' is not allowed"),
    ("library-defaults-bad", PLAN, {"V4STACK_LIBRARY_DEFAULTS": "maybe"}, USAGE,
     "V4STACK_LIBRARY_DEFAULTS: 'maybe' is not allowed"),
    ("default-model-gone", GEN, {"V4STACK_DEFAULT_MODEL": "/nonexistent/v4"}, DATA,
     "the default model is not at /nonexistent/v4"),
    # ---- the top-level command
    ("no-command", [], {}, USAGE, "the following arguments are required: COMMAND"),
    ("unknown-command", ["serve-me"], {}, USAGE, "invalid choice: 'serve-me'"),
    # ---- check-golden
    ("golden-missing", lambda t: ["check-golden", str(t / "gone")], {}, DATA,
     "gone: no such file or directory; the golden data must be in ../shared/golden/v4 relative to the repository"),
    ("golden-empty-dir", lambda t: ["check-golden", str(t)], {}, DATA, "holds no golden case"),
    ("golden-unmatched-glob", lambda t: ["check-golden", str(t / "golden" / "v4" / "*")], {}, DATA,
     "v4/*: no such file or directory"),
    ("golden-a-file", lambda t: ["check-golden", str(_model_with(t) / "config.json")], {}, DATA,
     "holds no golden case"),
    ("golden-no-fp32-file", lambda t: ["check-golden", str(_golden_case_without_fp32(t)), "--numerics", "fp32"],
     {}, DATA, "no golden_fp32_noqat.safetensors (needed for --numerics fp32)"),
    ("golden-garbage", lambda t: ["check-golden", str(_golden_case_with(t, raw=b"garbage")), "--numerics",
                                  "reference"], {}, DATA,
     "golden.safetensors: unreadable golden file (golden.safetensors: truncated (no safetensors header))"),
    ("golden-truncated-header", lambda t: ["check-golden", str(_golden_case_with(t, raw=struct.pack("<Q", 999) + b"{}")),
                                           "--numerics", "reference"], {}, DATA, "truncated inside the header"),
    ("golden-header-a-list", lambda t: ["check-golden", str(_golden_case_with(t, b"[1]")), "--numerics", "reference"],
     {}, DATA, "corrupt safetensors header (a JSON list, not an object)"),
    ("golden-header-entry", lambda t: ["check-golden", str(_golden_case_with(t, b'{"a": {"dtype": "F32"}}')),
                                       "--numerics", "reference"], {}, DATA, "tensor 'a' in golden.safetensors: corrupt"),
    ("golden-header-not-json", lambda t: ["check-golden", str(_golden_case_with(t, b"{oops")), "--numerics",
                                          "reference"], {}, DATA, "corrupt safetensors header"),
    ("golden-paths-unknown", ["check-golden", "--paths", "prefill,sideways"], {}, USAGE,
     "--paths: 'prefill,sideways' is not allowed"),
    ("golden-paths-empty", ["check-golden", "--paths", ","], {}, USAGE, "--paths: ','"),
    ("golden-numerics-unknown", ["check-golden", "--numerics", "fp16"], {}, USAGE, "invalid choice: 'fp16'"),
    # ---- make-checkpoint
    ("set-unknown-key", lambda t: ["make-checkpoint", str(t / "ck"), "--set", "foo=1"], {}, USAGE,
     "--set: config field 'foo': unknown key"),
    ("set-no-equals", lambda t: ["make-checkpoint", str(t / "ck"), "--set", "hidden_size"], {}, USAGE,
     "expected KEY=JSON"),
    ("set-not-json", lambda t: ["make-checkpoint", str(t / "ck"), "--set", "hidden_size=abc"], {}, USAGE,
     "the value is not JSON"),
    ("set-zero", lambda t: ["make-checkpoint", str(t / "ck"), "--set", "hidden_size=0"], {}, USAGE,
     "config field 'hidden_size': 0 must be a positive integer"),
    ("set-ratios-length", lambda t: ["make-checkpoint", str(t / "ck"), "--set", "compress_ratios=[0,4,0]"], {},
     USAGE, "'compress_ratios': has 3 entries, expected num_hidden_layers + num_nextn_predict_layers = 5"),
    ("set-nan", lambda t: ["make-checkpoint", str(t / "ck"), "--set", "rms_norm_eps=NaN"], {}, USAGE,
     "'rms_norm_eps': nan must be a finite number > 0"),
    ("set-wrong-type", lambda t: ["make-checkpoint", str(t / "ck"), "--set", 'hidden_size="wide"'], {}, USAGE,
     "config field 'hidden_size': expected int, found 'wide'"),
    ("shards-zero", lambda t: ["make-checkpoint", str(t / "ck"), "--shards", "0"], {}, USAGE, "--shards: '0'"),
    ("ckpt-seed-text", lambda t: ["make-checkpoint", str(t / "ck"), "--seed", "x"], {}, USAGE, "--seed: 'x'"),
    ("ckpt-out-is-file", lambda t: ["make-checkpoint", str(_model_with(t) / "config.json")], {}, DATA,
     "config.json: File exists"),
    ("ckpt-out-unwritable", ["make-checkpoint", "/proc/v4stack-ckpt"], {}, DATA,
     "/proc/v4stack-ckpt: No such file or directory"),
    # ---- plan
    ("devices-zero", ["plan", "--model", "v4-flash", "--hardware", "h200", "--devices", "0"], {}, USAGE,
     "--devices: '0' is not allowed (expected an integer >= 1)"),
    ("devices-neg", ["plan", "--model", "v4-flash", "--hardware", "h200", "--devices", "-8"], {}, USAGE, "--devices: '-8'"),
    ("context-neg", PLAN + ["--context", "-5"], {}, USAGE, "--context: '-5' is not allowed (expected a token count >= 1"),
    ("context-zero", PLAN + ["--context", "0"], {}, USAGE, "--context: '0'"),
    ("context-text", PLAN + ["--context", "lots"], {}, USAGE, "--context: 'lots'"),
    ("context-nan", PLAN + ["--context", "nanK"], {}, USAGE, "--context: 'nanK'"),
    ("context-beyond-model", PLAN + ["--context", "2M"], {}, USAGE,
     "--context: 2097152 is not allowed (expected <= 1,048,576, v4-flash's maximum context"),
    ("prompt-beyond-model", PLAN + ["--prompt", "2M"], {}, USAGE, "--prompt: 2097152"),
    ("concurrency-zero", PLAN + ["--concurrency", "0"], {}, USAGE, "--concurrency: '0'"),
    ("tp-zero", PLAN + ["--tp", "0"], {}, USAGE, "--tp: '0'"),
    ("dp-zero", PLAN + ["--dp", "0"], {}, USAGE, "--dp: '0'"),
    ("ep-zero", PLAN + ["--ep", "0"], {}, USAGE, "--ep: '0'"),
    ("tp-not-dividing", PLAN + ["--tp", "3"], {}, USAGE, "tp(3) x dp(2) must equal devices(8)"),
    ("ep-not-dividing", PLAN + ["--ep", "3"], {}, USAGE, "ep(3) must divide devices(8)"),
    ("devices-huge", ["plan", "--model", "v4-flash", "--hardware", "h200", "--devices", str(10**20)], {}, USAGE,
     "tp: 100000000000000000000 is not allowed (expected a divisor of the model's 64 attention heads"),
    ("ep-over-experts", ["plan", "--model", "v4-flash", "--hardware", "h200", "--devices", "512", "--dp", "8"], {},
     USAGE, "ep: 512 is not allowed (expected at most the model's 256 routed experts)"),
    ("model-unknown", ["plan", "--model", "v5-mega", "--hardware", "h200", "--devices", "8"], {}, USAGE,
     "--model: 'v5-mega' is not allowed (expected one of v4-flash, v4-pro, v4.1-flash"),
    ("model-config-unreadable", lambda t: ["plan", "--model", str(_model_with(t, '{"a": 1}')), "--hardware", "h200",
                                           "--devices", "1"], {}, DATA,
     "config.json: config field 'vocab_size': missing"),  # the family parser's message, with the file
    ("hardware-unknown", ["plan", "--model", "v4-flash", "--hardware", "tpu9", "--devices", "8"], {}, USAGE,
     "--hardware: 'tpu9' is not allowed (expected one of 910b"),
    ("spec-without-acceptance", PLAN + ["--spec-tokens", "2"], {}, USAGE, "--spec-tokens needs --acceptance"),
    ("acceptance-above-k", PLAN + ["--spec-tokens", "2", "--acceptance", "5"], {}, USAGE,
     "--acceptance: 5.0 is not allowed (expected <= --spec-tokens + 1 = 3"),
    ("acceptance-nan", PLAN + ["--spec-tokens", "2", "--acceptance", "nan"], {}, USAGE, "--acceptance: 'nan'"),
    ("acceptance-below-one", PLAN + ["--spec-tokens", "2", "--acceptance", "0.5"], {}, USAGE, "--acceptance: '0.5'"),
    ("spec-tokens-neg", PLAN + ["--spec-tokens", "-1"], {}, USAGE, "--spec-tokens: '-1'"),
    ("output-tokens-neg", PLAN + ["--output-tokens", "-1"], {}, USAGE, "--output-tokens: '-1'"),
    ("plot-chip-unknown", lambda t: PLAN + ["--plot", str(t / "p.png"), "--plot-chips", "h200,nope"], {}, USAGE,
     "--plot-chips: 'nope' is not allowed (expected one of"),
    ("plot-dir-missing", lambda t: PLAN + ["--plot", str(t / "no" / "p.png")], {}, DATA,
     "p.png: No such file or directory"),
    ("plan-does-not-fit", ["plan", "--model", "v4-pro", "--hardware", "910b", "--devices", "1"], {}, FAILED, None),
    # ---- serve (all refused before any weights load)
    ("serve-port-big", ["serve", "--port", "70000"], {}, USAGE,
     "--port: '70000' is not allowed (expected an integer >= 0 and <= 65535)"),
    ("serve-port-text", ["serve", "--port", "http"], {}, USAGE, "--port: 'http'"),
    ("serve-model-missing", lambda t: ["serve", str(t / "nope")], {}, DATA, "no config.json"),
    ("serve-max-num-seqs-zero", ["serve", "--max-num-seqs", "0"], {}, USAGE, "--max-num-seqs: '0'"),
    ("serve-kv-memory-nan", ["serve", "--kv-cache-memory-gib", "nan"], {}, USAGE, "--kv-cache-memory-gib: 'nan'"),
    ("serve-tiers-missing", lambda t: ["serve", "--tiers", str(t / "none.json")], {}, DATA, "none.json: not found"),
    ("serve-tiers-not-json", lambda t: ["serve", "--tiers", str(_tiers_file(t, "{"))], {}, DATA, "not valid JSON"),
    ("serve-tiers-bad-tier", lambda t: ["serve", "--tiers", str(_tiers_file(t, '{"tiers": {"x": {"thinking": 1}}}'))],
     {}, DATA, "thinking must be true or false"),
    # ---- check-chat
    ("chat-show-neg", lambda t: ["check-chat", str(t / "x.jsonl"), "--show", "-1"], {}, USAGE, "--show: '-1'"),
    ("chat-file-missing", lambda t: ["check-chat", str(t / "x.jsonl")], {}, DATA, "x.jsonl: no such file"),
    ("serve-v41-mtp-refused", lambda t: ["serve", str(_v41_model(t)), "--enable-mtp"], {}, USAGE,
     "enable_mtp: True is not allowed (expected off for DeepSeek-V4.1"),
    ("gen-engram-tier", GEN + ["--engram", "gpu"], {}, USAGE, "--engram: invalid choice"),
    ("gen-engram-cache-zero", GEN + ["--engram-cache-mb", "0"], {}, USAGE, "--engram-cache-mb"),
]


def test_the_table_is_large_and_ids_are_unique():
    assert len(ROWS) >= 60 and len({r[0] for r in ROWS}) == len(ROWS)


@pytest.mark.parametrize("name,argv,env,code,message", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_gives_one_line_and_the_exit_code(name, argv, env, code, message, tmp_path, capsys, monkeypatch):
    for key in ("V4STACK_THREADS", "V4STACK_DEBUG", "V4STACK_DEFAULT_MODEL", "V4STACK_LIBRARY_DEFAULTS"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    argv = argv(tmp_path) if callable(argv) else argv
    assert main(list(argv)) == code
    out, err = capsys.readouterr()
    if message is None:                 # a plan that does not fit: a verdict on stdout, no error line
        assert "needs 32 x 910b" in out and "TPOT" not in out and err == ""
        return
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("v4stack") and ": error: " in lines[0], lines[0]
    assert message in lines[0], lines[0]
    assert "Traceback" not in out + err


def test_an_unexpected_error_is_one_line_with_a_debug_hint(monkeypatch, capsys):
    """A bug (here a subcommand raising TypeError) is one line naming the exception; V4STACK_DEBUG=1 re-raises."""
    import v4stack.cli.check_chat as check_chat

    def broken(args):
        raise TypeError("something internal")

    monkeypatch.setattr(check_chat, "run", broken)
    monkeypatch.delenv("V4STACK_DEBUG", raising=False)
    assert main(["check-chat", "x.jsonl"]) == FAILED
    err = capsys.readouterr().err.strip()
    assert err == ("v4stack check-chat: error: unexpected TypeError: something internal "
                   "(set V4STACK_DEBUG=1 for the traceback)")
    monkeypatch.setenv("V4STACK_DEBUG", "1")
    with pytest.raises(TypeError, match="something internal"):
        main(["check-chat", "x.jsonl"])


def test_interrupt_exits_130(monkeypatch, capsys):
    import v4stack.cli.check_chat as check_chat

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(check_chat, "run", interrupted)
    assert main(["check-chat", "x.jsonl"]) == 130
    assert capsys.readouterr().err.strip() == "v4stack check-chat: interrupted"


def test_help_exits_0_and_shows_defaults(capsys):
    assert main(["generate", "--help"]) == OK
    out = capsys.readouterr().out
    assert "--max-model-len" in out and "default 64" in out


def test_make_checkpoint_help_example_works(tmp_path, capsys):
    from v4stack.cli.make_checkpoint import HELP_EXAMPLE
    from v4stack.config.model_config import ModelConfig

    assert main(["make-checkpoint", "--help"]) == OK
    assert HELP_EXAMPLE in " ".join(capsys.readouterr().out.split())
    sets = [item.strip("'") for item in HELP_EXAMPLE.split() if item != "--set"]
    assert main(["make-checkpoint", str(tmp_path / "ck"), *sum((["--set", s] for s in sets), [])]) == OK
    cfg = ModelConfig.from_file(tmp_path / "ck")
    assert cfg.hidden_size == 256 and cfg.compress_ratios == (0, 4, 128, 0, 0)


def test_check_golden_on_the_golden_home_with_a_missing_path_runs_nothing(tmp_path, capsys):
    """Every path is resolved before any case runs: a good case next to a missing path checks nothing."""
    from tests.conftest import golden_case

    good = golden_case("flash_like")
    assert main(["check-golden", str(good), str(tmp_path / "gone"), "--numerics", "fp32"]) == DATA
    out, err = capsys.readouterr()
    assert out == "" and "gone: no such file or directory" in err


def test_the_planner_modules_do_not_import_each_other_in_a_cycle():
    """calibration (and the shared costs module) must not import plan, which imports calibration."""
    import ast

    import v4stack.planner.calibration as calibration
    import v4stack.planner.costs as costs

    for module in (calibration, costs):
        tree = ast.parse(Path(module.__file__).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert "v4stack.planner.plan" not in imported, module.__name__


# ---- through a real process: what reaches the terminal --------------------------------------------------
def _run(args: list, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("V4STACK_")} | (env_extra or {})
    return subprocess.run([sys.executable, "-m", "v4stack.cli.main", *args], capture_output=True, timeout=300,
                          env=env)


def test_subprocess_non_utf8_prompt_and_nan_temperature_no_traceback():
    res = _run([b"generate", b"--prompt", b"caf\xe9 \xff", b"--temperature", b"0"])   # Latin-1 bytes in argv
    err = res.stderr.decode()
    assert res.returncode == USAGE and "--prompt:" in err and "UTF-8" in err and "Traceback" not in err
    assert res.stdout == b""                         # refused before anything was printed or loaded
    res = _run(["generate", "--temperature", "nan"])
    assert res.returncode == USAGE and res.stderr.decode().count("\n") == 1 and b"Traceback" not in res.stderr


def test_subprocess_env_and_golden_errors_no_traceback(tmp_path):
    res = _run(["plan", "--model", "v4-flash", "--hardware", "h200", "--devices", "8"], {"V4STACK_THREADS": "abc"})
    assert res.returncode == USAGE and b"V4STACK_THREADS: 'abc'" in res.stderr and b"Traceback" not in res.stderr
    res = _run(["check-golden", str(tmp_path / "golden" / "v4" / "*")])   # the README's glob, matching nothing
    err = res.stderr.decode()
    assert res.returncode == DATA and "../shared/golden/v4" in err and "Traceback" not in err
