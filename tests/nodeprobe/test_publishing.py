"""Publishing: what reaches the apiserver (a real HTTP server behind the real kubernetes client), and the
loop's writes over many rounds."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes import client

from nodeprobe.condition import EPC_CGROUP, READY, NodeCondition, Verdict
from nodeprobe.publishing import STRATEGIC_MERGE_PATCH, ApiNodeStatus, Publisher, PublishError, run
from tests.nodeprobe.standins import NodeApi, node_api

T0 = datetime(2026, 12, 5, 1, 0, 0, tzinfo=UTC)
OK = Verdict("True", "AllChecksPassed", "all fine")
DOWN = Verdict("False", "AESMUnavailable", "AESM socket /var/run/aesmd/aesm.socket: Connection refused")
EPC = Verdict("False", "SGXEPCCgroupMissing", "no sgx_epc")

KUBELET_READY = {
    "type": "Ready",
    "status": "True",
    "reason": "KubeletReady",
    "message": "kubelet is posting ready status",
    "lastHeartbeatTime": "2026-12-05T00:59:00Z",
    "lastTransitionTime": "2026-12-01T00:00:00Z",
}


def _node(*conditions: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {"name": "n7"},
        "status": {"conditions": list(conditions)},
    }


@pytest.fixture
def api() -> Iterator[NodeApi]:
    with node_api(_node(KUBELET_READY)) as server:
        yield server


def _client(api: NodeApi) -> client.ApiClient:
    configuration = client.Configuration()
    configuration.host = api.url
    return client.ApiClient(configuration)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def test_first_round_reads_the_node_then_patches_status_with_only_our_conditions(api: NodeApi) -> None:
    publisher = Publisher(ApiNodeStatus(_client(api), "n7"), clock=Clock())
    assert publisher.publish({READY: DOWN, EPC_CGROUP: EPC})
    get, patch = api.requests
    assert (get.method, get.path) == ("GET", "/api/v1/nodes/n7")  # get nodes: no get on nodes/status needed
    assert (patch.method, patch.path, patch.content_type) == (
        "PATCH",
        "/api/v1/nodes/n7/status",
        STRATEGIC_MERGE_PATCH,
    )
    assert patch.body == {
        "status": {
            "conditions": [
                {
                    "type": READY,
                    "status": "False",
                    "reason": "AESMUnavailable",
                    "message": DOWN.message,
                    "lastHeartbeatTime": "2026-12-05T01:00:00Z",
                    "lastTransitionTime": "2026-12-05T01:00:00Z",
                },
                {
                    "type": EPC_CGROUP,
                    "status": "False",
                    "reason": "SGXEPCCgroupMissing",
                    "message": "no sgx_epc",
                    "lastHeartbeatTime": "2026-12-05T01:00:00Z",
                    "lastTransitionTime": "2026-12-05T01:00:00Z",
                },
            ]
        }
    }


def test_the_patch_merges_into_the_node_as_the_apiserver_would(api: NodeApi) -> None:
    """Strategic merge on ``conditions`` (patchMergeKey ``type``): the kubelet's condition stays."""
    publisher = Publisher(ApiNodeStatus(_client(api), "n7"), clock=Clock())
    publisher.publish({READY: OK})
    patch = api.requests[-1].body
    merged = {c["type"]: c for c in [KUBELET_READY, *patch["status"]["conditions"]]}
    assert set(merged) == {"Ready", READY}
    assert set(patch) == {"status"} and set(patch["status"]) == {"conditions"}


def test_a_condition_already_on_the_node_is_kept_across_a_restart(api: NodeApi) -> None:
    """A restarted probe finding the same state writes nothing and keeps the transition time."""
    existing = NodeCondition(
        type=READY,
        status="True",
        reason=OK.reason,
        message=OK.message,
        lastHeartbeatTime="2026-12-05T00:58:00Z",
        lastTransitionTime="2026-11-30T00:00:00Z",
    )
    api.node = _node(KUBELET_READY, dict(existing))
    clock = Clock()
    publisher = Publisher(ApiNodeStatus(_client(api), "n7"), clock=clock)
    assert not publisher.publish({READY: OK})
    clock.now = T0 + timedelta(minutes=3)  # 00:58 + 5 minutes
    assert publisher.publish({READY: OK})
    assert [r.method for r in api.requests] == ["GET", "PATCH"]
    (written,) = api.requests[-1].body["status"]["conditions"]
    assert written["lastTransitionTime"] == "2026-11-30T00:00:00Z"
    assert written["lastHeartbeatTime"] == "2026-12-05T01:03:00Z"


def test_forbidden_names_the_permission(api: NodeApi) -> None:
    api.patch_status = 403
    publisher = Publisher(ApiNodeStatus(_client(api), "n7"), clock=Clock())
    with pytest.raises(
        PublishError, match=r"forbidden to patch nodes/status of node n7: grant 'patch' on 'nodes/status'"
    ):
        publisher.publish({READY: OK})


def test_a_failed_write_is_retried_after_reading_the_node_again(api: NodeApi) -> None:
    api.patch_status = 500
    clock = Clock()
    publisher = Publisher(ApiNodeStatus(_client(api), "n7"), clock=clock)
    with pytest.raises(PublishError, match="HTTP 500"):
        publisher.publish({READY: OK})
    api.patch_status = 200
    clock.now += timedelta(seconds=30)
    assert publisher.publish({READY: OK})
    assert [r.method for r in api.requests] == ["GET", "PATCH", "GET", "PATCH"]


def test_unreachable_apiserver_is_one_line() -> None:
    configuration = client.Configuration()
    configuration.host = "http://127.0.0.1:9"
    configuration.retries = 0
    publisher = Publisher(ApiNodeStatus(client.ApiClient(configuration), "n7"), clock=Clock())
    with pytest.raises(
        PublishError, match=r"^cannot reach the apiserver at http://127.0.0.1:9: Connection refused$"
    ):
        publisher.publish({READY: OK})


class CountingStatus:
    def __init__(self) -> None:
        self.patches: list[list[NodeCondition]] = []

    def read_conditions(self) -> object:
        return []

    def patch_conditions(self, conditions: list[NodeCondition]) -> None:
        self.patches.append(conditions)


def test_an_hour_of_steady_state_is_twelve_writes() -> None:
    """Every 30 s for an hour, nothing changing: the first write and one per 5-minute heartbeat."""
    status, clock = CountingStatus(), Clock()
    publisher = Publisher(status, clock=clock)
    for _ in range(120):
        publisher.publish({READY: OK, EPC_CGROUP: EPC})
        clock.now += timedelta(seconds=30)
    assert len(status.patches) == 12
    flapping = Publisher(status2 := CountingStatus(), clock=clock)
    for round_ in range(10):
        flapping.publish({READY: OK if round_ % 2 else DOWN})
        clock.now += timedelta(seconds=30)
    assert len(status2.patches) == 10


def test_run_probes_until_stopped_and_survives_publish_errors() -> None:
    stop = threading.Event()
    rounds: list[int] = []

    class Failing(CountingStatus):
        def patch_conditions(self, conditions: list[NodeCondition]) -> None:
            super().patch_conditions(conditions)
            if len(self.patches) == 1:
                raise PublishError("apiserver down")

    status = Failing()
    publisher = Publisher(status, clock=Clock())

    def probe() -> dict[str, Verdict]:
        rounds.append(1)
        if len(rounds) == 3:
            stop.set()
        return {READY: OK}

    run(probe, publisher, timedelta(milliseconds=1), stop)
    assert len(rounds) == 3
    assert len(status.patches) == 2  # the failed write, then its retry; the third round had no news
