"""``v4stack check-golden CASE_DIR...``: run golden cases through v4stack and judge them by the README's
tolerances (see ``v4stack.golden.compare``). Exit status 1 when any check fails."""

from __future__ import annotations

import time
from pathlib import Path

from v4stack.golden.compare import compare_fp32, compare_reference
from v4stack.golden.runner import PATHS, GoldenRunner

NUMERICS = ("fp32", "reference")


def add_parser(sub) -> None:
    p = sub.add_parser("check-golden", help="compare v4stack with golden reference outputs")
    p.add_argument("cases", nargs="+", type=Path, help="golden case directories (../shared/golden/v4/*)")
    p.add_argument("--paths", default="prefill", help=f"comma-separated execution paths: {','.join(PATHS)} or all")
    p.add_argument("--numerics", default="all", help="fp32, reference or all")
    p.set_defaults(func=run)


def run(args) -> int:
    paths = PATHS if args.paths == "all" else tuple(args.paths.split(","))
    modes = NUMERICS if args.numerics == "all" else (args.numerics,)
    failed = 0
    for case in args.cases:
        if not (case / "golden.safetensors").exists():
            print(f"{case}: skipped (no golden.safetensors)")
            continue
        for mode in modes:
            runner = GoldenRunner(case, mode)
            compare = compare_fp32 if mode == "fp32" else compare_reference
            for path in paths:
                t0 = time.perf_counter()
                checks = compare(runner.run(path, with_extras=(path == "prefill")), runner.golden)
                bad = [c for c in checks if not c.ok]
                failed += bool(bad)
                print(f"{case.name} [{mode}, {path}] {'PASS' if not bad else 'FAIL'} ({time.perf_counter() - t0:.1f}s)")
                for check in checks:
                    print(check.line())
    return 1 if failed else 0
