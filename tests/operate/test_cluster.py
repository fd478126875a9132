"""``operate/cluster.py`` reading the scheduler configuration: the ConfigMap the ``confidential-scheduler``
Deployment mounts as ``scheduler-config``, through a fake :class:`~operate.cluster.Reader` that answers the
client calls by name (tests/fakeapi.py knows no Deployments or ConfigMaps; tests/e2e/test_doctor.py reads them
from the real kube-apiserver). What the API server refuses, what is missing and what is hostile each become
the ``unreadable`` entry the check reports, never a traceback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from operate.cluster import Reader, Unreadable, gather, read_scheduler_configuration
from operate.schedulermode import scheduler_mode
from tests.operate.test_doctor import NATIVE, REPO, SETTINGS

NAMESPACE = "confidential-pods"
CONFIG_MAP = "confidential-scheduler-config-5h2k7"
NATIVE_TEXT = (REPO / "manifests/overlays/alibaba/scheduler-config.yaml").read_text()


class _Api:
    """A client API whose every method is a named stand-in: the fake reader answers by the name."""

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def call(*args: Any, **query: Any) -> Any:
            raise AssertionError(f"{name} called directly: reads go through Reader.get/items")

        call.__name__ = name
        return call


class FakeReader:
    """:class:`Reader`'s ``get`` and ``items`` over stored answers, keyed by (method name, *arguments); an
    exception as the answer is raised, as the real reader raises :class:`Unreadable`."""

    def __init__(self, answers: dict[tuple[str, ...], Any]) -> None:
        self.host = "https://fake"
        self.answers = answers
        self.core = self.apps = self.coordination = self.admission = _Api()

    def get(self, call: Callable[..., Any], *args: Any, **query: Any) -> Any:
        answer = self.answers.get((call.__name__, *args))
        if isinstance(answer, Exception):
            raise answer
        return answer

    def items(self, call: Callable[..., Any], *args: Any, **query: Any) -> Iterator[Any]:
        answer = self.answers.get((call.__name__, *args), [])
        if isinstance(answer, Exception):
            raise answer
        yield from answer


def scheduler_deployment(volumes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "spec": {"replicas": 2, "template": {"spec": {"volumes": volumes}}},
        "status": {"readyReplicas": 2},
    }


#: The volumes of manifests/base/scheduler.yaml as a build names them.
MOUNTED = [
    {"name": "config", "configMap": {"name": "confidential-pods-config-9m8f2"}},
    {"name": "scheduler-config", "configMap": {"name": CONFIG_MAP}},
    {"name": "tmp", "emptyDir": {}},
]


def answers(
    deployment: Any = None, config_map: Any = None, volumes: list[dict[str, Any]] = MOUNTED
) -> dict[tuple[str, ...], Any]:
    stored: dict[tuple[str, ...], Any] = {
        ("read_namespaced_deployment", "confidential-scheduler", NAMESPACE): deployment
        if deployment is not None
        else scheduler_deployment(volumes),
        ("read_namespaced_config_map", CONFIG_MAP, NAMESPACE): config_map,
    }
    return stored


def config_map(text: str) -> dict[str, Any]:
    return {"metadata": {"name": CONFIG_MAP, "namespace": NAMESPACE}, "data": {"config.yaml": text}}


def alias_bomb(levels: int = 9) -> str:
    """A 600-byte YAML whose aliases expand to 10**levels nodes."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, levels):
        lines.append(f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * 10)}]")
    return "\n".join(lines) + "\n"


def gathered(stored: dict[tuple[str, ...], Any]) -> Any:
    reader = cast(Reader, FakeReader(stored))
    return gather(reader, SETTINGS, NAMESPACE, now=datetime(2026, 12, 5, tzinfo=UTC))


def test_the_mounted_configuration_is_read_parsed_and_checked() -> None:
    facts = gathered(answers(config_map=config_map(NATIVE_TEXT)))
    assert facts.scheduler_configuration == NATIVE
    assert "scheduler configuration" not in facts.unreadable
    assert scheduler_mode(facts).message.startswith("native mode: ")


@pytest.mark.parametrize(
    ("stored", "why"),
    [
        pytest.param(
            answers(config_map=Unreadable('403 configmaps "x" is forbidden')),
            '403 configmaps "x" is forbidden',
            id="refused",
        ),
        pytest.param(
            answers(config_map=None),
            f"ConfigMap {NAMESPACE}/{CONFIG_MAP} (Deployment {NAMESPACE}/confidential-scheduler mounts it) "
            "does not exist",
            id="configmap-missing",
        ),
        pytest.param(
            answers(config_map=config_map(NATIVE_TEXT), volumes=MOUNTED[:1]),
            f"Deployment {NAMESPACE}/confidential-scheduler mounts no ConfigMap as 'scheduler-config'",
            id="no-volume",
        ),
        pytest.param(
            answers(volumes=[{"name": "scheduler-config", "emptyDir": {}}]),
            f"Deployment {NAMESPACE}/confidential-scheduler mounts no ConfigMap as 'scheduler-config'",
            id="volume-not-a-configmap",
        ),
        pytest.param(
            answers(config_map={"data": {"scheduler.yaml": NATIVE_TEXT}}),
            f"ConfigMap {NAMESPACE}/{CONFIG_MAP} has no config.yaml",
            id="no-config-yaml",
        ),
        pytest.param(
            answers(config_map=config_map("- a list\n")),
            f"ConfigMap {NAMESPACE}/{CONFIG_MAP} config.yaml is not a KubeSchedulerConfiguration",
            id="not-a-mapping",
        ),
        pytest.param(
            answers(config_map=config_map("profiles: [\n")),
            f"ConfigMap {NAMESPACE}/{CONFIG_MAP} config.yaml is not valid YAML or JSON",
            id="not-yaml",
        ),
        pytest.param(
            answers(config_map=config_map(alias_bomb())),
            "excessive aliasing",
            id="alias-bomb",
        ),
    ],
)
def test_what_cannot_be_read_is_recorded_for_the_check(stored: dict[tuple[str, ...], Any], why: str) -> None:
    facts = gathered(stored)  # the bomb is refused before it is built (built, it would not fit in memory)
    assert facts.scheduler_configuration is None
    assert why in facts.unreadable["scheduler configuration"], facts.unreadable
    finding = scheduler_mode(facts)
    assert finding.status == "fail" and why in finding.message


def test_without_the_deployment_nothing_is_read() -> None:
    stored: dict[tuple[str, ...], Any] = {
        ("read_namespaced_deployment", "confidential-scheduler", NAMESPACE): None
    }
    facts = gathered(stored)
    assert facts.deployments["confidential-scheduler"] is None
    assert facts.scheduler_configuration is None and "scheduler configuration" not in facts.unreadable
    assert scheduler_mode(facts).status == "ok"


def test_an_unreadable_deployment_is_not_followed() -> None:
    stored: dict[tuple[str, ...], Any] = {
        ("read_namespaced_deployment", "confidential-scheduler", NAMESPACE): Unreadable("403 forbidden"),
        ("read_namespaced_config_map", CONFIG_MAP, NAMESPACE): config_map(NATIVE_TEXT),
    }
    facts = gathered(stored)
    assert facts.unreadable["deployment confidential-scheduler"] == "403 forbidden"
    assert facts.scheduler_configuration is None and "scheduler configuration" not in facts.unreadable
    assert scheduler_mode(facts).message == "cannot check: deployment confidential-scheduler: 403 forbidden"


def test_the_reader_alone_returns_the_document() -> None:
    reader = cast(Reader, FakeReader(answers(config_map=config_map(NATIVE_TEXT))))
    document = read_scheduler_configuration(reader, scheduler_deployment(MOUNTED), NAMESPACE)
    assert document["extenders"][0]["filterVerb"] == "filter"
    with pytest.raises(Unreadable, match="mounts no ConfigMap"):
        read_scheduler_configuration(reader, {}, NAMESPACE)
