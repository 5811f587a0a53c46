"""``v4stack check-golden [CASE_DIR...]``: run golden cases through v4stack and judge them by the README's
tolerances (see ``v4stack.golden.compare``).

A path is a case directory (it holds ``golden.safetensors``) or a folder of them; no path means the golden
data's home, ``../shared/golden/v4`` beside the repository. Exit status 1 when any check fails, 3 (one line
saying where the data must be) when a path is missing, holds no golden case or lacks a mode's golden file,
so a gate built on this command cannot pass having checked nothing. One progress line per case, mode and
path goes to stderr as it starts (a reference-numerics run on ``pro_like`` takes minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from v4stack.cli.exit_codes import DataMissingError
from v4stack.golden.compare import compare_fp32, compare_reference
from v4stack.golden.runner import GOLDEN_FILES, PATHS, GoldenRunner

NUMERICS = ("fp32", "reference")
REPO_ROOT = Path(__file__).resolve().parents[2]
GOLDEN_HOME = REPO_ROOT.parent / "shared" / "golden" / "v4"   # where the tests and the README expect it
CASE_MARKER = GOLDEN_FILES["reference"]                       # every case has the reference golden file


def _paths_arg(text: str) -> tuple[str, ...]:
    paths = PATHS if text == "all" else tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = [p for p in paths if p not in PATHS]
    if not paths or unknown:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed (expected a comma-separated subset of "
                                         f"{','.join(PATHS)}, or all)")
    return paths


def add_parser(sub) -> None:
    p = sub.add_parser("check-golden", help="compare v4stack with golden reference outputs")
    p.add_argument("cases", nargs="*", type=Path,
                   help=f"golden case directories, or folders of them (default: {GOLDEN_HOME})")
    p.add_argument("--paths", type=_paths_arg, default=("prefill",),
                   help=f"comma-separated execution paths: {','.join(PATHS)} or all (default prefill)")
    p.add_argument("--numerics", choices=(*NUMERICS, "all"), default="all", help="fp32, reference or all (default)")
    p.set_defaults(func=run)


def _where() -> str:
    state = "present" if GOLDEN_HOME.is_dir() else "absent"
    return (f"the golden data must be in ../shared/golden/v4 relative to the repository ({GOLDEN_HOME}, "
            f"{state}), or pass the path of a case directory")


def find_cases(given: list[Path], modes: tuple[str, ...]) -> list[Path]:
    """Case directories for the given paths (each must yield at least one, with a golden file per mode);
    DataMissingError naming the path and where the data must be otherwise."""
    cases: list[Path] = []
    for path in given or [GOLDEN_HOME]:
        if not path.exists():
            raise DataMissingError(f"{path}: no such file or directory; {_where()}")
        if (path / CASE_MARKER).is_file():
            found = [path]
        elif path.is_dir():
            found = sorted(d for d in path.iterdir() if (d / CASE_MARKER).is_file())
        else:
            found = []
        if not found:
            raise DataMissingError(f"{path}: holds no golden case (no {CASE_MARKER} in it or its subfolders); "
                                   f"{_where()}")
        for case in found:
            for mode in modes:
                if not (case / GOLDEN_FILES[mode]).is_file():
                    raise DataMissingError(f"{case}: no {GOLDEN_FILES[mode]} (needed for --numerics {mode})")
        cases += found
    return cases


def run(args) -> int:
    paths = args.paths
    modes = NUMERICS if args.numerics == "all" else (args.numerics,)
    cases = find_cases(args.cases, modes)
    total, failed, done = len(cases) * len(modes) * len(paths), 0, 0
    t_all = time.perf_counter()
    for case in cases:
        for mode in modes:
            runner = GoldenRunner(case, mode)
            compare = compare_fp32 if mode == "fp32" else compare_reference
            for path in paths:
                print(f"check-golden: [{done + 1}/{total}] {case.name} [{mode}, {path}] running "
                      f"({time.perf_counter() - t_all:.0f}s elapsed)", file=sys.stderr, flush=True)
                t0 = time.perf_counter()
                checks = compare(runner.run(path, with_extras=(path == "prefill")), runner.golden)
                bad = [c for c in checks if not c.ok]
                failed += bool(bad)
                done += 1
                print(f"{case.name} [{mode}, {path}] {'PASS' if not bad else 'FAIL'} ({time.perf_counter() - t0:.1f}s)",
                      flush=True)
                for check in checks:
                    print(check.line())
    print(f"check-golden: {done} checks on {len(cases)} cases, {failed} failed "
          f"({time.perf_counter() - t_all:.0f}s)", flush=True)
    return 1 if failed else 0
