"""Read what the doctor, precheck and the kubectl plugin look at, read-only, through the official client.

Raw JSON (``_preload_content=False``), lists page by page; pods are reduced to a
:class:`~operate.doctor.PodSummary` as each page arrives, so a cluster of 150,000 pods is never held
whole. A read the API server refuses is recorded (``unreadable``) for the checks to report, not raised.
The configuration is the one the webhook runs with: the ConfigMap its Deployment mounts as ``config``; the
KubeSchedulerConfiguration the one ``confidential-scheduler`` runs with: the ConfigMap mounted as
``scheduler-config``. Both are parsed by the one bounded reader (:mod:`confidential_pods.documents`): a
ConfigMap is input the doctor does not control.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any, Literal

import kubernetes.client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from confidential_pods.documents import load_document
from confidential_pods.epc import effective_epc
from confidential_pods.errors import ConfigError, MalformedInput
from confidential_pods.kube import network_reason, status_message
from confidential_pods.settings import Settings, settings_from_mapping
from confidential_pods.wire import mapping
from extender.ledger import EpcLedger
from extender.podepc import TERMINAL_PHASES, PodEpc, nominated_facts
from extender.snapshot import facts_of, fill_ledger_from_facts
from operate.facts import (
    SCHEDULER_DEPLOYMENT,
    WEBHOOK_CONFIGURATION,
    WEBHOOK_DEPLOYMENT,
    ClusterFacts,
    PodSummary,
)

PAGE = 500
#: (connect, read) seconds: an API server that does not answer a connection in 5 s is reported unreachable.
TIMEOUT = (5, 60)
#: The ConfigMap volume of the webhook Deployment that holds config.yaml.
CONFIG_VOLUME = "config"
#: The ConfigMap volume of the scheduler Deployment that holds its KubeSchedulerConfiguration (config.yaml).
SCHEDULER_CONFIG_VOLUME = "scheduler-config"


class Unreadable(Exception):
    """The API server refused a read, or what it answered cannot be used (the message says which)."""


class Unreachable(Unreadable):
    """The API server could not be reached at all (connection refused, timed out, TLS failed): every
    other read would fail the same way, so the tools stop at the first with one line."""


class Reader:
    """Reads objects of one cluster; every call returns parsed JSON or raises :class:`Unreadable`."""

    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self.host = str(api.configuration.host)
        self.core = kubernetes.client.CoreV1Api(api)
        self.apps = kubernetes.client.AppsV1Api(api)
        self.coordination = kubernetes.client.CoordinationV1Api(api)
        self.admission = kubernetes.client.AdmissionregistrationV1Api(api)
        self.version = kubernetes.client.VersionApi(api)

    def get(self, call: Callable[..., Any], *args: Any, **query: Any) -> dict[str, Any] | None:
        """One object (or one page of a list); None when it does not exist."""
        try:
            return self._json(call(*args, **query, _preload_content=False, _request_timeout=TIMEOUT))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise Unreadable(f"{exc.status} {status_message(exc)}") from None
        except (HTTPError, OSError) as exc:
            raise Unreachable(f"cannot reach the API server at {self.host}: {network_reason(exc)}") from None

    def items(self, call: Callable[..., Any], *args: Any, **query: Any) -> Iterator[dict[str, Any]]:
        """Every item of a list, page by page."""
        token: str | None = None
        while True:
            page = self.get(call, *args, limit=PAGE, **query, **({"_continue": token} if token else {}))
            if page is None:
                return
            yield from (item for item in page.get("items") or () if isinstance(item, dict))
            token = mapping(page.get("metadata")).get("continue") or None
            if not token:
                return

    def _json(self, response: Any) -> dict[str, Any]:
        try:
            data = json.loads(response.data)
        finally:
            response.release_conn()
        if not isinstance(data, dict):
            raise Unreadable("the answer is not a JSON object")
        return data


def read_settings(reader: Reader, namespace: str) -> tuple[Settings, str]:
    """The webhook's configuration (the ConfigMap its Deployment mounts), and where it came from."""
    deployment = reader.get(reader.apps.read_namespaced_deployment, WEBHOOK_DEPLOYMENT, namespace)
    if deployment is None:
        raise ConfigError(f"Deployment {namespace}/{WEBHOOK_DEPLOYMENT} not found; pass --config FILE")
    name = mounted_config_map(deployment, CONFIG_VOLUME)
    if name is None:
        raise ConfigError(
            f"Deployment {namespace}/{WEBHOOK_DEPLOYMENT} mounts no ConfigMap as {CONFIG_VOLUME!r}"
        )
    config_map = reader.get(reader.core.read_namespaced_config_map, name, namespace)
    text = mapping(mapping(config_map).get("data")).get("config.yaml")
    if not isinstance(text, str):
        raise ConfigError(f"ConfigMap {namespace}/{name} has no config.yaml")
    try:
        data = load_document(text, f"ConfigMap {namespace}/{name} config.yaml") or {}
    except MalformedInput as exc:
        raise ConfigError(str(exc)) from None
    return settings_from_mapping(data), f"ConfigMap {namespace}/{name}"


def mounted_config_map(deployment: Mapping[str, Any], volume: str) -> str | None:
    """The name of the ConfigMap ``deployment`` mounts as ``volume`` (None: no such ConfigMap volume)."""
    volumes = mapping(mapping(mapping(deployment.get("spec")).get("template")).get("spec")).get("volumes")
    for entry in volumes if isinstance(volumes, list) else ():
        if mapping(entry).get("name") == volume:
            name = mapping(mapping(entry).get("configMap")).get("name")
            return name if isinstance(name, str) and name else None
    return None


def read_scheduler_configuration(
    reader: Reader, deployment: Mapping[str, Any], namespace: str
) -> dict[str, Any]:
    """The KubeSchedulerConfiguration of the scheduler ``deployment`` (its ``scheduler-config`` ConfigMap's
    ``config.yaml``); :class:`Unreadable` says why there is none."""
    where = f"Deployment {namespace}/{SCHEDULER_DEPLOYMENT}"
    name = mounted_config_map(deployment, SCHEDULER_CONFIG_VOLUME)
    if name is None:
        raise Unreadable(f"{where} mounts no ConfigMap as {SCHEDULER_CONFIG_VOLUME!r}")
    config_map = reader.get(reader.core.read_namespaced_config_map, name, namespace)
    if config_map is None:
        raise Unreadable(f"ConfigMap {namespace}/{name} ({where} mounts it) does not exist")
    text = mapping(config_map.get("data")).get("config.yaml")
    if not isinstance(text, str):
        raise Unreadable(f"ConfigMap {namespace}/{name} has no config.yaml")
    try:
        document = load_document(text, f"ConfigMap {namespace}/{name} config.yaml")
    except MalformedInput as exc:
        raise Unreadable(str(exc)) from None
    if not isinstance(document, dict):
        raise Unreadable(f"ConfigMap {namespace}/{name} config.yaml is not a KubeSchedulerConfiguration")
    return document


def ledger_of(reader: Reader, settings: Settings) -> EpcLedger:
    """The extender's ledger as the stored objects make it: nodes, assigned pods, nominated pods (no
    reservations: only the extender knows its binds in flight)."""
    nominated: list[PodEpc] = []

    def objects() -> Iterator[tuple[Literal["Node", "Pod"], dict[str, Any]]]:
        for node in reader.items(reader.core.list_node):
            yield "Node", node
        for pod in reader.items(reader.core.list_pod_for_all_namespaces):
            if (held := nominated_facts(pod, settings.profile, [])) is not None:
                nominated.append(held)
            yield "Pod", pod

    facts = facts_of(objects(), settings.profile)
    ledger = EpcLedger()
    fill_ledger_from_facts(ledger, facts)
    ledger.replace_nominations(nominated)
    return ledger


def summary(pod: dict[str, Any], settings: Settings) -> PodSummary:
    metadata, spec = mapping(pod.get("metadata")), mapping(pod.get("spec"))
    return PodSummary(
        namespace=str(metadata.get("namespace") or ""),
        name=str(metadata.get("name") or ""),
        node=str(spec.get("nodeName") or ""),
        scheduler=str(spec.get("schedulerName") or "default-scheduler"),
        epc=effective_epc(pod, settings.profile, []),
        finished=mapping(pod.get("status")).get("phase") in TERMINAL_PHASES,
    )


class Attempts:
    """Reads whose refusal is noted (``unreadable``: what → the API server's answer), not raised; an API
    server that cannot be reached raises :class:`Unreachable` at the first read, for the caller to say it
    once."""

    def __init__(self) -> None:
        self.found: dict[str, Any] = {}
        self.unreadable: dict[str, str] = {}

    def __call__(self, what: str, read: Callable[[], Any]) -> None:
        try:
            self.found[what] = read()
        except Unreachable:
            raise
        except Unreadable as exc:
            self.unreadable[what] = str(exc)


def gather(reader: Reader, settings: Settings, namespace: str, now: datetime | None = None) -> ClusterFacts:
    """Everything :func:`~operate.doctor.diagnose` checks; each read the API server refuses is noted, not
    raised (an API server that cannot be reached raises :class:`Unreachable` at the first read)."""
    attempt = Attempts()
    found = attempt.found
    core, apps = reader.core, reader.apps
    attempt("nodes", lambda: list(reader.items(core.list_node)))
    attempt("pods", lambda: [summary(p, settings) for p in reader.items(core.list_pod_for_all_namespaces)])
    attempt("namespaces", lambda: list(reader.items(core.list_namespace)))
    attempt(
        "webhook configuration",
        lambda: reader.get(reader.admission.read_mutating_webhook_configuration, WEBHOOK_CONFIGURATION),
    )
    attempt(
        "serving secret",
        lambda: reader.get(core.read_namespaced_secret, f"{WEBHOOK_DEPLOYMENT}-tls", namespace),
    )
    deployments = (WEBHOOK_DEPLOYMENT, SCHEDULER_DEPLOYMENT)
    for name in deployments:
        attempt(f"deployment {name}", partial(reader.get, apps.read_namespaced_deployment, name, namespace))
    scheduler = found.get(f"deployment {SCHEDULER_DEPLOYMENT}")
    if scheduler is not None:
        attempt(
            "scheduler configuration",
            lambda: read_scheduler_configuration(reader, scheduler, namespace),
        )
    attempt(
        "lease",
        lambda: reader.get(reader.coordination.read_namespaced_lease, SCHEDULER_DEPLOYMENT, namespace),
    )
    attempt("daemonsets", lambda: list(reader.items(apps.list_daemon_set_for_all_namespaces)))
    return ClusterFacts(
        settings=settings,
        namespace=namespace,
        now=now or datetime.now(UTC),
        nodes=found.get("nodes") or (),
        pods=found.get("pods") or (),
        namespaces=found.get("namespaces") or (),
        webhook_configuration=found.get("webhook configuration"),
        serving_secret=found.get("serving secret"),
        deployments={name: found.get(f"deployment {name}") for name in deployments},
        lease=found.get("lease"),
        scheduler_configuration=found.get("scheduler configuration"),
        daemonsets=found.get("daemonsets") or (),
        unreadable=attempt.unreadable,
    )


def gather_precheck(
    reader: Reader, settings: Settings, now: datetime | None = None
) -> tuple[ClusterFacts, str]:
    """What ``precheck`` judges before anything is applied: the nodes and namespaces (in the facts), and the
    API server's ``gitVersion`` ("" when it cannot be read: ``unreadable["version"]`` says why)."""
    attempt = Attempts()
    attempt("version", lambda: reader.get(reader.version.get_code))
    attempt("nodes", lambda: list(reader.items(reader.core.list_node)))
    attempt("namespaces", lambda: list(reader.items(reader.core.list_namespace)))
    facts = ClusterFacts(
        settings=settings,
        namespace="",
        now=now or datetime.now(UTC),
        nodes=attempt.found.get("nodes") or (),
        namespaces=attempt.found.get("namespaces") or (),
        unreadable=attempt.unreadable,
    )
    return facts, str(mapping(attempt.found.get("version")).get("gitVersion") or "")
