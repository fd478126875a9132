"""confidential-pods installed on the e2e control plane, from manifests/ — as an operator would, minus images.

:func:`install` builds one overlay of manifests/ with kustomize and puts it on the apiserver the way it runs
in a cluster, except that our two components run as local processes instead of containers:

- the RBAC of the build (ServiceAccounts, Roles, ClusterRoles and their bindings) is created as is, and every
  component talks to the apiserver with a token of *its* ServiceAccount: ``certs install`` as
  ``confidential-pods-certs``, the extender and kube-scheduler as ``confidential-scheduler`` — least
  privilege proven, not assumed;
- the webhook (``confidential-pods webhook serve``) serves the certificate of ``confidential-pods certs
  generate --san 127.0.0.1``; the build's MutatingWebhookConfiguration is registered with each
  ``clientConfig.service`` switched to ``url: https://127.0.0.1:<port><path>``, and its caBundle is written
  by ``confidential-pods certs install``;
- the configuration is the build's ConfigMap (``config.yaml``), plus an ``aesmSidecarImage`` (what the
  overlays ask an operator to set for sandboxed pods);
- kube-scheduler runs the build's KubeSchedulerConfiguration and container flags, with the extender's
  ``urlPrefix`` pointed at the local extender (``confidential-pods extender serve``, watching the apiserver);
- the RuntimeClasses of manifests/runtimeclasses (``kata-qemu``, ``kata-clh``, ``runv``) are created, so
  the RuntimeClass admission plugin sets their overhead;
- the build's ValidatingAdmissionPolicy and its binding (our annotations fixed at admission) are created as
  built: the apiserver evaluates them itself.

:meth:`Installation.uninstall` stops the processes and deletes what was created (but the namespace, which
never finishes terminating without kube-controller-manager).
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import subprocess
import tempfile
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml
from prometheus_client.parser import text_string_to_metric_families

from confidential_pods.profiles import PROFILES, Profile
from extender.modes import Mode, classify
from tests.commands import certs_generate, cli, extender_serve, webhook_serve
from tests.e2e.harness import ApiServer, ControlPlane
from tests.e2e.kube import JSON, ApiError, Kube
from tests.e2e.processes import HarnessError, Process, wait_until
from tests.machine import free_port
from tests.manifests.building import (
    BUILDS,
    LEDGER_COMPONENT,
    MANIFESTS,
    KustomizeError,
    build_with_components,
    find_kustomize,
    kustomize_build,
)

NAMESPACE = "confidential-pods"
SERVICE = "confidential-pods-webhook"
WEBHOOK_ACCOUNT = "confidential-pods-webhook"
#: The region an operator writes into the alibaba overlay's dcap.pccsUrl.
REGION = "cn-hangzhou"
TLS_SECRET = "confidential-pods-webhook-tls"
WEBHOOK_CONFIGURATION = "confidential-pods"
CERTS_ACCOUNT = "confidential-pods-certs"
SCHEDULER_ACCOUNT = "confidential-scheduler"
SCHEDULER_NAME = "confidential-scheduler"
#: The aesmd sidecar image the e2e configuration sets (never pulled: there is no kubelet).
AESM_SIDECAR_IMAGE = "registry.example.com/sgx/aesmd:2.25"
#: The RuntimeClasses users install from manifests/runtimeclasses (the kustomization ships Kata only).
RUNTIME_CLASS_FILES = ("kata.yaml", "runv.yaml")
#: RBAC kinds of a build, in the order they must be created, with their REST collection.
RBAC_COLLECTIONS = {
    "ServiceAccount": "/api/v1/namespaces/{namespace}/serviceaccounts",
    "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles",
    "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
    "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
}
WEBHOOK_CONFIGURATIONS = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
ADMISSION_REGISTRATION = "/apis/admissionregistration.k8s.io/v1"
#: The admission policy kinds of a build, in creation order (the policy before its binding).
POLICY_COLLECTIONS = {
    "ValidatingAdmissionPolicy": f"{ADMISSION_REGISTRATION}/validatingadmissionpolicies",
    "ValidatingAdmissionPolicyBinding": f"{ADMISSION_REGISTRATION}/validatingadmissionpolicybindings",
}
RUNTIME_CLASSES = "/apis/node.k8s.io/v1/runtimeclasses"
START_TIMEOUT = 60.0

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Overlay:
    """One kustomize build of manifests/ (``alibaba``, ``intel``, …) and what the harness takes from it."""

    name: str
    objects: list[Manifest]

    @classmethod
    def build(cls, name: str) -> Overlay:
        """``name``: a build of :data:`BUILDS` (native mode, as shipped), or ``<build>+ledger``: that build
        with the ledger-mode component of its profile, as a user's overlay adds it."""
        kustomize = find_kustomize()
        if kustomize is None:
            raise HarnessError("kustomize not found; .ci/run installs it (see tests/manifests/building.py)")
        install, _, mode = name.partition("+")
        try:
            if mode == "ledger":
                with tempfile.TemporaryDirectory(prefix="overlay-") as work:
                    components = [LEDGER_COMPONENT[install]]
                    objects = build_with_components(kustomize, install, components, Path(work))
                return cls(name=name, objects=objects)
            if mode:
                raise HarnessError(f"build {name}: unknown mode {mode!r} (only +ledger)")
            return cls(name=name, objects=kustomize_build(kustomize, BUILDS[name]))
        except KustomizeError as exc:
            raise HarnessError(str(exc)) from exc

    @property
    def install(self) -> str:
        """The build of manifests/ without the mode: ``alibaba`` for ``alibaba+ledger``."""
        return self.name.partition("+")[0]

    @property
    def mode(self) -> Mode:
        """The scheduling mode of the build's scheduler configuration (extender/modes.py)."""
        mode = classify(self.scheduler_config(""), self.profile.epc_resource).mode
        if mode is None:
            raise HarnessError(f"build {self.name}: no scheduling mode")
        return mode

    @property
    def components(self) -> list[str]:
        """The components of manifests/components this build adds to :attr:`install`."""
        return [LEDGER_COMPONENT[self.install]] if self.name.endswith("+ledger") else []

    def one(self, kind: str, name: str) -> Manifest:
        """The object of ``kind`` named ``name`` (or ``name-<hash>`` for generated ConfigMaps)."""
        found = [
            o
            for o in self.objects
            if o["kind"] == kind
            and (o["metadata"]["name"] == name or o["metadata"]["name"].startswith(name + "-"))
        ]
        if len(found) != 1:
            raise HarnessError(f"overlay {self.name}: expected one {kind} {name}, found {len(found)}")
        return found[0]

    def settings(self) -> dict[str, Any]:
        """The webhook/extender configuration of the build, with the e2e sidecar image set and, where the
        overlay asks for it, the region an operator sets (the alibaba overlay's PCCS is per region)."""
        text = self.one("ConfigMap", "confidential-pods-config")["data"]["config.yaml"]
        config = yaml.safe_load(text.replace("<region>", REGION))
        config["aesmSidecarImage"] = AESM_SIDECAR_IMAGE
        return dict(config)

    def webhook_reads_namespaces(self) -> bool:
        """Whether the build gives the webhook a token (components/pod-security-lookup)."""
        deployment = self.one("Deployment", "confidential-pods-webhook")
        return bool(deployment["spec"]["template"]["spec"].get("automountServiceAccountToken"))

    @property
    def profile(self) -> Profile:
        return PROFILES[str(self.settings()["profile"])]

    def scheduler_config(self, extender_url: str) -> dict[str, Any]:
        """The build's KubeSchedulerConfiguration, every extender's ``urlPrefix`` = ``extender_url``."""
        config: dict[str, Any] = yaml.safe_load(
            self.one("ConfigMap", "confidential-scheduler-config")["data"]["config.yaml"]
        )
        for extender in config.get("extenders", []):
            extender["urlPrefix"] = extender_url
        return config

    def scheduler_flags(self) -> list[str]:
        """The build's kube-scheduler container flags but ``--config`` (the harness writes its own)."""
        deployment = self.one("Deployment", SCHEDULER_NAME)
        (container,) = [
            c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "kube-scheduler"
        ]
        return [arg for arg in container["command"][1:] if not arg.startswith("--config=")]

    def webhook_configuration(self, base_url: str) -> Manifest:
        """The build's MutatingWebhookConfiguration, each ``clientConfig.service`` turned into ``url``."""
        configuration = json.loads(
            json.dumps(self.one("MutatingWebhookConfiguration", WEBHOOK_CONFIGURATION))
        )
        for webhook in configuration["webhooks"]:
            service = webhook["clientConfig"].pop("service")
            webhook["clientConfig"]["url"] = base_url + service.get("path", "/")
        return dict(configuration)

    def admission_policies(self) -> list[Manifest]:
        """ValidatingAdmissionPolicies and their bindings, in creation order."""
        order = list(POLICY_COLLECTIONS)
        chosen = [o for o in self.objects if o["kind"] in POLICY_COLLECTIONS]
        return sorted(chosen, key=lambda o: order.index(o["kind"]))

    def rbac(self) -> list[Manifest]:
        """ServiceAccounts, Roles, ClusterRoles and their bindings, in creation order; the node probe's
        ServiceAccount (in its DaemonSet's namespace, which the harness does not create: no kubelet runs that
        pod here, the tests/e2e/test_on_node*.py modules do) left out."""
        order = list(RBAC_COLLECTIONS)
        chosen = [
            o for o in self.objects if o["kind"] in RBAC_COLLECTIONS and not _serves_another_namespace(o)
        ]
        return sorted(chosen, key=lambda o: order.index(o["kind"]))


def _serves_another_namespace(manifest: Manifest) -> bool:
    """A namespaced RBAC object of a namespace the harness does not create (``confidential-pods-aesmd``,
    ``confidential-pods-node-probe``)."""
    namespace = manifest["metadata"].get("namespace")
    return namespace is not None and namespace not in (NAMESPACE, "kube-system")


def runtime_classes() -> list[Manifest]:
    """The RuntimeClasses of manifests/runtimeclasses."""
    found: list[Manifest] = []
    for name in RUNTIME_CLASS_FILES:
        found.extend(d for d in yaml.safe_load_all((MANIFESTS / "runtimeclasses" / name).read_text()) if d)
    return found


def collection_path(manifest: Manifest) -> str:
    namespace = manifest["metadata"].get("namespace", NAMESPACE)
    return RBAC_COLLECTIONS[manifest["kind"]].format(namespace=namespace)


def apply(kube: Kube, collection: str, manifest: Mapping[str, Any]) -> JSON:
    """Create ``manifest``, or replace the existing object of that name (PUT with its resourceVersion)."""
    try:
        return kube.create(collection, manifest)
    except ApiError as exc:
        if exc.status != 409:
            raise
    path = f"{collection}/{manifest['metadata']['name']}"
    current = kube.get(path)
    body = json.loads(json.dumps(manifest))
    body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    return kube.request("PUT", path, body=body)


def delete_quietly(kube: Kube, path: str) -> None:
    try:
        kube.delete(path)
    except ApiError as exc:
        if exc.status != 404:
            raise


def run_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run one ``confidential-pods`` command to completion; raise with its output if it fails."""
    result = subprocess.run(cli(*args), capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise HarnessError(
            f"confidential-pods {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
        )
    return result


#: Prometheus samples by ``(sample name, sorted labels)``.
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def metric_samples(text: str) -> Samples:
    """Prometheus exposition text as ``{(sample name, sorted labels): value}``."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def sum_matching(samples: Samples, name: str, **labels: str) -> float:
    """The sum of every sample called ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and wanted <= set(sample_labels)
    )


@dataclass(kw_only=True)
class LocalServer:
    """A ``confidential-pods`` server process on 127.0.0.1, ready once ``/readyz`` answers 200.

    Restartable on the same port (``stop()`` then ``start()``); its log is ``<log_dir>/<name>.log``.
    """

    name: ClassVar[str]
    scheme: ClassVar[str] = "http"
    log_dir: Path
    port: int = field(default_factory=free_port)
    process: Process | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str] | None:
        """The process's environment (None: this one's)."""
        return None

    def context(self) -> ssl.SSLContext | None:
        """What a client trusts to talk to the server (None: plain HTTP)."""
        return None

    def start(self) -> None:
        self.process = Process.start(self.name, self.command(), self.log_dir, env=self.environment())
        wait_until(
            self._ready,
            timeout=START_TIMEOUT,
            what=f"{self.name} /readyz at {self.url}",
            alive=self.process.check_alive,
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def get(self, path: str) -> tuple[int, str]:
        with urllib.request.urlopen(self.url + path, context=self.context(), timeout=5) as response:
            return response.status, response.read().decode()

    def _ready(self) -> bool:
        with contextlib.suppress(OSError):
            return self.get("/readyz")[0] == 200
        return False

    def metric(self, name: str, **labels: str) -> float:
        """Counter ``name`` of the server's ``/metrics``, summed over the samples matching ``labels``."""
        return sum_matching(metric_samples(self.get("/metrics")[1]), name, **labels)


@dataclass(kw_only=True)
class Webhook(LocalServer):
    """``confidential-pods webhook serve`` over TLS, with the certificates of ``cert_dir``."""

    name: ClassVar[str] = "webhook"
    scheme: ClassVar[str] = "https"
    cert_dir: Path
    config: Path
    #: The webhook ServiceAccount's credentials, when the build lets it read namespaces.
    kubeconfig: Path | None = None

    def command(self) -> list[str]:
        command = webhook_serve(
            self.cert_dir / "tls.crt", self.cert_dir / "tls.key", self.port, config=self.config
        )
        if self.kubeconfig is not None:
            command += ["--kubeconfig", str(self.kubeconfig)]
        return command

    def environment(self) -> dict[str, str]:
        # Its own multiprocess metrics directory, not one a surrounding test run may have set.
        return {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}

    def context(self) -> ssl.SSLContext:
        # Trust what the apiserver trusts: the CA of `certs generate` (re-read: `certs rotate` may change it).
        return ssl.create_default_context(cafile=str(self.cert_dir / "ca.crt"))

    def reviews(self, **labels: str) -> float:
        """``confidential_pods_webhook_reviews_total`` summed over the samples matching ``labels``."""
        return self.metric("confidential_pods_webhook_reviews_total", **labels)


@dataclass(kw_only=True)
class Extender(LocalServer):
    """``confidential-pods extender serve`` watching the apiserver (plain HTTP: a sidecar on localhost)."""

    name: ClassVar[str] = "extender"
    kubeconfig: Path
    config: Path
    #: kube-scheduler's configuration, read for its mode (as the scheduler's pod mounts it for the sidecar).
    scheduler_config: Path | None = None

    def command(self) -> list[str]:
        mode = ("--scheduler-config", str(self.scheduler_config)) if self.scheduler_config else ()
        return extender_serve(
            self.port, "--kubeconfig", str(self.kubeconfig), "--config", str(self.config), *mode
        )

    def requests(self, **labels: str) -> float:
        """``confidential_pods_extender_requests_total`` summed over the samples matching ``labels``."""
        return self.metric("confidential_pods_extender_requests_total", **labels)


@dataclass
class Installation:
    """confidential-pods from one overlay, running against the control plane."""

    overlay: Overlay
    plane: ControlPlane
    workdir: Path
    webhook: Webhook
    extender: Extender
    scheduler: Process
    scheduler_kubeconfig: Path
    created: list[str]
    #: Changes to confidential-scheduler's configuration on its next start (benchmarks); None: the overlay's.
    adjust_scheduler_config: Callable[[dict[str, Any]], None] | None = None

    @property
    def profile(self) -> Profile:
        return self.overlay.profile

    @property
    def settings(self) -> dict[str, Any]:
        return self.overlay.settings()

    @property
    def cert_dir(self) -> Path:
        return self.webhook.cert_dir

    def start_scheduler(self) -> Process:
        """Start confidential-scheduler again as :func:`install` did (after ``scheduler.stop()``)."""
        self.scheduler = start_confidential_scheduler(
            self.plane,
            self.overlay,
            self.extender.url,
            self.scheduler_kubeconfig,
            self.adjust_scheduler_config,
        )
        return self.scheduler

    def uninstall(self) -> None:
        """Stop scheduler, extender and webhook; delete every object :func:`install` created."""
        self.scheduler.stop()
        self.extender.stop()
        self.webhook.stop()
        kube = self.plane.api.admin_client()
        for path in reversed(self.created):
            delete_quietly(kube, path)


def start_confidential_scheduler(
    plane: ControlPlane,
    overlay: Overlay,
    extender_url: str,
    kubeconfig: Path,
    adjust: Callable[[dict[str, Any]], None] | None = None,
) -> Process:
    """kube-scheduler with the overlay's configuration (changed by ``adjust``, if given) and flags, its
    extender at ``extender_url``."""
    config = overlay.scheduler_config(extender_url)
    if adjust is not None:
        adjust(config)
    return plane.start_scheduler(
        config,
        name=SCHEDULER_NAME,
        kubeconfig=kubeconfig,
        extra_args=overlay.scheduler_flags(),
    )


def certs_kubeconfig(api: ApiServer) -> Path:
    """A kubeconfig of the ServiceAccount the certs Job and CronJob run as (the manifests' certs RBAC)."""
    return api.service_account_kubeconfig(NAMESPACE, CERTS_ACCOUNT)


def wait_webhook_registered(kube: Kube, namespace: str, timeout: float = START_TIMEOUT) -> None:
    """Wait until the apiserver calls the webhook: a dry-run create of an opted-in pod comes back mutated.

    The apiserver picks up a new or changed MutatingWebhookConfiguration from an informer, a moment later.
    """

    def mutated() -> bool:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"probe-{uuid.uuid4().hex[:8]}",
                "annotations": {"confidential-pods.io/confidential": "true"},
            },
            "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]},
        }
        try:
            created = kube.request(
                "POST", f"/api/v1/namespaces/{namespace}/pods", body=pod, params={"dryRun": "All"}
            )
        except ApiError:
            return False
        return "confidential-pods.io/status" in created["metadata"].get("annotations", {})

    wait_until(mutated, timeout=timeout, what="the apiserver to call the webhook")


@contextlib.contextmanager
def install(plane: ControlPlane, overlay_name: str, workdir: Path, log_dir: Path) -> Iterator[Installation]:
    """Install ``overlay_name`` on ``plane`` (see the module docstring); uninstall on the way out."""
    overlay = Overlay.build(overlay_name)
    api = plane.api
    kube = api.admin_client()
    created: list[str] = []
    processes: list[Webhook | Extender | Process] = []
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        with contextlib.suppress(ApiError):  # exists from an earlier overlay: namespaces never go away here
            kube.create(
                "/api/v1/namespaces",
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
            )
        for manifest in overlay.rbac():
            collection = collection_path(manifest)
            apply(kube, collection, manifest)
            created.append(f"{collection}/{manifest['metadata']['name']}")
        for runtime_class in runtime_classes():
            apply(kube, RUNTIME_CLASSES, runtime_class)
            created.append(f"{RUNTIME_CLASSES}/{runtime_class['metadata']['name']}")
        for policy in overlay.admission_policies():
            collection = POLICY_COLLECTIONS[policy["kind"]]
            apply(kube, collection, policy)
            created.append(f"{collection}/{policy['metadata']['name']}")

        config = workdir / "config.yaml"
        config.write_text(yaml.safe_dump(overlay.settings(), sort_keys=False))
        cert_dir = workdir / "certs"
        run_cli(*certs_generate(cert_dir, service=SERVICE, namespace=NAMESPACE))
        webhook_kubeconfig = (
            api.service_account_kubeconfig(NAMESPACE, WEBHOOK_ACCOUNT)
            if overlay.webhook_reads_namespaces()
            else None
        )
        webhook = Webhook(cert_dir=cert_dir, config=config, log_dir=log_dir, kubeconfig=webhook_kubeconfig)
        processes.append(webhook)
        webhook.start()

        apply(kube, WEBHOOK_CONFIGURATIONS, overlay.webhook_configuration(webhook.url))
        created.append(f"{WEBHOOK_CONFIGURATIONS}/{WEBHOOK_CONFIGURATION}")
        created.append(f"/api/v1/namespaces/{NAMESPACE}/secrets/{TLS_SECRET}")
        created.append(f"/api/v1/namespaces/{NAMESPACE}/secrets/{TLS_SECRET}-ca")
        # With the CA Secret, as the install Job leaves it: `certs rotate` (the CronJob) needs the CA key.
        run_cli(
            "certs",
            "install",
            "--secret",
            TLS_SECRET,
            "--webhook-config",
            WEBHOOK_CONFIGURATION,
            "--namespace",
            NAMESPACE,
            "--dir",
            str(cert_dir),
            "--kubeconfig",
            str(certs_kubeconfig(api)),
        )
        wait_webhook_registered(kube, "default")

        scheduler_kubeconfig = api.service_account_kubeconfig(NAMESPACE, SCHEDULER_ACCOUNT)
        scheduler_config = workdir / "scheduler-config.yaml"
        scheduler_config.write_text(yaml.safe_dump(overlay.scheduler_config("http://127.0.0.1:8444")))
        extender = Extender(
            kubeconfig=scheduler_kubeconfig, config=config, log_dir=log_dir, scheduler_config=scheduler_config
        )
        processes.append(extender)
        extender.start()
        scheduler = start_confidential_scheduler(plane, overlay, extender.url, scheduler_kubeconfig)
        processes.append(scheduler)
    except BaseException:
        for process in reversed(processes):
            process.stop()
        for path in reversed(created):
            with contextlib.suppress(ApiError, OSError):
                delete_quietly(kube, path)
        raise
    installation = Installation(
        overlay=overlay,
        plane=plane,
        workdir=workdir,
        webhook=webhook,
        extender=extender,
        scheduler=scheduler,
        scheduler_kubeconfig=scheduler_kubeconfig,
        created=created,
    )
    try:
        yield installation
    finally:
        installation.uninstall()
