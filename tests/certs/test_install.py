"""`certs install` and in-cluster `certs rotate` against an HTTP-level apiserver double (real client)."""

from __future__ import annotations

import base64
import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from certs.authority import service_names
from certs.cluster import Cluster, connect
from certs.inspection import fingerprint, issued_by
from certs.operations import Target, generate, rotate_cluster
from certs.planning import Lifetimes
from confidential_pods.cli import main
from tests.certs.conftest import NOW
from tests.fakeapi import FakeApiServer

NAMESPACE, SECRET, CA_SECRET, CONFIG = (
    "confidential-pods",
    "webhook-tls",
    "webhook-tls-ca",
    "confidential-pods",
)
NAMES = service_names("confidential-pods-webhook", NAMESPACE, ["127.0.0.1"])
TARGET = Target(NAMESPACE, SECRET, CONFIG, CA_SECRET)


def webhook(name: str, path: str) -> dict[str, Any]:
    return {
        "name": name,
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "failurePolicy": "Fail",
        "reinvocationPolicy": "IfNeeded",
        "clientConfig": {
            "service": {"name": "confidential-pods-webhook", "namespace": NAMESPACE, "path": path}
        },
        "rules": [
            {"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}
        ],
    }


@pytest.fixture
def api(fake_api: FakeApiServer) -> FakeApiServer:
    fake_api.add_webhook_configuration(
        CONFIG,
        [
            webhook("namespace.confidential-pods.io", "/mutate/namespace"),
            webhook("pod.confidential-pods.io", "/mutate"),
        ],
    )
    return fake_api


def install_cli(kubeconfig: Path, directory: Path, *extra: str) -> int:
    return main(
        [
            "certs",
            "install",
            "--secret",
            SECRET,
            "--webhook-config",
            CONFIG,
            "--namespace",
            NAMESPACE,
            "--dir",
            str(directory),
            "--kubeconfig",
            str(kubeconfig),
            *extra,
        ]
    )


def stored_secret(api: FakeApiServer, name: str) -> dict[str, Any]:
    """The stored Secret ``name`` of NAMESPACE (changes to it change the apiserver's)."""
    return api.objects["Secret"][f"{NAMESPACE}/{name}"]


def webhook_configuration(api: FakeApiServer) -> dict[str, Any]:
    return api.objects["MutatingWebhookConfiguration"][CONFIG]


def secret_data(api: FakeApiServer, name: str) -> dict[str, bytes]:
    return {key: base64.b64decode(value) for key, value in stored_secret(api, name)["data"].items()}


def ca_bundles(api: FakeApiServer) -> list[bytes]:
    return [base64.b64decode(w["clientConfig"]["caBundle"]) for w in webhook_configuration(api)["webhooks"]]


@pytest.fixture
def generated(tmp_path: Path) -> Path:
    out = tmp_path / "certs"
    generate(out, NAMES, now=datetime.now(UTC))
    return out


def test_install_creates_secrets_and_fills_every_ca_bundle(
    api: FakeApiServer, kubeconfig: Path, generated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = copy.deepcopy(webhook_configuration(api))
    assert install_cli(kubeconfig, generated) == 0
    tls = stored_secret(api, SECRET)
    assert tls["type"] == "kubernetes.io/tls"
    assert secret_data(api, SECRET) == {
        name: (generated / name).read_bytes() for name in ("tls.crt", "tls.key", "ca.crt")
    }
    ca_secret = stored_secret(api, CA_SECRET)
    assert ca_secret["type"] == "Opaque"
    assert secret_data(api, CA_SECRET) == {
        name: (generated / name).read_bytes() for name in ("ca.crt", "ca.key")
    }
    assert ca_bundles(api) == [(generated / "ca.crt").read_bytes()] * 2
    # A patch, not a replacement: every other field (labels, service, rules, policies) is untouched.
    after = copy.deepcopy(webhook_configuration(api))
    for entry in after["webhooks"]:
        del entry["clientConfig"]["caBundle"]
    after["metadata"].pop("resourceVersion")
    before["metadata"].pop("resourceVersion")
    assert after == before
    patches = [r for r in api.writes() if r.method == "PATCH"]
    assert [r.content_type for r in patches] == ["application/json-patch+json"]
    assert {op["op"] for op in patches[0].body} == {"test", "add"}
    assert not [r for r in api.requests if r.method == "PUT"]
    output = capsys.readouterr().out
    assert f"created Secret {NAMESPACE}/{SECRET}" in output
    assert f"wrote caBundle into 2 webhook(s) of MutatingWebhookConfiguration {CONFIG}" in output


def test_install_is_idempotent(
    api: FakeApiServer, kubeconfig: Path, generated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert install_cli(kubeconfig, generated) == 0
    writes = len(api.writes())
    capsys.readouterr()
    assert install_cli(kubeconfig, generated) == 0
    assert len(api.writes()) == writes
    assert "nothing written" in capsys.readouterr().out


def test_install_updates_only_changed_keys_and_keeps_foreign_data(
    api: FakeApiServer, kubeconfig: Path, generated: Path
) -> None:
    assert install_cli(kubeconfig, generated) == 0
    stored_secret(api, SECRET)["data"]["extra"] = base64.b64encode(b"keep").decode()
    stored_secret(api, SECRET)["metadata"]["annotations"] = {"a": "b"}
    main(["certs", "rotate", "--dir", str(generated), "--force"])
    api.requests.clear()
    assert install_cli(kubeconfig, generated) == 0
    (patch,) = api.writes()
    assert patch.path.endswith(f"/secrets/{SECRET}")
    assert sorted(op["path"] for op in patch.body) == ["/data/tls.crt", "/data/tls.key"]
    secret = stored_secret(api, SECRET)
    assert base64.b64decode(secret["data"]["extra"]) == b"keep"
    assert secret["metadata"]["annotations"] == {"a": "b"}
    assert secret_data(api, SECRET)["tls.crt"] == (generated / "tls.crt").read_bytes()


def test_missing_webhook_configuration_is_a_clear_error(
    fake_api: FakeApiServer, kubeconfig: Path, generated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert install_cli(kubeconfig, generated) == 1
    error = capsys.readouterr().err
    assert f"MutatingWebhookConfiguration {CONFIG} not found" in error
    assert "apply the manifests" in error
    assert not fake_api.writes()


@pytest.mark.parametrize(
    ("verb", "resource", "expected"),
    [
        (
            "get",
            "mutatingwebhookconfigurations",
            "forbidden to get MutatingWebhookConfiguration confidential-pods",
        ),
        (
            "patch",
            "mutatingwebhookconfigurations",
            "grant the verb 'patch' on 'mutatingwebhookconfigurations",
        ),
        ("get", "secrets", "grant the verb 'get' on 'secrets' in namespace confidential-pods"),
        ("create", "secrets", "forbidden to create Secret confidential-pods/webhook-tls"),
    ],
)
def test_missing_permission_names_verb_and_resource(
    api: FakeApiServer,
    kubeconfig: Path,
    generated: Path,
    capsys: pytest.CaptureFixture[str],
    verb: str,
    resource: str,
    expected: str,
) -> None:
    api.denied.add((verb, resource))
    assert install_cli(kubeconfig, generated) == 1
    error = capsys.readouterr().err
    assert expected in error
    assert f"cannot {verb} resource" in error  # the apiserver's own words are passed on


def test_patch_permission_on_existing_secret(
    api: FakeApiServer, kubeconfig: Path, generated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert install_cli(kubeconfig, generated) == 0
    main(["certs", "rotate", "--dir", str(generated), "--force"])
    api.denied.add(("patch", "secrets"))
    assert install_cli(kubeconfig, generated) == 1
    assert "grant the verb 'patch' on 'secrets' in namespace confidential-pods" in capsys.readouterr().err


def test_secret_of_another_type_is_refused(
    api: FakeApiServer, kubeconfig: Path, generated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api.put(
        "Secret",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": SECRET, "namespace": NAMESPACE},
            "type": "Opaque",
            "data": {},
        },
    )
    assert install_cli(kubeconfig, generated) == 1
    assert "exists with type 'Opaque'" in capsys.readouterr().err


def test_install_refuses_material_that_does_not_verify(
    api: FakeApiServer, kubeconfig: Path, generated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other"
    generate(other, NAMES, now=datetime.now(UTC))
    (generated / "ca.crt").write_bytes((other / "ca.crt").read_bytes())
    (generated / "ca.key").unlink()
    assert install_cli(kubeconfig, generated) == 1
    assert "refusing to install" in capsys.readouterr().err
    assert not api.writes()


def test_install_refuses_to_distrust_what_is_served(
    api: FakeApiServer, kubeconfig: Path, generated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert install_cli(kubeconfig, generated) == 0
    served_before = served(api)
    assert (
        main(["certs", "generate", "--service", "s", "--namespace", "n", "--out", str(generated), "--force"])
        == 0
    )
    api.requests.clear()
    capsys.readouterr()
    assert install_cli(kubeconfig, generated) == 1
    error = capsys.readouterr().err
    assert (
        f"the webhook serves serial {served_before.serial_number:x} from a CA the new bundle does not trust"
        in error
    )
    assert "Use `certs rotate`" in error
    assert not api.writes() and served(api) == served_before
    assert install_cli(kubeconfig, generated, "--force") == 0
    assert served(api) != served_before


def test_install_without_ca_key(
    api: FakeApiServer, kubeconfig: Path, generated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (generated / "ca.key").unlink()
    assert install_cli(kubeconfig, generated) == 0
    assert f"{NAMESPACE}/{CA_SECRET}" not in api.objects["Secret"]
    assert "in-cluster rotation needs it" in capsys.readouterr().out


# --- in-cluster rotation (the CronJob) -----------------------------------------------------------------


def served(api: FakeApiServer) -> x509.Certificate:
    return x509.load_pem_x509_certificate(secret_data(api, SECRET)["tls.crt"])


def test_cluster_rotation_with_injected_clock(api: FakeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    out = tmp_path / "certs"
    generate(out, NAMES, now=NOW, lifetimes=Lifetimes(ca_days=400, serving_days=100))
    cluster = Cluster(connect(str(kubeconfig)))
    from certs.operations import install

    install(cluster, TARGET, out, now=NOW)
    old_ca = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())

    # Day 50: nothing due, nothing written.
    api.requests.clear()
    outcome = rotate_cluster(cluster, TARGET, now=NOW + timedelta(days=50))
    assert outcome.written == () and not api.writes()

    # Day 80: serving certificate within 30 days of its end: renewed from the same CA, bundle untouched.
    first = served(api)
    outcome = rotate_cluster(cluster, TARGET, now=NOW + timedelta(days=80))
    assert outcome.written == (f"updated Secret {NAMESPACE}/{SECRET} (tls.crt, tls.key)",)
    assert served(api).serial_number != first.serial_number and issued_by(served(api), old_ca)
    assert ca_bundles(api) == [(out / "ca.crt").read_bytes()] * 2

    # Day 380: the CA is within the window. Phase 1 publishes old+new CA, the served certificate stays.
    day380 = NOW + timedelta(days=380)
    before = served(api)
    phase1 = rotate_cluster(cluster, TARGET, now=day380)
    assert phase1.pending
    bundles = ca_bundles(api)
    assert bundles[0] == bundles[1] and bundles[0].count(b"BEGIN CERTIFICATE") == 2
    trusted = x509.load_pem_x509_certificates(bundles[0])
    assert trusted[0] == old_ca
    new_ca = trusted[1]
    assert served(api) == before
    assert secret_data(api, SECRET)["ca.crt"] == bundles[0]
    assert x509.load_pem_x509_certificate(secret_data(api, CA_SECRET)["ca.crt"]) == new_ca

    # Phase 2 (next CronJob run): the new CA is in every caBundle, so the serving certificate moves to it.
    api.requests.clear()
    phase2 = rotate_cluster(cluster, TARGET, now=day380 + timedelta(hours=1))
    assert not phase2.pending
    assert issued_by(served(api), new_ca)
    assert [r.path.rsplit("/", 1)[-1] for r in api.writes()] == [SECRET]

    # After the old CA expired it is pruned everywhere.
    after = old_ca.not_valid_after_utc + timedelta(minutes=1)
    rotate_cluster(cluster, TARGET, now=after)
    assert [fingerprint(c) for c in x509.load_pem_x509_certificates(ca_bundles(api)[0])] == [
        fingerprint(new_ca)
    ]
    assert x509.load_pem_x509_certificates(secret_data(api, SECRET)["ca.crt"]) == [new_ca]


def test_phase_two_waits_for_every_webhook_entry(
    api: FakeApiServer, kubeconfig: Path, tmp_path: Path
) -> None:
    out = tmp_path / "certs"
    generate(out, NAMES, now=NOW)
    cluster = Cluster(connect(str(kubeconfig)))
    from certs.operations import install

    install(cluster, TARGET, out, now=NOW)
    rotate_cluster(cluster, TARGET, now=NOW, rotate_ca=True)
    # Someone (an older installer) resets one entry's caBundle to the old CA only.
    webhook_configuration(api)["webhooks"][1]["clientConfig"]["caBundle"] = base64.b64encode(
        (out / "ca.crt").read_bytes()
    ).decode()
    before = served(api)
    outcome = rotate_cluster(cluster, TARGET, now=NOW)
    assert outcome.pending and served(api) == before  # not yet: entry 1 did not trust the new CA
    assert ca_bundles(api)[0] == ca_bundles(api)[1]  # but the bundle was published again
    outcome = rotate_cluster(cluster, TARGET, now=NOW)
    assert not outcome.pending and served(api) != before


def test_rotate_cli_in_cluster_mode(
    api: FakeApiServer, kubeconfig: Path, generated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert install_cli(kubeconfig, generated) == 0
    args = ["certs", "rotate", "--secret", SECRET, "--webhook-config", CONFIG, "--namespace", NAMESPACE]
    args += ["--kubeconfig", str(kubeconfig), "--renew-before", "30d"]
    capsys.readouterr()
    assert main(args) == 0
    assert "nothing written" in capsys.readouterr().out
    assert main([*args, "--force"]) == 0
    assert f"updated Secret {NAMESPACE}/{SECRET} (tls.crt, tls.key)" in capsys.readouterr().out
    assert main([*args, "--rotate-ca"]) == 0
    assert main(args) == 0
    bundle = x509.load_pem_x509_certificates(ca_bundles(api)[0])
    assert len(bundle) == 2 and issued_by(served(api), bundle[1])


def test_first_in_cluster_run_creates_everything_then_is_idempotent(
    api: FakeApiServer, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["certs", "rotate", "--secret", SECRET, "--webhook-config", CONFIG, "--namespace", NAMESPACE]
    args += ["--kubeconfig", str(kubeconfig)]
    assert main(args) == 1  # no Secret and no names: nothing to issue for
    assert "pass --service" in capsys.readouterr().err
    assert not api.writes()
    assert main([*args, "--service", "confidential-pods-webhook", "--san", "127.0.0.1"]) == 0
    assert [(r.method, r.path.rsplit("/", 1)[-1]) for r in api.writes()] == [
        ("POST", "secrets"),
        ("PATCH", CONFIG),
        ("POST", "secrets"),
    ]
    bundle = x509.load_pem_x509_certificates(ca_bundles(api)[0])
    assert len(bundle) == 1 and issued_by(served(api), bundle[0])
    san = served(api).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == list(NAMES[:-1])
    assert x509.load_pem_x509_certificate(secret_data(api, CA_SECRET)["ca.crt"]) == bundle[0]
    api.requests.clear()
    capsys.readouterr()
    assert main([*args, "--service", "confidential-pods-webhook", "--san", "127.0.0.1"]) == 0
    assert main(args) == 0
    assert not api.writes()


def test_material_installed_without_its_ca_key_is_adopted_in_two_phases(
    api: FakeApiServer, kubeconfig: Path, generated: Path
) -> None:
    assert install_cli(kubeconfig, generated, "--no-ca-secret") == 0
    assert f"{NAMESPACE}/{CA_SECRET}" not in api.objects["Secret"]
    first = served(api)
    cluster = Cluster(connect(str(kubeconfig)))
    now = datetime.now(UTC)
    phase1 = rotate_cluster(cluster, TARGET, now=now)
    assert phase1.pending and served(api) == first
    bundle = x509.load_pem_x509_certificates(ca_bundles(api)[0])
    assert len(bundle) == 2 and issued_by(first, bundle[0])
    phase2 = rotate_cluster(cluster, TARGET, now=now)
    assert not phase2.pending and issued_by(served(api), bundle[1])
