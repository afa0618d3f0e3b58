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


def _layout_paths(text: str) -> list[tuple[str, Path]]:
    """``(name as written, path)`` of every file and folder the Layout block names: the first
    column (nested by indentation under ``src/dmoe/``) and ``name.py`` in parentheses in the
    description."""
    root = README.parent
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    out, parents = [], {}
    for line in block.splitlines():
        if not line.strip() or line.startswith(" " * 10):  # blank, or a description continued
            continue
        indent = len(line) - len(line.lstrip())
        first, _, desc = line.strip().partition("  ")
        base = parents.get(indent - 2, root) if indent else root
        names = [n for n in first.split() if "/" in n or n.endswith(".py")]
        for n in names:
            path = base / n.rstrip("/")
            out.append((n, path))
            if n.endswith("/"):
                parents[indent] = path
        for n in re.findall(r"\b(\w+\.py)\b", desc):
            folder = base / names[0].rstrip("/") if len(names) == 1 and names[0].endswith("/") else base
            out.append((n, folder / n))
    return out


def test_the_layout_names_the_current_files():
    """Every file the Layout section names exists and is not a deprecated re-export (issue 19:
    it listed channel.py, loader.py and load.py after they moved)."""
    named = _layout_paths(README.read_text())
    assert len(named) > 40
    missing = [n for n, p in named if not p.exists()]
    assert not missing, missing
    stale = [n for n, p in named if p.suffix == ".py" and p.read_text().lstrip('"\n').startswith("Deprecated")]
    assert not stale, stale
