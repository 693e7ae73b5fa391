"""The repository explains itself: every document it cites exists, and so does every
section, item and anchor it cites in them.

Code, tests, conf/def.toml and the documents cite ``docs/protocol.md section 2.3.1``,
``docs/protocol.md sections 2.1 and 2.2``, ``docs/hardening.md H7`` or a Markdown link
such as ``(docs/hardening.md#rb-reliable-broadcast-counts-per-payload)``. A
citation of a section number, an item identifier or an anchor that no heading of that
document carries fails here, and so does a mention of any ``.md`` document that is not in
the repository (the background documents the project started from are not part of it).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ("docs/protocol.md", "docs/hardening.md", "docs/design.md")
SKIP_DIRS = {".git", ".venv", "build", "dist", "__pycache__", ".pytest_cache", ".mypy_cache"}
TEXT_BYTES_MAX = 2_000_000

# A mention of a Markdown document: a path or a bare name ending in .md, not part of a URL.
MD_NAME = re.compile(r"(?<![\w./:-])((?:[\w-]+/)*[\w-]+\.md)\b")
NUMBER = r"\d+(?:\.\d+)*"
# What may follow a mention: ") section 2.3", ", sections 4.1 and 4.3", " H7", "#anchor".
SECTIONS_AFTER = re.compile(
    rf"^\)?,?\s+(?:section|sections|§)\s*({NUMBER}(?:(?:\s*,\s*|\s+and\s+|\s+to\s+){NUMBER})*)"
)
ITEM_AFTER = re.compile(r"^\)?\s+([A-Z][A-Z0-9]*(?:-\d+)?)(?![\w-])")
ANCHOR_AFTER = re.compile(r"^#([\w-]+)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
HEADING_NUMBER = re.compile(rf"^({NUMBER})\.?\s")
HEADING_ITEM = re.compile(r"^([A-Z][A-Z0-9]*(?:-\d+)?):\s")


@dataclass
class Doc:
    """What a Markdown document offers to be cited: section numbers, items, anchors."""

    sections: set[str] = field(default_factory=set)
    items: set[str] = field(default_factory=set)
    anchors: set[str] = field(default_factory=set)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def parse_doc(text: str) -> Doc:
    doc = Doc()
    in_code = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        m = HEADING.match(line)
        if in_code or m is None:
            continue
        title = m.group(2)
        doc.anchors.add(slug(title))
        number = HEADING_NUMBER.match(title)
        if number:
            doc.sections.add(number.group(1))
        item = HEADING_ITEM.match(title)
        if item:
            doc.items.add(item.group(1))
    return doc


def resolve(name: str, citing: str, existing: set[str]) -> str | None:
    """The repository path a mention of ``name`` in file ``citing`` refers to, if any:
    relative to the citing file's folder, else to the repository root; a bare name
    (``design.md``) may also be the name of exactly one document of the repository."""
    if "/" not in name:
        same = [p for p in existing if PurePosixPath(p).name == name]
        if len(same) == 1:
            return same[0]
    folder = PurePosixPath(citing).parent
    for candidate in (folder / name, PurePosixPath(name)):
        parts: list[str] = []
        for part in candidate.parts:
            if part == "..":
                if not parts:
                    break
                parts.pop()
            elif part != ".":
                parts.append(part)
        else:
            path = "/".join(parts)
            if path in existing:
                return path
    return None


def numbers(listing: str) -> list[str]:
    return re.findall(NUMBER, listing)


def problems(files: Mapping[str, str]) -> list[str]:
    """Every broken citation in ``files`` (repository path -> text), as readable lines."""
    existing = set(files)
    docs = {path: parse_doc(text) for path, text in files.items() if path.endswith(".md")}
    out: list[str] = []
    for path, text in sorted(files.items()):
        for lineno, line in enumerate(text.splitlines(), start=1):
            for m in MD_NAME.finditer(line):
                where = f"{path}:{lineno}"
                target = resolve(m.group(1), path, existing)
                if target is None:
                    out.append(f"{where}: {m.group(1)} is not in the repository")
                    continue
                doc = docs[target]
                rest = line[m.end():]
                cited = SECTIONS_AFTER.match(rest)
                if cited:
                    for number in numbers(cited.group(1)):
                        if number not in doc.sections:
                            out.append(f"{where}: {target} has no section {number}")
                    continue
                item = ITEM_AFTER.match(rest)
                if item and len(item.group(1)) >= 2 and item.group(1) not in doc.items:
                    out.append(f"{where}: {target} has no item {item.group(1)}")
                anchor = ANCHOR_AFTER.match(rest)
                if anchor and anchor.group(1) not in doc.anchors:
                    out.append(f"{where}: {target} has no heading #{anchor.group(1)}")
            if path.endswith(".md"):
                for anchor in re.findall(r"\]\(#([\w-]+)\)", line):
                    if anchor not in docs[path].anchors:
                        out.append(f"{path}:{lineno}: no heading #{anchor} in this document")
    return out


# A test a document names: ``tests/unit/test_x.py::test_y``, then ``::test_z`` in the same file.
TEST_NAME = re.compile(
    r"((?:tests|perf)/(?:[\w-]+/)*[a-z0-9_]+\.py)(?:::(\w+))?|(?<![\w/.])::(\w+)"
)


def missing_tests(files: Mapping[str, str]) -> list[str]:
    """Every test or script named in a Markdown document that does not exist."""
    out: list[str] = []
    for path, text in sorted(files.items()):
        if not path.endswith(".md"):
            continue
        current: str | None = None
        for lineno, line in enumerate(text.splitlines(), start=1):
            for m in TEST_NAME.finditer(line):
                if m.group(1):
                    current = m.group(1)
                    if current not in files:
                        out.append(f"{path}:{lineno}: {current} does not exist")
                        continue
                name = m.group(2) or m.group(3)
                if name is None:
                    continue
                if current is None or current not in files:
                    out.append(f"{path}:{lineno}: ::{name} names no file")
                elif not re.search(rf"^\s*(?:async\s+)?def {name}\(", files[current], re.M):
                    out.append(f"{path}:{lineno}: {current} has no {name}")
    return out


def repository_files() -> Iterable[str]:
    """Tracked files, plus new ones not ignored (so a fresh document counts before it is added)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT, capture_output=True, check=True, timeout=60,
        ).stdout.decode()
        return [p for p in listed.split("\0") if p and (ROOT / p).is_file()]
    except (OSError, subprocess.SubprocessError):
        # Not a git checkout (an unpacked archive): walk the tree instead.
        out = []
        for p in ROOT.rglob("*"):
            parts = p.relative_to(ROOT).parts
            if not p.is_file() or SKIP_DIRS & set(parts):
                continue
            if parts[0] == "keys" and p.name != "README.md":
                continue  # generated keys, never part of the repository
            out.append("/".join(parts))
        return out


def repository_texts() -> dict[str, str]:
    out: dict[str, str] = {}
    for path in repository_files():
        raw = (ROOT / path).read_bytes()
        if len(raw) > TEXT_BYTES_MAX or b"\0" in raw:
            continue
        try:
            out[path] = raw.decode("utf-8")
        except UnicodeDecodeError:
            continue
    return out


@pytest.fixture(scope="module")
def texts() -> dict[str, str]:
    return repository_texts()


def test_every_cited_document_section_and_item_exists(texts: dict[str, str]) -> None:
    """No file cites a document outside the repository, a section number, item or
    heading anchor that its document lacks."""
    assert all(d in texts for d in DOCS), "the three documents are in the repository"
    found = problems(texts)
    assert not found, "broken citations:\n" + "\n".join(found)


def test_every_test_the_documents_name_exists(texts: dict[str, str]) -> None:
    """hardening.md names, for each departure, the test that shows it: each must exist."""
    found = missing_tests(texts)
    assert not found, "\n".join(found)
    assert "test_h1_commit_sent_when_pp_completes_after_prepares" in texts["docs/hardening.md"]


def test_missing_test_names_are_reported() -> None:
    """The test-name check bites: a missing file and a missing function are reported."""
    doc, md = "see `tests/a.py::test_x`, `::test_gone` and `tests/b.py`", "d" + ".md"
    found = missing_tests({md: doc, "tests/a.py": "def test_x() -> None:\n    pass\n"})
    assert found == [f"{md}:1: tests/a.py has no test_gone", f"{md}:1: tests/b.py does not exist"]


def test_the_code_cites_the_documents(texts: dict[str, str]) -> None:
    """The scan sees real citations (so the test above checks something): the core cites
    protocol.md sections and hardening.md items, and the documents cite each other."""
    citing = [p for p, t in texts.items() if "docs/protocol.md section" in t]
    assert any(p.startswith("prime/core/") for p in citing)
    assert any("docs/hardening.md H" in t for p, t in texts.items() if p.startswith("prime/"))
    sections = parse_doc(texts["docs/protocol.md"]).sections
    assert {"1.2", "2.2.3", "2.3.5", "2.6.5", "2.7", "4.2", "5", "8"} <= sections


def test_no_unfinished_text_in_the_documents(texts: dict[str, str]) -> None:
    """The documents hold no unfinished text (issue 11's entries are all filled in)."""
    for path in DOCS:
        stray = [line for line in texts[path].splitlines() if "TODO" in line]
        assert not stray, (path, stray)


def test_checker_bites() -> None:
    """The checker reports a missing document, a missing section, item or anchor, and
    accepts the citations that do exist (the names are assembled so this file stays clean)."""
    md = ".md"
    doc = "# T\n\n## 1. One\n\n### 1.2 Two\n\n### H3: three\n"
    files = {
        "docs/t" + md: doc,
        "a.py": "\n".join([
            "see docs/t" + md + " section 1.2 and docs/t" + md + " H3",   # fine
            "see docs/t" + md + " sections 1 and 1.2",                    # fine
            "see docs/t" + md + " section 4",                             # no section 4
            "see docs/t" + md + " sections 1, 2",                         # no section 2
            "see docs/t" + md + " H9",                                    # no item H9
            "see GONE" + md + " section 1",                               # no such document
            "see [t](docs/t" + md + "#h3-three) and (docs/t" + md + "#nowhere)",
        ]),
    }
    found = problems(files)
    assert found == [
        f"a.py:3: docs/t{md} has no section 4",
        f"a.py:4: docs/t{md} has no section 2",
        f"a.py:5: docs/t{md} has no item H9",
        f"a.py:6: GONE{md} is not in the repository",
        f"a.py:7: docs/t{md} has no heading #nowhere",
    ], found


def test_slug_matches_github_anchors() -> None:
    """Anchors are computed as GitHub computes them, for the headings the documents use."""
    assert slug("OQ1: Which order statistic is TAT_leader") == (
        "oq1-which-order-statistic-is-tat_leader"
    )
    assert slug("VC4: The new leader's matrix never goes below the replayed one") == (
        "vc4-the-new-leaders-matrix-never-goes-below-the-replayed-one"
    )
    assert slug("5. Hardening against a smarter adversary (issue 11)") == (
        "5-hardening-against-a-smarter-adversary-issue-11"
    )
