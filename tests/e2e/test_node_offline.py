"""The e2e node's files, checked without starting anything: image archives, containerd and kubelet configs."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import tomllib
from pathlib import Path

from tests.e2e.nodeconfig import NODE_IP, RUNTIME_HANDLERS, containerd_config, kubelet_config
from tests.e2e.ociarchive import ImageConfig, directory, file, symlink, tree, write_docker_archive


def _archive(path: Path, payload: bytes) -> tuple[str, dict[str, bytes]]:
    image = write_docker_archive(
        path,
        "localhost/e2e/sample:1",
        layers=[[file("bin/tool", payload, mode=0o755), directory("etc"), symlink("bin/sh", "tool")]],
        config=ImageConfig(entrypoint=("/bin/tool",), user="65535:65535"),
    )
    members: dict[str, bytes] = {}
    with tarfile.open(path) as archive:
        for member in archive.getmembers():
            stream = archive.extractfile(member)
            if stream is not None:
                members[member.name] = stream.read()
    return image.image_id, members


def test_docker_archive_is_what_docker_save_writes_and_is_reproducible(tmp_path: Path) -> None:
    image_id, members = _archive(tmp_path / "a.tar", b"#!tool")
    again, _ = _archive(tmp_path / "b.tar", b"#!tool")
    other, _ = _archive(tmp_path / "c.tar", b"#!other")
    assert image_id == again != other

    (manifest,) = json.loads(members["manifest.json"])
    assert manifest["RepoTags"] == ["localhost/e2e/sample:1"]
    assert f"sha256:{manifest['Config'].removesuffix('.json')}" == image_id
    config = json.loads(members[manifest["Config"]])
    assert config["config"]["Entrypoint"] == ["/bin/tool"] and config["config"]["User"] == "65535:65535"
    (layer_name,) = manifest["Layers"]
    assert layer_name == f"{hashlib.sha256(members[layer_name]).hexdigest()}/layer.tar"
    assert config["rootfs"]["diff_ids"] == [f"sha256:{layer_name.split('/')[0]}"]

    with tarfile.open(fileobj=io.BytesIO(members[layer_name])) as layer:
        entries = {m.name: m for m in layer.getmembers()}
    assert sorted(entries) == ["bin/sh", "bin/tool", "etc"]
    assert entries["bin/sh"].issym() and entries["bin/sh"].linkname == "tool"
    assert entries["bin/tool"].mode == 0o755 and entries["bin/tool"].mtime == 0


def test_tree_keeps_files_links_and_modes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "run").write_text("x")
    (root / "sub" / "run").chmod(0o750)
    (root / "link").symlink_to("sub/run")
    entries = {e.path: e for e in tree(root, "opt")}
    assert entries["opt/sub"].kind == "dir"
    assert entries["opt/sub/run"].kind == "file" and entries["opt/sub/run"].mode == 0o750
    assert entries["opt/link"].kind == "symlink" and entries["opt/link"].target == "sub/run"


def test_containerd_config_keeps_everything_in_the_test_directory(tmp_path: Path) -> None:
    config = tomllib.loads(containerd_config(tmp_path, "localhost/e2e/pause:1"))
    assert config["version"] == 2
    for path in (config["root"], config["state"], config["grpc"]["address"], config["ttrpc"]["address"]):
        assert path.startswith(str(tmp_path))
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["sandbox_image"] == "localhost/e2e/pause:1"
    assert cri["restrict_oom_score_adj"] is True
    assert cri["cni"]["conf_dir"].startswith(str(tmp_path))
    runtimes = cri["containerd"]["runtimes"]
    assert cri["containerd"]["default_runtime_name"] == "runc"
    assert set(runtimes) == {"runc", *RUNTIME_HANDLERS} >= {"kata", "runv"}
    assert {r["runtime_type"] for r in runtimes.values()} == {"io.containerd.runc.v2"}


def test_kubelet_config_is_what_this_machine_needs(tmp_path: Path) -> None:
    config = kubelet_config(tmp_path / "ca.crt", tmp_path / "containerd.sock")
    assert config["failCgroupV1"] is False and config["cgroupDriver"] == "cgroupfs"
    assert config["containerRuntimeEndpoint"] == f"unix://{tmp_path / 'containerd.sock'}"
    assert config["address"] == NODE_IP and config["readOnlyPort"] == 0
    assert config["authentication"] == {
        "anonymous": {"enabled": False},
        "webhook": {"enabled": False},
        "x509": {"clientCAFile": str(tmp_path / "ca.crt")},
    }
