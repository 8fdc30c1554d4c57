"""The documentation site's sources: the FAQ answers every question of the original FAQ, and
every page is in the site's navigation. (The site itself is built with ``mkdocs build
--strict`` by scripts/docs, which scripts/test runs: a broken link or anchor fails it.)
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
#: The original FAQ, beside the repository (shared/seeds; CI has a copy there too).
SEED = ROOT.parent / "shared" / "seeds" / "faq.rst"


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def test_the_faq_answers_every_question_of_the_original() -> None:
    if not SEED.is_file():
        pytest.skip(f"the original FAQ is not at {SEED}")
    questions = re.findall(r"^\*\*(.+)\*\*\s*$", SEED.read_text(), re.M)
    assert len(questions) > 40
    faq = DOCS / "faq.md"
    headings = {_norm(h) for h in re.findall(r"^### (.+)$", faq.read_text(), re.M)}
    missing = [q for q in questions if _norm(q) not in headings]
    assert not missing, f"docs/faq.md does not answer: {missing}"
    # each answer has a body with a link into the reference, or at least text
    sections = re.split(r"^### .+$", faq.read_text(), flags=re.M)[1:]
    assert all(len(s.strip()) > 40 for s in sections)
    linked = sum(1 for s in sections if re.search(r"\]\([a-z-]+\.md", s))
    assert linked >= len(sections) * 2 // 3, "most answers link to the reference"


def test_every_page_is_in_the_navigation() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text().replace("!!python", "#"))

    def pages(nav: object) -> list[str]:
        if isinstance(nav, str):
            return [nav]
        if isinstance(nav, list):
            return [p for item in nav for p in pages(item)]
        if isinstance(nav, dict):
            return [p for value in nav.values() for p in pages(value)]
        return []

    listed = set(pages(config["nav"]))
    generated = {"api-reference.md", "cli-reference.md"}  # scripts/mkdocs_hooks.py
    on_disk = {p.name for p in DOCS.glob("*.md")}
    assert on_disk | generated == listed, (on_disk | generated) ^ listed
    assert not generated & on_disk, "generated pages must not be in docs/"
