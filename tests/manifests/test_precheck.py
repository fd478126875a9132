"""``confidential-pods precheck --offline`` through the installed command, on each install as shipped (the
keys and images a user must set, named) and as a user fills them in (nothing left). Against a cluster:
tests/e2e/test_precheck.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.manifests.building import INSTALLS, MANIFESTS, Manifest

INSTALLED = str(Path(sys.executable).parent / "confidential-pods")
PCCS = "https://pccs.example.internal:8081/sgx/certification/v4/"
AESMD_IMAGE = "registry.example.com/sgx/aesmd:2.25"

#: What each install as shipped leaves to set: (key or image) of each line, in order.
AS_SHIPPED: dict[str, list[str]] = {
    "base": [],
    "alibaba": ["dcap.pccsUrl", "aesmSidecarImage"],
    "intel": ["image aesmd-image-required.invalid/aesmd:set-me", "dcap.pccsUrl"],
    "azure": [],
    "cert-manager": [],
}


def precheck(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [INSTALLED, "precheck", "--offline", *args], capture_output=True, text=True, check=False
    )


def _things(stdout: str) -> list[str]:
    return [line.removeprefix("set ").split(" (", 1)[0] for line in stdout.splitlines()]


def filled(objects: list[Manifest]) -> list[Manifest]:
    """What a user does: the region, the aesmd sidecar image, the PCCS, ``kustomize edit set image``."""
    text = yaml.safe_dump_all(objects).replace("<region>", "cn-hangzhou")
    text = text.replace("aesmd-image-required.invalid/aesmd:set-me", AESMD_IMAGE)
    result = list(yaml.safe_load_all(text))
    for obj in result:
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"].startswith("confidential-pods-config"):
            config = yaml.safe_load(obj["data"]["config.yaml"])
            if config.get("runtimeClass") not in (None, "none"):
                config["aesmSidecarImage"] = AESMD_IMAGE
            config.setdefault("dcap", {"pccsUrl": PCCS})
            obj["data"]["config.yaml"] = yaml.safe_dump(config)
    return result


@pytest.mark.parametrize("name", INSTALLS)
def test_the_build_as_shipped_names_what_to_set_and_as_filled_is_ok(
    built: dict[str, list[Manifest]], name: str, tmp_path: Path
) -> None:
    path = tmp_path / "built.yaml"
    path.write_text(yaml.safe_dump_all(built[name]))
    done = precheck("-f", str(path))
    if AS_SHIPPED[name]:
        assert done.returncode == 2 and _things(done.stdout) == AS_SHIPPED[name], done.stdout + done.stderr
    else:
        assert (done.returncode, done.stdout) == (0, "ok: nothing left to set\n"), done.stdout + done.stderr
    # as a user pipes `kustomize build` into it, after filling in what it named
    done = subprocess.run(
        [INSTALLED, "precheck", "--offline", "-f", "-"],
        input=yaml.safe_dump_all(filled(built[name])),
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, "ok: nothing left to set\n"), done.stdout + done.stderr


@pytest.mark.parametrize("name", ["alibaba", "intel", "azure"])
def test_the_overlays_config_file_as_shipped_and_filled(name: str, tmp_path: Path) -> None:
    shipped = MANIFESTS / "overlays" / name / "config.yaml"
    done = precheck("--config", str(shipped))
    keys = {"alibaba": ["dcap.pccsUrl", "aesmSidecarImage"], "intel": [], "azure": []}[name]
    assert done.returncode == (2 if keys else 0)
    assert _things(done.stdout) == (keys or ["ok: nothing left to set"])
    for line in done.stdout.splitlines()[: len(keys)]:
        assert f"({shipped})" in line
    config = yaml.safe_load(shipped.read_text().replace("<region>", "cn-hangzhou"))
    config["aesmSidecarImage"] = AESMD_IMAGE
    mine = tmp_path / "config.yaml"
    mine.write_text(yaml.safe_dump(config))
    done = precheck("--config", str(mine))
    assert (done.returncode, done.stdout) == (0, "ok: nothing left to set\n")


def test_without_input_it_says_what_to_give() -> None:
    done = precheck()
    assert done.returncode == 2 and "give --config FILE, -f FILE, or both" in done.stderr


def test_the_node_probe_alone_without_a_pccs_names_the_key_and_the_component(
    kustomize: str, tmp_path: Path
) -> None:
    """The base install (no dcap) with components/node-probe added as docs/install.md says: its init
    container would fail at the missing PCCS, so precheck names dcap.pccsUrl, the DaemonSet that needs it and
    the way out."""
    from tests.manifests.building import build_with_components

    built = tmp_path / "built.yaml"
    built.write_text(
        yaml.safe_dump_all(build_with_components(kustomize, "base", ["node-probe"], tmp_path / "o"))
    )
    done = precheck("-f", str(built))
    assert done.returncode == 2, done.stderr
    assert _things(done.stdout) == ["dcap.pccsUrl"], done.stdout
    assert (
        "DaemonSet confidential-pods-node-probe/confidential-pods-node-probe renders sgx_default_qcnl"
        in done.stdout
    )
    assert "components/node-probe" in done.stdout
