"""``/filter`` in each scheduling mode (extender/modes.py): in native mode kube-scheduler's NodeResourcesFit
counts EPC, so the extender's filter leaves EPC to it; in ledger mode, or without a configuration to read, or
with one that contradicts its mode, the filter counts EPC itself. The mode comes from kube-scheduler's own
configuration file (``extender serve --scheduler-config``), read once at start-up."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from confidential_pods.errors import ServingError
from confidential_pods.quantities import MiB
from confidential_pods.settings import Settings
from extender.binding import MemoryBinder
from extender.modes import filter_counts_epc
from extender.podepc import PodEpc
from extender.serving import scheduling_mode
from extender.verbs import Verbs
from extender.wire import Candidates
from tests.commands import cli
from tests.extender import scheduler_json as sj
from tests.extender.ledgers import ledger_of
from tests.manifests.building import MANIFESTS

NATIVE = MANIFESTS / "overlays" / "alibaba" / "scheduler-config.yaml"
LEDGER = MANIFESTS / "components" / "ledger-mode" / "alibaba" / "scheduler-config.yaml"


def verbs(counts_epc: bool) -> Verbs:
    """A ledger whose one SGX node is full as the extender's watch last saw it (a pod kube-scheduler has just
    seen deleted still counted)."""
    ledger = ledger_of({"full": 93 * MiB, "roomy": 93 * MiB}, [PodEpc("u1", "ns", "gone", "full", 64 * MiB)])
    return Verbs(ledger, Settings(), MemoryBinder(), clock=lambda: 0.0, counts_epc=counts_epc)


def filtered(counts_epc: bool) -> tuple[list[str], dict[str, str]]:
    answer = verbs(counts_epc).filter(Candidates(pod=sj.pod(epc_mib=64), names=("full", "roomy")))
    return answer.body["NodeNames"], answer.body["FailedNodes"]


def test_native_mode_leaves_epc_to_kube_scheduler() -> None:
    assert filtered(counts_epc=False) == (["full", "roomy"], {})


def test_ledger_mode_counts_epc_itself() -> None:
    passed, failed = filtered(counts_epc=True)
    assert passed == ["roomy"]
    assert failed == {"full": "insufficient SGX EPC: pod requests 64Mi, node has 29Mi free of 93Mi"}


def test_an_unreadable_request_is_refused_in_both_modes() -> None:
    pod = sj.pod(epc_mib=64)
    pod["spec"]["containers"][0]["resources"]["requests"][sj.RESOURCE] = "1e99999999"
    for counts_epc in (False, True):
        answer = verbs(counts_epc).filter(Candidates(pod=pod, names=("roomy",)))
        assert answer.body["NodeNames"] == []
        assert "cannot be read" in answer.body["FailedAndUnresolvableNodes"]["roomy"]


@pytest.mark.parametrize(
    ("path", "mode", "counts"),
    [(NATIVE, "native", False), (LEDGER, "ledger", True)],
)
def test_the_mode_is_read_from_kube_schedulers_configuration(path: Path, mode: str, counts: bool) -> None:
    report = scheduling_mode(str(path), Settings())
    assert (report.mode, report.problems) == (mode, ())
    assert filter_counts_epc(report) is counts


def test_a_native_configuration_that_contradicts_itself_keeps_the_count(tmp_path: Path) -> None:
    """NodeResourcesFit told to ignore EPC, no bind verb: nothing would count it, so the filter does."""
    config = yaml.safe_load(NATIVE.read_text())
    config["profiles"][0]["pluginConfig"][0]["args"]["ignoredResources"] = [sj.RESOURCE]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    report = scheduling_mode(str(path), Settings())
    assert report.mode == "native" and len(report.problems) == 1, report
    assert filter_counts_epc(report) is True
    assert filter_counts_epc(None) is True  # no configuration given: the safe side


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: Pod\n", "not a KubeSchedulerConfiguration"),
        ("a: &a [*a]\n", "--scheduler-config: .*recursive YAML alias"),
        ("- 1\n- 2\n", "not a KubeSchedulerConfiguration"),
    ],
)
def test_a_file_that_is_not_a_configuration_is_one_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ServingError, match=message):
        scheduling_mode(str(path), Settings())


def test_serve_refuses_to_start_on_a_missing_file_in_one_line(tmp_path: Path) -> None:
    snapshot = tmp_path / "cluster.yaml"
    snapshot.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": []}))
    missing = tmp_path / "nowhere.yaml"
    result = subprocess.run(
        cli(
            "extender",
            "serve",
            "--snapshot",
            str(snapshot),
            "--port",
            "0",
            "--scheduler-config",
            str(missing),
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    expected = "confidential-pods extender serve: --scheduler-config: cannot read scheduler configuration"
    assert lines == [f"{expected} {missing}: No such file or directory"], result.stderr
