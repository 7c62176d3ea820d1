"""The documentation stands alone: README links docs/, docs cite only files of this repository, and every
parity target of harness/targets.py is explained in docs/parity.md with a reason beside its definition."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness import targets

ROOT = Path(__file__).resolve().parent.parent
DOCS = ("docs/architecture.md", "docs/parity.md", "docs/fixture.md", "docs/precision.md", "docs/performance.md",
        "docs/corpus.md")
# a backticked path of the repository, e.g. `harness/targets.py` or `tests/data/speakrs/README.md`
REPO_PATH = re.compile(r"`((?:mlx_diar|reference|harness|tests|docs|scripts|examples)/[\w./-]*\.\w+)`")


def _target_names() -> list[str]:
    return [name for name, value in vars(targets).items() if name.isupper() and isinstance(value, (int, float))]


def test_readme_links_every_doc() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for doc in DOCS:
        assert f"]({doc})" in readme, doc
        assert (ROOT / doc).is_file(), doc


@pytest.mark.parametrize("doc", ["README.md", *DOCS])
def test_docs_cite_only_files_of_the_repository(doc: str) -> None:
    text = (ROOT / doc).read_text(encoding="utf-8")
    assert "../" not in text and "/work/" not in text, f"{doc} points outside the repository"
    written = {"FIXTURE.md", "summary.md", "corpus.md", "diff.md", "gpu-check.md", "F.md"}  # files the project writes (F.md: an --out example)
    in_repo = {path.name for path in ROOT.rglob("*.md") if ".venv" not in path.parts}
    for name in re.findall(r"[\w.-]+\.md\b", text):
        assert name in in_repo | written, f"{doc} cites {name}, which is neither in the repository nor written by it"
    for path in REPO_PATH.findall(text):
        assert (ROOT / path).exists(), f"{doc} cites {path}, which is not in the repository"


def test_every_target_is_explained_and_commented() -> None:
    parity = (ROOT / "docs/parity.md").read_text(encoding="utf-8")
    source = (ROOT / "harness/targets.py").read_text(encoding="utf-8").splitlines()
    assert _target_names()
    for name in _target_names():
        assert f"`{name}`" in parity, f"docs/parity.md does not explain {name}"
        line = next(i for i, text in enumerate(source) if text.startswith(f"{name} ="))
        assert source[line - 1].startswith("#"), f"harness/targets.py: {name} has no reason comment above it"
