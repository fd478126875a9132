"""Fuzz of every extender endpoint: never a 5xx; JSON answers of the documented shapes."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from confidential_pods.quantities import MiB
from confidential_pods.settings import Settings
from extender.app import create_app
from extender.binding import MemoryBinder
from extender.ledger import EpcLedger
from extender.podepc import PodEpc
from extender.wire import parse_extender_args
from tests import fuzzing
from tests.extender import scheduler_json as sj

LEDGER = EpcLedger()
LEDGER.set_node("sgx-a", 93 * MiB)
LEDGER.set_node("sgx-b", 64 * MiB)
LEDGER.set_node("plain", None)
LEDGER.set_pod(PodEpc("u", "ns", "p", "sgx-a", 30 * MiB))
APP = create_app(LEDGER, Settings(), MemoryBinder(), lambda: True)
CLIENT = APP.test_client()
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
quantities = st.sampled_from(["64", "0", "-5", "1e3", "93", "1Gi", "junk", "", "0.5", "9" * 30]) | scalars
names = st.sampled_from(["sgx-a", "sgx-b", "plain", "ghost", ""]) | st.text(max_size=6)


@st.composite
def pods(draw: st.DrawFn) -> Any:
    """Pods that are nearly right: real shape, fuzzed resources, sidecars, overhead, odd types."""
    pod: dict[str, Any] = sj.pod(epc_mib=draw(st.integers(0, 200)))
    container = pod["spec"]["containers"][0]
    if draw(st.booleans()):
        container["resources"] = {
            draw(st.sampled_from(["requests", "limits"])): {sj.RESOURCE: draw(quantities)}
        }
    if draw(st.booleans()):
        pod["spec"]["initContainers"] = [
            {
                "name": "i",
                "restartPolicy": draw(st.sampled_from(["Always", "Never", None, 3])),
                "resources": draw(
                    st.dictionaries(st.sampled_from(["requests", "limits"]), json_values, max_size=2)
                ),
            }
        ]
    if draw(st.booleans()):
        pod["spec"]["overhead"] = draw(
            st.dictionaries(st.just(sj.RESOURCE), quantities, max_size=1) | json_values
        )
    if draw(st.booleans()):
        pod["metadata"] = draw(json_values)
    if draw(st.booleans()):
        pod["spec"] = draw(json_values)
    return pod


@st.composite
def extender_args(draw: st.DrawFn) -> Any:
    pod = draw(pods() | json_values)
    if draw(st.booleans()):
        return {"Pod": pod, "NodeNames": draw(st.lists(names, max_size=5) | json_values), "Nodes": None}
    items = draw(
        st.lists(
            st.builds(lambda n, e: sj.node(n, e), names, st.none() | st.integers(0, 200)) | json_values,
            max_size=4,
        )
    )
    return {
        "Pod": pod,
        "Nodes": draw(st.just({"metadata": {}, "items": items}) | json_values),
        "NodeNames": None,
    }


binding_args = st.fixed_dictionaries(
    {},
    optional={
        "PodName": st.text(max_size=6) | json_values,
        "PodNamespace": st.text(max_size=6) | json_values,
        "PodUID": st.text(max_size=6) | json_values,
        "Node": names | json_values,
    },
)


def check(path: str, body: bytes) -> Any:
    response = CLIENT.post(path, data=body, content_type="application/json")
    assert response.status_code < 500, response.get_data(as_text=True)
    assert response.status_code in (200, 400)
    answer = response.get_json()
    if response.status_code == 400:
        assert isinstance(answer["Error"], str) and answer["Error"]
    return response.status_code, answer


@FUZZ
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_any_body_any_endpoint(body: bytes) -> None:
    for path in ("/filter", "/prioritize", "/bind"):
        check(path, body)


@FUZZ
@given(extender_args())
def test_filter_and_prioritize(args: Any) -> None:
    body = json.dumps(args).encode()
    status, answer = check("/filter", body)
    if status == 200:
        assert set(answer) == {"Nodes", "NodeNames", "FailedNodes", "FailedAndUnresolvableNodes", "Error"}
        asked = parse_extender_args(body).names
        if answer["Nodes"] is not None:
            assert answer["NodeNames"] is None
            passed = [n["metadata"]["name"] for n in answer["Nodes"]["items"]]
        else:
            passed = answer["NodeNames"]
        # every node asked is either passed or failed with a reason
        assert set(asked) == set(passed) | set(answer["FailedNodes"]) | set(
            answer["FailedAndUnresolvableNodes"]
        )
    status, answer = check("/prioritize", body)
    if status == 200:
        assert all(isinstance(h["Host"], str) and 0 <= h["Score"] <= 10 for h in answer)


@FUZZ
@given(binding_args)
def test_bind(args: Any) -> None:
    status, answer = check("/bind", json.dumps(args).encode())
    if status == 200:
        assert isinstance(answer["Error"], str)


@FUZZ
@given(st.text(max_size=20), st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]))
def test_any_path_any_method(path: str, method: str) -> None:
    # PATH_INFO set directly: given to the test client as a URL, a path like "//host:..." would be
    # read as a network location, which no HTTP request line can carry.
    response = CLIENT.open("/", method=method, data=b"{}", environ_overrides={"PATH_INFO": "/" + quote(path)})
    assert response.status_code < 500
    assert response.is_json


@FUZZ
@given(names)
def test_inspect_any_node_name(name: str) -> None:
    response = CLIENT.get("/inspect/" + quote(name, safe=""))
    assert response.status_code in (200, 404)
    assert response.is_json
    if response.status_code == 200 and name in ("sgx-a", "sgx-b", "plain"):
        assert response.get_json()["name"] == name


# --- hostile shapes (tests/fuzzing.py); benchmarks/fuzz_soak.py runs these for 10,000+ cases ---------

HOSTILE = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))


@HOSTILE
@given(pod=fuzzing.poisoned(sj.pod(epc_mib=16), sj.RESOURCE), node_names=st.lists(names, max_size=4))
def test_poisoned_pods(pod: dict[str, Any], node_names: list[str]) -> None:
    body = json.dumps({"Pod": pod, "NodeNames": node_names, "Nodes": None}).encode()
    for path in ("/filter", "/prioritize"):
        check(path, body)


@HOSTILE
@given(
    depth=st.integers(500, 200_000),
    closed=st.booleans(),
    kind=st.sampled_from(["list", "dict"]),
    path=st.sampled_from(["/filter", "/prioritize", "/bind"]),
)
def test_deep_bodies(depth: int, closed: bool, kind: str, path: str) -> None:
    from tests.webhook.test_fuzz import deep_body

    status, answer = check(path, deep_body(depth, closed, kind))
    assert status == 400 and answer["Error"]  # too deep, not JSON, or not an object: all a 400
