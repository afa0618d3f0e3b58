"""The README's in-page links (its table of contents among them) point at headings that
exist, with GitHub's anchor rule, and the contents list every section (issue 19)."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, letters/digits/space/-/_ kept, spaces -> '-'."""
    t = re.sub(r"[`*]", "", title).strip().lower()
    t = "".join(ch for ch in t if ch in " -_" or unicodedata.category(ch)[0] in "LN")
    return t.replace(" ", "-")


def _headings(text: str) -> list[tuple[int, str]]:
    out, fence = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
            continue
        m = None if fence else re.match(r"^(#{1,6}) (.*)$", line)
        if m:
            out.append((len(m.group(1)), m.group(2)))
    return out


def test_every_in_page_link_resolves():
    text = README.read_text()
    anchors = {_anchor(t) for _, t in _headings(text)}
    links = re.findall(r"\]\(#([^)]+)\)", text)
    assert links, "the README has no in-page links"
    missing = sorted({a for a in links if a not in anchors})
    assert not missing, f"README links to missing headings: {missing}"


def test_the_contents_list_every_section():
    text = README.read_text()
    toc = text[text.index("<!-- toc -->"): text.index("<!-- /toc -->")]
    listed = set(re.findall(r"\]\(#([^)]+)\)", toc))
    sections = {_anchor(t) for lvl, t in _headings(text) if lvl in (2, 3) and t != "Contents"}
    assert sections == listed, (sorted(sections - listed), sorted(listed - sections))


def test_concepts_come_before_the_reference_material():
    names = [t for lvl, t in _headings(README.read_text()) if lvl == 2]
    assert names.index("Concepts") < names.index("Usage")
    concepts = README.read_text().split("## Concepts", 1)[1].split("\n## ", 1)[0]
    for term in ("query", "round", "layer round", "node", "expert", "placement", "policy", "schedule", "ledger"):
        assert f"**{term}**" in concepts, term
