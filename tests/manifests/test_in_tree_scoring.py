"""The chart's ``scheduler.scoring: in-tree``: kube-scheduler scores EPC itself and the extender's prioritize
verb is gone (docs/extender.md "Scoring without the prioritize verb").

The rendered configuration must be the overlay's own with exactly the changes of
:func:`tests.manifests.building.in_tree_scoring` (which ``benchmarks/e2e_bench.py --in-tree-scoring`` and the
e2e test of it use too), for every overlay and both strategies, and the real kube-scheduler must load it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.manifests.building import KustomizeError, Manifest, helm_template, in_tree_scoring
from tests.manifests.test_scheduler import scheduler_configuration
from tests.manifests.test_scheduler_binary import _load, kube_scheduler  # noqa: F401 (a fixture)

REGION = "cn-hangzhou"
OVERLAYS = {
    "alibaba": [f"region={REGION}"],
    "azure": ["overlay=azure"],
    "intel": ["overlay=intel"],
    "base": ["overlay=base"],
}


def scheduler_config(objects: list[Manifest]) -> dict[str, Any]:
    (config_map,) = [
        o
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("confidential-scheduler-config-")
    ]
    config: dict[str, Any] = yaml.safe_load(config_map["data"]["config.yaml"])
    return config


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_in_tree_scoring_is_the_overlays_configuration_without_the_prioritize_verb(
    helm: str, built: dict[str, list[Manifest]], overlay: str
) -> None:
    values = OVERLAYS[overlay]
    shipped = scheduler_config(helm_template(helm, *values))
    assert shipped == scheduler_configuration(built[overlay])  # the chart's default: the overlay's file
    assert shipped["extenders"][0]["prioritizeVerb"] == "prioritize"

    in_tree = scheduler_config(helm_template(helm, *values, "scheduler.scoring=in-tree"))

    assert in_tree == in_tree_scoring(shipped)
    assert "prioritizeVerb" not in in_tree["extenders"][0]
    resource = shipped["extenders"][0]["managedResources"][0]["name"]
    for profile in in_tree["profiles"]:
        (fit,) = [p["args"] for p in profile["pluginConfig"] if p["name"] == "NodeResourcesFit"]
        assert fit["scoringStrategy"] == {
            "type": "LeastAllocated",
            "resources": [
                {"name": "cpu", "weight": 1},
                {"name": "memory", "weight": 1},
                {"name": resource, "weight": 3},
            ],
        }
    # Filtering is untouched: EPC is still left to the extender in the first profile alone.
    fits = [
        [
            p["args"].get("ignoredResources")
            for p in profile["pluginConfig"]
            if p["name"] == "NodeResourcesFit"
        ]
        for profile in in_tree["profiles"]
    ]
    assert fits == [[[resource]], [None]]


def test_the_configurations_strategy_is_kube_schedulers(helm: str) -> None:
    values = ["overlay=intel", "scheduler.scoring=in-tree", "config.scoringStrategy=MostAllocated"]
    shipped = scheduler_config(helm_template(helm, "overlay=intel"))

    assert scheduler_config(helm_template(helm, *values)) == in_tree_scoring(shipped, "MostAllocated")


def test_a_whole_configuration_given_is_used_as_it_is_and_not_scored_over(helm: str) -> None:
    given = "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n"
    objects = helm_template(helm, "overlay=intel", f"scheduler.config={given}")
    assert scheduler_config(objects) == yaml.safe_load(given)

    message = 'scheduler.scoring "in-tree" applies to the overlay\'s configuration: with scheduler.config set'
    with pytest.raises(KustomizeError, match=re.escape(message)):
        helm_template(helm, "overlay=intel", "scheduler.scoring=in-tree", f"scheduler.config={given}")


def test_an_unknown_scoring_fails_with_what_to_set(helm: str) -> None:
    message = 'scheduler.scoring "kube": must be extender (the prioritize verb) or in-tree'
    with pytest.raises(KustomizeError, match=re.escape(message)):
        helm_template(helm, "overlay=intel", "scheduler.scoring=kube")


@pytest.mark.parametrize("overlay", ["alibaba", "intel"])
def test_kube_scheduler_loads_it(helm: str, overlay: str, tmp_path: Path, kube_scheduler: Path) -> None:  # noqa: F811
    configuration = scheduler_config(helm_template(helm, *OVERLAYS[overlay], "scheduler.scoring=in-tree"))

    result = _load(kube_scheduler, configuration, tmp_path)

    assert result.returncode == 0, result.stderr
    effective = yaml.safe_load((tmp_path / "out.yaml").read_text(encoding="utf-8"))
    assert "prioritizeVerb" not in effective["extenders"][0]
    for profile in effective["profiles"]:
        (fit,) = [c["args"] for c in profile["pluginConfig"] if c["name"] == "NodeResourcesFit"]
        assert fit["scoringStrategy"]["resources"][-1]["weight"] == 3
