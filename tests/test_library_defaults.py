"""The CPU libraries' process settings (``envs.LIBRARY_DEFAULTS``) reach a fresh process started the documented way
(``python -c "import v4stack; ..."``, which is what the CLI and the benches do first), a user's value wins, and
V4STACK_LIBRARY_DEFAULTS=0 leaves them unset. oneDNN itself is checked through its verbose log: with the cache
capacity 0 every primitive creation is a cache miss, with its own default the repeated GEMM hits the cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from v4stack import envs

SHOW_ENV = ("import json, os, v4stack; "
            f"print(json.dumps({{k: os.environ.get(k) for k in {sorted(envs.LIBRARY_DEFAULTS)!r}}}))")
# three identical bf16 GEMMs: torch runs them through oneDNN's matmul on x86 (each call creates a primitive)
REPEATED_GEMM = ("import v4stack, torch; a = torch.ones(64, 64, dtype=torch.bfloat16)\n"
                 "for _ in range(3): a @ a")
CACHE_HIT, CACHE_MISS = "create:cache_hit", "create:cache_miss"


def _fresh(code: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in envs.LIBRARY_DEFAULTS and k != "V4STACK_LIBRARY_DEFAULTS"}
    return subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True,
                          check=True, timeout=120)


def test_import_sets_the_library_defaults():
    assert json.loads(_fresh(SHOW_ENV).stdout) == envs.LIBRARY_DEFAULTS


def test_a_value_in_the_environment_wins():
    seen = json.loads(_fresh(SHOW_ENV, ONEDNN_PRIMITIVE_CACHE_CAPACITY="7").stdout)
    assert seen["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "7"
    assert seen["MKL_DISABLE_FAST_MM"] == envs.LIBRARY_DEFAULTS["MKL_DISABLE_FAST_MM"]


def test_opt_out_leaves_them_unset():
    seen = json.loads(_fresh(SHOW_ENV, V4STACK_LIBRARY_DEFAULTS="0").stdout)
    assert seen == {k: None for k in envs.LIBRARY_DEFAULTS}


def test_bad_opt_out_value_does_not_break_import():
    seen = json.loads(_fresh(SHOW_ENV, V4STACK_LIBRARY_DEFAULTS="maybe").stdout)
    assert seen == {k: None for k in envs.LIBRARY_DEFAULTS}
    with pytest.raises(envs.check.ParameterError, match="V4STACK_LIBRARY_DEFAULTS"):
        envs._flag("V4STACK_LIBRARY_DEFAULTS", "maybe", True)


def _onednn_creates(**env: str) -> list[str]:
    log = _fresh(REPEATED_GEMM, ONEDNN_VERBOSE="2", **env).stdout
    return [word for line in log.splitlines() for word in line.split(",") if word.startswith("create:cache_")]


def test_onednn_sees_the_cache_capacity():
    own_default = _onednn_creates(V4STACK_LIBRARY_DEFAULTS="0")
    if not own_default:
        pytest.skip("this torch build runs bf16 GEMMs without oneDNN here")
    assert CACHE_HIT in own_default  # the check can tell: oneDNN's own cache serves the repeats
    ours = _onednn_creates()
    assert ours and set(ours) == {CACHE_MISS}
