"""``v4stack check-golden [CASE_DIR...]``: run golden cases through v4stack and judge them by the README's
tolerances (``v4stack.golden.compare`` for V4, ``v4stack.golden.v41_compare`` for V4.1; the case's config.json
decides).

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
from v4stack.config.validation import ParameterError
from v4stack.config.family import is_v41, read_config_json
from v4stack.golden.compare import Check, compare_fp32, compare_reference
from v4stack.golden.runner import GOLDEN_FILES, PATHS, GoldenRunner
from v4stack.golden.v41_compare import compare_paths, compare_v41
from v4stack.golden.v41_runner import ALLTOPK_FILE
from v4stack.golden.v41_runner import PATHS as V41_PATHS
from v4stack.golden.v41_runner import V41GoldenRunner
from v4stack.weights.checkpoint import CheckpointError, read_header

NUMERICS = ("fp32", "reference")  # what "all" runs
CHOICES = (*NUMERICS, "fast")  # fast: judged against the reference golden by its bf16 tolerances
REPO_ROOT = Path(__file__).resolve().parents[2]
GOLDEN_HOME = REPO_ROOT.parent / "shared" / "golden" / "v4"   # where the tests and the README expect it
CASE_MARKER = GOLDEN_FILES["reference"]                       # every case has the reference golden file


KNOWN_PATHS = tuple(dict.fromkeys(PATHS + V41_PATHS))


def _paths_arg(text: str) -> tuple[str, ...] | str:
    """"all" (each case's own paths) or a tuple of known path names."""
    if text == "all":
        return text
    paths = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = [p for p in paths if p not in KNOWN_PATHS]
    if not paths or unknown:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed (expected a comma-separated subset of "
                                         f"{','.join(KNOWN_PATHS)}, or all)")
    return paths


def _case_paths(case: Path, wanted: tuple[str, ...] | str) -> tuple[str, ...]:
    """The paths to run on ``case``: V4.1 cases have no batched path (their runner drives one sequence)."""
    own = V41_PATHS if _is_v41_case(case) else PATHS
    if wanted == "all":
        return own
    missing = [p for p in wanted if p not in own]
    if missing:
        raise ParameterError("--paths", ",".join(missing), f"a subset of {','.join(own)} for the V4.1 case {case}")
    return wanted


def _is_v41_case(case: Path) -> bool:
    """A V4.1 case by its config.json; a case without one is judged as V4 (its runner names what is missing)."""
    return (case / "config.json").is_file() and is_v41(read_config_json(case))


def _golden_file(case: Path, mode: str) -> str:
    """The golden file a mode compares against; V4.1 cases have only the reference one (fp32 mode runs the
    exact hash/map checks and the paths' agreement with each other)."""
    return GOLDEN_FILES["reference"] if _is_v41_case(case) else GOLDEN_FILES[mode]


def add_parser(sub) -> None:
    p = sub.add_parser("check-golden", help="compare v4stack with golden reference outputs")
    p.add_argument("cases", nargs="*", type=Path,
                   help=f"golden case directories, or folders of them (default: {GOLDEN_HOME})")
    p.add_argument("--paths", type=_paths_arg, default=("prefill",),
                   help=f"comma-separated execution paths: {','.join(PATHS)} or all (default prefill)")
    p.add_argument("--numerics", choices=(*CHOICES, "all"), default="all", help="fp32, reference, fast or all (default)")
    p.set_defaults(func=run)


def _where() -> str:
    state = "present" if GOLDEN_HOME.is_dir() else "absent"
    return (f"the golden data must be in ../shared/golden/v4 relative to the repository ({GOLDEN_HOME}, "
            f"{state}; V4.1 cases in ../shared/golden/v41), or pass the path of a case directory")


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
                golden = case / _golden_file(case, mode)
                if not golden.is_file():
                    raise DataMissingError(f"{case}: no {golden.name} (needed for --numerics {mode})")
                _check_readable(golden)
        cases += found
    return cases


def _check_readable(golden: Path) -> None:
    """Refuse a golden file that is not a readable safetensors file (CheckpointError: exit 3, one line) before
    any case runs, rather than after its model loaded."""
    try:
        read_header(golden)
    except CheckpointError as exc:
        raise CheckpointError(f"{golden}: unreadable golden file ({exc})") from None
    except OSError as exc:
        raise CheckpointError(f"{golden}: unreadable golden file ({exc.strerror or exc})") from None


def run(args) -> int:
    modes = NUMERICS if args.numerics == "all" else (args.numerics,)
    cases = find_cases(args.cases, modes)
    plan = [(case, _case_paths(case, args.paths)) for case in cases]  # refuse a wrong path before running
    total, failed, done = sum(len(modes) * len(paths) for _, paths in plan), 0, 0
    t_all = time.perf_counter()

    def progress(title: str) -> None:
        print(f"check-golden: [{done + 1}/{total}] {title} running ({time.perf_counter() - t_all:.0f}s elapsed)",
              file=sys.stderr, flush=True)

    for case, paths in plan:
        for mode in modes:
            if _is_v41_case(case):
                progress(f"{case.name} [{mode}, {','.join(paths)}]")
                failed += _run_v41(case, mode, paths)
                done += len(paths)
                continue
            runner = GoldenRunner(case, mode)
            compare = compare_fp32 if mode == "fp32" else compare_reference  # fast: the bf16 tolerances
            for path in paths:
                progress(f"{case.name} [{mode}, {path}]")
                t0 = time.perf_counter()
                checks = compare(runner.run(path, with_extras=(path == "prefill")), runner.golden)
                failed += _report(f"{case.name} [{mode}, {path}]", checks, time.perf_counter() - t0)
                done += 1
    print(f"check-golden: {done} checks on {len(cases)} cases, {failed} failed "
          f"({time.perf_counter() - t_all:.0f}s)", flush=True)
    return 1 if failed else 0


def _report(title: str, checks: list[Check], seconds: float) -> int:
    bad = [c for c in checks if not c.ok]
    print(f"{title} {'PASS' if not bad else 'FAIL'} ({seconds:.1f}s)", flush=True)
    for check in checks:
        print(check.line())
    return int(bool(bad))


def _run_v41(case: Path, mode: str, paths: tuple[str, ...]) -> int:
    """A V4.1 case. reference: every path against golden.safetensors and, with the case's override, against
    golden_alltopk.safetensors, each path also against the prefill path. fp32: V4.1 has no fp32 golden, so the
    exact hash/map checks run and every path must agree with the prefill path to fp32 noise."""
    failed = 0
    mode_checks = "reference" if mode == "fast" else mode  # fast numerics: the reference numerics' checks
    files = [False] + ([True] if mode_checks == "reference" and (case / ALLTOPK_FILE).exists() else [])
    for alltopk in files:
        runner = V41GoldenRunner(case, mode, alltopk=alltopk)
        tag = "all-top-k" if alltopk else "golden"
        base = None
        for path in dict.fromkeys(("prefill",) + tuple(paths)):
            t0 = time.perf_counter()
            run = runner.run(path, with_extras=path == "prefill")
            if path == "prefill":
                base = run
            if path not in paths and mode_checks == "reference":
                continue  # the prefill run is only the baseline for the other paths
            if mode_checks == "reference":
                checks = compare_v41(run, runner.golden, alltopk)
            else:
                checks = [c for c in compare_v41(run, runner.golden, alltopk) if c.name.endswith("exact")
                          or c.name.startswith("compressed map")]
            if path != "prefill":
                checks += compare_paths(run, base, fp32=mode_checks == "fp32")
            failed += _report(f"{case.name} [{mode}, {tag}, {path}]", checks, time.perf_counter() - t0)
    return failed
