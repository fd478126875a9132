"""The krew plugin manifest (plugins/krew/confidential-pods.yaml) is one krew accepts, for this version.

The rules are krew's own (``internal/index/validation/validate.go``: ``ValidatePlugin``, ``validatePlatform``,
``validateSelector``); the sha256 is the one of the archive ``plugins/krew/archive.py`` builds from the
launcher in the repository, and the launcher runs the installed package's plugin.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from confidential_pods import __version__

ROOT = Path(__file__).resolve().parents[2]
KREW = ROOT / "plugins" / "krew"
MANIFEST = KREW / "confidential-pods.yaml"
BIN = "kubectl-confidential_pods"
SEMVER = re.compile(r"v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?")


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(MANIFEST.read_text())
    return loaded


def test_krew_accepts_the_manifest(manifest: dict[str, Any]) -> None:
    assert manifest["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2"
    assert manifest["kind"] == "Plugin"
    name = manifest["metadata"]["name"]
    assert name == MANIFEST.stem == "confidential-pods" and re.fullmatch(r"[\w-]+", name)
    spec = manifest["spec"]
    assert spec["shortDescription"] and not re.search(r"[\r\n]", spec["shortDescription"])
    assert SEMVER.fullmatch(spec["version"]), spec["version"]
    assert spec["platforms"]
    for platform in spec["platforms"]:
        assert platform["uri"] and re.fullmatch(r"[a-f0-9]{64}", platform["sha256"])
        assert platform["bin"]
        assert platform["files"] and all(op["from"] and op["to"] for op in platform["files"])
        selector = platform["selector"]
        keys = [*selector.get("matchLabels", {}), *(e["key"] for e in selector.get("matchExpressions", []))]
        assert keys and set(keys) <= {"os", "arch"}


def test_the_manifest_is_this_version_and_this_binary(manifest: dict[str, Any]) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert manifest["spec"]["version"] == f"v{__version__}" == f"v{project['version']}"
    assert BIN in project["scripts"]  # the executable pip installs is the one krew links
    for platform in manifest["spec"]["platforms"]:
        assert platform["bin"] == BIN
        assert f"/v{__version__}/" in platform["uri"] and platform["uri"].startswith("https://")


def test_the_sha256_is_the_archive_built_from_the_repository(
    manifest: dict[str, Any], tmp_path: Path
) -> None:
    archive = tmp_path / "plugin.zip"
    subprocess.run([sys.executable, str(KREW / "archive.py"), str(archive)], check=True, timeout=60)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert {p["sha256"] for p in manifest["spec"]["platforms"]} == {digest}
    with zipfile.ZipFile(archive) as opened:
        (entry,) = opened.infolist()
        assert entry.filename == BIN and (entry.external_attr >> 16) & 0o777 == 0o755
        assert opened.read(entry) == (KREW / BIN).read_bytes()
    froms = {op["from"] for p in manifest["spec"]["platforms"] for op in p["files"]}
    assert froms == {BIN}


def test_the_launcher_runs_the_installed_plugin(tmp_path: Path) -> None:
    launcher = str(KREW / BIN)
    env = {**os.environ, "CONFIDENTIAL_PODS_PYTHON": sys.executable}
    done = subprocess.run(["sh", launcher, "--version"], env=env, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, f"kubectl confidential-pods {__version__}\n"), done.stderr
    env["CONFIDENTIAL_PODS_PYTHON"] = str(tmp_path / "no-python")
    missing = subprocess.run(["sh", launcher, "nodes"], env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "pip install confidential-pods" in missing.stderr
