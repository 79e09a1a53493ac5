"""The README is the front door and docs/ holds the rest; both say what the code has.

The configuration table (docs/configuration.md) is every setting exactly as the code
declares it; every relative link of the README and docs/ leads to a file (and heading)
that exists; every test, file and make target the pages name exists.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from schemas.settings import describe

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CONFIGURATION = DOCS / "configuration.md"
README_MAX_LINES = 250

FENCE = re.compile(r"^```.*?^```[ \t]*$", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\[(?:[^\]\\]|\\.)*\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
# A repository path in a code span: a top-level folder of ours, then a file with an
# extension or a folder (ending in /); `*` globs as written in the layout table.
REPO_PATH = re.compile(
    r"(?:schemas|gateway|streams|sinks|replay|govledger|compose|bench|tests|docs)/"
    r"(?:[\w.*-]+/)*(?:[\w*-]+\.\w+)?"
)
TEST_REFERENCE = re.compile(r"^(?:([\w/]+\.py)::)?(test_\w+)$")
MAKE_TARGET = re.compile(r"^make ([\w-]+)")


def pages() -> list[Path]:
    """The README and every page under docs/."""
    return [README, *sorted(DOCS.glob("*.md"))]


def prose(path: Path) -> str:
    """A page without its fenced code blocks (shell, Python, YAML are not links)."""
    return FENCE.sub("", path.read_text())


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text lower-cased, punctuation dropped, spaces
    as hyphens (links keep their text, code spans and emphasis lose their marks)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    kept = "".join(
        c
        for c in text
        if c in " -_" or unicodedata.category(c)[0] in "LN"  # letters and digits
    )
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a page, numbered as GitHub numbers repeated ones."""
    found: set[str] = set()
    for heading in HEADING.findall(prose(path)):
        base = slug(heading)
        name, n = base, 0
        while name in found:
            n += 1
            name = f"{base}-{n}"
        found.add(name)
    return found


def relative_links(path: Path) -> list[str]:
    """Links of a page that point into the repository (not to a site or a mail)."""
    return [
        target
        for target in LINK.findall(prose(path))
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target)  # http:, https:, mailto:
    ]


def code_spans() -> list[tuple[Path, str]]:
    """Every inline code span of every page, with its page."""
    return [
        (page, span.strip()) for page in pages() for span in CODE_SPAN.findall(page.read_text())
    ]


def test_configuration_table_matches_the_settings() -> None:
    text = CONFIGURATION.read_text()
    documented = set(re.findall(r"^\| \w+ \| `(GOVLEDGER_\w+)` \|", text, re.MULTILINE))
    declared = {name for _, name, _, _ in describe()}
    assert documented == declared
    for service, name, default, doc in describe():
        assert f"| {service} | `{name}` | `{default}` | {doc} |" in text, name


def test_readme_is_a_front_door_with_the_two_commands() -> None:
    text = README.read_text()
    lines = len(text.splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail to docs/"
    assert "make up" in text
    assert "make test" in text


def test_every_docs_page_is_linked_from_the_readme_and_exists() -> None:
    linked = {
        (README.parent / target.split("#", 1)[0]).resolve()
        for target in relative_links(README)
        if target.startswith("docs/")
    }
    missing = sorted(str(p.relative_to(ROOT)) for p in linked if not p.is_file())
    assert not missing, f"the README links to pages that do not exist: {missing}"
    unlinked = sorted(p.name for p in DOCS.glob("*.md") if p.resolve() not in linked)
    assert not unlinked, f"pages under docs/ the README does not link to: {unlinked}"


def test_every_relative_link_resolves_to_a_file_and_heading() -> None:
    broken: list[str] = []
    for page in pages():
        for target in relative_links(page):
            file_part, _, anchor = target.partition("#")
            destination = (page.parent / file_part).resolve() if file_part else page
            where = f"{page.relative_to(ROOT)} -> {target}"
            if not destination.exists():
                broken.append(f"{where}: no such file")
            elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
                broken.append(f"{where}: no such heading")
    assert not broken, "\n".join(broken)


def test_every_test_the_pages_name_exists() -> None:
    sources = {p: p.read_text() for p in (ROOT / "tests").rglob("*.py")}
    missing: list[str] = []
    for page, span in code_spans():
        match = TEST_REFERENCE.match(span)
        if match is None:
            continue
        file_name, test = match.groups()
        candidates = [
            text
            for path, text in sources.items()
            if file_name is None or path.as_posix().endswith("/" + file_name)
        ]
        if not any(re.search(rf"^\s*(?:async )?def {test}\(", t, re.MULTILINE) for t in candidates):
            missing.append(f"{page.relative_to(ROOT)}: {span}")
    assert not missing, "tests named in the docs that do not exist:\n" + "\n".join(missing)


def test_every_file_and_make_target_the_pages_name_exists() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, re.MULTILINE))
    missing: list[str] = []
    for page, span in code_spans():
        first = span.split()[0]
        path = REPO_PATH.fullmatch(first)
        if path is not None and not list(ROOT.glob(first.rstrip("/") or ".")):
            missing.append(f"{page.relative_to(ROOT)}: {span}")
        make = MAKE_TARGET.match(span)
        if make is not None and make.group(1) not in targets:
            missing.append(f"{page.relative_to(ROOT)}: {span} (no such make target)")
    assert not missing, "files or targets named in the docs that do not exist:\n" + "\n".join(
        missing
    )
