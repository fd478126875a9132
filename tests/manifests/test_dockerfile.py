"""The Dockerfile builds the package the way pyproject.toml defines it, on the base a build argument names.

These checks read the files; tests/e2e/images/test_images.py runs the image that tests/e2e/images/build.sh
builds from this Dockerfile with buildah on a Debian bookworm base (docs/images.md)."""

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


def _stages() -> list[str]:
    """The build stages' text, each from its FROM line."""
    return ["FROM " + stage for stage in re.split(r"^FROM ", DOCKERFILE, flags=re.M)[1:]]


def test_base_is_a_build_argument_defaulting_to_the_official_python_image() -> None:
    preamble = re.split(r"^FROM ", DOCKERFILE, flags=re.M)[0]
    assert re.search(r"^ARG BASE=python:3\.11-slim$", preamble, re.M)
    froms = [stage.splitlines()[0] for stage in _stages()]
    assert froms == ["FROM ${BASE} AS build", "FROM ${BASE}"]


def test_package_goes_into_a_virtual_environment_on_any_base() -> None:
    """Debian's python3 refuses pip installs into the system (PEP 668), the official image's does not:
    a venv works on both, and only ``python3`` (at /usr/local/bin or /usr/bin) is assumed."""
    build, final = _stages()
    assert "python3 -m venv /opt/build" in build
    assert "/opt/build/bin/pip wheel --no-deps --wheel-dir /wheels ." in build
    assert "python3 -m venv /opt/confidential-pods" in final
    assert re.search(r"^\s+PATH=/opt/confidential-pods/bin:\$PATH$", final, re.M)
    assert "pip install /wheels/*.whl" in final
    assert not re.search(r"/usr/local/bin|/usr/bin/python", DOCKERFILE)


def test_source_date_epoch_is_passed_to_every_stage() -> None:
    """Reproducible wheels, bytecode and password-file dates; an empty value is unset (useradd complains)."""
    for stage in _stages():
        assert re.search(r"^ARG SOURCE_DATE_EPOCH$", stage, re.M)
        assert 'if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then unset SOURCE_DATE_EPOCH; fi' in stage


def test_runtime_image() -> None:
    final = _stages()[-1]
    assert re.search(r"^USER 65532:65532$", final, re.M)
    assert "groupadd --gid 65532 nonroot" in final
    assert re.search(r"useradd --uid 65532 --gid 65532 .*--no-log-init", final)
    assert 'ENTRYPOINT ["confidential-pods"]' in final
    script = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert "confidential-pods" in script
