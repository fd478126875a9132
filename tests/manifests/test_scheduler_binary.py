"""The real kube-scheduler loads each KubeSchedulerConfiguration (strict decoding, defaulting,
validation) — when the e2e control plane has been built (tests/e2e/build.sh); without the binary
this check is skipped (failed where e2e is required, tests/e2e/gate.py) and the field-by-field checks of
test_scheduler.py stand alone."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from extender.modes import MODES
from tests.manifests.building import INSTALLS, REPO, Manifest
from tests.manifests.test_scheduler import scheduler_configuration, scheduler_flags


def _binary() -> Path | None:
    override = os.environ.get("E2E_BIN_DIR")
    candidates = [Path(override) / "kube-scheduler"] if override else []
    candidates += sorted((REPO / ".cache" / "e2e-bin").glob("v*/kube-scheduler"), reverse=True)
    return next((c for c in candidates if c.is_file() and os.access(c, os.X_OK)), None)


@pytest.fixture(scope="module")
def kube_scheduler(request: pytest.FixtureRequest) -> Path:
    binary = _binary()
    if binary is None:
        from tests.e2e import gate

        binary = gate.binaries(request.config).kube_scheduler  # skips here (fails in CI) without the build
    return binary


def _load(
    binary: Path, configuration: dict[str, object], tmp_path: Path, flags: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    source = tmp_path / "config.yaml"
    source.write_text(yaml.safe_dump(configuration), encoding="utf-8")
    # --write-config-to: decode, default and validate the configuration, write it out, exit.
    # --master: a client must be configurable; nothing is contacted.
    return subprocess.run(
        [
            str(binary),
            f"--config={source}",
            "--master=http://127.0.0.1:1",
            f"--write-config-to={tmp_path / 'out.yaml'}",
            *(flags or []),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", INSTALLS)
def test_kube_scheduler_accepts_the_configuration(
    request: pytest.FixtureRequest, name: str, mode: str, tmp_path: Path, kube_scheduler: Path
) -> None:
    objects: list[Manifest] = request.getfixturevalue("built" if mode == "native" else "built_ledger")[name]
    configuration = scheduler_configuration(objects)
    # With the container's other flags: the binary must know every one of them (deprecated ones included).
    result = _load(kube_scheduler, configuration, tmp_path, scheduler_flags(objects))
    assert result.returncode == 0, result.stderr
    effective = yaml.safe_load((tmp_path / "out.yaml").read_text(encoding="utf-8"))
    # What kube-scheduler will run with: our extender as written (false booleans are omitempty).
    assert effective["extenders"] == [
        {k: v for k, v in e.items() if v is not False} for e in configuration["extenders"]
    ]
    (profile,) = effective["profiles"]
    assert profile["schedulerName"] == "confidential-scheduler"
    resource = configuration["extenders"][0]["managedResources"][0]["name"]
    (fit,) = [c["args"] for c in profile["pluginConfig"] if c["name"] == "NodeResourcesFit"]
    # Effective NodeResourcesFit: EPC counted (nothing ignored) in both modes; scored in-tree in native mode.
    assert not fit.get("ignoredResources") and not fit.get("ignoredResourceGroups")
    scored = {r["name"]: r["weight"] for r in fit["scoringStrategy"]["resources"]}
    assert scored == ({"cpu": 1, "memory": 1, resource: 3} if mode == "native" else {"cpu": 1, "memory": 1})
    assert fit["scoringStrategy"]["type"] == "LeastAllocated"
    # Left to the adaptive default: kube-scheduler writes 0 ("adaptive") or omits it.
    assert not effective.get("percentageOfNodesToScore")
    assert effective["leaderElection"]["resourceName"] == "confidential-scheduler"


def test_kube_scheduler_refuses_a_misspelt_field(
    built: dict[str, list[Manifest]], tmp_path: Path, kube_scheduler: Path
) -> None:
    configuration = scheduler_configuration(built["base"])
    extender = configuration["extenders"][0]
    extender["nodeCachecapable"] = extender.pop("nodeCacheCapable")
    result = _load(kube_scheduler, configuration, tmp_path)
    assert result.returncode != 0
    assert 'unknown field \\"extenders[0].nodeCachecapable\\"' in result.stderr
