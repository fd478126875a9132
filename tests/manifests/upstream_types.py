"""JSON field names of the upstream Go types our manifests configure, from their ``json:`` tags.

Transcribed from the Kubernetes v1.37.2 sources (the version the e2e control plane pins):

* ``k8s.io/kube-scheduler/config/v1/types.go`` (KubeSchedulerConfiguration, KubeSchedulerProfile,
  Plugins, PluginSet, Plugin, PluginConfig, Extender, ExtenderManagedResource, ExtenderTLSConfig)
* ``k8s.io/component-base/config/v1alpha1/types.go`` (LeaderElectionConfiguration,
  ClientConnectionConfiguration, DebuggingConfiguration)
* ``k8s.io/api/admissionregistration/v1/types.go`` (MutatingWebhookConfiguration, MutatingWebhook,
  WebhookClientConfig, ServiceReference, RuleWithOperations, Rule, MatchCondition)
* ``k8s.io/apimachinery/pkg/apis/meta/v1/types.go`` (TypeMeta, LabelSelector, LabelSelectorRequirement)

``test_upstream_types.py`` re-reads these files from the Go module cache when it is there and
asserts this table still matches them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class GoStruct:
    """One Go struct as JSON sees it."""

    #: Go source file (module-relative) the struct is declared in.
    source: str
    #: JSON name → name of the struct of its value (a list's element type), or None for scalars/maps.
    fields: dict[str, str | None]
    #: Structs embedded inline (``json:""`` / ``json:",inline"``): their fields are this struct's too.
    inline: tuple[str, ...] = ()
    #: JSON names that upstream validation requires (marked ``Required`` in the type's docs).
    required: frozenset[str] = field(default_factory=frozenset)


SCHEDULER = "k8s.io/kube-scheduler/config/v1/types.go"
COMPONENT_BASE = "k8s.io/component-base/config/v1alpha1/types.go"
ADMISSION = "k8s.io/api/admissionregistration/v1/types.go"
META = "k8s.io/apimachinery/pkg/apis/meta/v1/types.go"

STRUCTS: dict[str, GoStruct] = {
    "TypeMeta": GoStruct(META, {"kind": None, "apiVersion": None}),
    # --- kube-scheduler ---
    "KubeSchedulerConfiguration": GoStruct(
        SCHEDULER,
        {
            "parallelism": None,
            "leaderElection": "LeaderElectionConfiguration",
            "clientConnection": "ClientConnectionConfiguration",
            "percentageOfNodesToScore": None,
            "podInitialBackoffSeconds": None,
            "podMaxBackoffSeconds": None,
            "profiles": "KubeSchedulerProfile",
            "extenders": "Extender",
            "delayCacheUntilActive": None,
        },
        inline=("TypeMeta", "DebuggingConfiguration"),
    ),
    "KubeSchedulerProfile": GoStruct(
        SCHEDULER,
        {
            "schedulerName": None,
            "percentageOfNodesToScore": None,
            "plugins": "Plugins",
            "pluginConfig": "PluginConfig",
        },
    ),
    "Plugins": GoStruct(
        SCHEDULER,
        {
            name: "PluginSet"
            for name in (
                "preEnqueue",
                "queueSort",
                "preFilter",
                "filter",
                "postFilter",
                "preScore",
                "score",
                "reserve",
                "permit",
                "preBind",
                "bind",
                "postBind",
                "multiPoint",
                "placementGenerate",
                "placementScore",
                "podGroupPostFilter",
            )
        },
    ),
    "PluginSet": GoStruct(SCHEDULER, {"enabled": "Plugin", "disabled": "Plugin"}),
    "Plugin": GoStruct(SCHEDULER, {"name": None, "weight": None}),
    "PluginConfig": GoStruct(SCHEDULER, {"name": None, "args": None}),
    "Extender": GoStruct(
        SCHEDULER,
        {
            "urlPrefix": None,
            "filterVerb": None,
            "preemptVerb": None,
            "prioritizeVerb": None,
            "weight": None,
            "bindVerb": None,
            "enableHTTPS": None,
            "tlsConfig": "ExtenderTLSConfig",
            "httpTimeout": None,
            "nodeCacheCapable": None,
            "managedResources": "ExtenderManagedResource",
            "ignorable": None,
        },
        required=frozenset({"urlPrefix"}),
    ),
    "ExtenderManagedResource": GoStruct(
        SCHEDULER, {"name": None, "ignoredByScheduler": None}, required=frozenset({"name"})
    ),
    "ExtenderTLSConfig": GoStruct(
        SCHEDULER,
        {
            "insecure": None,
            "serverName": None,
            "certFile": None,
            "keyFile": None,
            "caFile": None,
            "certData": None,
            "keyData": None,
            "caData": None,
        },
    ),
    "LeaderElectionConfiguration": GoStruct(
        COMPONENT_BASE,
        {
            "leaderElect": None,
            "leaseDuration": None,
            "renewDeadline": None,
            "retryPeriod": None,
            "resourceLock": None,
            "resourceName": None,
            "resourceNamespace": None,
        },
    ),
    "ClientConnectionConfiguration": GoStruct(
        COMPONENT_BASE,
        {"kubeconfig": None, "acceptContentTypes": None, "contentType": None, "qps": None, "burst": None},
    ),
    "DebuggingConfiguration": GoStruct(
        COMPONENT_BASE, {"enableProfiling": None, "enableContentionProfiling": None}
    ),
    # --- admission registration ---
    "MutatingWebhookConfiguration": GoStruct(
        ADMISSION, {"metadata": None, "webhooks": "MutatingWebhook"}, inline=("TypeMeta",)
    ),
    "MutatingWebhook": GoStruct(
        ADMISSION,
        {
            "name": None,
            "clientConfig": "WebhookClientConfig",
            "rules": "RuleWithOperations",
            "failurePolicy": None,
            "matchPolicy": None,
            "namespaceSelector": "LabelSelector",
            "objectSelector": "LabelSelector",
            "sideEffects": None,
            "timeoutSeconds": None,
            "admissionReviewVersions": None,
            "reinvocationPolicy": None,
            "matchConditions": "MatchCondition",
        },
        required=frozenset({"name", "clientConfig", "sideEffects", "admissionReviewVersions"}),
    ),
    "WebhookClientConfig": GoStruct(
        ADMISSION, {"url": None, "service": "ServiceReference", "caBundle": None}
    ),
    "ServiceReference": GoStruct(
        ADMISSION,
        {"namespace": None, "name": None, "path": None, "port": None},
        required=frozenset({"namespace", "name"}),
    ),
    "RuleWithOperations": GoStruct(ADMISSION, {"operations": None}, inline=("Rule",)),
    "Rule": GoStruct(ADMISSION, {"apiGroups": None, "apiVersions": None, "resources": None, "scope": None}),
    "MatchCondition": GoStruct(
        ADMISSION, {"name": None, "expression": None}, required=frozenset({"name", "expression"})
    ),
    "LabelSelector": GoStruct(META, {"matchLabels": None, "matchExpressions": "LabelSelectorRequirement"}),
    "LabelSelectorRequirement": GoStruct(
        META, {"key": None, "operator": None, "values": None}, required=frozenset({"key", "operator"})
    ),
}


def allowed_fields(struct: str) -> dict[str, str | None]:
    """JSON names of a struct including those of its inline embeddings."""
    spec = STRUCTS[struct]
    names = dict(spec.fields)
    for embedded in spec.inline:
        names.update(allowed_fields(embedded))
    return names


def unknown_fields(value: object, struct: str, path: str = "") -> list[str]:
    """Paths of JSON keys in ``value`` that the upstream struct (recursively) does not have."""
    problems: list[str] = []
    if isinstance(value, list):
        for index, item in enumerate(value):
            problems += unknown_fields(item, struct, f"{path}[{index}]")
        return problems
    if not isinstance(value, dict):
        return [f"{path or '.'}: expected an object for {struct}, got {type(value).__name__}"]
    allowed = allowed_fields(struct)
    for key, child in value.items():
        where = f"{path}.{key}"
        if key not in allowed:
            problems.append(f"{where}: no such field in {struct} ({STRUCTS[struct].source})")
            continue
        child_struct = allowed[key]
        if child_struct is not None and child is not None:
            problems += unknown_fields(child, child_struct, where)
    return problems
