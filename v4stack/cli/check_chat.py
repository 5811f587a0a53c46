"""``v4stack check-chat FILE.jsonl...``: run chat golden files through v4stack's encoder and parser.

Encode files (records with ``messages`` and ``prompt``): prompt text byte-identical, ids where given.
Parse files (``completion`` and ``generation_prefix``): parse, official-rule agreement, streaming. Prints
the number of cases and mismatches per file with a short diff of the first few; exit status 1 on any
mismatch, 3 (one-line message) on a missing, empty or unrecognisable file.
"""

from __future__ import annotations

import time
from pathlib import Path

from v4stack.chat.formats import format_by_name
from v4stack.chat.golden import check_records, file_kind, load_records, needs_tokenizer, record_format
from v4stack.cli.args import int_arg

DEFAULT_SHOWN = 3      # mismatches printed in full per file


def add_parser(sub) -> None:
    p = sub.add_parser("check-chat", help="check chat encoding/parsing against golden jsonl files")
    p.add_argument("files", nargs="+", type=Path, help="golden files (../shared/golden/chat/*.jsonl)")
    p.add_argument("--format", default="auto",
                   help="chat format: auto (from record ids / file name), V4, V4-Flash-0731 or V4.1")
    p.add_argument("--show", type=int_arg(0), default=DEFAULT_SHOWN,
                   help=f"mismatches to print per file (default {DEFAULT_SHOWN})")
    p.set_defaults(func=run)


def run(args) -> int:
    fmt = None if args.format == "auto" else format_by_name(args.format)
    loaded = [(path, load_records(path)) for path in args.files]   # all files readable before any work
    for path, records in loaded:
        file_kind(path, records)
        if fmt is None:
            for r in records:
                record_format(r, path)
    tokenizer = None
    if any(needs_tokenizer(records) for _, records in loaded):
        from v4stack.chat.detokenize import load_v4_tokenizer
        tokenizer = load_v4_tokenizer()
    total_bad = 0
    for path, records in loaded:
        t0 = time.perf_counter()
        kind, results = check_records(path, records, tokenizer, fmt)
        bad = [r for r in results if not r.ok]
        total_bad += len(bad)
        formats = ", ".join(sorted({r.format for r in results}))
        print(f"{path}: {kind}, {len(results)} cases ({formats}), {len(bad)} mismatches "
              f"({time.perf_counter() - t0:.2f}s)")
        for r in bad[:max(args.show, 0)]:
            print(f"  MISMATCH {r.id}")
            for problem in r.problems:
                print(f"    {problem}")
        if len(bad) > max(args.show, 0):
            print(f"  ... and {len(bad) - max(args.show, 0)} more: "
                  + ", ".join(r.id for r in bad[max(args.show, 0):]))
    print(f"check-chat: {sum(len(r) for _, r in loaded)} cases, {total_bad} mismatches")
    return 1 if total_bad else 0
