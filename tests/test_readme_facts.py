"""The README's "Exit codes" and "Environment variables" tables list exactly what the code has, so the
documentation cannot drift from ``v4stack.cli.exit_codes`` and ``v4stack.envs``."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from v4stack import envs
from v4stack.cli import exit_codes

README = Path(__file__).resolve().parents[1] / "README.md"


def _table_rows(section: str) -> list[list[str]]:
    """Cells of the markdown table under ``## section`` (header and rule rows dropped)."""
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"README has no '## {section}' section"
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in match.group(1).splitlines() if line.startswith("|")]
    return rows[2:]


def _code_exit_statuses() -> set[int]:
    return {v for k, v in vars(exit_codes).items() if k.isupper() and isinstance(v, int)}


def test_readme_exit_codes_equal_the_code():
    documented = {int(row[0]) for row in _table_rows("Exit codes")}
    assert documented == _code_exit_statuses()


def test_readme_environment_variables_equal_the_ones_read():
    documented = {row[0].strip("`") for row in _table_rows("Environment variables")}
    read = set(re.findall(r'_get\("(V4STACK_\w+)"\)', inspect.getsource(envs)))
    assert read, "envs.py reads no variable through _get: the test's pattern is stale"
    assert documented == read


def test_every_variable_reader_documents_its_variable():
    # each public reader's docstring starts with the variable it reads (what the README table restates)
    readers = [f for name, f in vars(envs).items() if inspect.isfunction(f) and not name.startswith("_")]
    named = {f.__doc__.split(":")[0] for f in readers if f.__doc__}
    read = set(re.findall(r'_get\("(V4STACK_\w+)"\)', inspect.getsource(envs)))
    assert read <= named
