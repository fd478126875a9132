"""``confidential-pods inject``: workloads in multi-document YAML, offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from confidential_pods.cli import main
from confidential_pods.settings import settings_from_mapping
from webhook.offline import InjectRefused, inject_documents
from webhook.policy import mutate

TEMPLATE = {
    "metadata": {"labels": {"app": "web"}, "annotations": {"confidential-pods.io/confidential": "true"}},
    "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]},
}


def workload(kind: str, api_version: str = "apps/v1") -> dict[str, object]:
    spec: dict[str, object] = {"template": TEMPLATE}
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"):
        spec["selector"] = {"matchLabels": {"app": "web"}}
    if kind == "StatefulSet":
        spec["serviceName"] = "web"
    if kind == "Job":
        spec["template"] = {**TEMPLATE, "spec": {**TEMPLATE["spec"], "restartPolicy": "Never"}}  # type: ignore[dict-item]
    if kind == "CronJob":
        job_template = {**TEMPLATE, "spec": {**TEMPLATE["spec"], "restartPolicy": "OnFailure"}}  # type: ignore[dict-item]
        spec = {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": job_template}}}
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": spec,
    }


WORKLOADS = [
    (workload("Deployment"), ("spec", "template")),
    (workload("StatefulSet"), ("spec", "template")),
    (workload("DaemonSet"), ("spec", "template")),
    (workload("ReplicaSet"), ("spec", "template")),
    (workload("Job", "batch/v1"), ("spec", "template")),
    (workload("CronJob", "batch/v1"), ("spec", "jobTemplate", "spec", "template")),
    (
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web", **TEMPLATE["metadata"]},
            "spec": TEMPLATE["spec"],
        },
        (),
    ),
]
SETTINGS = settings_from_mapping({"aesm": "host", "runtimeClass": "none"})


@pytest.mark.parametrize(("document", "path"), WORKLOADS, ids=[w[0]["kind"] for w in WORKLOADS])
def test_pod_templates_are_mutated(document: dict[str, object], path: tuple[str, ...]) -> None:
    [result] = inject_documents([document], SETTINGS, namespace_opted_in=False).documents
    template = result
    for part in path:
        template = template[part]
    container = template["spec"]["containers"][0]
    assert container["resources"]["limits"]["alibabacloud.com/sgx_epc_MiB"] == "64"
    assert "confidential-pods.io/status" in template["metadata"]["annotations"]
    kubernetes_validate.validate(result, "1.33.0", strict=True)
    # the input is untouched and a second pass changes nothing
    assert "resources" not in TEMPLATE["spec"]["containers"][0]
    assert inject_documents([result], SETTINGS, namespace_opted_in=False).documents == [result]


def test_other_kinds_pass_through_and_lists_are_walked() -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"ports": [{"port": 80}]},
    }
    listed = {"apiVersion": "v1", "kind": "List", "items": [workload("Deployment"), service]}
    result = inject_documents([service, listed, "a scalar"], SETTINGS, namespace_opted_in=False).documents
    assert result[0] == service and result[2] == "a scalar"
    assert result[1]["items"][1] == service
    assert "resources" in result[1]["items"][0]["spec"]["template"]["spec"]["containers"][0]


def test_namespace_opt_in_flag() -> None:
    plain = workload("Deployment")
    plain["spec"]["template"] = {"spec": TEMPLATE["spec"]}  # type: ignore[index]
    assert inject_documents([plain], SETTINGS, namespace_opted_in=False).documents == [plain]
    [result] = inject_documents([plain], SETTINGS, namespace_opted_in=True).documents
    assert result != plain


def test_denial_names_the_object() -> None:
    kata = settings_from_mapping({"runtimeClass": "kata"})  # a sandbox without an aesmd sidecar image
    with pytest.raises(InjectRefused, match=r"^Deployment/shop/web: an aesmd sidecar is needed"):
        inject_documents([workload("Deployment")], kata, namespace_opted_in=False)


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "in.yaml"
    source.write_text(
        yaml.safe_dump_all(
            [workload("Deployment"), {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}]
        )
    )
    config = tmp_path / "config.yaml"
    config.write_text("aesm: host\nruntimeClass: none\nprofile: intel\n")
    out = tmp_path / "out.yaml"
    assert main(["inject", "-f", str(source), "--config", str(config), "-o", str(out)]) == 0
    deployment, config_map = yaml.safe_load_all(out.read_text())
    assert deployment["spec"]["template"]["metadata"]["annotations"]["sgx.intel.com/epc"] == "64Mi"
    assert config_map["kind"] == "ConfigMap"

    kata = tmp_path / "kata.yaml"
    kata.write_text("runtimeClass: kata\n")  # incomplete: refused at start, not pod by pod
    assert main(["inject", "-f", str(source), "--config", str(kata), "-o", str(tmp_path / "no.yaml")]) == 2
    err = capsys.readouterr().err
    assert "configuration incomplete: aesmSidecarImage: runtimeClass kata" in err
    assert err.count("\n") == 1 and "(set aesmSidecarImage in the --config file)" in err
    assert not (tmp_path / "no.yaml").exists()
    in_process = workload("Deployment")
    in_process["spec"]["template"] = {  # type: ignore[index]
        **TEMPLATE,
        "metadata": {**TEMPLATE["metadata"], "annotations": IN_PROCESS},
    }
    source.write_text(yaml.safe_dump(in_process))
    assert main(["inject", "-f", str(source)]) == 1  # a pod's own annotation: refused pod by pod
    assert "refused Deployment/shop/web" in capsys.readouterr().err
    assert main(["inject", "-f", str(tmp_path / "missing.yaml")]) == 2
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("profile: amd\n")
    assert main(["inject", "-f", str(source), "--config", str(bad_config)]) == 2
    assert "profile" in capsys.readouterr().err


def test_stdin_through_the_console_script(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("aesm: host\nruntimeClass: none\n")
    done = subprocess.run(
        [sys.executable, "-m", "confidential_pods", "inject", "-f", "-", "--config", str(config)],
        input=yaml.safe_dump(workload("Deployment")),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "alibabacloud.com/sgx_epc_MiB" in done.stdout


# --- issue 23, item 8: namespaces in the same input; the Pod Security level only where known -------------

INJECTION = "confidential-pods.io/injection"
ENFORCE = "pod-security.kubernetes.io/enforce"


def namespace(name: str, **labels: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def plain(kind: str = "Deployment", where: str = "shop") -> dict[str, object]:
    """A workload whose pods do not opt in themselves."""
    document = workload(kind)
    document["metadata"] = {"name": "web", "namespace": where}
    document["spec"]["template"] = {"spec": TEMPLATE["spec"]}  # type: ignore[index]
    return document


def injected(document: object) -> bool:
    template = document["spec"]["template"]  # type: ignore[index]
    return "confidential-pods.io/status" in (template.get("metadata") or {}).get("annotations", {})


#: (id, documents before the workload, --namespace-opted-in, the workload, injected?)
NAMESPACES = [
    ("enabled-namespace-in-the-input", [namespace("shop", **{INJECTION: "enabled"})], False, plain(), True),
    (
        "enabled-namespace-in-a-list",
        [{"kind": "List", "items": [namespace("shop", **{INJECTION: "enabled"})]}],
        False,
        plain(),
        True,
    ),
    ("another-namespace-enabled", [namespace("other", **{INJECTION: "enabled"})], False, plain(), False),
    ("unlabelled-namespace", [namespace("shop")], False, plain(), False),
    ("unlabelled-namespace-beats-the-flag", [namespace("shop")], True, plain(), False),
    ("flag-for-namespaces-not-in-the-input", [namespace("other")], True, plain(), True),
    (
        "disabled-namespace-annotated-pod",
        [namespace("shop", **{INJECTION: "disabled"})],
        True,
        workload("Deployment"),
        False,
    ),
    ("system-namespace", [], True, plain(where="kube-system"), False),
]


@pytest.mark.parametrize(
    ("before", "flag", "document", "expected"), [r[1:] for r in NAMESPACES], ids=[r[0] for r in NAMESPACES]
)
def test_namespaces_in_the_input_are_read_as_the_webhook_reads_them(
    before: list[object], flag: bool, document: dict[str, object], expected: bool
) -> None:
    result = inject_documents([*before, document], SETTINGS, namespace_opted_in=flag)
    assert injected(result.documents[-1]) is expected
    assert result.documents[: len(before)] == before  # Namespaces pass through unchanged


def test_an_annotated_pod_in_a_disabled_namespace_is_left_with_a_warning() -> None:
    result = inject_documents(
        [namespace("shop", **{INJECTION: "disabled"}), workload("Deployment")],
        SETTINGS,
        namespace_opted_in=False,
    )
    assert result.warnings == [
        f"Deployment/shop/web: namespace shop is labelled {INJECTION}=disabled: the webhook is not called; "
        "left unchanged"
    ]


HOST = settings_from_mapping({"aesm": "host", "runtimeClass": "none"})


@pytest.mark.parametrize(
    ("before", "level", "refused"),
    [
        ([], None, False),  # unknown: not judged, and no warning (there was one for every host-mode pod)
        ([], "privileged", False),
        ([], "baseline", True),
        ([], "restricted", True),
        ([namespace("shop", **{ENFORCE: "restricted"})], None, True),
        (
            [namespace("shop", **{ENFORCE: "privileged"})],
            "restricted",
            False,
        ),  # the Namespace speaks for itself
        ([namespace("other", **{ENFORCE: "baseline"})], None, False),
    ],
)
def test_the_pod_security_level_is_judged_only_where_known(
    before: list[object], level: str | None, refused: bool
) -> None:
    documents = [*before, workload("Deployment")]
    if refused:
        with pytest.raises(
            InjectRefused, match=r"^Deployment/shop/web: the host's AESM socket is a hostPath"
        ):
            inject_documents(documents, HOST, namespace_opted_in=False, namespace_level=level)  # type: ignore[arg-type]
        return
    result = inject_documents(documents, HOST, namespace_opted_in=False, namespace_level=level)  # type: ignore[arg-type]
    assert injected(result.documents[-1]) and result.warnings == []


def test_the_installed_command_reads_namespaces_and_levels(tmp_path: Path) -> None:
    source = tmp_path / "in.yaml"
    source.write_text(yaml.safe_dump_all([namespace("shop", **{INJECTION: "enabled"}), plain()]))
    config = tmp_path / "config.yaml"
    config.write_text("aesm: host\nruntimeClass: none\n")
    base = [sys.executable, "-m", "confidential_pods", "inject", "-f", str(source), "--config", str(config)]
    done = subprocess.run(base, capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert injected(list(yaml.safe_load_all(done.stdout))[-1])
    source.write_text(yaml.safe_dump(plain()))  # its namespace not in the input: the flags speak for it
    flags = ["--namespace-opted-in", "--pod-security", "baseline"]
    refused = subprocess.run([*base, *flags], capture_output=True, text=True, check=False, timeout=60)
    assert refused.returncode == 1
    assert 'Pod Security level "baseline" forbids' in refused.stderr


# --- issue 23, item 1: the defaults admit a plain opted-in pod; refusals name the --config key -------------

INSTALLED = str(Path(sys.executable).parent / "confidential-pods")


def test_first_inject_without_config_succeeds_through_the_installed_command(tmp_path: Path) -> None:
    """A newcomer's first step: a plain opted-in Deployment, no --config, no $CONFIDENTIAL_PODS_CONFIG."""
    source = tmp_path / "web.yaml"
    source.write_text(yaml.safe_dump(workload("Deployment")))
    environment = {k: v for k, v in os.environ.items() if k != "CONFIDENTIAL_PODS_CONFIG"}
    done = subprocess.run(
        [INSTALLED, "inject", "-f", str(source)], capture_output=True, text=True, check=False, env=environment
    )
    assert done.returncode == 0, done.stderr
    template = yaml.safe_load(done.stdout)["spec"]["template"]
    (app,) = template["spec"]["containers"]
    assert app["resources"]["limits"]["alibabacloud.com/sgx_epc_MiB"] == "64"  # defaultEPC, alibaba
    assert "runtimeClassName" not in template["spec"]  # runtimeClass: none by default
    assert template["spec"]["volumes"][0]["hostPath"]["path"] == "/var/run/aesmd"  # aesm: host
    kubernetes_validate.validate(yaml.safe_load(done.stdout), "1.33.0", strict=True)


SANDBOX = {"runtimeClass": "kata"}
IN_PROCESS = {"confidential-pods.io/confidential": "true", "confidential-pods.io/quote": "in-process"}


@pytest.mark.parametrize(
    ("config", "annotations", "key"),
    [
        pytest.param(SANDBOX, None, "aesmSidecarImage", id="sandbox-without-sidecar-image"),
        pytest.param({"aesm": "sidecar"}, None, "aesmSidecarImage", id="aesm-sidecar-without-image"),
        pytest.param({}, IN_PROCESS, "dcap.pccsUrl", id="in-process-without-pccs"),
    ],
)
def test_refusals_a_key_could_lift_name_the_config_key_offline_and_the_operator_in_the_webhook(
    config: dict[str, str], annotations: dict[str, str] | None, key: str
) -> None:
    document = workload("Deployment")
    if annotations is not None:
        document["spec"]["template"] = {
            **TEMPLATE,
            "metadata": {**TEMPLATE["metadata"], "annotations": annotations},
        }  # type: ignore[index]
    settings = settings_from_mapping(config)
    with pytest.raises(InjectRefused) as refused:
        inject_documents([document], settings, namespace_opted_in=False)
    offline = str(refused.value)
    assert f"set {key}" in offline and "in the --config file" in offline and "operator" not in offline
    template = document["spec"]["template"]  # type: ignore[index]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", **template["metadata"]},
        "spec": template["spec"],
    }
    answer = mutate(
        pod, namespace_opted_in=False, settings=settings
    )  # as the webhook answers the pod's author
    assert answer.outcome == "denied"
    assert f"ask the cluster operator to set {key}" in answer.message and "--config" not in answer.message


def test_the_installed_inject_names_the_config_key(tmp_path: Path) -> None:
    source, config = tmp_path / "web.yaml", tmp_path / "kata.yaml"
    source.write_text(yaml.safe_dump(workload("Deployment")))
    config.write_text("runtimeClass: kata\n")
    done = subprocess.run(
        [INSTALLED, "inject", "-f", str(source), "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert "set aesmSidecarImage in the --config file" in done.stderr
    assert "cluster operator" not in done.stderr and done.stderr.count("\n") == 1
