"""`certs rotate`/`certs install` against a real kube-apiserver, as a ServiceAccount holding exactly the RBAC
of docs/certificates.md (so least privilege is proven, not assumed).

An e2e test: runs once the control plane of tests/e2e is built (tests/e2e/build.sh); skips without it, fails
without it where e2e is required (tests/e2e/gate.py).
"""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from certs.inspection import issued_by

pytestmark = pytest.mark.e2e

NAMESPACE, SECRET, CONFIG, SERVICE = (
    "confidential-pods",
    "webhook-tls",
    "confidential-pods-certs-e2e",
    "webhook",
)


@dataclass(frozen=True)
class Cluster:
    admin: Any  # tests.e2e.kube.Kube
    admin_kubeconfig: Path
    certs_kubeconfig: Path  # the certs ServiceAccount


def webhook(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "clientConfig": {"url": "https://127.0.0.1:9/mutate"},
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "failurePolicy": "Ignore",
        "timeoutSeconds": 1,
        "objectSelector": {"matchLabels": {"never": "matches"}},
        "rules": [
            {"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}
        ],
    }


def rbac(kube: Any) -> None:
    """The Role/ClusterRole of docs/certificates.md, bound to ServiceAccount confidential-pods/certs."""
    subject = [{"kind": "ServiceAccount", "name": "certs", "namespace": NAMESPACE}]
    names = [SECRET, f"{SECRET}-ca"]
    kube.create(
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NAMESPACE}/roles",
        {
            "metadata": {"name": "certs"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["secrets"],
                    "verbs": ["get", "patch"],
                    "resourceNames": names,
                },
                {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
            ],
        },
    )
    kube.create(
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NAMESPACE}/rolebindings",
        {
            "metadata": {"name": "certs"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "certs"},
            "subjects": subject,
        },
    )
    kube.create(
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        {
            "metadata": {"name": "confidential-pods-certs"},
            "rules": [
                {
                    "apiGroups": ["admissionregistration.k8s.io"],
                    "resources": ["mutatingwebhookconfigurations"],
                    "verbs": ["get", "patch"],
                    "resourceNames": [CONFIG],
                }
            ],
        },
    )
    kube.create(
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        {
            "metadata": {"name": "confidential-pods-certs"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "confidential-pods-certs",
            },
            "subjects": subject,
        },
    )


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    from tests.e2e import gate

    binaries = gate.binaries(request.config)  # skips (fails in CI) without tests/e2e/build.sh
    from tests.e2e.harness import ControlPlane
    from tests.e2e.kube import create_namespace, ensure_service_account

    work = tmp_path_factory.mktemp("apiserver")
    with ControlPlane.run(binaries, work, work / "logs") as plane:
        api = plane.api
        kube = api.admin_client()
        create_namespace(kube, NAMESPACE)
        kube.create(
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
            {
                "metadata": {"name": CONFIG},
                "webhooks": [webhook("a.confidential-pods.io"), webhook("b.confidential-pods.io")],
            },
        )
        ensure_service_account(kube, NAMESPACE, "certs")
        rbac(kube)
        token = kube.create(
            f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/certs/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": 3600},
            },
        )["status"]["token"]
        certs_kubeconfig = work / "certs.kubeconfig"
        certs_kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {
                            "name": "e2e",
                            "cluster": {"server": api.url, "certificate-authority": str(api.ca.files.cert)},
                        }
                    ],
                    "users": [{"name": "certs", "user": {"token": token}}],
                    "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "certs"}}],
                    "current-context": "e2e",
                }
            )
        )
        yield Cluster(kube, api.admin_kubeconfig, certs_kubeconfig)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "confidential_pods", "certs", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def install(
    directory: Path, kubeconfig: Path, *, secret: str = SECRET, config: str = CONFIG
) -> subprocess.CompletedProcess[str]:
    """``certs install`` of ``directory`` into the Secret and webhook configuration named."""
    args = ["--secret", secret, "--webhook-config", config, "--namespace", NAMESPACE]
    return cli("install", "--dir", str(directory), *args, "--kubeconfig", str(kubeconfig))


def rotate(cluster: Cluster, *extra: str) -> subprocess.CompletedProcess[str]:
    args = ["rotate", "--secret", SECRET, "--webhook-config", CONFIG, "--namespace", NAMESPACE]
    return cli(*args, "--kubeconfig", str(cluster.certs_kubeconfig), "--renew-before", "30d", *extra)


def state(cluster: Cluster) -> tuple[dict[str, Any], dict[str, Any]]:
    secret = cluster.admin.get(f"/api/v1/namespaces/{NAMESPACE}/secrets/{SECRET}")
    configuration = cluster.admin.get(
        f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{CONFIG}"
    )
    return secret, configuration


def bundles(configuration: dict[str, Any]) -> list[list[x509.Certificate]]:
    return [
        x509.load_pem_x509_certificates(base64.b64decode(entry["clientConfig"]["caBundle"]))
        for entry in configuration["webhooks"]
    ]


def served(secret: dict[str, Any]) -> x509.Certificate:
    return x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))


def test_first_run_installs_everything_with_least_privilege_then_changes_nothing(cluster: Cluster) -> None:
    first = rotate(cluster, "--service", SERVICE, "--san", "127.0.0.1")
    assert first.returncode == 0, first.stderr
    secret, configuration = state(cluster)
    assert secret["type"] == "kubernetes.io/tls"
    assert sorted(secret["data"]) == ["ca.crt", "tls.crt", "tls.key"]
    (bundle_a, bundle_b) = bundles(configuration)
    assert bundle_a == bundle_b and len(bundle_a) == 1
    assert issued_by(served(secret), bundle_a[0])
    assert configuration["webhooks"][0]["clientConfig"]["url"] == "https://127.0.0.1:9/mutate"  # kept
    ca_secret = cluster.admin.get(f"/api/v1/namespaces/{NAMESPACE}/secrets/{SECRET}-ca")
    assert ca_secret["type"] == "Opaque" and sorted(ca_secret["data"]) == ["ca.crt", "ca.key"]
    versions = (secret["metadata"]["resourceVersion"], configuration["metadata"]["resourceVersion"])

    again = rotate(cluster, "--service", SERVICE, "--san", "127.0.0.1")
    assert again.returncode == 0, again.stderr
    assert "nothing written" in again.stdout
    secret, configuration = state(cluster)
    assert (secret["metadata"]["resourceVersion"], configuration["metadata"]["resourceVersion"]) == versions


def test_two_phase_ca_rotation_on_the_real_api(cluster: Cluster) -> None:
    assert rotate(cluster, "--service", SERVICE, "--san", "127.0.0.1").returncode == 0
    before, _ = state(cluster)
    phase1 = rotate(cluster, "--rotate-ca")
    assert phase1.returncode == 0, phase1.stderr
    assert "waits until the new CA is published" in phase1.stdout
    secret, configuration = state(cluster)
    (bundle, other) = bundles(configuration)
    assert bundle == other and len(bundle) == 2
    assert served(secret) == served(before) and issued_by(served(secret), bundle[0])
    phase2 = rotate(cluster)
    assert phase2.returncode == 0, phase2.stderr
    secret, _ = state(cluster)
    assert issued_by(served(secret), bundle[1])


def test_errors_from_the_real_api(cluster: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "certs"
    assert cli("generate", "--service", SERVICE, "--namespace", NAMESPACE, "--out", str(out)).returncode == 0
    # A Secret outside the ServiceAccount's resourceNames: the apiserver forbids the get.
    denied = install(out, cluster.certs_kubeconfig, secret="other")
    assert denied.returncode == 1
    assert (
        "forbidden to get Secret confidential-pods/other: grant the verb 'get' on 'secrets'" in denied.stderr
    )
    assert 'cannot get resource "secrets"' in denied.stderr  # the apiserver's reason is passed on
    print(denied.stderr)
    # A webhook configuration that does not exist (as admin: a 404, not a 403).
    missing = install(out, cluster.admin_kubeconfig, config="nope")
    assert missing.returncode == 1
    assert "MutatingWebhookConfiguration nope not found" in missing.stderr
    print(missing.stderr)
    # Installing an unrelated CA over a working install would distrust what the webhook serves.
    assert rotate(cluster, "--service", SERVICE, "--san", "127.0.0.1").returncode == 0
    before = state(cluster)
    stale = install(out, cluster.certs_kubeconfig)
    assert stale.returncode == 1
    assert "refusing to install" in stale.stderr and "does not trust" in stale.stderr
    print(stale.stderr)
    assert state(cluster) == before
