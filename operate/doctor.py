"""``confidential-pods doctor``: what an operator asks first, checked against what the cluster stores.

Pure: :func:`diagnose` takes :class:`ClusterFacts` (read by ``operate/cluster.py``, or built by a test)
and returns one :class:`Finding` per check — ``ok``, ``warn`` or ``fail``, one line of why and, when it
is not ok, what to do; a check whose prerequisite failed is ``skipped`` and names it (:data:`CHECKS` says
which check needs which). Nothing here talks to the API server. The exit code is the worst finding's
(:data:`EXIT_CODES`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, cast

from cryptography import x509

from certs.inspection import chain_problem
from certs.objects import webhook_bundles
from confidential_pods.epc import node_capacity
from confidential_pods.quantities import format_bytes
from confidential_pods.settings import incomplete, problems
from confidential_pods.wire import mapping
from operate.epclimits import epc_limits
from operate.facts import (
    ENFORCE_LABEL,
    EXIT_CODES,
    EXPIRY_WARNING,
    INJECTION_LABEL,
    ROUTE_ENTRY,
    SCHEDULER_DEPLOYMENT,
    WEBHOOK_CONFIGURATION,
    WEBHOOK_DEPLOYMENT,
    ClusterFacts,
    Finding,
    PodSummary,
    Status,
    Step,
    cannot_read,
    counting_hint,
    judge,
    listed,
    render,
    sgx_nodes_of,
    skipped,
    worst,
)
from operate.readiness import attestation_readiness
from operate.schedulermode import scheduler_mode

__all__ = ["CHECKS", "EXIT_CODES", "ClusterFacts", "Finding", "PodSummary", "diagnose", "render", "worst"]


def diagnose(facts: ClusterFacts) -> list[Finding]:
    """Every check, in the order an operator would look; one whose prerequisite did not pass (failed, or
    was itself skipped) is ``skipped`` instead of failing again on the same cause."""
    findings: list[Finding] = []
    status: dict[str, Status] = {}
    for step in CHECKS:
        blocked = {name: status[name] for name in step.needs if status.get(name) in ("fail", "skipped")}
        finding = skipped(step, blocked) if blocked else step.run(facts)
        status[step.name] = finding.status
        findings.append(finding)
    return findings


# --- the checks --------------------------------------------------------------------------------------


def epc_resource(facts: ClusterFacts) -> Finding:
    """Some nodes advertise the profile's EPC resource; if none do, which SGX resources they do advertise."""
    check = "epc-resource"
    if (problem := cannot_read(check, facts, "nodes")) is not None:
        return problem
    profile = facts.settings.profile
    found = sgx_nodes_of(facts.nodes, profile)
    if found.counted:
        return Finding(
            check,
            "ok",
            f"{len(found.counted)} node(s) advertise {profile.epc_resource} "
            f"({format_bytes(found.total)} of EPC in total)",
        )
    if not found.others:
        return Finding(
            check,
            "fail",
            f"no node advertises {profile.epc_resource} or any other SGX resource",
            "install the SGX device plugin of your platform on the SGX nodes (docs/install.md)",
        )
    seen = ", ".join(f"{r} on {len(names)} node(s)" for r, names in sorted(found.others.items()))
    epc_like = list(found.epc_like)
    hint = (
        counting_hint(epc_like[0], profile)
        if epc_like
        else "check the device plugin: it advertises SGX resources but no EPC"
    )
    return Finding(
        check, "fail", f"no node advertises {profile.epc_resource}; the nodes advertise {seen}", hint
    )


def webhook_configuration(facts: ClusterFacts) -> Finding:
    """The MutatingWebhookConfiguration exists, and every entry has a caBundle that trusts the served
    certificate for the name the API server dials."""
    check = "webhook-configuration"
    if (problem := cannot_read(check, facts, "webhook configuration", "serving secret")) is not None:
        return problem
    configuration = facts.webhook_configuration
    if configuration is None:
        return Finding(
            check,
            "fail",
            f"MutatingWebhookConfiguration {WEBHOOK_CONFIGURATION} does not exist: no pod is mutated",
            "apply the manifests (kustomize build manifests/overlays/<profile> | kubectl apply -f -)",
        )
    entries = [mapping(e) for e in configuration.get("webhooks") or []]
    certificate = _served_certificate(facts.serving_secret)
    if certificate is None:
        return Finding(
            check,
            "fail",
            f"Secret {facts.namespace}/{WEBHOOK_DEPLOYMENT}-tls holds no readable tls.crt",
            "run the certs Job again (kubectl -n confidential-pods create job --from=cronjob/"
            "confidential-pods-certs-rotate certs-now) or check cert-manager's Certificate",
        )
    for entry, bundle in zip(entries, webhook_bundles(cast(Any, configuration)), strict=True):
        name = str(entry.get("name"))
        if not bundle:
            return Finding(
                check,
                "fail",
                f"entry {name} has no caBundle: the API server cannot call the webhook",
                "run `confidential-pods certs install` (the certs Job does), or check cert-manager's "
                "cainjector",
            )
        untrusted = chain_problem(certificate, bundle, [_dialed_name(entry)], facts.now)
        if untrusted is not None:
            return Finding(
                check,
                "fail",
                f"entry {name}: {untrusted}",
                "the certificate and the caBundle disagree: run the certs Job (it rotates in two phases)",
            )
    names = ", ".join(str(e.get("name")) for e in entries)
    expiry = certificate.not_valid_after_utc
    left = expiry - facts.now
    if left < EXPIRY_WARNING:
        return Finding(
            check,
            "warn",
            f"the serving certificate expires at {expiry:%Y-%m-%d %H:%M} UTC ({left.days} day(s) left)",
            "check the rotation CronJob (or cert-manager): it renews 30 days ahead",
        )
    return Finding(
        check, "ok", f"{len(entries)} entries ({names}) trust the served certificate until {expiry:%Y-%m-%d}"
    )


def _served_certificate(secret: Mapping[str, Any] | None) -> x509.Certificate | None:
    if secret is None:
        return None
    try:
        data = base64.b64decode(str(mapping(secret.get("data")).get("tls.crt") or ""), validate=True)
        return x509.load_pem_x509_certificates(data)[0] if data else None
    except (ValueError, binascii.Error):
        return None


def _dialed_name(entry: Mapping[str, Any]) -> str:
    """The name the API server checks the certificate for: ``service.namespace.svc``, or the URL's host."""
    client = mapping(entry.get("clientConfig"))
    service = mapping(client.get("service"))
    if service:
        return f"{service.get('name')}.{service.get('namespace')}.svc"
    url = str(client.get("url") or "")
    return url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")


def webhook_ready(facts: ClusterFacts) -> Finding:
    """The webhook Deployment is ready; when it is not and the configuration leaves a key to set (the webhook
    then stays unready by design), the finding names the key."""
    found = _deployment_ready("webhook", WEBHOOK_DEPLOYMENT, facts)
    keys = list(dict.fromkeys(problem.key for problem in problems(facts.settings)))
    if found.status == "ok" or not keys or facts.deployments.get(WEBHOOK_DEPLOYMENT) is None:
        return found
    return replace(
        found,
        message=f"{found.message}: {incomplete(facts.settings)}",
        hint=f"set {', '.join(keys)} in the webhook's configuration (confidential-pods precheck names what "
        "is left); the webhook stays unready until then",
    )


def scheduler_ready(facts: ClusterFacts) -> Finding:
    """The scheduler Deployment is ready and one replica holds the leader lease."""
    found = _deployment_ready("scheduler", SCHEDULER_DEPLOYMENT, facts)
    if found.status != "ok":
        return found
    if (problem := cannot_read("scheduler", facts, "lease")) is not None:
        return problem
    spec = mapping((facts.lease or {}).get("spec"))
    holder = spec.get("holderIdentity")
    renewed = _timestamp(spec.get("renewTime"))
    duration = spec.get("leaseDurationSeconds")
    seconds = duration if isinstance(duration, int) else 15
    if not holder or renewed is None:
        return Finding(
            "scheduler",
            "fail",
            f"no replica holds the lease {facts.namespace}/{SCHEDULER_DEPLOYMENT}: nothing is scheduled",
            f"kubectl -n {facts.namespace} logs deploy/{SCHEDULER_DEPLOYMENT} -c kube-scheduler",
        )
    if facts.now - renewed > timedelta(seconds=2 * seconds):
        return Finding(
            "scheduler",
            "fail",
            f"the leader {holder} last renewed its lease at {renewed:%H:%M:%S} UTC: it is not scheduling",
            f"kubectl -n {facts.namespace} logs deploy/{SCHEDULER_DEPLOYMENT} -c kube-scheduler",
        )
    return Finding("scheduler", "ok", f"{found.message}; leader {holder}")


def _timestamp(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _deployment_ready(check: str, name: str, facts: ClusterFacts) -> Finding:
    if (problem := cannot_read(check, facts, f"deployment {name}")) is not None:
        return problem
    deployment = facts.deployments.get(name)
    if deployment is None:
        return Finding(
            check, "fail", f"Deployment {facts.namespace}/{name} does not exist", "apply the manifests"
        )
    wanted = mapping(deployment.get("spec")).get("replicas", 1)
    ready = mapping(deployment.get("status")).get("readyReplicas") or 0
    if not ready:
        return Finding(
            check,
            "fail",
            f"Deployment {facts.namespace}/{name}: 0 of {wanted} replicas ready",
            f"kubectl -n {facts.namespace} describe deploy/{name}; "
            f"kubectl -n {facts.namespace} logs deploy/{name}",
        )
    if isinstance(wanted, int) and ready < wanted:
        return Finding(
            check,
            "warn",
            f"Deployment {facts.namespace}/{name}: {ready} of {wanted} replicas ready",
            f"kubectl -n {facts.namespace} describe deploy/{name}",
        )
    return Finding(check, "ok", f"Deployment {facts.namespace}/{name}: {ready} of {wanted} replicas ready")


def aesm_source(facts: ClusterFacts) -> Finding:
    """Host mode needs aesmd on every SGX node: a DaemonSet that provides the socket directory."""
    check = "aesm-source"
    settings = facts.settings
    if settings.aesm != "host":
        return Finding(check, "ok", f"pods get AESM as {settings.aesm!r} by default: no node daemon needed")
    if (problem := cannot_read(check, facts, "daemonsets")) is not None:
        return problem
    sources = [d for d in facts.daemonsets if _provides_aesm(d, settings.aesm_host_path)]
    if not sources:
        return Finding(
            check,
            "warn",
            f"aesm is host but no DaemonSet provides {settings.aesm_host_path}: host-mode pods find no "
            "aesm.socket unless the nodes run aesmd outside Kubernetes",
            "add components/aesmd, or on AKS enable the quote helper "
            "(az aks addon update --addon confcom --enable-sgxquotehelper); docs/attestation.md",
        )
    ready = [d for d in sources if mapping(d.get("status")).get("numberReady")]
    names = [
        f"{mapping(d.get('metadata')).get('namespace')}/{mapping(d.get('metadata')).get('name')}"
        for d in sources
    ]
    if not ready:
        return Finding(
            check, "warn", f"DaemonSet {listed(names)} provides AESM but no pod of it is ready",
            "kubectl describe daemonset of it; is aesmd's image set (components/aesmd)?",
        )  # fmt: skip
    return Finding(check, "ok", f"AESM from DaemonSet {listed(names)}")


def _namespaced(obj: Mapping[str, Any]) -> str:
    metadata = mapping(obj.get("metadata"))
    return f"{metadata.get('namespace')}/{metadata.get('name')}"


def _provides_aesm(daemonset: Mapping[str, Any], host_path: str) -> bool:
    metadata = mapping(daemonset.get("metadata"))
    if any(word in str(metadata.get("name", "")) for word in ("aesm", "quote-helper")):
        return True
    spec = mapping(mapping(mapping(daemonset.get("spec")).get("template")).get("spec"))
    for volume in spec.get("volumes") or []:
        path = mapping(mapping(volume).get("hostPath")).get("path")
        if isinstance(path, str) and path.rstrip("/") == host_path.rstrip("/"):
            return True
    return False


def pod_security(facts: ClusterFacts) -> Finding:
    """Namespaces opted in whose Pod Security level refuses what host mode injects (a hostPath volume)."""
    check = "pod-security"
    settings = facts.settings
    if settings.aesm != "host":
        return Finding(check, "ok", "no hostPath is injected by default (aesm is not host)")
    if settings.quote != "aesmd":
        return Finding(check, "ok", f"no hostPath is injected by default (quote is {settings.quote})")
    if settings.is_sandbox(settings.runtime_class):  # the webhook gives sandboxed pods an aesmd sidecar
        return Finding(
            check,
            "ok",
            f"no hostPath is injected by default (runtimeClass {settings.runtime_class} is a sandbox: "
            "an aesmd sidecar serves the AESM socket)",
        )
    if (problem := cannot_read(check, facts, "namespaces")) is not None:
        return problem
    clashing = []
    for namespace in facts.namespaces:
        metadata = mapping(namespace.get("metadata"))
        labels = mapping(metadata.get("labels"))
        if labels.get(INJECTION_LABEL) == "enabled" and labels.get(ENFORCE_LABEL) in (
            "baseline",
            "restricted",
        ):
            clashing.append(f"{metadata.get('name')} ({labels.get(ENFORCE_LABEL)})")
    if clashing:
        return Finding(
            check,
            "warn",
            "namespace(s) opted in enforce a Pod Security level that refuses host-mode pods: "
            + listed(clashing),
            "annotate those pods confidential-pods.io/aesm: sidecar, or use a sandbox RuntimeClass "
            "(docs/attestation.md)",
        )
    return Finding(check, "ok", "no namespace opted in enforces baseline or restricted")


def unrouted_epc_pods(facts: ClusterFacts) -> Finding:
    """Running pods that hold EPC but were placed by another scheduler (blind to binds in flight)."""
    check = "epc-pods-scheduler"
    if (problem := cannot_read(check, facts, "pods")) is not None:
        return problem
    ours = {n for n in (facts.settings.scheduler_name, facts.settings.preempting_scheduler_name) if n}
    if not ours:
        return Finding(
            check, "ok", "no schedulerName configured: EPC pods use the default scheduler's extender"
        )
    schedulers = "/".join(sorted(ours))
    others = sorted(
        f"{p.namespace}/{p.name} ({p.scheduler})"
        for p in facts.pods
        if p.holds_epc and p.scheduler not in ours
    )
    return judge(
        check,
        others,
        ("warn", f"running pod(s) hold EPC but were not placed by {schedulers}"),
        'annotate them confidential-pods.io/confidential: "true", or set routeEPCPods: true and add '
        "components/route-epc-pods (docs/install.md)",
        f"every running pod that holds EPC was placed by {schedulers}",
    )


def epc_overcommit(facts: ClusterFacts) -> Finding:
    """No node's assigned, unfinished pods ask for more EPC than it advertises."""
    check = "epc-overcommit"
    if (problem := cannot_read(check, facts, "nodes", "pods")) is not None:
        return problem
    used: dict[str, int] = {}
    for pod in facts.pods:
        if pod.holds_epc:
            used[pod.node] = used.get(pod.node, 0) + pod.epc
    over = []
    for node in facts.nodes:
        name = str(mapping(node.get("metadata")).get("name"))
        capacity = node_capacity(node, facts.settings.profile, []) or 0
        if used.get(name, 0) > capacity:
            over.append(f"{name} ({format_bytes(used[name])} of {format_bytes(capacity)})")
    return judge(
        check,
        over,
        ("fail", "node(s) hold more EPC than they advertise"),
        "kubelet refuses pods it cannot admit; look for pods placed by another scheduler "
        "(epc-pods-scheduler) and at `kubectl confidential-pods nodes`",
        f"no node overcommitted ({len(used)} node(s) hold EPC)",
    )


def route_entry(facts: ClusterFacts) -> Finding:
    """The routing entry and the routeEPCPods key go together."""
    check = "route-epc-pods"
    if facts.webhook_configuration is None:
        return Finding(check, "ok", "no webhook configuration (reported above)")
    entries = {str(mapping(e).get("name")) for e in facts.webhook_configuration.get("webhooks") or []}
    present, enabled = ROUTE_ENTRY in entries, facts.settings.route_epc_pods
    if present and not enabled:
        return Finding(
            check, "warn", f"entry {ROUTE_ENTRY} is installed but routeEPCPods is off: pods are not routed",
            "set routeEPCPods: true in the configuration",
        )  # fmt: skip
    if enabled and not present:
        return Finding(
            check, "warn", f"routeEPCPods is on but entry {ROUTE_ENTRY} is not installed: nothing is routed",
            "add components/route-epc-pods to your overlay",
        )  # fmt: skip
    return Finding(
        check, "ok", "EPC pods that skip the opt-in are " + ("routed" if present else "not routed")
    )


#: The checks in the order an operator looks, each with the checks it needs to have passed: the EPC on
#: the nodes cannot be judged overcommitted when no node advertises the resource or the pods could not be
#: read; the routing entry is looked for in a webhook configuration that exists and could be read.
CHECKS: tuple[Step, ...] = (
    Step("epc-resource", epc_resource),
    Step("webhook-configuration", webhook_configuration),
    Step("webhook", webhook_ready),
    Step("scheduler", scheduler_ready),
    Step("scheduler-mode", scheduler_mode),
    Step("aesm-source", aesm_source),
    Step("attestation-readiness", attestation_readiness, needs=("epc-resource",)),
    Step("epc-limits", epc_limits, needs=("epc-resource",)),
    Step("pod-security", pod_security),
    Step("epc-pods-scheduler", unrouted_epc_pods),
    Step("epc-overcommit", epc_overcommit, needs=("epc-resource", "epc-pods-scheduler")),
    Step("route-epc-pods", route_entry, needs=("webhook-configuration",)),
)
