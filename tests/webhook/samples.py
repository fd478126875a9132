"""Pods and AdmissionReviews shaped like the ones the apiserver sends."""

from __future__ import annotations

import copy
import uuid
from typing import Any

CONFIDENTIAL = {"confidential-pods.io/confidential": "true"}


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
        terminationMessagePath="/dev/termination-log",
        terminationMessagePolicy="File",
        imagePullPolicy="IfNotPresent",
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
            {
                "name": "kube-api-access-abcde",
                "projected": {
                    "defaultMode": 420,
                    "sources": [
                        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                        {
                            "configMap": {
                                "name": "kube-root-ca.crt",
                                "items": [{"key": "ca.crt", "path": "ca.crt"}],
                            }
                        },
                    ],
                },
            },
        ],
        serviceAccountName="enclave-app",
        restartPolicy="Always",
        terminationGracePeriodSeconds=30,
        dnsPolicy="ClusterFirst",
        securityContext={"runAsUser": 1000, "fsGroup": 1000},
        tolerations=[
            {
                "key": "node.kubernetes.io/not-ready",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            }
        ],
        priority=0,
        enableServiceLinks=True,
        preemptionPolicy="PreemptLowerPriority",
    )
    result["metadata"]["generateName"] = "enclave-app-7c9f8d6b5-"
    result["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "name": "enclave-app-7c9f8d6b5",
            "uid": "6f1c2b9e-6f5d-4b8a-9a55-0d6f3d2b1a10",
            "controller": True,
            "blockOwnerDeletion": True,
        }
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
            "uid": "c1d5e7f3",
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
