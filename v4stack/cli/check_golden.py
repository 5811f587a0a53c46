"""``v4stack check-golden CASE_DIR...``: run golden cases through v4stack and judge them by the README's
tolerances (``v4stack.golden.compare`` for V4, ``v4stack.golden.v41_compare`` for V4.1; the case's config.json
decides). Exit status 1 when any check fails."""

from __future__ import annotations

import time
from pathlib import Path

from v4stack.config.family import is_v41, read_config_json
from v4stack.golden.compare import Check, compare_fp32, compare_reference
from v4stack.golden.runner import PATHS, GoldenRunner
from v4stack.golden.v41_compare import compare_paths, compare_v41
from v4stack.golden.v41_runner import ALLTOPK_FILE
from v4stack.golden.v41_runner import PATHS as V41_PATHS
from v4stack.golden.v41_runner import V41GoldenRunner

NUMERICS = ("fp32", "reference")


def add_parser(sub) -> None:
    p = sub.add_parser("check-golden", help="compare v4stack with golden reference outputs")
    p.add_argument("cases", nargs="+", type=Path, help="golden case directories (../shared/golden/v4/*)")
    p.add_argument("--paths", default="prefill", help=f"comma-separated execution paths: {','.join(PATHS)} or all "
                   f"(V4.1 cases: {','.join(V41_PATHS)})")
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
        if is_v41(read_config_json(case)):
            v41_paths = V41_PATHS if args.paths == "all" else paths
            unknown = [p for p in v41_paths if p not in V41_PATHS]
            if unknown:
                print(f"{case.name}: unknown V4.1 path(s) {unknown}; choose from {list(V41_PATHS)}")
                return 2
            failed += sum(_run_v41(case, mode, v41_paths) for mode in modes)
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


def _report(title: str, checks: list[Check], seconds: float) -> int:
    bad = [c for c in checks if not c.ok]
    print(f"{title} {'PASS' if not bad else 'FAIL'} ({seconds:.1f}s)")
    for check in checks:
        print(check.line())
    return int(bool(bad))


def _run_v41(case: Path, mode: str, paths: tuple[str, ...]) -> int:
    """A V4.1 case. reference: every path against golden.safetensors and, with the case's override, against
    golden_alltopk.safetensors, each path also against the prefill path. fp32: V4.1 has no fp32 golden, so the
    exact hash/map checks run and every path must agree with the prefill path to fp32 noise."""
    failed = 0
    files = [False] + ([True] if mode == "reference" and (case / ALLTOPK_FILE).exists() else [])
    for alltopk in files:
        runner = V41GoldenRunner(case, mode, alltopk=alltopk)
        tag = "all-top-k" if alltopk else "golden"
        base = None
        for path in dict.fromkeys(("prefill",) + tuple(paths)):
            t0 = time.perf_counter()
            run = runner.run(path, with_extras=path == "prefill")
            if path == "prefill":
                base = run
            if path not in paths and mode == "reference":
                continue  # the prefill run is only the baseline for the other paths
            if mode == "reference":
                checks = compare_v41(run, runner.golden, alltopk)
            else:
                checks = [c for c in compare_v41(run, runner.golden, alltopk) if c.name.endswith("exact")
                          or c.name.startswith("compressed map")]
            if path != "prefill":
                checks += compare_paths(run, base, fp32=mode == "fp32")
            failed += _report(f"{case.name} [{mode}, {tag}, {path}]", checks, time.perf_counter() - t0)
    return failed
