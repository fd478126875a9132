"""`extender serve --kubeconfig` against a fake API server: ready after the first list, follows the watch."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from tests.e2e import processes
from tests.extender import scheduler_json as sj
from tests.extender.test_serving import start, stop
from tests.fakeapi import serving, write_kubeconfig

MiB = 1024 * 1024


#: Poll a condition (every 10 ms, at most 20.0 s).
wait_until = partial(processes.wait_until, timeout=20.0, what="the condition", interval=0.01)


def kubeconfig(path: Path, url: str) -> Path:
    """A kubeconfig for the fake apiserver at ``url``, with a user without credentials."""
    return write_kubeconfig(path, url)


def test_api_mode_follows_the_cluster(tmp_path: Path) -> None:
    with serving() as api:
        api.put("Node", sj.node("sgx-a", 93))
        api.put("Node", sj.node("plain", None))
        api.put("Pod", sj.pod("running", epc_mib=60, node_name="sgx-a", phase="Running", uid="uid-running"))
        served = start(["--kubeconfig", str(kubeconfig(tmp_path / "kubeconfig", api.url))], tmp_path)
        conn = served.connection()
        try:
            wait_until(lambda: served.call(conn, "GET", "/readyz")[0] == 200)
            pod = sj.pod("new", epc_mib=40)
            _, filtered = served.call(conn, "POST", "/filter", sj.args_with_names(pod, ["sgx-a", "plain"]))
            assert filtered["FailedNodes"] == {
                "sgx-a": "insufficient SGX EPC: pod requests 40Mi, node has 33Mi free of 93Mi"
            }
            # the running pod finishes: the watch frees its EPC
            api.put(
                "Pod", sj.pod("running", epc_mib=60, node_name="sgx-a", phase="Succeeded", uid="uid-running")
            )
            wait_until(lambda: served.call(conn, "GET", "/inspect/sgx-a")[1]["used"] == 0)
            _, filtered = served.call(conn, "POST", "/filter", sj.args_with_names(pod, ["sgx-a"]))
            assert filtered["NodeNames"] == ["sgx-a"]
            # the pod was never created in the API server: its binding's 404 is the Error, nothing reserved
            _, bound = served.call(conn, "POST", "/bind", sj.binding_args(pod, "sgx-a"))
            assert bound["Error"].startswith("binding payments/new failed:")
            assert bound["Error"].endswith("(HTTP 404)")
            assert served.call(conn, "GET", "/inspect/sgx-a")[1]["reserved"] == 0
            # the feed's counters share the extender's /metrics
            _, metrics = served.call(conn, "GET", "/metrics")
            assert b"confidential_pods_extender_watch_events_total" in metrics
        finally:
            conn.close()
            assert stop(served) == 0, served.log.read_text()
