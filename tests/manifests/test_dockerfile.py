"""The Dockerfile builds the package the way pyproject.toml defines it (no Docker engine here:
these checks read the files; docs/install.md says the image is built elsewhere)."""

from __future__ import annotations

import fnmatch
import re
import tomllib

from tests.manifests.building import REPO

DOCKERFILE = (REPO / "Dockerfile").read_text(encoding="utf-8")
DOCKERIGNORE = [
    line.strip()
    for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    if line.strip() and not line.startswith("#")
]


def _copied_sources() -> set[str]:
    sources: set[str] = set()
    for line in DOCKERFILE.splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not words[1].startswith("--from"):
            sources.update(w.rstrip("/") for w in words[1:-1])
    return sources


def _in_context(path: str) -> bool:
    """Whether .dockerignore (last matching rule wins) leaves ``path`` in the build context."""
    included = True
    for rule in DOCKERIGNORE:
        negated = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path, pattern.removeprefix("**/")):
            included = negated
    return included


def test_every_package_and_build_input_is_copied() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    needed = packages | {"pyproject.toml", pyproject["project"]["readme"]}
    assert needed <= _copied_sources()
    for source in _copied_sources():
        assert _in_context(source), f".dockerignore drops {source}"
    assert not _in_context("tests")
    assert not _in_context(".git")


def test_runtime_image() -> None:
    stages = re.findall(r"^FROM (\S+)", DOCKERFILE, re.M)
    assert stages and all(s == "python:3.11-slim" for s in stages)
    final = DOCKERFILE.rsplit("\nFROM ", 1)[1]
    assert re.search(r"^USER 65532:65532$", final, re.M)
    assert 'ENTRYPOINT ["confidential-pods"]' in final
    script = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert "confidential-pods" in script
