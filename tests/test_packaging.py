"""Packaging: the licence, the sdist's contents, the metadata the package index shows."""

from __future__ import annotations

import re
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_license_file_matches_the_declared_license() -> None:
    assert PROJECT["license"] == "MIT"
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Permission is hereby granted" in text
    assert "LICENSE" in PROJECT["license-files"]


def test_metadata_has_classifiers_and_keywords() -> None:
    classifiers = PROJECT["classifiers"]
    assert "Typing :: Typed" in classifiers
    assert any(c.startswith("Programming Language :: Python :: 3.") for c in classifiers)
    assert PROJECT["keywords"]


def test_readme_has_no_relative_images() -> None:
    """The package index shows a README's images only from absolute URLs."""
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (ROOT / "README.md").read_text())
    assert all(src.startswith("https://") for src in images), images


@pytest.mark.slow
def test_sdist_carries_what_its_tests_docs_and_benchmarks_need(tmp_path: Path) -> None:
    from setuptools import build_meta

    name = build_meta.build_sdist(str(tmp_path))
    with tarfile.open(tmp_path / name) as sdist:
        members = {m.split("/", 1)[1] for m in sdist.getnames() if "/" in m}
    for needed in ("LICENSE", "README.md", "mkdocs.yml", "docs/index.md",
                   "docs/benchmarks/suite/cholesky.png", "examples/quickstart.py",
                   "benchmarks/suite.sh", "tests/conftest.py", "tools/griffe_doctest_blocks.py",
                   "scripts/setup.sh", "pxexec/py.typed"):
        assert needed in members, f"the sdist lacks {needed}"
    assert not any("__pycache__" in m for m in members)
