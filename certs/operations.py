"""generate, install and rotate as functions: read the material, plan (pure core), write what changed.

The clock is a parameter (``now``) so tests can move time; the command line passes the real time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypedDict, Unpack

from cryptography import x509

from certs.authority import bundle_pem, certificate_pem, key_pem
from certs.cluster import Cluster
from certs.errors import MaterialError
from certs.inspection import distrust_problem, fingerprint, san_names, serving_problem
from certs.material import CA_CERT, CA_KEY, TLS_CERT, TLS_KEY, Material, from_files, to_files
from certs.objects import (
    CA_SECRET_TYPE,
    TLS_SECRET_TYPE,
    MutatingWebhookConfiguration,
    Secret,
    ca_bundle_patch,
    published_fingerprints,
    secret_files,
    webhook_bundles,
)
from certs.planning import Lifetimes, plan_generate, plan_rotation
from certs.storage import read_files, write_files


@dataclass(frozen=True)
class Outcome:
    """What a run decided (notes) and what it wrote (files or API objects)."""

    notes: tuple[str, ...]
    written: tuple[str, ...]
    pending: bool = False


# --- local directory ---------------------------------------------------------------------------------


class Generation(TypedDict, total=False):
    """What ``generate`` is asked beyond the names and the clock (keywords of :func:`plan_generate`)."""

    lifetimes: Lifetimes
    force: bool


def generate(
    directory: Path, names: Sequence[str], *, now: datetime, **options: Unpack[Generation]
) -> Outcome:
    """Make ``directory`` hold a valid CA, bundle and serving certificate for ``names``; keep what is
    valid."""
    files = read_files(directory)
    decoded = from_files(files, lenient=True)
    plan = plan_generate(decoded.material, names, now=now, **options)
    written = write_files(directory, to_files(plan.material), to_files(decoded.material))
    return Outcome((*decoded.notes, *plan.notes), tuple(written))


class Rotation(TypedDict, total=False):
    """What a rotation is asked for beyond the clock (the keywords of :func:`plan_rotation`)."""

    lifetimes: Lifetimes
    names: Sequence[str]
    force: bool
    rotate_ca: bool


def rotate_directory(directory: Path, *, now: datetime, **rotation: Unpack[Rotation]) -> Outcome:
    """Rotate the files of ``directory``. The ``ca.crt`` found at the start counts as published: a new CA
    added by this run signs the serving certificate only on the next run (after ``certs install``)."""
    files = read_files(directory)
    if CA_KEY not in files:
        raise MaterialError(f"{directory / CA_KEY} is missing: run `certs generate` first")
    material = from_files(files, lenient=False).material
    published = frozenset(fingerprint(ca) for ca in material.bundle)
    plan = plan_rotation(material, published=published, now=now, **rotation)
    written = write_files(directory, to_files(plan.material), to_files(material))
    return Outcome(plan.notes, tuple(written), plan.pending)


# --- cluster -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where the material lives in the cluster."""

    namespace: str
    secret: str
    webhook_configuration: str
    #: Opaque Secret with the CA key (for rotation in-cluster); None: do not store the CA key in the cluster.
    ca_secret: str | None


@dataclass(frozen=True)
class ClusterState:
    tls_secret: Secret | None
    ca_secret: Secret | None
    configuration: MutatingWebhookConfiguration


def read_state(cluster: Cluster, target: Target) -> ClusterState:
    configuration = cluster.read_webhook_configuration(target.webhook_configuration)
    tls_secret = cluster.read_secret(target.namespace, target.secret)
    ca_secret = cluster.read_secret(target.namespace, target.ca_secret) if target.ca_secret else None
    return ClusterState(tls_secret, ca_secret, configuration)


def publish(cluster: Cluster, target: Target, material: Material, state: ClusterState) -> list[str]:
    """Write the material: CA Secret, then the caBundle of every webhook, then the serving Secret.

    Trust before the certificate: a caBundle that gains a CA is in place before any certificate from that
    CA is written to the Secret the webhook pods mount.
    """
    if not material.bundle or material.serving is None:
        raise MaterialError("nothing to install: the bundle or the serving certificate is missing")
    written: list[str] = []
    if target.ca_secret and material.authority is not None:
        ca_files = {
            CA_CERT: certificate_pem(material.authority.certificate),
            CA_KEY: key_pem(material.authority.key),
        }
        done = cluster.ensure_secret(
            target.namespace, target.ca_secret, CA_SECRET_TYPE, ca_files, state.ca_secret
        )
        if done:
            written.append(done)
    bundle = bundle_pem(material.bundle)
    operations = ca_bundle_patch(state.configuration, bundle)
    if operations:
        cluster.patch_webhook_configuration(target.webhook_configuration, operations)
        entries = sum(1 for op in operations if op["path"].endswith("/caBundle"))
        written.append(
            f"wrote caBundle into {entries} webhook(s) of MutatingWebhookConfiguration "
            f"{target.webhook_configuration}"
        )
    files = to_files(material)
    tls_files = {name: files[name] for name in (TLS_CERT, TLS_KEY, CA_CERT)}
    done = cluster.ensure_secret(
        target.namespace, target.secret, TLS_SECRET_TYPE, tls_files, state.tls_secret
    )
    if done:
        written.append(done)
    return written


def served_certificate(secret: Secret | None) -> x509.Certificate | None:
    """The certificate in the serving Secret, if it holds a readable one."""
    data = secret_files(secret).get(TLS_CERT)
    try:
        return x509.load_pem_x509_certificates(data)[0] if data else None
    except ValueError:
        return None


def install(
    cluster: Cluster, target: Target, directory: Path, *, now: datetime, force: bool = False
) -> Outcome:
    """Upload ``directory``'s material: Secret(s) created or patched, caBundle into every webhook entry.

    Refuses (unless ``force``) a bundle that would stop trusting the certificate the webhook serves now —
    e.g. a stale directory after in-cluster rotations, or a re-keyed one: `certs rotate` does that safely.
    """
    files = read_files(directory)
    missing = [name for name in (CA_CERT, TLS_CERT, TLS_KEY) if name not in files]
    if missing:
        raise MaterialError(f"{directory}: missing {', '.join(missing)}: run `certs generate` first")
    material = from_files(files, lenient=False).material
    assert material.serving is not None
    problem = serving_problem(
        material.serving, material.bundle, san_names(material.serving.certificate), now, timedelta(0)
    )
    if problem:
        raise MaterialError(f"{directory}: refusing to install: {problem}")
    notes: list[str] = []
    if material.authority is None and target.ca_secret:
        notes.append(
            f"no {CA_KEY} in {directory}: the CA Secret is not written, in-cluster rotation needs it"
        )
    state = read_state(cluster, target)
    distrust = distrust_problem(
        served_certificate(state.tls_secret),
        [ca for bundle in webhook_bundles(state.configuration) for ca in bundle],
        material.bundle,
        now,
    )
    if distrust and not force:
        raise MaterialError(
            f"refusing to install {directory}: {distrust}. Use `certs rotate` (it keeps both CAs during "
            "the switch), or pass --force to accept the interruption"
        )
    if not state.configuration.get("webhooks"):
        notes.append(f"MutatingWebhookConfiguration {target.webhook_configuration} has no webhooks")
    written = publish(cluster, target, material, state)
    return Outcome(tuple(notes), tuple(written))


def rotate_cluster(
    cluster: Cluster, target: Target, *, now: datetime, **rotation: Unpack[Rotation]
) -> Outcome:
    """Rotate the material stored in the cluster (what the install Job and the CronJob run).

    The CA comes from the CA Secret, the bundle and serving certificate from the serving Secret; the CAs
    every webhook's caBundle already trusts count as published. Without a CA Secret a new CA is made
    (first run: with ``names``, everything is issued and installed at once), so one idempotent command
    both installs and rotates.
    """
    if not target.ca_secret:
        raise MaterialError("in-cluster rotation needs the CA Secret (--ca-secret)")
    state = read_state(cluster, target)
    ca_files = secret_files(state.ca_secret)
    tls_files = secret_files(state.tls_secret)
    files = {
        CA_CERT: tls_files.get(CA_CERT, b"") + ca_files.get(CA_CERT, b""),
        CA_KEY: ca_files.get(CA_KEY, b""),
        TLS_CERT: tls_files.get(TLS_CERT, b""),
        TLS_KEY: tls_files.get(TLS_KEY, b""),
    }
    material = from_files({name: data for name, data in files.items() if data}, lenient=False).material
    published = published_fingerprints(state.configuration)
    if published is None:  # no webhook entry: nobody to distrust the served certificate
        published = frozenset(fingerprint(ca) for ca in material.bundle)
    plan = plan_rotation(material, published=published, now=now, adopt=state.ca_secret is None, **rotation)
    written = publish(cluster, target, plan.material, state)
    return Outcome(plan.notes, tuple(written), plan.pending)
