"""Builds every kustomization of manifests/ once per test session.

Without kustomize the tests fail (they do not skip): the manifests are only proven by building them.
"""

from __future__ import annotations

import pytest

from tests.manifests.building import (
    BUILDS,
    HELM_INSTALL_COMMAND,
    INSTALL_COMMAND,
    INSTALLS,
    LEDGER_COMPONENT,
    Manifest,
    build_with_components,
    find_kustomize,
    find_tool,
    kustomize_build,
)


@pytest.fixture(scope="session")
def kustomize() -> str:
    binary = find_kustomize()
    if binary is None:
        pytest.fail(
            "kustomize not found ($KUSTOMIZE, PATH, ~/go/bin); the manifests tests need it. "
            f"Install it with: {INSTALL_COMMAND}",
            pytrace=False,
        )
    return binary


@pytest.fixture(scope="session")
def built(kustomize: str) -> dict[str, list[Manifest]]:
    """name → the objects `kustomize build` prints for it."""
    return {name: kustomize_build(kustomize, path) for name, path in BUILDS.items()}


@pytest.fixture(scope="session")
def built_ledger(kustomize: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Manifest]]:
    """install → its build with the ledger-mode component of its profile, as a user's overlay adds it."""
    work = tmp_path_factory.mktemp("ledger")
    return {
        name: build_with_components(kustomize, name, [LEDGER_COMPONENT[name]], work / name)
        for name in INSTALLS
    }


@pytest.fixture(scope="session")
def helm() -> str:
    binary = find_tool("helm")
    if binary is None:
        pytest.fail(
            "helm not found ($HELM, PATH, ~/go/bin); the chart tests need it. "
            f"Install it with: {HELM_INSTALL_COMMAND}",
            pytrace=False,
        )
    return binary
