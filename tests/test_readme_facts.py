"""The README's "Exit codes" and "Environment variables" tables list exactly what the code has, and its
"Commands" synopsis shows every flag of every subcommand, so the documentation cannot drift from
``v4stack.cli.exit_codes``, ``v4stack.envs`` and the argument parsers."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from v4stack import envs
from v4stack.cli import exit_codes

README = Path(__file__).resolve().parents[1] / "README.md"


def _table_rows(section: str) -> list[list[str]]:
    """Cells of the markdown table under ``## section`` (header and rule rows dropped)."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in _section(section).splitlines() if line.startswith("|")]
    return rows[2:]


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def _code_exit_statuses() -> set[int]:
    return {v for k, v in vars(exit_codes).items() if k.isupper() and isinstance(v, int)}


def test_readme_exit_codes_equal_the_code():
    documented = {int(row[0]) for row in _table_rows("Exit codes")}
    assert documented == _code_exit_statuses()


def test_readme_environment_variables_equal_the_ones_read():
    # the ones v4stack reads, and the CPU libraries' ones it sets as defaults
    documented = {row[0].strip("`") for row in _table_rows("Environment variables")}
    read = set(re.findall(r'_get\("(V4STACK_\w+)"\)', inspect.getsource(envs)))
    assert read, "envs.py reads no variable through _get: the test's pattern is stale"
    assert documented == read | set(envs.LIBRARY_DEFAULTS)


def test_readme_states_the_library_defaults():
    rows = {row[0].strip("`"): row[1] for row in _table_rows("Environment variables")}
    for name, value in envs.LIBRARY_DEFAULTS.items():
        assert rows[name].split()[0] == value, name


def test_every_variable_reader_documents_its_variable():
    # each public reader's docstring starts with the variable it reads (what the README table restates)
    readers = [f for name, f in vars(envs).items() if inspect.isfunction(f) and not name.startswith("_")]
    named = {f.__doc__.split(":")[0] for f in readers if f.__doc__}
    read = set(re.findall(r'_get\("(V4STACK_\w+)"\)', inspect.getsource(envs)))
    assert read <= named


def test_readme_synopsis_shows_every_flag_of_every_subcommand():
    import argparse

    from v4stack.cli.main import build_parser

    synopsis = _section("Commands")
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = {}
    for name, parser in sub.choices.items():
        assert f"v4stack {name}" in synopsis, name
        flags = [o for a in parser._actions for o in a.option_strings if o.startswith("--") and o != "--help"]
        missing[name] = [f for f in flags if not re.search(rf"{re.escape(f)}(?![\w-])", synopsis)]
    assert all(not m for m in missing.values()), missing
