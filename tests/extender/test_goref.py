"""benchmarks/goref, the reference extender in Go, answers ``/filter`` and ``/prioritize`` as ours does.

It is the yardstick of ``python -m benchmarks.extender_bench reference`` (issue 13): a ratio to it means
something only when both servers do the same work and give the same answers. Both read one snapshot
(nodes with and without EPC, pods running, finished, unassigned, with native sidecars, init containers,
overhead and limits-only requests); then every pending pod below is asked about random node names (some
unknown to both), and the answers must be equal: the nodes kept, in order, and every refusal's text.

goref is built by tests/e2e/build.sh with the control plane, so this test runs, skips or fails as the e2e
tests do (tests/e2e/gate.py).
"""

from __future__ import annotations

import copy
import http.client
import json
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from confidential_pods.settings import settings_from_mapping
from extender.app import create_app
from extender.serving import snapshot_backend
from tests.e2e import gate
from tests.e2e.harness import default_bin_dir
from tests.e2e.processes import wait_until
from tests.extender import scheduler_json as sj
from tests.machine import free_port, stop

pytestmark = pytest.mark.e2e

MiB = 1024**2
#: Profile → (EPC resource, bytes per unit, how an amount of MiB is written).
PROFILES = {
    "alibaba": ("alibabacloud.com/sgx_epc_MiB", MiB, str),
    "intel": ("sgx.intel.com/epc", 1, lambda mib: f"{mib}Mi"),
}


def goref_binary(config: pytest.Config) -> Path:
    """The built goref, or skip (fail where e2e is required) as the e2e tests do."""
    path = default_bin_dir() / "goref"
    if not path.is_file():
        gate.binaries(config)  # skips or fails with what to run when the control plane is not built either
        reason = f"{path} is missing: run tests/e2e/build.sh (it builds benchmarks/goref)"
        if gate.required(config):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return path


def with_epc(pod: dict[str, Any], resource: str, amount: str | None, *, limits_only: bool = False) -> None:
    """Set (or with None remove) the first container's EPC request and limit."""
    resources = pod["spec"]["containers"][0]["resources"]
    for kind in ("requests", "limits"):
        resources[kind].pop(sj.RESOURCE, None)
        if amount is not None and not (limits_only and kind == "requests"):
            resources[kind][resource] = amount


def shaped_pod(rng: random.Random, name: str, resource: str, write: Any, **where: Any) -> dict[str, Any]:
    """A pod of one of the shapes the EPC count distinguishes, with random amounts."""
    pod = sj.pod(name, epc_mib=0, **where)
    shape = rng.choice(["plain", "limits-only", "sidecar", "init", "overhead", "none"])
    with_epc(pod, resource, None if shape == "none" else write(rng.choice([1, 8, 16, 40, 64, 96])),
             limits_only=shape == "limits-only")  # fmt: skip
    spec = pod["spec"]
    if shape in ("sidecar", "init"):
        init = copy.deepcopy(spec["containers"][0])
        init["name"] = shape
        init["resources"] = {"requests": {resource: write(rng.choice([4, 32, 128]))}}
        if shape == "sidecar":
            init["restartPolicy"] = "Always"
        spec["initContainers"] = [init]
    if shape == "overhead":
        spec["overhead"] = {**spec["overhead"], resource: write(rng.choice([2, 12]))}
    return pod


def cluster(rng: random.Random, resource: str, write: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """Snapshot documents (60 nodes, 300 pods) and the node names, with a few names no node has."""
    docs: list[dict[str, Any]] = []
    names = [f"node-{i:03d}" for i in range(60)]
    for i, name in enumerate(names):
        node = sj.node(name, None)
        epc = None if i % 10 == 0 else rng.choice([0, 32, 93, 128, 256, 512])
        if epc is not None:
            node["status"]["allocatable"][resource] = write(epc)
        docs.append({"kind": "Node", **node})
    for i in range(300):
        where: dict[str, Any] = {"node_name": rng.choice(names), "phase": "Running"}
        if i % 17 == 0:
            where = {"phase": "Pending"}  # not assigned: holds nothing
        elif i % 13 == 0:
            where["phase"] = rng.choice(["Succeeded", "Failed"])  # finished: holds nothing
        docs.append({"kind": "Pod", **shaped_pod(rng, f"running-{i}", resource, write, **where)})
    return docs, [*names, "node-unknown-1", "node-unknown-2"]


@pytest.fixture(params=[(p, s) for p in PROFILES for s in ("LeastAllocated", "MostAllocated")],
                ids=lambda p: "-".join(p))  # fmt: skip
def scene(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, ...]]:
    """(our extender's test client, goref's connection, the profile's resource and writer, names, rng)."""
    binary = goref_binary(request.config)
    profile, strategy = request.param
    resource, unit, write = PROFILES[profile]
    rng = random.Random(f"{profile}-{strategy}")
    docs, names = cluster(rng, resource, write)
    snapshot = tmp_path / "cluster.json"
    snapshot.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
    settings = settings_from_mapping({"profile": profile, "scoringStrategy": strategy})
    backend = snapshot_backend(str(snapshot), settings)
    ours = create_app(backend.ledger, settings, backend.binder, backend.ready).test_client()
    port = free_port()
    log = (tmp_path / "goref.log").open("wb")
    command = [str(binary), "--snapshot", str(snapshot), "--port", str(port), "--resource", resource,
               "--unit", str(unit), "--strategy", strategy]  # fmt: skip
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    theirs = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"goref exited: {(tmp_path / 'goref.log').read_text()}")
        try:
            theirs.request("GET", "/healthz")
            return theirs.getresponse().read() == b"ok\n"
        except OSError:
            theirs.close()
            return False

    try:
        wait_until(healthy, timeout=30, what="goref to serve")
        yield ours, theirs, resource, write, names, rng
    finally:
        theirs.close()
        stop(process)
        log.close()


def ask(connection: http.client.HTTPConnection, verb: str, body: dict[str, Any]) -> Any:
    connection.request("POST", f"/{verb}", json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    payload = response.read()
    assert response.status == 200, payload
    return json.loads(payload)


def comparable(answer: dict[str, Any]) -> dict[str, Any]:
    """A filter answer with absent, null and empty fields alike (Go omits empty maps, we send {})."""
    return {
        "NodeNames": answer.get("NodeNames") or [],
        "FailedNodes": answer.get("FailedNodes") or {},
        "FailedAndUnresolvableNodes": answer.get("FailedAndUnresolvableNodes") or {},
        "Error": answer.get("Error") or "",
    }


def test_goref_answers_as_our_extender_does(scene: tuple[Any, ...]) -> None:
    ours, theirs, resource, write, names, rng = scene
    refused = kept = 0
    for i in range(40):
        pod = shaped_pod(rng, f"pending-{i}", resource, write)
        asked = rng.sample(names, rng.randint(1, len(names)))
        body = sj.args_with_names(pod, asked)
        mine = ours.post("/filter", json=body).get_json()
        assert comparable(mine) == comparable(ask(theirs, "filter", body)), yaml.safe_dump(pod["spec"])
        refused += len(mine["FailedNodes"]) + len(mine["FailedAndUnresolvableNodes"])
        kept += len(mine["NodeNames"])
        assert ours.post("/prioritize", json=body).get_json() == ask(theirs, "prioritize", body)
    assert refused and kept  # the scene had both outcomes to compare
