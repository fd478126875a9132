"""Snapshot mode keeps only facts: ``snapshot_facts`` against the whole parse, JSON read as JSON first,
and ``MemoryBinder(known=...)`` / ``snapshot_backend`` binding pods that were never filtered."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from confidential_pods.epc import node_capacity
from confidential_pods.profiles import PROFILES
from confidential_pods.quantities import MiB
from confidential_pods.settings import Settings
from extender.app import create_app
from extender.binding import KnownPod, MemoryBinder, PendingPods, pod_epc_for_bind
from extender.ledger import EpcLedger
from extender.podepc import pod_facts
from extender.serving import snapshot_backend
from extender.snapshot import SnapshotError, fill_ledger_from_facts, load_snapshot_facts, snapshot_facts
from extender.wire import BindRequest
from tests.extender import scheduler_json as sj

PROFILE = PROFILES["alibaba"]


def cluster_docs() -> list[dict[str, Any]]:
    no_uid = sj.pod("handmade", epc_mib=8, node_name="a", phase="Running")
    del no_uid["metadata"]["uid"]
    no_namespace = sj.pod("nameless-ns", epc_mib=4, node_name="b", phase="Running")
    del no_namespace["metadata"]["namespace"]
    return [
        {"kind": "Node", **sj.node("a", 93)},
        {"kind": "Node", **sj.node("b", 64)},
        {"kind": "Node", **sj.node("plain", None)},
        {"kind": "Pod", **sj.pod("run", epc_mib=30, node_name="a", phase="Running")},
        {"kind": "Pod", **sj.pod("done", epc_mib=30, node_name="a", phase="Succeeded")},
        {"kind": "Pod", **sj.pod("elsewhere", epc_mib=2, node_name="gone-node", phase="Running")},
        {"kind": "Pod", **sj.pod("no-epc", epc_mib=0, node_name="b", phase="Running")},
        {"kind": "Pod", **sj.pod("wait", epc_mib=16)},
        {"kind": "Pod", **no_uid},
        {"kind": "Pod", **no_namespace},
    ]


DOCS = cluster_docs()  # built once: sj.pod gives every call a fresh UID


def texts() -> list[tuple[str, str]]:
    docs = DOCS
    example = resources.files("extender.examples").joinpath("cluster.yaml").read_text(encoding="utf-8")
    return [
        ("json-list", json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})),
        ("json-list-indented", "\n  " + json.dumps({"kind": "List", "items": docs}, indent=2)),
        ("yaml-multi-doc", yaml.safe_dump_all(docs)),
        ("example-cluster", example),
    ]


def ledger_state(ledger: EpcLedger) -> dict[str, Any]:
    return {name: (ledger.node(name), ledger.usage(name)) for name in ledger.nodes()} | {
        "pods": ledger.pod_count()
    }


def objects_of(text: str) -> list[dict[str, Any]]:
    """The test's own reading of a snapshot: PyYAML's safe loader, lists flattened, namespace defaulted."""
    objects = []
    for document in yaml.safe_load_all(text):
        if document is None:
            continue
        for obj in (
            document.get("items") or []
            if document.get("kind") in ("List", "NodeList", "PodList")
            else [document]
        ):
            if obj.get("kind") == "Pod":
                obj["metadata"].setdefault("namespace", "default")
            objects.append(obj)
    return objects


def pods_by_name(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        f"{o['metadata']['namespace']}/{o['metadata']['name']}": o for o in objects if o.get("kind") == "Pod"
    }


@pytest.mark.parametrize(("text"), [t for _, t in texts()], ids=[i for i, _ in texts()])
def test_facts_are_what_the_whole_parse_gives(text: str) -> None:
    objects = objects_of(text)
    expected = EpcLedger()
    held = [pod_facts(o, PROFILE) for o in objects if o.get("kind") == "Pod"]
    expected.replace(
        {o["metadata"]["name"]: node_capacity(o, PROFILE) for o in objects if o.get("kind") == "Node"},
        [h for h in held if h is not None],
    )
    facts = snapshot_facts(text, PROFILE)
    ledger = EpcLedger()
    fill_ledger_from_facts(ledger, facts)
    assert ledger_state(ledger) == ledger_state(expected)
    assert facts.pods == {key: KnownPod.of(pod, PROFILE) for key, pod in pods_by_name(objects).items()}
    for uid in {p.uid for p in facts.assigned}:
        assert ledger.pod(uid) == expected.pod(uid)


def test_json_is_read_as_json_and_the_same_as_yaml_reads_it() -> None:
    text = json.dumps({"kind": "List", "items": DOCS})
    as_json = snapshot_facts(text, PROFILE, keep_pending=True)
    assert as_json == snapshot_facts(yaml.safe_dump_all(DOCS), PROFILE, keep_pending=True)


@pytest.mark.parametrize(
    ("text", "nodes"),
    [
        ("{kind: Node, metadata: {name: n1}}", ["n1"]),  # YAML flow style: not JSON, still read
        (
            '{"kind": "Node", "metadata": {"name": "n1"}}\n---\n{"kind": "Node", "metadata": {"name": "n2"}}',
            ["n1", "n2"],
        ),
    ],
    ids=["yaml-flow", "json-documents"],
)
def test_text_starting_like_json_falls_back_to_yaml(text: str, nodes: list[str]) -> None:
    assert list(snapshot_facts(text, PROFILE).capacities) == nodes


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "not a Kubernetes object"),
        ('{"kind": "Service", "metadata": {"name": "s"}}', "kind 'Service' is not Node, Pod"),
        ('{"kind": "Pod", "metadata": {"name": "p"}}', "Pod p without spec"),
        ("{unclosed", "not valid YAML or JSON"),
    ],
)
def test_facts_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(SnapshotError, match=message):
        snapshot_facts(text, PROFILE, "f.json")


def test_load_snapshot_facts_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="cannot read snapshot"):
        load_snapshot_facts(tmp_path / "missing.json", PROFILE)


def test_memory_binder_known_pods_answer_like_raw_pods() -> None:
    pod = sj.pod("wait", namespace="ml", epc_mib=16, uid="uid-1")
    raw = MemoryBinder({"ml/wait": pod})
    known = MemoryBinder(known={"ml/wait": KnownPod(uid="uid-1", epc=16 * MiB)})
    for binder in (raw, known):
        assert binder.find_pod("ml", "wait", PROFILE) == KnownPod(uid="uid-1", epc=16 * MiB)
        assert binder.find_pod("ml", "other", PROFILE) is None
        ok = BindRequest(pod_name="wait", pod_namespace="ml", pod_uid="uid-1", node="a")
        assert pod_epc_for_bind(ok, PendingPods(), binder, PROFILE) == 16 * MiB
        wrong = BindRequest(pod_name="wait", pod_namespace="ml", pod_uid="uid-2", node="a")
        assert pod_epc_for_bind(wrong, PendingPods(), binder, PROFILE) == (
            "pod ml/wait has UID uid-1, not uid-2"
        )
    # a pod without a UID in the file is bound whatever UID the request carries
    anonymous = MemoryBinder(known={"ml/hand": KnownPod(uid="", epc=MiB)})
    request = BindRequest(pod_name="hand", pod_namespace="ml", pod_uid="any", node="a")
    assert pod_epc_for_bind(request, PendingPods(), anonymous, PROFILE) == MiB


def test_snapshot_backend_binds_a_pod_it_never_filtered(tmp_path: Path) -> None:
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps({"kind": "List", "items": DOCS}))
    backend = snapshot_backend(str(path), Settings())
    assert backend.ledger.usage("a") is not None
    assert backend.ledger.usage("a").used == 38 * MiB  # type: ignore[union-attr]
    client = create_app(backend.ledger, Settings(), backend.binder, backend.ready).test_client()
    wait = next(d for d in DOCS if d["metadata"]["name"] == "wait")
    answer = client.post("/bind", json=sj.binding_args(wait, "b")).get_json()
    assert answer == {"Error": ""}
    # In snapshot mode nothing confirms a bind: it is final, the pod holds its EPC (no reservation to expire).
    assert backend.ledger.reservation(wait["metadata"]["uid"]) is None
    bound = backend.ledger.pod(wait["metadata"]["uid"])
    assert bound is not None and (bound.node, bound.epc) == ("b", 16 * MiB)
    ghost = sj.pod("ghost", epc_mib=16)
    assert client.post("/bind", json=sj.binding_args(ghost, "b")).get_json() == {
        "Error": "pod payments/ghost not found"
    }
