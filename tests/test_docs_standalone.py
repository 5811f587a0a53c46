"""The README and docs/*.md stand alone in a fresh clone: every file they point at is in the repository.

Checked: relative markdown links ``[text](path)``, and every mention of a ``*.md`` file (in backticks or
bare), which must name a file of the repository (by its path from the repository root or from the doc's
folder, or by its file name). Mentions inside URLs are citations of other projects and are skipped. Paths
that leave the checkout (``/work/...``, ``../shared/docs``) and section citations of notes that are not in the
repository (``model_spec s5.1``) are refused; the golden data's home beside the repository,
``../shared/golden/``, is the one outside path the docs may name (it is data, documented as not shipped).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ALLOWED_OUTSIDE = ("../shared/golden/",)  # golden data: beside the repository by design (README "Golden data")

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
MD_MENTION = re.compile(r"[\w./{},*-]*[\w*}]\.md\b")
OUTSIDE = re.compile(r"(?<![\w.])(/work/\S+|\.\./shared/\S+)")
SHARED_NOTES = re.compile(r"\bmodel_spec\b|\b(hardware|peers|conventions)\.md\b")
URL_WORD = re.compile(r"^(\w+://|[\w-]+(\.[\w-]+)+/)")  # https://..., github.com/..., lambda.ai/...


def _repo_files() -> set[str]:
    """Paths of the files git tracks or would track (untracked, not ignored), relative to the root; outside a
    git checkout (an unpacked archive), every file below the root but hidden folders."""
    res = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True)
    if res.returncode == 0:
        return set(res.stdout.split())
    return {str(f.relative_to(ROOT)) for f in ROOT.rglob("*")
            if f.is_file() and not any(part.startswith(".") for part in f.relative_to(ROOT).parts)}


FILES = _repo_files()
NAMES = {Path(f).name for f in FILES}


def _exists(ref: str, doc: Path) -> bool:
    ref = ref.split("#")[0].strip("`'\"")
    if not ref:
        return True
    from_doc = (doc.parent / ref).resolve()
    candidates = {ref.lstrip("./"), str(from_doc.relative_to(ROOT)) if from_doc.is_relative_to(ROOT) else ""}
    if candidates & FILES or any(c and (ROOT / c).is_dir() for c in candidates):
        return True
    return "/" not in ref and ref in NAMES


def _words(line: str) -> list[str]:
    return re.split(r"[\s()|\[\]<>=]+", line)


def problems(doc: Path, text: str | None = None) -> list[str]:
    """Every reference in ``doc`` (or in ``text`` read as if it were ``doc``) to a file the repository does not
    hold, as 'doc:line: reference'."""
    found = []
    rel = doc.relative_to(ROOT)
    text = doc.read_text(encoding="utf-8") if text is None else text
    for n, line in enumerate(text.splitlines(), 1):
        for target in LINK.findall(line):
            if not URL_WORD.match(target) and not target.startswith(("#", "mailto:")) and not _exists(target, doc):
                found.append(f"{rel}:{n}: link to {target}")
        for word in _words(line):
            word = word.strip("`'\"").rstrip(",.;:")
            if URL_WORD.match(word) or word.startswith(ALLOWED_OUTSIDE):
                continue
            for mention in MD_MENTION.findall(word):
                pattern = any(ch in mention for ch in "*{}")
                if not (_glob_matches(mention) if pattern else _exists(mention, doc)):
                    found.append(f"{rel}:{n}: mentions {mention}")
            if OUTSIDE.search(word):
                found.append(f"{rel}:{n}: path outside the repository {word}")
        for m in SHARED_NOTES.finditer(line):
            found.append(f"{rel}:{n}: cites notes not in the repository ({m.group(0)})")
    return found


def _glob_matches(pattern: str) -> bool:
    """A shell pattern (``docs/*.md``, ``{a,b}.md``) that names at least one file of the repository."""
    import fnmatch

    options = [pattern]
    if "{" in pattern:
        head, rest = pattern.split("{", 1)
        body, tail = rest.split("}", 1)
        options = [head + part + tail for part in body.split(",")]
    return all(any(fnmatch.fnmatch(f, o.lstrip("./")) or fnmatch.fnmatch(Path(f).name, o) for f in FILES)
               for o in options)


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_doc_cites_only_files_in_the_repository(doc):
    assert problems(doc) == []


def test_the_checker_catches_what_it_must():
    """The checker is not vacuous: each kind of dangling reference is reported, a URL or a real file is not."""
    doc = ROOT / "docs" / "_probe.md"
    text = ("see [spec](../shared/docs/model_spec.md) and `hardware.md s3.3`, peers.md s2 #3, model_spec §5.1,\n"
            "/work/shared/golden/chat/, [gone](docs/nothing.md), `nothing_here.md`\n"
            "fine: [cache](cache.md), `docs/planner.md`, README.md, https://github.com/o/r/blob/HEAD/EXPECTED_PERF.md,\n"
            "`../shared/golden/v4/*`, docs/*.md\n")
    lines = problems(doc, text)
    assert [line for line in lines if line.startswith(("docs/_probe.md:3:", "docs/_probe.md:4:"))] == []
    joined = "\n".join(lines)
    for bad in ("link to ../shared/docs/model_spec.md", "mentions hardware.md", "mentions peers.md",
                "(model_spec)", "outside the repository /work/shared/golden/chat/", "link to docs/nothing.md",
                "mentions nothing_here.md"):
        assert bad in joined, (bad, joined)
