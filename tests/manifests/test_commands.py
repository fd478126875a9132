"""Every container running our image is started with arguments our CLI accepts, and the files
those arguments name are mounted from the right ConfigMap or Secret."""

from __future__ import annotations

import argparse
import contextlib
import io
from typing import Any

import pytest

from confidential_pods.cli import build_parser
from tests.manifests.building import INSTALLS, Manifest, containers, find

IMAGE = "ghcr.io/confidential-pods/confidential-pods:0.1.0"
TLS_SECRET = "confidential-pods-webhook-tls"


def _parse(args: list[str]) -> argparse.Namespace:
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            return build_parser().parse_args(args)
        except SystemExit:
            pytest.fail(f"confidential-pods {' '.join(args)}: {stderr.getvalue()}")


def _source_of(path: str, pod: dict[str, Any], container: dict[str, Any]) -> dict[str, Any]:
    """The volume a file path is mounted from, and the key within it."""
    (mount,) = [
        m for m in container.get("volumeMounts", []) if path.startswith(m["mountPath"].rstrip("/") + "/")
    ]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    return {**volume, "key": path[len(mount["mountPath"].rstrip("/")) + 1 :]}


def _ours(objects: list[Manifest]) -> list[tuple[Manifest, dict[str, Any], dict[str, Any]]]:
    return [(o, pod, c) for o in objects for pod, c in containers(o) if c["image"] == IMAGE]


@pytest.mark.parametrize("name", INSTALLS)
def test_arguments_parse(built: dict[str, list[Manifest]], name: str) -> None:
    ours = _ours(built[name])
    # webhook and extender; plus the certs Job and CronJob unless cert-manager does that; plus the
    # aesmd DaemonSet's qcnl init container and node-probe container (intel)
    assert len(ours) == (2 if name == "cert-manager" else 4) + 2 * (name == "intel")
    for _, _, container in ours:
        assert "command" not in container, "the image's ENTRYPOINT is confidential-pods"
        args = _parse(container["args"])
        assert callable(args.handler)


@pytest.mark.parametrize("name", INSTALLS)
def test_config_and_tls_files_are_mounted(built: dict[str, list[Manifest]], name: str) -> None:
    objects = built[name]
    config_map = find(objects, "ConfigMap", "confidential-pods-config")["metadata"]["name"]
    daemonset_config = {
        o["metadata"]["name"]
        for o in objects
        if o["metadata"]["name"].startswith(
            ("confidential-pods-aesmd-config", "confidential-pods-node-probe-config")
        )
    }
    checked = 0
    for workload, pod, container in _ours(objects):
        args = _parse(container["args"])
        if getattr(args, "config", None):
            source = _source_of(args.config, pod, container)
            # the DaemonSets (aesmd's, the node probe's; each in its own namespace) read a copy of it
            expected = daemonset_config if workload["kind"] == "DaemonSet" else {config_map}
            assert source["configMap"]["name"] in expected and source["key"] == "config.yaml"
            checked += 1
        for attribute, key in (("cert", "tls.crt"), ("key", "tls.key")):
            if getattr(args, attribute, None):
                source = _source_of(getattr(args, attribute), pod, container)
                assert source["secret"]["secretName"] == TLS_SECRET and source["key"] == key
    assert checked == 2 + (name == "intel")  # webhook and extender (and aesmd's qcnl)


def test_webhook_serves_tls_on_8443(built: dict[str, list[Manifest]]) -> None:
    deployment = find(built["base"], "Deployment", "confidential-pods-webhook")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = _parse(container["args"])
    assert args.cert and args.key and args.port == 8443


def test_certs_jobs_target_the_mounted_secret_and_our_configuration(built: dict[str, list[Manifest]]) -> None:
    objects = built["base"]
    service = find(objects, "Service", "confidential-pods-webhook")["metadata"]
    job = find(objects, "Job", "confidential-pods-certs-install")
    cron = find(objects, "CronJob", "confidential-pods-certs-rotate")
    (install,) = job["spec"]["template"]["spec"]["containers"]
    (rotate,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert "initContainers" not in job["spec"]["template"]["spec"]
    # One idempotent command: installs on the first run (no CA Secret yet), renews afterwards.
    installed = _parse(install["args"])
    rotated = _parse(rotate["args"])
    for args in (installed, rotated):
        assert args.handler.__name__ == "_rotate"
        assert args.renew_before == "30d"
        assert args.secret == TLS_SECRET
        assert args.ca_secret is None, "the CA key goes to <secret>-ca, the name RBAC allows"
        assert not getattr(args, "no_ca_secret", False), "in-cluster rotation needs the CA Secret"
        assert args.webhook_config == find(objects, "MutatingWebhookConfiguration")["metadata"]["name"]
        assert (args.service, args.namespace) == (service["name"], service["namespace"])
        assert args.dir is None

    # RBAC allows exactly these objects.
    role = find(objects, "Role", "confidential-pods-certs")
    named = [r for r in role["rules"] if "resourceNames" in r]
    assert named == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": [TLS_SECRET, f"{TLS_SECRET}-ca"],
            "verbs": ["get", "update", "patch"],
        }
    ]
    assert [r for r in role["rules"] if "resourceNames" not in r] == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]}
    ]
    cluster_role = find(objects, "ClusterRole", "confidential-pods-certs")
    assert cluster_role["rules"] == [
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["mutatingwebhookconfigurations"],
            "resourceNames": [installed.webhook_config],
            "verbs": ["get", "update", "patch"],
        }
    ]
    for workload in (
        job["spec"]["template"]["spec"],
        cron["spec"]["jobTemplate"]["spec"]["template"]["spec"],
    ):
        assert workload["serviceAccountName"] == "confidential-pods-certs"


def test_webhook_account_has_no_token_and_no_permissions(built: dict[str, list[Manifest]]) -> None:
    objects = built["base"]
    account = find(objects, "ServiceAccount", "confidential-pods-webhook")
    assert account["automountServiceAccountToken"] is False
    for binding in (o for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        assert all(s["name"] != "confidential-pods-webhook" for s in binding["subjects"])


def test_cert_manager_replaces_our_certs_jobs(built: dict[str, list[Manifest]]) -> None:
    objects = built["cert-manager"]
    configuration = find(objects, "MutatingWebhookConfiguration")
    certificate = find(objects, "Certificate", "confidential-pods-webhook")
    namespace = certificate["metadata"]["namespace"]
    assert configuration["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": f"{namespace}/{certificate['metadata']['name']}"
    }
    assert certificate["spec"]["secretName"] == TLS_SECRET
    service = "confidential-pods-webhook"
    assert certificate["spec"]["dnsNames"] == [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]
    issuer = find(objects, "Issuer", certificate["spec"]["issuerRef"]["name"])
    ca = find(objects, "Certificate", "confidential-pods-ca")
    assert issuer["spec"] == {"ca": {"secretName": ca["spec"]["secretName"]}}
    assert ca["spec"]["isCA"] is True
    assert find(objects, "Issuer", ca["spec"]["issuerRef"]["name"])["spec"] == {"selfSigned": {}}
    assert not [o for o in objects if o["kind"] in ("Job", "CronJob")]
