"""The chart's ``scheduler.mode``: ``native`` renders the overlay's scheduler configuration, ``ledger`` the
configuration the ledger-mode component of its profile puts in (docs/extender.md "Modes"), for every overlay;
the configuration key ``scoringStrategy`` becomes NodeResourcesFit's scoring type in native mode; the real
kube-scheduler loads what the chart renders.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from extender.modes import classify
from tests.manifests.building import CHART_VALUES, NAMESPACE, KustomizeError, Manifest, helm_template
from tests.manifests.test_scheduler import scheduler_configuration
from tests.manifests.test_scheduler_binary import _load, kube_scheduler  # noqa: F401 (a fixture)

OVERLAYS = CHART_VALUES
INTEL = CHART_VALUES["intel"]


def scheduler_config(objects: list[Manifest]) -> dict[str, Any]:
    (config_map,) = [
        o
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("confidential-scheduler-config-")
    ]
    config: dict[str, Any] = yaml.safe_load(config_map["data"]["config.yaml"])
    return config


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_each_mode_is_the_kustomize_builds(
    helm: str, built: dict[str, list[Manifest]], built_ledger: dict[str, list[Manifest]], overlay: str
) -> None:
    values = OVERLAYS[overlay]
    native = scheduler_config(helm_template(helm, *values))
    assert native == scheduler_configuration(built[overlay])  # the chart's default: the overlay's file
    assert native == scheduler_config(helm_template(helm, *values, "scheduler.mode=native"))
    ledger = scheduler_config(helm_template(helm, *values, "scheduler.mode=ledger"))
    assert ledger == scheduler_configuration(built_ledger[overlay])
    resource = native["extenders"][0]["managedResources"][0]["name"]
    assert classify(native, resource).mode == "native"
    assert classify(ledger, resource).mode == "ledger"


def test_the_configurations_strategy_is_kube_schedulers_in_native_mode(helm: str) -> None:
    shipped = scheduler_config(helm_template(helm, *INTEL))
    packing = scheduler_config(helm_template(helm, *INTEL, "config.scoringStrategy=MostAllocated"))

    (fit,) = packing["profiles"][0]["pluginConfig"]
    assert fit["args"]["scoringStrategy"]["type"] == "MostAllocated"
    fit["args"]["scoringStrategy"]["type"] = "LeastAllocated"
    assert packing == shipped  # nothing else changed
    # In ledger mode the key is the extender's prioritize strategy; kube-scheduler's is the file's.
    ledger = scheduler_config(
        helm_template(helm, *INTEL, "scheduler.mode=ledger", "config.scoringStrategy=MostAllocated")
    )
    assert ledger == scheduler_config(helm_template(helm, *INTEL, "scheduler.mode=ledger"))


def test_a_whole_configuration_given_is_used_as_it_is(helm: str) -> None:
    given = (
        "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nleaderElection:\n"
        f"  resourceNamespace: {NAMESPACE}\n  resourceName: confidential-scheduler\n"
    )
    for mode in ("native", "ledger"):
        objects = helm_template(helm, *INTEL, f"scheduler.mode={mode}", f"scheduler.config={given}")
        assert scheduler_config(objects) == yaml.safe_load(given)


def test_an_unknown_mode_fails_with_what_to_set(helm: str) -> None:
    message = "at '/scheduler/mode': value must be one of 'native', 'ledger'"  # values.schema.json
    with pytest.raises(KustomizeError, match=re.escape(message)):
        helm_template(helm, *INTEL, "scheduler.mode=ledgr")


@pytest.mark.parametrize("overlay", ["alibaba", "intel"])
def test_kube_scheduler_loads_the_packing_configuration(
    helm: str,
    overlay: str,
    tmp_path: Path,
    kube_scheduler: Path,  # noqa: F811
) -> None:
    configuration = scheduler_config(
        helm_template(helm, *OVERLAYS[overlay], "config.scoringStrategy=MostAllocated")
    )

    result = _load(kube_scheduler, configuration, tmp_path)

    assert result.returncode == 0, result.stderr
    effective = yaml.safe_load((tmp_path / "out.yaml").read_text(encoding="utf-8"))
    (profile,) = effective["profiles"]
    (fit,) = [c["args"] for c in profile["pluginConfig"] if c["name"] == "NodeResourcesFit"]
    assert fit["scoringStrategy"]["type"] == "MostAllocated"
    assert fit["scoringStrategy"]["resources"][-1]["weight"] == 3
