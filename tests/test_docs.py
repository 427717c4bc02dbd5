"""The README is a front page and docs/ say what is true now.

- README.md is at most 250 lines and shows the two commands in its first 60;
- README.md and docs/ hold no history marks (dates, the word session, commit-hash-like
  words; the same pattern as the project's history check), in text or in file names:
  history belongs in CHANGELOG.md and git;
- every relative link in README.md and docs/*.md reaches a file that exists (and a
  heading that exists, when it names one);
- every JSON file docs/results.md names exists under benchmarks/, and the plain numbers
  in a results row that names JSON files are numbers those files hold.

Plain file reads: nothing here imports torch.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
BENCHMARKS = ROOT / "benchmarks"
PAGES = [README, *sorted(DOCS.glob("*.md"))]

HISTORY = re.compile(
    r"\b20\d\d-[01]\d-[0-3]\d\b"                                       # a date
    r"|\bsessions?\b"                                                  # the word session
    r"|\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,12}\b",           # a commit-hash-like word
    re.I)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*```")
TWO_COMMANDS = ("python -m llamacpu.train --stage 0", "python -m pytest tests")


def _prose(path: Path) -> list[tuple[int, str]]:
    """(line number, line) of a markdown file, outside fenced code blocks."""
    out, fenced = [], False
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((i, line))
    return out


def _slug(heading: str) -> str:
    """The anchor a heading gets on GitHub: lower case, punctuation dropped, spaces → '-'."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_slug(line.lstrip("#")) for _, line in _prose(path) if line.startswith("#")}


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_readme_is_a_front_page():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move detail to docs/"
    head = "\n".join(lines[:60])
    for command in TWO_COMMANDS:
        assert command in head, f"{command!r} is not in README.md's first 60 lines"


@pytest.mark.parametrize("path", PAGES, ids=_name)
def test_no_history_marks(path):
    hits = [f"{_name(path)}:{i}: {m.group()}"
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            for m in HISTORY.finditer(line)]
    assert not hits, "history belongs in CHANGELOG.md: " + "; ".join(hits[:5])


def test_no_history_marks_in_docs_file_names():
    # "_" is a word character, so a hash after one (check_report_<hash>.md) has no word
    # boundary: read underscores as spaces
    hits = [_name(p) for p in DOCS.rglob("*") if HISTORY.search(p.name.replace("_", " "))]
    assert not hits, hits


@pytest.mark.parametrize("path", [*PAGES, ROOT / "CHANGELOG.md"], ids=_name)
def test_no_deadline_stories(path):
    assert "this cpu's deadline" not in path.read_text(encoding="utf-8").lower()


@pytest.mark.parametrize("path", PAGES, ids=_name)
def test_relative_links_reach_existing_files_and_headings(path):
    broken = []
    for i, line in _prose(path):
        for target in LINK.findall(line):
            if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
                continue
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            if not dest.exists():
                broken.append(f"{_name(path)}:{i}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{_name(path)}:{i}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def _json_names(text: str) -> set[str]:
    """``results_x.json`` and ``benchmarks/results_x.json`` as named in a page."""
    return set(re.findall(r"(?<![\w/.-])(?:benchmarks/)?([\w.-]+\.json)\b(?!l)", text))


def test_every_json_named_in_results_exists():
    text = (DOCS / "results.md").read_text(encoding="utf-8")
    names = _json_names(text)
    assert names, "docs/results.md names no JSON file"
    missing = sorted(n for n in names if not (BENCHMARKS / n).is_file())
    assert not missing, f"named in docs/results.md but not in benchmarks/: {missing}"


def _numbers(value) -> list[float]:
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, dict):
        return [x for v in value.values() for x in _numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in _numbers(v)]
    return []


# A cell that is only numbers: "97.0%", "**100%**", "318.7 s", "5.9 s + 16.7 s", "1.47×".
NUMBER_CELL = re.compile(r"^\**\s*\d[\d.,]*\s*(%|s|×)?\s*\**(\s*\+\s*\d[\d.]*\s*s)?$")


def _held(shown: str, pool: list[float]) -> bool:
    """``shown`` (as printed, percent or not) is one of ``pool`` up to its printed precision."""
    value = float(shown.replace(",", ""))
    tolerance = 0.5 * 10 ** -(len(shown.split(".")[1]) if "." in shown else 0) + 1e-9
    return any(abs(x - value) <= tolerance or abs(100 * x - value) <= tolerance for x in pool)


@pytest.mark.parametrize("page", ["results.md", "performance.md"])
def test_numbers_in_json_backed_rows_are_in_their_json(page):
    """A table row that names JSON files quotes, in its purely numeric cells, only numbers
    those files hold (exact match as a fraction or a percentage, seconds, ratios)."""
    wrong = []
    for i, line in _prose(DOCS / page):
        if not line.startswith("|"):
            continue
        names = [n for n in _json_names(line) if (BENCHMARKS / n).is_file()]
        if not names:
            continue
        pool = [x for n in names for x in _numbers(json.loads((BENCHMARKS / n).read_text()))]
        for cell in line.strip().strip("|").split("|")[1:]:
            cell = cell.strip()
            if NUMBER_CELL.match(cell):
                for shown in re.findall(r"\d[\d.,]*", cell):
                    if not _held(shown, pool):
                        wrong.append(f"docs/{page}:{i}: {shown} is not in {names}")
    assert not wrong, "\n".join(wrong)
