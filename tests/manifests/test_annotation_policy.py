"""The ValidatingAdmissionPolicy that fixes our annotations at admission, in every install, and its CEL.

The CEL is evaluated with cel-python on (old pod, new pod) pairs as the API server evaluates it on an
UPDATE: the variables in order, each seeing those before it. ``variables.administrator`` asks the API
server's authorizer, which cel-python does not have: the table gives its answer, and
tests/e2e/test_annotation_policy.py proves the real one (system:masters, a ClusterRole granting the
virtual verb, a user without it).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.manifests.building import INSTALLS, Manifest, find
from tests.manifests.test_webhook_configuration import EXCLUDED_NAMESPACES

POLICY = "confidential-pods-annotations"
STATUS = "confidential-pods.io/status"
QCNL = "confidential-pods.io/qcnl"
CONFIDENTIAL = "confidential-pods.io/confidential"
INTEL_EPC = "sgx.intel.com/epc"
#: The sgx-epc NRI plugin's keys (epcLimits: nri): a container's, then the pod's two spellings.
LIMIT = "epc-limit.nri.io/container.app"
POD_LIMITS = ("epc-limit.nri.io/pod", "epc-limit.nri.io")
#: What the authorizer is asked: `update` on a virtual resource (docs/install.md: how to grant it).
ADMINISTRATOR = (
    "authorizer.group('confidential-pods.io').resource('podannotations').check('update').allowed()"
)


def _policy(built: dict[str, list[Manifest]], name: str = "base") -> Manifest:
    return find(built[name], "ValidatingAdmissionPolicy", POLICY)


@pytest.mark.parametrize("name", INSTALLS)
def test_every_install_binds_the_policy_to_deny(built: dict[str, list[Manifest]], name: str) -> None:
    policy = _policy(built, name)
    binding = find(built[name], "ValidatingAdmissionPolicyBinding", POLICY)
    assert binding["spec"] == {"policyName": POLICY, "validationActions": ["Deny"]}
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    assert "paramKind" not in spec  # nothing to be missing: no parameter object to fail on
    # UPDATE of pods and of their status subresource (which writes metadata too); `pods` alone would not
    # match `pods/status`. CREATE is the webhook's.
    assert spec["matchConstraints"]["resourceRules"] == [
        {"operations": ["UPDATE"], "apiGroups": [""], "apiVersions": ["v1"],
         "resources": ["pods", "pods/status"], "scope": "Namespaced"}
    ]  # fmt: skip
    assert spec["matchConstraints"]["namespaceSelector"] == {
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": EXCLUDED_NAMESPACES}
        ]
    }
    assert policy == _policy(built)  # the same in every install


def test_the_administrator_is_who_rbac_allows_the_virtual_verb(built: dict[str, list[Manifest]]) -> None:
    variables = {v["name"]: v["expression"] for v in _policy(built)["spec"]["variables"]}
    assert " ".join(variables["administrator"].split()) == ADMINISTRATOR
    (validation,) = _policy(built)["spec"]["validations"]
    # The authorizer is asked only when one of our annotations changes (CEL variables are lazy, || short).
    assert validation["expression"] == "size(variables.changed) == 0 || variables.administrator"
    assert validation["reason"] == "Forbidden"


def _evaluate(
    policy: Manifest, old: dict[str, str] | None, new: dict[str, str] | None, administrator: bool
) -> str | None:
    """None when the API server admits the UPDATE of a pod from ``old`` to ``new`` annotations; else the
    denial's message."""
    import celpy  # type: ignore[import-untyped]

    def pod(annotations: dict[str, str] | None) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": "p", "namespace": "team-a"}
        if annotations is not None:
            metadata["annotations"] = annotations
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata,
            "spec": {"containers": [{"name": "c"}]},
        }

    environment = celpy.Environment()
    activation: dict[str, Any] = {
        "oldObject": celpy.json_to_cel(pod(old)),
        "object": celpy.json_to_cel(pod(new)),
    }
    variables: dict[Any, Any] = {}

    def run(expression: str) -> Any:
        activation["variables"] = celpy.celtypes.MapType(variables)
        return environment.program(environment.compile(expression)).evaluate(activation)

    for variable in policy["spec"]["variables"]:
        name = celpy.celtypes.StringType(variable["name"])
        if variable["name"] == "administrator":
            variables[name] = celpy.celtypes.BoolType(administrator)
        else:
            variables[name] = run(variable["expression"])
    (validation,) = policy["spec"]["validations"]
    if run(validation["expression"]):
        return None
    return str(run(validation["messageExpression"]))


def _fixed(key: str) -> str:
    return (
        f"annotation {key} is fixed when the pod is admitted: only a cluster administrator "
        "(RBAC: update podannotations.confidential-pods.io) may add, change or remove it"
    )


INJECTED = {CONFIDENTIAL: "true", STATUS: '{"epc":"64Mi"}', QCNL: '{"pccs_url":"https://pccs"}', "team": "a"}

#: (old annotations, new annotations, the key the denial names, or None: admitted).
CASES: list[tuple[dict[str, str] | None, dict[str, str] | None, str | None]] = [
    # unchanged, or only other annotations changed: admitted
    (INJECTED, INJECTED, None),
    (INJECTED, {**INJECTED, "team": "b"}, None),
    (INJECTED, {**INJECTED, "kubectl.kubernetes.io/restartedAt": "now"}, None),
    (INJECTED, {k: v for k, v in INJECTED.items() if k != "team"}, None),
    (None, None, None),
    (None, {"team": "a"}, None),
    ({}, {"example.com/confidential-pods.io/x": "1", "confidential-pods.io.example.com/x": "1"}, None),
    ({INTEL_EPC + "-other": "1"}, {}, None),
    ({}, {"epc-limit.nri.io.example.com/x": "1", "example.com/epc-limit.nri.io": "1"}, None),
    # changed
    (INJECTED, {**INJECTED, QCNL: '{"pccs_url":"https://attacker"}'}, QCNL),
    (INJECTED, {**INJECTED, STATUS: "{}"}, STATUS),
    (INJECTED, {**INJECTED, CONFIDENTIAL: "false"}, CONFIDENTIAL),
    ({**INJECTED, INTEL_EPC: "64Mi"}, {**INJECTED, INTEL_EPC: "4Gi"}, INTEL_EPC),
    ({"confidential-pods.io/epc": "64Mi"}, {"confidential-pods.io/epc": "128Mi"}, "confidential-pods.io/epc"),
    # an EPC limit lifted ("0" is no limit to the plugin), removed, or added after admission
    ({LIMIT: "67108864"}, {LIMIT: "0"}, LIMIT),
    ({LIMIT: "67108864"}, {}, LIMIT),
    *(({LIMIT: "67108864"}, {LIMIT: "67108864", key: "0"}, key) for key in POD_LIMITS),
    # removed (one key, or every annotation)
    (INJECTED, {k: v for k, v in INJECTED.items() if k != QCNL}, QCNL),
    (INJECTED, None, CONFIDENTIAL),
    ({INTEL_EPC: "64Mi"}, {}, INTEL_EPC),
    # added: a pod never injected may not gain our marker, nor any key of ours
    ({"team": "a"}, {"team": "a", STATUS: "{}"}, STATUS),
    (None, {QCNL: "{}"}, QCNL),
    ({}, {"confidential-pods.io/anything": "x"}, "confidential-pods.io/anything"),
    ({}, {INTEL_EPC: "1Gi"}, INTEL_EPC),
]


@pytest.mark.parametrize("administrator", [False, True], ids=["user", "administrator"])
@pytest.mark.parametrize(("old", "new", "key"), CASES)
def test_our_annotations_are_fixed_for_all_but_administrators(
    built: dict[str, list[Manifest]],
    old: dict[str, str] | None,
    new: dict[str, str] | None,
    key: str | None,
    administrator: bool,
) -> None:
    expected = None if key is None or administrator else _fixed(key)
    assert _evaluate(_policy(built), old, new, administrator) == expected
