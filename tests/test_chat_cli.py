"""``v4stack check-chat``: passes on the golden files, counts and shows mismatches, refuses bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from v4stack.chat.golden import golden_chat_dir
from v4stack.cli.main import main

GOLDEN = golden_chat_dir(Path(__file__).parents[1]) or Path("missing")
needs_golden = pytest.mark.skipif(not GOLDEN.exists(), reason="golden chat data not present")


MIN_CASES = {"encode_v4.jsonl": 44, "encode_v4_0731.jsonl": 8, "encode_v41.jsonl": 12, "parse_v4.jsonl": 30}
FORMAT_OF = {"encode_v4.jsonl": "V4", "encode_v4_0731.jsonl": "V4-Flash-0731", "encode_v41.jsonl": "V4.1",
             "parse_v4.jsonl": "V4"}


@needs_golden
def test_all_golden_files_pass(capsys):
    files = sorted(GOLDEN.glob("*.jsonl"))
    assert sorted(p.name for p in files) == sorted(MIN_CASES)
    assert main(["check-chat", *map(str, files)]) == 0
    out = capsys.readouterr().out
    total = 0
    for path in files:
        n = sum(1 for line in path.read_text().splitlines() if line.strip())
        assert n >= MIN_CASES[path.name]
        kind = "parse" if path.name.startswith("parse") else "encode"
        assert f"{path.name}: {kind}, {n} cases ({FORMAT_OF[path.name]}), 0 mismatches" in out
        total += n
    assert f"check-chat: {total} cases, 0 mismatches" in out


@needs_golden
def test_mismatches_are_counted_and_shown(tmp_path, capsys):
    enc = [json.loads(line) for line in (GOLDEN / "encode_v4.jsonl").read_text().splitlines()]
    enc[3]["prompt"] = enc[3]["prompt"].replace("Hello", "Hallo")
    enc[5]["prompt_ids"][3] += 1
    par = [json.loads(line) for line in (GOLDEN / "parse_v4.jsonl").read_text().splitlines()]
    par[0]["expected"]["content"] = "wrong"
    par[22]["expected"] = {"reasoning_content": "", "content": "", "tool_calls": []}   # official raised there
    for name, records in (("enc.jsonl", enc), ("par.jsonl", par)):
        (tmp_path / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    assert main(["check-chat", "--format", "V4", str(tmp_path / "enc.jsonl"), str(tmp_path / "par.jsonl")]) == 1
    out = capsys.readouterr().out
    assert f"enc.jsonl: encode, {len(enc)} cases (V4), 2 mismatches" in out
    assert f"par.jsonl: parse, {len(par)} cases (V4), 2 mismatches" in out
    assert "MISMATCH v4_basic_chat_nosys" in out and "first difference at char 30" in out
    assert "MISMATCH v4_basic_think_high" in out and "prompt_ids: first difference at token 3" in out
    assert "MISMATCH p4_think_basic" in out and "content: got '2 + 2 = 4.' want 'wrong'" in out
    assert "MISMATCH p4_bad_duplicate_param" in out and "official rules rejected a completion" in out


@pytest.mark.parametrize("content,message", [
    (None, "no such file"),
    ("", "empty file"),
    ("\n\n", "empty file"),
    ('{"a": 1}\n', "no recognisable chat records"),
    ("not json\n", "not a JSON record"),
    ("[1, 2]\n", "expected a JSON object per line"),
    ('{"id": "x1", "messages": [], "prompt": ""}\n', "cannot tell the chat format"),
])
def test_bad_files_exit_3_with_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "some.jsonl"
    if content is not None:
        path.write_text(content)
    assert main(["check-chat", str(path)]) == 3   # data missing or unreadable (README "Exit codes")
    err = capsys.readouterr().err.strip()
    assert err.startswith("v4stack check-chat: error: ") and message in err and "\n" not in err
