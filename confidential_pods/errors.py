"""Every error the product reports to a person, in one tree.

:class:`ConfidentialPodsError` is the base: what is raised as one of these carries a message written for
the person who can act on it (a pod author, a cluster operator) and is reported once, at the boundary
(an admission answer, an HTTP 400, one line on stderr with an exit code). Anything else that escapes is
a bug in this project, and is logged with its traceback.

The branches say who is at fault and how the boundary answers:

* :class:`MalformedInput` — the input is not what the interface takes (not JSON, nested too deeply,
  not an AdmissionReview, not a file of Kubernetes objects): HTTP 400, exit code 2.
* :class:`Refused` — the input is well formed but asks for something this product will not do (a pod
  whose annotations cannot be granted): an admission denial, exit code 1.
* :class:`QuantityError` — a value is not a Kubernetes quantity or not a usable amount; whoever reads
  it says which field it was in.
* :class:`ConfigError` — the configuration file is unusable: exit code 2 at start.
* :class:`ServingError` — a server cannot start (address, sizing, certificate): exit code 1.
* :class:`BindRefused` — the API server did not take a Binding.

``certs.errors.CertsError`` (the certificate commands' own tree) derives from the base as well.
"""

from __future__ import annotations


class ConfidentialPodsError(Exception):
    """Base of every error this project reports to a user; the message is what they read."""


class MalformedInput(ConfidentialPodsError, ValueError):
    """The input is not of the form the interface takes (HTTP 400, exit code 2)."""


class Refused(ConfidentialPodsError):
    """The input is well formed but asks for something that will not be granted (denial, exit 1)."""


class QuantityError(ConfidentialPodsError, ValueError):
    """A value is not a Kubernetes quantity, or not a usable amount; the message names the value."""


class ConfigError(ConfidentialPodsError, ValueError):
    """The configuration file is unreadable or a key has an unusable value; the message names the key."""


class ServingError(ConfidentialPodsError):
    """A server cannot start: bad sizing, bad credentials or an unusable address."""


class CertificateError(ServingError):
    """The certificate/key pair on disk cannot be served (unreadable, not PEM, not matching)."""


class BindRefused(ConfidentialPodsError):
    """The binder could not create the Binding (API error, pod gone, already bound)."""


def shown(value: object, limit: int = 40) -> str:
    """``repr`` of a user's value for a message, cut short: a message must stay small whatever was sent."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[: limit - 8]!r}… ({len(value)} characters)"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"a {value.bit_length()}-bit number"  # no str(): O(digits²), and refused past 4,300 digits
    text = repr(value)
    return text if len(text) <= limit + 8 else text[:limit] + "…"
