"""The documentation a newcomer reads: a README that fits on a few screens (at most 200 lines of at
most 100 characters), relative links in README.md and docs/*.md that lead to files that exist (and
to headings that exist, for a `page.md#heading` link), every page of docs/ reachable from the
README, and a configuration reference that is exactly the rendering of the config's fields
(pipelines/config_reference.py), so it never drifts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipelines import config_reference
from pipelines.config import REPO_ROOT

README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"
MAX_LINES, MAX_COLUMNS = 200, 100
_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def pages(root: Path = REPO_ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def link_targets(path: Path) -> list[str]:
    """The targets of the Markdown links and images of `path`, outside code."""
    text = _INLINE_CODE.sub("", _FENCE.sub("", path.read_text(encoding="utf-8")))
    return _LINK.findall(text)


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file (lower case, punctuation dropped,
    spaces as dashes; a repeated heading gets -1, -2, ...)."""
    found: set[str] = set()
    for heading in _HEADING.findall(_FENCE.sub("", path.read_text(encoding="utf-8"))):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


def broken_links(files: list[Path], root: Path = REPO_ROOT) -> list[str]:
    """'file: target' for every relative link whose file does not exist, or whose #anchor names no
    heading of a Markdown file."""
    broken = []
    for path in files:
        for target in link_targets(path):
            if _EXTERNAL.match(target):
                continue
            relative, _, anchor = target.partition("#")
            linked = path.parent / relative if relative else path
            if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in anchors(linked)):
                broken.append(f"{path.relative_to(root)}: {target}")
    return broken


def test_the_readme_fits_on_a_few_screens():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_LINES, f"README.md has {len(lines)} lines (at most {MAX_LINES}: details go to docs/)"
    wide = [f"line {number}: {len(line)} characters" for number, line in enumerate(lines, 1) if len(line) > MAX_COLUMNS]
    assert not wide, f"README.md lines over {MAX_COLUMNS} characters: {wide}"


def test_every_relative_link_leads_to_a_file():
    assert broken_links(pages()) == []


def test_every_page_of_docs_is_linked_from_the_readme():
    linked = {(README.parent / target.split("#", 1)[0]).resolve() for target in link_targets(README)}
    assert [page.name for page in sorted(DOCS.glob("*.md")) if page.resolve() not in linked] == []


def test_the_configuration_reference_is_the_rendering_of_the_config():
    committed = (DOCS / "configuration.md").read_text(encoding="utf-8")
    assert committed == config_reference.render(), (
        "docs/configuration.md differs from the config's fields: run `python -m pipelines config-reference`")


def test_the_reference_names_every_setting_once():
    from pipelines.config import setting_fields

    rendered = config_reference.render()
    for name in setting_fields():
        assert len(re.findall(rf"^\| `{name}` \|", rendered, re.MULTILINE)) == 1, name
    assert str(REPO_ROOT) not in rendered and str(Path.home()) + "/" not in rendered  # the same on every machine


@pytest.mark.parametrize("text, broken", [
    ("# Top\n[ok](docs/other.md) [anchor](docs/other.md#the-part-2) [web](https://example.com) [self](#top)", []),
    ("[no such heading](docs/other.md#nowhere) [nor here](#nowhere)", ["docs/other.md#nowhere", "#nowhere"]),
    ("![missing image](screenshots/none.png)", ["screenshots/none.png"]),
    ("[missing](nowhere.md#x)", ["nowhere.md#x"]),
    ("```\n[in code](nowhere.md)\n```\n`[inline](nowhere.md)`", []),
])
def test_the_link_check_finds_a_broken_link(tmp_path, text, broken):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# other\n## The `part` (2)\n")
    (tmp_path / "README.md").write_text(text + "\n")
    assert [line.split(": ", 1)[1] for line in broken_links(pages(tmp_path), tmp_path)] == broken
