"""Every value of the opt-in annotation reaches the webhook but ``"false"``, on a real kube-apiserver.

The ``pod.confidential-pods.io`` entry's CEL condition sends a pod in an ordinary namespace when it carries
``confidential-pods.io/confidential`` with any value but ``"false"``: ``"true"`` is injected and any other
value is refused with the webhook's own message, as in an ``enabled`` namespace — never created unchanged
without a word, which is what a condition comparing with ``'true'`` alone did. Runs once per overlay.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.e2e.kube import JSON, ApiError, Kube
from tests.e2e.product import Installation
from tests.e2e.test_webhook import CONFIDENTIAL, STATUS, app_pod, assert_not_mutated

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("value", ["True", "yes", "1", ""])
def test_a_misspelt_value_is_refused_with_the_webhooks_message(
    installation: Installation, kube: Kube, namespace: str, value: str
) -> None:
    before = installation.webhook.reviews(endpoint="/mutate")
    with pytest.raises(ApiError) as refused:
        kube.create(f"/api/v1/namespaces/{namespace}/pods", app_pod("misspelt", {CONFIDENTIAL: value}))
    assert refused.value.status == 403
    message = refused.value.message
    assert 'admission webhook "pod.confidential-pods.io" denied the request' in message, message
    assert f'annotation {CONFIDENTIAL}={value!r} is not valid: use "true" or "false"' in message, message
    assert installation.webhook.reviews(endpoint="/mutate") == before + 1  # the webhook answered it
    with pytest.raises(ApiError) as absent:
        kube.get(f"/api/v1/namespaces/{namespace}/pods/misspelt")
    assert absent.value.status == 404


def test_true_is_injected_and_false_or_no_annotation_is_never_sent(
    installation: Installation, namespace: str, pods: Callable[..., JSON]
) -> None:
    before = installation.webhook.reviews()
    opted_out = pods(app_pod("opted-out", {CONFIDENTIAL: "false"}))
    plain = pods(app_pod("plain"))
    for stored in (opted_out, plain):
        assert_not_mutated(stored)
    assert installation.webhook.reviews() == before  # not even sent
    assert pods(app_pod("opted-in", {CONFIDENTIAL: "true"}))["metadata"]["annotations"][STATUS]
    assert installation.webhook.reviews() == before + 1
