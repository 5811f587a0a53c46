"""Checks of the chat layer against the golden files in ``/work/shared/golden/chat`` (README there).

Encode records: the prompt string must be byte-identical, and where ``prompt_ids`` is given the V4
tokenizer's ids of our prompt must equal it. Parse records: the non-streaming parse must equal
``expected`` (or, where it is null, the official rules must reject the completion and the lenient reading
must leak no marker); the token-by-token and character-by-character streams must add up to the
non-streaming parse. Used by ``v4stack check-chat`` and the tests.

Knows: the record formats. Does not know: argparse or pytest.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from v4stack.chat.deltas import Delta, ParsedMessage, aggregate
from v4stack.chat.detokenize import IncrementalDetokenizer
from v4stack.chat.encoder import encode_messages
from v4stack.chat.errors import ChatInputError
from v4stack.chat.formats import V4, V4_1, V4_FLASH_0731, ChatFormat
from v4stack.chat.parse import parse_completion
from v4stack.chat.stream import StreamParser
from v4stack.chat.strict import OfficialFormatError, parse_official

ENCODE_KEYS = ("messages", "prompt")
PARSE_KEYS = ("completion", "generation_prefix")
# record id prefixes of the golden files, most specific first
ID_PREFIXES = (("v41_", V4_1), ("v4_0731_", V4_FLASH_0731), ("v4_", V4), ("p4_", V4))
FILE_HINTS = (("v41", V4_1), ("0731", V4_FLASH_0731), ("v4", V4))
DIFF_CONTEXT = 40      # characters shown either side of the first difference
SHARED_CHAT = Path("shared") / "golden" / "chat"


def golden_chat_dir(repo_root: Path) -> Path | None:
    """Where the chat golden files are for a checkout at ``repo_root``: ``shared/`` inside it, or next to
    it (``/work/main`` -> ``/work/shared``), or the project's shared folder; None when absent."""
    repo_root = Path(repo_root).resolve()
    candidates = [repo_root / SHARED_CHAT, *(p / SHARED_CHAT for p in repo_root.parents)]
    return next((c for c in candidates if (c / "README.md").is_file()), None)


class GoldenFileError(ValueError):
    """A golden file that cannot be checked (missing, empty, not JSON lines, no known records)."""


@dataclass(frozen=True)
class CaseResult:
    id: str
    kind: str                       # "encode" | "parse"
    format: str
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


def load_records(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise GoldenFileError(f"{path}: no such file")
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise GoldenFileError(f"{path}:{n}: not a JSON record ({exc.msg})") from None
        if not isinstance(record, dict):
            raise GoldenFileError(f"{path}:{n}: expected a JSON object per line")
        records.append(record)
    if not records:
        raise GoldenFileError(f"{path}: empty file (no records)")
    return records


def record_kind(record: dict) -> str | None:
    if all(k in record for k in ENCODE_KEYS):
        return "encode"
    if all(k in record for k in PARSE_KEYS):
        return "parse"
    return None


def file_kind(path: Path, records: list[dict]) -> str:
    kinds = {record_kind(r) for r in records}
    if kinds == {"encode"} or kinds == {"parse"}:
        return kinds.pop()
    if kinds == {None}:
        raise GoldenFileError(f"{path}: no recognisable chat records (need {ENCODE_KEYS} or {PARSE_KEYS})")
    raise GoldenFileError(f"{path}: mixed or unrecognisable records ({sorted(map(str, kinds))})")


def record_format(record: dict, path: Path) -> ChatFormat:
    """The variant a record belongs to: by its id prefix, else by the file name."""
    rid = str(record.get("id", ""))
    for prefix, fmt in ID_PREFIXES:
        if rid.startswith(prefix):
            return fmt
    name = Path(path).name.lower()
    for hint, fmt in FILE_HINTS:
        if hint in name:
            return fmt
    raise GoldenFileError(f"{path}: record {rid!r}: cannot tell the chat format (pass --format)")


def short_diff(got: str, want: str) -> str:
    """Where two strings first differ, with a little context on each side."""
    i = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    lo = max(0, i - DIFF_CONTEXT)
    return (f"first difference at char {i} (got {len(got)} chars, want {len(want)}): "
            f"got {got[lo:i + DIFF_CONTEXT]!r} want {want[lo:i + DIFF_CONTEXT]!r}")


def check_encode(record: dict, fmt: ChatFormat, tokenizer: Any | None) -> CaseResult:
    rid = str(record.get("id", "?"))
    try:
        prompt = encode_messages(record["messages"], record.get("tools"), fmt=fmt, thinking=record["thinking"],
                                 reasoning_effort=record.get("reasoning_effort"),
                                 drop_thinking=record.get("drop_thinking", True))
    except ChatInputError as exc:
        return CaseResult(rid, "encode", fmt.name, (f"encoder refused the request: {exc}",))
    problems = []
    if prompt != record["prompt"]:
        problems.append("prompt: " + short_diff(prompt, record["prompt"]))
    if record.get("prompt_ids") is not None:
        if tokenizer is None:
            problems.append("prompt_ids: no tokenizer to check them")
        else:
            ids = tokenizer.encode(prompt, add_special_tokens=False).ids
            want = record["prompt_ids"]
            if ids != want:
                k = next((j for j, (a, b) in enumerate(zip(ids, want)) if a != b), min(len(ids), len(want)))
                problems.append(f"prompt_ids: first difference at token {k} (got {len(ids)} ids, want "
                                f"{len(want)}): got {ids[k:k + 5]} want {want[k:k + 5]}")
    return CaseResult(rid, "encode", fmt.name, tuple(problems))


def comparable(msg: ParsedMessage) -> dict:
    """A parse result in the golden ``expected`` shape (ids left out: they are ours)."""
    return {"reasoning_content": msg.reasoning_content, "content": msg.content,
            "tool_calls": [{"name": c.name, "arguments": c.arguments} for c in msg.tool_calls]}


def counter_ids() -> Callable[[], str]:
    """Deterministic call ids (call_0, call_1, ...) so two parses of one completion compare equal."""
    n = itertools.count()
    return lambda: f"call_{next(n)}"


def stream_parse(pieces: Iterable[str], fmt: ChatFormat, thinking: bool, reason: str) -> list[Delta]:
    parser = StreamParser(fmt, thinking, new_call_id=counter_ids())
    deltas: list[Delta] = []
    for piece in pieces:
        deltas += parser.feed(piece)
    return deltas + parser.finish(reason)


def leaks(fmt: ChatFormat, msg: ParsedMessage) -> list[str]:
    """Markers found in reasoning or content (there must be none)."""
    return [f"{name} contains {tok!r}" for name, text in (("reasoning", msg.reasoning_content),
                                                          ("content", msg.content))
            for tok in fmt.forbidden_in_text if tok in text]


def engine_reason(fmt: ChatFormat, completion: str) -> str:
    """What the engine would have reported: "stop" when the model wrote EOS, else "length"."""
    return "stop" if fmt.eos in completion else "length"


def check_parse(record: dict, fmt: ChatFormat, tokenizer: Any | None) -> CaseResult:
    rid, text, thinking = str(record.get("id", "?")), record["completion"], bool(record["thinking"])
    reason = engine_reason(fmt, text)
    problems: list[str] = []
    whole = parse_completion(text, fmt=fmt, thinking=thinking, finish_reason=reason, new_call_id=counter_ids())
    expected = record.get("expected")
    if expected is not None:
        got = comparable(whole)
        for key in ("reasoning_content", "content", "tool_calls"):
            if got[key] != expected.get(key):
                problems.append(f"{key}: got {got[key]!r} want {expected.get(key)!r}")
    problems += leaks(fmt, whole)
    try:
        official = comparable(parse_official(text, fmt=fmt, thinking=thinking))
        if expected is None:
            problems.append("official rules accepted a completion the official parser rejects")
        elif official != expected:
            problems.append(f"official rules: got {official!r} want {expected!r}")
    except OfficialFormatError as exc:
        if expected is not None:
            problems.append(f"official rules rejected a completion the official parser accepts: {exc}")
    streams = {"char-by-char": list(text)}
    if record.get("completion_ids") is not None and tokenizer is not None:
        detok = IncrementalDetokenizer(tokenizer)
        streams["token-by-token"] = [detok.push(i) for i in record["completion_ids"]] + [detok.flush()]
    for how, pieces in streams.items():
        streamed = aggregate(stream_parse(pieces, fmt, thinking, reason))
        if streamed != whole:
            problems.append(f"{how} stream differs: got {comparable(streamed)!r} "
                            f"({streamed.finish_reason}) want {comparable(whole)!r} ({whole.finish_reason})")
    return CaseResult(rid, "parse", fmt.name, tuple(problems))


def check_records(path: Path, records: list[dict], tokenizer: Any | None,
                  fmt: ChatFormat | None = None) -> tuple[str, list[CaseResult]]:
    """(kind, one result per record) for the records of one golden file; ``fmt`` overrides the
    per-record detection."""
    kind = file_kind(path, records)
    check = check_encode if kind == "encode" else check_parse
    return kind, [check(r, fmt or record_format(r, path), tokenizer) for r in records]


def needs_tokenizer(records: list[dict]) -> bool:
    return any(record_kind(r) == "parse" or r.get("prompt_ids") is not None for r in records)
