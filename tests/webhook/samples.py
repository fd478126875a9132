"""Pods and AdmissionReviews shaped like the ones the apiserver sends."""

from __future__ import annotations

import copy
import uuid
from typing import Any

CONFIDENTIAL = {"confidential-pods.io/confidential": "true"}
#: Every container's defaults once the apiserver has stored the pod.
CONTAINER_DEFAULTS = {
    "terminationMessagePath": "/dev/termination-log",
    "terminationMessagePolicy": "File",
    "imagePullPolicy": "IfNotPresent",
}


def container(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "image": f"registry.example/{name}:1.0", **fields}


def pod(
    *,
    annotations: dict[str, str] | None = None,
    containers: list[dict[str, Any]] | None = None,
    init: list[dict[str, Any]] | None = None,
    name: str = "enclave-app",
    **spec: Any,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": "shop", "labels": {"app": name}}
    if annotations is not None:
        metadata["annotations"] = dict(annotations)
    body: dict[str, Any] = {"containers": containers or [container("app")], **spec}
    if init is not None:
        body["initContainers"] = init
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": body}


def replica_set_owner(name: str, uid: str) -> dict[str, Any]:
    """The ownerReference a ReplicaSet puts on the pods it creates."""
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": name, "uid": uid, "controller": True,
            "blockOwnerDeletion": True}  # fmt: skip


def no_execute_toleration(condition: str) -> dict[str, Any]:
    """What the DefaultTolerationSeconds admission plugin adds for ``not-ready`` and ``unreachable``."""
    return {"key": f"node.kubernetes.io/{condition}", "operator": "Exists", "effect": "NoExecute",
            "tolerationSeconds": 300}  # fmt: skip


def service_account_volume(name: str, *, namespace_file: bool = False) -> dict[str, Any]:
    """The projected ``kube-api-access-*`` volume the ServiceAccount admission plugin adds (token, CA,
    and with ``namespace_file`` the namespace from the downward API)."""
    sources: list[dict[str, Any]] = [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
    ]
    if namespace_file:
        namespace = {"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}
        sources.append({"downwardAPI": {"items": [namespace]}})
    return {"name": name, "projected": {"defaultMode": 420, "sources": sources}}


def realistic_pod() -> dict[str, Any]:
    """A pod as a Deployment's ReplicaSet creates it: app + two sidecars, probes, env, volumes."""
    app = container(
        "app",
        ports=[{"containerPort": 8443, "name": "https", "protocol": "TCP"}],
        env=[
            {"name": "LOG_LEVEL", "value": "info"},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        ],
        resources={"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
        readinessProbe={"httpGet": {"path": "/ready", "port": 8443, "scheme": "HTTPS"}, "periodSeconds": 5},
        livenessProbe={"httpGet": {"path": "/live", "port": 8443, "scheme": "HTTPS"}, "periodSeconds": 10},
        volumeMounts=[
            {"name": "config", "mountPath": "/etc/app"},
            {
                "name": "kube-api-access-abcde",
                "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                "readOnly": True,
            },
        ],
        securityContext={
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
        },
        **CONTAINER_DEFAULTS,
    )
    logs = container(
        "log-shipper",
        args=["--input=/var/log/app"],
        resources={"requests": {"cpu": "50m", "memory": "64Mi"}},
        volumeMounts=[{"name": "logs", "mountPath": "/var/log/app"}],
    )
    proxy = container(
        "proxy",
        ports=[{"containerPort": 15001, "protocol": "TCP"}],
        resources={"requests": {"cpu": "100m", "memory": "128Mi"}},
    )
    result = pod(
        annotations={
            **CONFIDENTIAL,
            "confidential-pods.io/containers": "app",
            "kubectl.kubernetes.io/restartedAt": "2026-11-20T10:00:00Z",
        },
        containers=[app, logs, proxy],
        volumes=[
            {"name": "config", "configMap": {"name": "app-config", "defaultMode": 420}},
            {"name": "logs", "emptyDir": {}},
            service_account_volume("kube-api-access-abcde"),
        ],
        serviceAccountName="enclave-app",
        restartPolicy="Always",
        terminationGracePeriodSeconds=30,
        dnsPolicy="ClusterFirst",
        securityContext={"runAsUser": 1000, "fsGroup": 1000},
        tolerations=[no_execute_toleration("not-ready")],
        priority=0,
        enableServiceLinks=True,
        preemptionPolicy="PreemptLowerPriority",
    )
    result["metadata"]["generateName"] = "enclave-app-7c9f8d6b5-"
    result["metadata"]["ownerReferences"] = [
        replica_set_owner("enclave-app-7c9f8d6b5", "6f1c2b9e-6f5d-4b8a-9a55-0d6f3d2b1a10")
    ]
    return result


def admission_review(
    obj: Any,
    *,
    api_version: str = "admission.k8s.io/v1",
    namespace: str = "shop",
    operation: str = "CREATE",
    kind: str = "Pod",
    group: str = "",
    sub_resource: str | None = None,
    uid: str | None = None,
) -> dict[str, Any]:
    resource = {"Pod": "pods", "Deployment": "deployments", "Service": "services"}.get(
        kind, kind.lower() + "s"
    )
    gvk = {"group": group, "version": "v1", "kind": kind}
    gvr = {"group": group, "version": "v1", "resource": resource}
    request: dict[str, Any] = {
        "uid": uid or str(uuid.uuid4()),
        "kind": gvk,
        "resource": gvr,
        "requestKind": gvk,
        "requestResource": gvr,
        "namespace": namespace,
        "operation": operation,
        "userInfo": {
            "username": "system:serviceaccount:kube-system:replicaset-controller",
            "uid": "c1d5e7f3-0b7d-4a57-8f3e-2f0b7c1d9a11",
            "groups": [
                "system:serviceaccounts",
                "system:serviceaccounts:kube-system",
                "system:authenticated",
            ],
        },
        "object": copy.deepcopy(obj),
        "oldObject": None,
        "dryRun": False,
        "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
    }
    if sub_resource:
        request["subResource"] = sub_resource
    return {"kind": "AdmissionReview", "apiVersion": api_version, "request": request}


def _env(**values: str) -> list[dict[str, Any]]:
    return [{"name": name, "value": value} for name, value in values.items()]


def _http_probe(path: str, port: int, scheme: str, period: int, timeout: int, **delay: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port, "scheme": scheme}, **delay, "periodSeconds": period,
            "timeoutSeconds": timeout, "successThreshold": 1, "failureThreshold": 3}  # fmt: skip


def meshed_pod() -> dict[str, Any]:
    """A Deployment's pod in a service mesh as the apiserver hands it to admission (the webhook benchmark's).

    App, mesh proxy and log shipper with their env, probes and security contexts, projected tokens,
    anti-affinity and the controller's managedFields: an AdmissionReview of about 7.9 KB, opted in with
    ``app`` as the enclave container and 128Mi of EPC.
    """
    name = "payments-enclave-7c9f8d6b5-x2k4q"
    field_ref = [
        {"name": env, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}
        for env, path in (
            ("POD_NAME", "metadata.name"),
            ("POD_NAMESPACE", "metadata.namespace"),
            ("POD_IP", "status.podIP"),
        )
    ]
    sa_mount = {
        "name": "kube-api-access-9xq2c",
        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
        "readOnly": True,
    }
    no_privileges = {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                     "capabilities": {"drop": ["ALL"]}}  # fmt: skip
    app = container(
        "app",
        image="registry.example.com/payments/enclave-api:2.14.3",
        args=["--listen=:8443", "--config=/etc/payments/config.yaml", "--log-format=json"],
        ports=[
            {"name": "https", "containerPort": 8443, "protocol": "TCP"},
            {"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
        ],
        env=_env(
            LOG_LEVEL="info",
            GOMAXPROCS="2",
            PAYMENTS_DB_HOST="payments-db.payments.svc.cluster.local",
            PAYMENTS_DB_PORT="5432",
            PAYMENTS_CACHE_URL="redis://payments-cache.payments.svc.cluster.local:6379/0",
        )
        + field_ref,
        resources={"requests": {"cpu": "500m", "memory": "768Mi"}, "limits": {"memory": "1Gi"}},
        readinessProbe=_http_probe("/readyz", 8443, "HTTPS", 5, 1, initialDelaySeconds=5),
        livenessProbe=_http_probe("/livez", 8443, "HTTPS", 10, 1, initialDelaySeconds=15),
        volumeMounts=[
            {"name": "config", "mountPath": "/etc/payments", "readOnly": True},
            {"name": "tls", "mountPath": "/etc/tls", "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
            sa_mount,
        ],
        securityContext={"runAsNonRoot": True, "runAsUser": 10001, **no_privileges},
        **CONTAINER_DEFAULTS,
    )
    proxy_probe = _http_probe("/healthz/ready", 15021, "HTTP", 15, 3)
    proxy = container(
        "proxy",
        image="registry.example.com/mesh/proxyv2:1.22.1",
        args=[
            "proxy",
            "sidecar",
            "--domain",
            "$(POD_NAMESPACE).svc.cluster.local",
            "--log_output_level=info",
        ],
        ports=[{"name": "http-envoy-prom", "containerPort": 15090, "protocol": "TCP"}],
        env=_env(
            PILOT_CERT_PROVIDER="istiod", CA_ADDR="istiod.istio-system.svc:15012", ISTIO_META_MESH_ID="prod"
        )
        + field_ref,
        resources={"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}},
        readinessProbe={**proxy_probe, "failureThreshold": 4},
        volumeMounts=[
            {"name": "mesh-envoy", "mountPath": "/etc/istio/proxy"},
            {"name": "mesh-token", "mountPath": "/var/run/secrets/tokens"},
            sa_mount,
        ],
        securityContext={"runAsNonRoot": True, "runAsUser": 1337, "runAsGroup": 1337, **no_privileges},
        **CONTAINER_DEFAULTS,
    )
    shipper = container(
        "log-shipper",
        image="registry.example.com/observability/fluent-bit:3.0.4",
        args=["--config=/fluent-bit/etc/fluent-bit.conf"],
        env=_env(FLUENT_ELASTICSEARCH_HOST="logs.observability.svc", FLUENT_ELASTICSEARCH_PORT="9200"),
        resources={"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
        livenessProbe=_http_probe("/api/v1/health", 2020, "HTTP", 30, 2),
        volumeMounts=[{"name": "tmp", "mountPath": "/var/log/app", "readOnly": True}, sa_mount],
        **CONTAINER_DEFAULTS,
    )
    labels = {
        "app.kubernetes.io/name": "payments-enclave",
        "app.kubernetes.io/part-of": "payments",
        "app.kubernetes.io/version": "2.14.3",
        "pod-template-hash": "7c9f8d6b5",
        "security.istio.io/tlsMode": "istio",
    }
    owner = replica_set_owner("payments-enclave-7c9f8d6b5", "6f1c2b9e-6f5d-4b8a-9a55-0d6f3d2b1a10")
    managed = {
        "manager": "kube-controller-manager",
        "operation": "Update",
        "apiVersion": "v1",
        "time": "2026-11-26T23:00:00Z",
        "fieldsType": "FieldsV1",
        "fieldsV1": {
            "f:metadata": {
                "f:annotations": {".": {}, "f:confidential-pods.io/confidential": {}},
                "f:generateName": {},
                "f:labels": {".": {}, **{f"f:{key}": {} for key in labels}},
                "f:ownerReferences": {".": {}, f'k:{{"uid":"{owner["uid"]}"}}': {}},
            },
            "f:spec": {
                "f:containers": {f'k:{{"name":"{c}"}}': {} for c in ("app", "proxy", "log-shipper")},
                "f:volumes": {},
            },
        },
    }
    mesh_token = {
        "serviceAccountToken": {"audience": "istio-ca", "expirationSeconds": 43200, "path": "istio-token"}
    }
    anti_affinity = {
        "weight": 100,
        "podAffinityTerm": {
            "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "payments-enclave"}},
            "topologyKey": "kubernetes.io/hostname",
        },
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "payments-enclave-7c9f8d6b5-",
            "namespace": "payments",
            "labels": labels,
            "annotations": {
                **CONFIDENTIAL,
                "confidential-pods.io/containers": "app",
                "confidential-pods.io/epc": "128Mi",
                "kubectl.kubernetes.io/restartedAt": "2026-11-20T10:00:00Z",
                "prometheus.io/scrape": "true",
                "prometheus.io/port": "9090",
            },
            "ownerReferences": [owner],
            "managedFields": [managed],
            "name": name,
        },
        "spec": {
            "containers": [app, proxy, shipper],
            "volumes": [
                {"name": "config", "configMap": {"name": "payments-enclave-config", "defaultMode": 420}},
                {"name": "tls", "secret": {"secretName": "payments-enclave-tls", "defaultMode": 420}},
                {"name": "tmp", "emptyDir": {}},
                {"name": "mesh-envoy", "emptyDir": {"medium": "Memory"}},
                {"name": "mesh-token", "projected": {"sources": [mesh_token], "defaultMode": 420}},
                service_account_volume("kube-api-access-9xq2c", namespace_file=True),
            ],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "payments-enclave",
            "serviceAccount": "payments-enclave",
            "securityContext": {"fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
            "affinity": {
                "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [anti_affinity]}
            },
            "schedulerName": "default-scheduler",
            "tolerations": [no_execute_toleration("not-ready"), no_execute_toleration("unreachable")],
            "priority": 0,
            "enableServiceLinks": True,
            "preemptionPolicy": "PreemptLowerPriority",
        },
        "status": {},
    }
