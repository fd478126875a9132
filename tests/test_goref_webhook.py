"""benchmarks/goref's reference webhook (``-webhook-patch``), the yardstick of ``benchmarks/webhook_gap.py``:
it answers every AdmissionReview of a Pod with the given patch and the review's uid, refuses what is not one,
and reports what each review took. Built by tests/e2e/build.sh: runs, skips or fails as the e2e tests do."""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.processes import wait_until
from tests.extender.test_goref import goref_binary
from tests.machine import free_port, stop
from tests.webhook.samples import admission_review, pod
from tests.webhook.tls import issue_serving_pair, make_authority

pytestmark = pytest.mark.e2e

PATCH = [{"op": "add", "path": "/metadata/annotations", "value": {"confidential-pods.io/status": "mutated"}}]


class Served:
    def __init__(self, port: int, ca_file: Path) -> None:
        self.url = f"https://127.0.0.1:{port}"
        self.context = ssl.create_default_context(cafile=str(ca_file))

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        request = urllib.request.Request(self.url + path, data=data, method=method)
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=10) as answer:
                return answer.status, bytes(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, error.read()


@pytest.fixture
def goref_webhook(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    binary = goref_binary(request.config)
    ca = make_authority()
    pair = issue_serving_pair(ca)
    for name, content in {"ca.crt": ca.cert_pem, "tls.crt": pair.cert_pem, "tls.key": pair.key_pem}.items():
        (tmp_path / name).write_bytes(content)
    (tmp_path / "patch.json").write_text(json.dumps(PATCH))
    port = free_port()
    command = [str(binary), "-webhook-patch", str(tmp_path / "patch.json"), "-port", str(port),
               "-tls-cert", str(tmp_path / "tls.crt"), "-tls-key", str(tmp_path / "tls.key")]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    served = Served(port, tmp_path / "ca.crt")

    def ready() -> bool:
        try:
            return served.call("GET", "/healthz")[0] == 200
        except OSError:
            return False

    try:
        wait_until(ready, timeout=20, what="goref's webhook")
        yield served
    finally:
        stop(process)


def test_every_review_is_answered_with_the_patch_and_its_uid(goref_webhook: Served) -> None:
    reviews = [admission_review(pod(), uid=f"uid-{i}") for i in range(3)]

    answers = [goref_webhook.call("POST", "/mutate", review) for review in reviews]

    for i, (status, body) in enumerate(answers):
        assert status == 200
        answer = json.loads(body)
        assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
        response = answer["response"]
        assert response["uid"] == f"uid-{i}" and response["allowed"] is True
        assert response["patchType"] == "JSONPatch"
        assert json.loads(base64.b64decode(response["patch"])) == PATCH
    status, stats = goref_webhook.call("GET", "/stats")
    durations = json.loads(stats)["durations_ns"]
    assert status == 200 and len(durations) == 3 and all(d > 0 for d in durations)
    assert json.loads(goref_webhook.call("GET", "/stats")[1]) == {"durations_ns": []}  # taken: afresh


def test_what_is_not_a_review_of_a_pod_is_refused(goref_webhook: Served) -> None:
    not_a_pod = admission_review(pod())
    not_a_pod["request"]["object"] = ["a", "list"]

    for body in (b"{", {"kind": "AdmissionReview"}, not_a_pod):
        assert goref_webhook.call("POST", "/mutate", body)[0] == 400
    assert json.loads(goref_webhook.call("GET", "/stats")[1]) == {"durations_ns": []}
