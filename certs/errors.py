"""What can go wrong with certificate material and with publishing it to a cluster."""

from __future__ import annotations

from confidential_pods.errors import ConfidentialPodsError


class CertsError(ConfidentialPodsError):
    """Base of every error the certs commands report to the user (exit code 1, message on stderr)."""


class DurationError(CertsError, ValueError):
    """A duration option is not of the form ``30d``, ``12h``, ``90m`` or ``45s``."""


class MaterialError(CertsError):
    """Certificate material is unreadable or inconsistent (a key that matches no certificate, a bad PEM)."""


class ClusterError(CertsError):
    """A Kubernetes API call failed for a reason other than a missing object or a missing permission."""


class ObjectMissingError(ClusterError):
    """An object the command needs (Secret, MutatingWebhookConfiguration) does not exist (HTTP 404)."""


class PermissionDeniedError(ClusterError):
    """The caller lacks an RBAC permission (HTTP 403); the message names the verb and resource needed."""
