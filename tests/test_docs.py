"""The README and the manual in docs/ hold no dangling link and name no file that is not in the repository."""

import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
# A path of this repository named in backticks: a top-level folder of the project, then a file with an extension.
NAMED_FILE = re.compile(
    r"`((?:benchmarks|conf|docs|jobs|notebooks|tests|ucluster_spark|\.ci)/[\w./-]*\.(?:py|yaml|json|png|md|txt|properties)"
    r"|Makefile|setup\.cfg|pyproject\.toml)`"
)
# A module named by its path inside the package (the code map's way): `executor/rank/loop.py`.
NAMED_MODULE = re.compile(r"`((?:benchmarking|config|data|driver|executor|jobs)/[\w/]*\.py)`")


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#{1,6} (.+)$", page.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


def _links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)  # commands, not links
    return [target for target in LINK.findall(text) if not re.match(r"[a-z]+:", target)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    for target in _links(page):
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.relative_to(ROOT)}: link to {target}: no such file"
        assert ROOT in linked.parents or linked == ROOT, f"{page.relative_to(ROOT)}: {target} leaves the repository"
        if anchor and linked.suffix == ".md":
            assert anchor in _anchors(linked), f"{page.relative_to(ROOT)}: link to {target}: no such heading"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_file_the_docs_name_exists(page):
    for name in NAMED_FILE.findall(page.read_text()):
        if any(part in name for part in ("NAME", "*", "…")):
            continue  # a pattern, not a file
        assert (ROOT / name).exists(), f"{page.relative_to(ROOT)} names {name}, which is not in the repository"
    for name in NAMED_MODULE.findall(page.read_text()):
        if "NAME" in name:
            continue
        assert (ROOT / "ucluster_spark" / name).exists(), f"{page.relative_to(ROOT)} names {name}, not in the package"


def test_the_readme_is_a_front_page_and_every_docs_page_is_reachable_from_it():
    readme = ROOT / "README.md"
    assert len(readme.read_text().splitlines()) <= 200
    reachable, todo = set(), [readme.resolve()]
    while todo:
        page = todo.pop()
        if page in reachable:
            continue
        reachable.add(page)
        for target in _links(page):
            linked = (page.parent / target.partition("#")[0]).resolve()
            if linked.suffix == ".md" and linked.exists():
                todo.append(linked)
    assert {p.resolve() for p in PAGES} <= reachable


def test_the_docs_stand_on_their_own():
    for page in PAGES:
        text = page.read_text()
        assert "shared/reference" not in text, f"{page.relative_to(ROOT)} points outside the project"
        assert not re.search(r"\bissue \d+", text, flags=re.IGNORECASE), f"{page.relative_to(ROOT)} names an issue"
