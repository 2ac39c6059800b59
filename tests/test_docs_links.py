"""Every relative link in the project's Markdown pages resolves: the file exists and, when
the link names an anchor, the target page has a heading with that GitHub anchor.

Pages move (methods out of ARCHITECTURE.md, workloads out of the host) and headings get
renamed; a link that silently points nowhere is how a reader loses the page a fact moved
to. Only hand-written pages are checked: generated leaderboards and RESULTS.md files are
rewritten by the tools that make them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted(
    [
        ROOT / "README.md",
        *(ROOT / "docs").glob("*.md"),
        *(ROOT / "docs" / "methods").glob("*.md"),
        *(ROOT / "results").glob("*/README.md"),
    ]
)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE = re.compile(r"`[^`\n]*`")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings, with GitHub's -1, -2 suffixes for repeats."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for line in FENCE.sub("", page.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(page: Path) -> list[str]:
    """Relative link targets of a page, outside code blocks and code spans."""
    text = CODE.sub("", FENCE.sub("", page.read_text(encoding="utf-8")))
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t, re.I)]


def broken(page: Path) -> list[str]:
    problems = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            problems.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{target}: no heading with anchor #{anchor}")
    return problems


def test_slug_matches_github() -> None:
    assert slug("Measurement rules (as implemented)") == "measurement-rules-as-implemented"
    assert slug("Security splits: the threat model") == "security-splits-the-threat-model"
    assert slug("`minilm-textcls`") == "minilm-textcls"
    assert slug("Why before/after latencies are timed") == "why-beforeafter-latencies-are-timed"


def test_checker_catches_a_broken_link(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Top\n\n## Two words\n\n[ok](#two-words) [x](b.md)\n")
    (tmp_path / "c.md").write_text("[gone](a.md#nowhere) [fine](a.md#top) `[code](x.md)`\n")
    assert broken(tmp_path / "a.md") == ["b.md: no such file"]
    assert broken(tmp_path / "c.md") == ["a.md#nowhere: no heading with anchor #nowhere"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    assert broken(page) == []
