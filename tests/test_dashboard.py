"""The Grafana dashboard (docs/dashboards/) and docs/metrics.md against what the servers really export.

Every PromQL expression of the dashboard (panels and the ``node`` variable) is read with a small tokenizer
for the metric names it selects and the label names it uses. The webhook and the extender apps are built
in-process as ``serve`` builds them — the extender fed by its real watch feed from the fake apiserver, both
exporting a serving certificate's expiry — and driven once through each verb, so that labelled series exist.
Then every name the dashboard queries must be a family of the right type in one of their ``/metrics``
pages (``X_bucket``: histogram ``X``; ``X_total``: counter ``X``), with the labels the query uses; and
docs/metrics.md must list exactly the families each server exports, with their types.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from confidential_pods.settings import settings_from_mapping
from confidential_pods.tlscontext import ReloadingContext
from extender.app import create_app as create_extender_app
from extender.serving import api_backend
from extender.watching import ASSIGNED_PODS
from tests.extender import scheduler_json as sj
from tests.extender.test_watching import node, pod, wait_until
from tests.fakeapi import serving
from tests.webhook.samples import CONFIDENTIAL, admission_review
from tests.webhook.samples import pod as webhook_pod
from tests.webhook.test_serving import write_pair
from tests.webhook.tls import issue_serving_pair, make_authority
from webhook.app import create_app as create_webhook_app
from webhook.metrics import WebhookMetrics

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "docs" / "dashboards" / "confidential-pods.json"
METRICS_DOC = REPO / "docs" / "metrics.md"

# ----------------------------------------------------------------- reading PromQL

#: Modifiers followed by a parenthesised list of label names.
GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
#: Aggregation operators, binary keyword operators, literals and modifiers: never a metric name
#: (PromQL keywords are case-insensitive).
KEYWORDS = (
    frozenset({"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk"})
    | {"topk", "quantile", "limitk", "limit_ratio", "and", "or", "unless", "atan2", "bool", "offset"}
    | {"inf", "nan"}
    | GROUPING
)
MATCH_OPERATORS = frozenset({"=", "!=", "=~", "!~"})

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    | (?P<range>\[[^\]]*\])                          # [5m], [$__rate_interval], subqueries [1h:5m]
    | (?P<variable>\$(?:\{\w+\}|\w+))                # Grafana's variables
    | (?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:ms|[smhdwy])*)
    | (?P<name>[A-Za-z_:][\w:]*)
    | (?P<operator>=~|!~|!=|==|<=|>=|[-+*/%^<>=,(){}@])
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Selector:
    """A metric name the query selects, and the label names its matchers use."""

    metric: str
    labels: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Query:
    selectors: tuple[Selector, ...]
    #: Label names in by/without/on/ignoring/group_left/group_right clauses.
    grouping: frozenset[str] = frozenset()


def tokens(expr: str) -> list[tuple[str, str]]:
    """(kind, text) of every token of ``expr``: string, range, variable, number, name or operator."""
    out, position, expr = [], 0, expr.rstrip()
    while position < len(expr):
        match = _TOKEN.match(expr, position)
        if match is None or match.lastgroup is None:
            raise ValueError(f"cannot read PromQL at {expr[position:]!r}")
        out.append((match.lastgroup, match.group(match.lastgroup)))
        position = match.end()
    return out


def read_query(expr: str) -> Query:
    """The selectors and grouping labels of a PromQL expression, or of Grafana's ``label_values(q, l)``."""
    variable = re.fullmatch(r"\s*label_values\((?P<query>.*),\s*(?P<label>\w+)\s*\)\s*", expr)
    if variable is not None:
        inner = read_query(variable["query"])
        (only,) = inner.selectors
        return Query((Selector(only.metric, only.labels | {variable["label"]}),))
    toks = tokens(expr)
    selectors: list[Selector] = []
    grouping: set[str] = set()
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        following = toks[i + 1][1] if i + 1 < len(toks) else ""
        if kind == "name" and text.lower() in GROUPING:
            labels, i = _label_list(toks, i + 1)
            grouping |= labels
        elif kind == "name" and text.lower() not in KEYWORDS and following != "(":  # a call otherwise
            labels, i = _matchers(toks, i + 1) if following == "{" else (frozenset(), i + 1)
            selectors.append(Selector(text, labels))
        elif (kind, text) == ("operator", "{"):
            raise ValueError(f"a selector without a metric name is not read: {expr!r}")
        else:
            i += 1
    return Query(tuple(selectors), frozenset(grouping))


def _label_list(toks: list[tuple[str, str]], i: int) -> tuple[frozenset[str], int]:
    """``(a, b)`` at ``i`` (optional after group_left/group_right): its names, and the index after it."""
    if i >= len(toks) or toks[i][1] != "(":
        return frozenset(), i
    end = next(j for j in range(i, len(toks)) if toks[j][1] == ")")
    return frozenset(text for kind, text in toks[i + 1 : end] if kind == "name"), end + 1


def _matchers(toks: list[tuple[str, str]], i: int) -> tuple[frozenset[str], int]:
    """``{a="x", b=~"y"}`` at ``i``: the label names matched, and the index after the brace."""
    end = next(j for j in range(i, len(toks)) if toks[j][1] == "}")
    inside = toks[i + 1 : end]
    names = {
        text
        for (kind, text), after in itertools.pairwise(inside)
        if kind == "name" and after[1] in MATCH_OPERATORS
    }
    return frozenset(names), end + 1


#: The sample names a family of each type answers to in PromQL (prometheus_client's exposition).
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}


def queryable(families: list[Metric]) -> dict[str, Metric]:
    """Every name PromQL can select → its family: a gauge by its name, a counter ``X`` only as ``X_total``,
    a histogram ``X`` only as ``X_bucket``/``X_sum``/``X_count``."""
    return {f.name + suffix: f for f in families for suffix in SUFFIXES.get(f.type, ("",))}


def sample_labels(family: Metric, name: str) -> set[str]:
    return {label for sample in family.samples if sample.name == name for label in sample.labels}


# ----------------------------------------------------------------- the tokenizer itself


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (
            'sum by (outcome) (rate(x_total{outcome="denied", endpoint=~"/m.*"}[5m]))',
            Query((Selector("x_total", frozenset({"outcome", "endpoint"})),), frozenset({"outcome"})),
        ),
        (
            "histogram_quantile(0.99, sum by (verb, le) (rate(h_bucket[$__rate_interval])))",
            Query((Selector("h_bucket"),), frozenset({"verb", "le"})),
        ),
        (
            "SUM(a:rate5m) / on (node) group_left (zone) b offset 5m > bool 1e3",
            Query((Selector("a:rate5m"), Selector("b")), frozenset({"node", "zone"})),
        ),
        ("(min(c) - time()) / 86400", Query((Selector("c"),))),
        (
            'max without (pod) (g{node=~"$node"}) or vector(0)',
            Query((Selector("g", frozenset({"node"})),), frozenset({"pod"})),
        ),
        ('label_replace(m, "dst", "$1", "src", "(sum) up")', Query((Selector("m"),))),
        (
            "max_over_time(d[1h:5m]) unless count(e) group_right f",
            Query((Selector("d"), Selector("e"), Selector("f"))),
        ),
        ("label_values(g{zone='a'}, node)", Query((Selector("g", frozenset({"zone", "node"})),))),
    ],
)
def test_reading_promql(expr: str, expected: Query) -> None:
    assert read_query(expr) == expected


@pytest.mark.parametrize("expr", ['{__name__="x"}', "rate(x[5m]) # comment", "x ? y"])
def test_what_the_reader_does_not_read_is_an_error(expr: str) -> None:
    with pytest.raises(ValueError):
        read_query(expr)


def test_names_resolve_only_to_a_family_of_the_matching_type() -> None:
    text = (
        '# TYPE c_total counter\nc_total 1\n# TYPE h histogram\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n'
        "# TYPE g gauge\ng 1\n"
    )
    names = queryable(list(text_string_to_metric_families(text)))
    assert {n: f.type for n, f in names.items()} == {
        "c_total": "counter",
        "h_bucket": "histogram",
        "h_sum": "histogram",
        "h_count": "histogram",
        "g": "gauge",
    }  # not c (a counter is queried as c_total), not h, not g_total or g_bucket


# ----------------------------------------------------------------- the dashboard


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def panels(container: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in container.get("panels", []):
        yield panel
        yield from panels(panel)  # a collapsed row keeps its panels inside


def expressions() -> list[tuple[str, str, str]]:
    """(where, PromQL, legend) of every query of the dashboard."""
    found = [
        (f"panel {p['title']!r} {t['refId']}", t["expr"], t.get("legendFormat", ""))
        for p in panels(dashboard())
        for t in p.get("targets", [])
    ]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            found.append((f"variable {variable['name']}", variable["query"]["query"], ""))
    return found


def test_dashboard_is_grafana_json_over_a_prometheus_datasource_variable() -> None:
    board = dashboard()
    assert board["schemaVersion"] == 39 and board["uid"] == "confidential-pods"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    node_variable = variables["node"]
    assert node_variable["query"]["query"] == node_variable["definition"]
    assert node_variable["definition"].startswith("label_values(confidential_pods_extender_node_epc_")
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids))
    for panel in panels(board):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        targets = panel["targets"]
        assert targets and len({t["refId"] for t in targets}) == len(targets), panel["title"]
        assert all(t["datasource"] == panel["datasource"] for t in targets), panel["title"]


@pytest.mark.parametrize(("where", "expr", "legend"), expressions(), ids=[e[0] for e in expressions()])
def test_legends_name_labels_the_query_keeps(where: str, expr: str, legend: str) -> None:
    kept = read_query(expr).grouping
    assert set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend)) <= kept, f"{where}: {legend!r} for {expr}"


# ----------------------------------------------------------------- the servers, in-process


@dataclass(frozen=True)
class Exported:
    """The families of each server's ``/metrics``."""

    webhook: list[Metric]
    extender: list[Metric]

    def everything(self) -> dict[str, Metric]:
        return queryable(self.webhook) | queryable(self.extender)


def webhook_metrics(tls: ReloadingContext) -> list[Metric]:
    metrics = WebhookMetrics()
    metrics.export_certificate_expiry(tls)
    settings = settings_from_mapping({"aesm": "host", "runtimeClass": "none"})
    client = create_webhook_app(settings, metrics=metrics).test_client()
    assert (
        client.post("/mutate", json=admission_review(webhook_pod(annotations=CONFIDENTIAL))).status_code
        == 200
    )
    return list(text_string_to_metric_families(client.get("/metrics").get_data(as_text=True)))


def extender_metrics(tls: ReloadingContext, directory: Path) -> list[Metric]:
    """The extender as ``serve`` builds it with an API server: the feed's counters in the app's registry."""
    settings = settings_from_mapping({})
    waiting = sj.pod("waiting", epc_mib=16)
    with serving() as api:
        api.put("Node", node("sgx-a", "93"))
        api.put("Node", node("sgx-b", "93"))
        api.put("Node", node("odd", "1e99999999"))  # unreadable: counted as no EPC
        api.put("Pod", pod("running", "sgx-b", "64"))
        api.put("Pod", {"kind": "Pod", "apiVersion": "v1", **waiting})
        api.fail_request("Pod", 500, ASSIGNED_PODS)  # one failed list: a watch error
        backend = api_backend(str(api.kubeconfig(directory)), settings)
        backend.metrics.export_certificate_expiry(tls)
        assert backend.feed is not None
        backend.feed.start()
        try:
            wait_until(backend.ready)
            app = create_extender_app(
                backend.ledger, settings, backend.binder, backend.ready, metrics=backend.metrics
            )
            client = app.test_client()
            names = ["sgx-a", "sgx-b", "odd"]
            assert client.post("/filter", json=sj.args_with_names(waiting, names)).status_code == 200
            assert client.post("/prioritize", json=sj.args_with_names(waiting, names)).status_code == 200
            assert client.post("/bind", json=sj.binding_args(waiting, "sgx-a")).get_json() == {"Error": ""}
            preemptor = sj.pod("critical", epc_mib=60)
            preemptor["spec"]["priority"] = 1000
            victims = {"sgx-b": {"Pods": [{"UID": "uid-running"}], "NumPDBViolations": 0}}
            preempt = {"Pod": preemptor, "NodeNameToVictims": None, "NodeNameToMetaVictims": victims}
            assert client.post("/preempt", json=preempt).status_code == 200
            assert client.post("/filter", data=b"not json").status_code == 400
            text = client.get("/metrics").get_data(as_text=True)
        finally:
            backend.feed.stop()
    return list(text_string_to_metric_families(text))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    directory = tmp_path_factory.mktemp("dashboard")
    cert, key = write_pair(directory / "tls", issue_serving_pair(make_authority()))
    tls = ReloadingContext(str(cert), str(key))
    return Exported(webhook=webhook_metrics(tls), extender=extender_metrics(tls, directory))


@pytest.mark.parametrize(("where", "expr", "legend"), expressions(), ids=[e[0] for e in expressions()])
def test_every_metric_the_dashboard_queries_is_exported(
    exported: Exported, where: str, expr: str, legend: str
) -> None:
    query = read_query(expr)
    assert query.selectors, f"{where}: no metric in {expr}"
    names = exported.everything()
    used: set[str] = set()
    for selector in query.selectors:
        family = names.get(selector.metric)
        assert family is not None, f"{where}: {selector.metric} is not exported (or not of that type)"
        labels = sample_labels(family, selector.metric)
        assert labels or not selector.labels, f"{where}: no {selector.metric} series to check labels on"
        assert selector.labels <= labels, f"{where}: {selector.metric} has labels {sorted(labels)}"
        used |= labels
    assert query.grouping <= used, (
        f"{where}: grouping by {sorted(query.grouping - used)}, not a label of {expr}"
    )


def test_the_dashboard_shows_every_area_it_promises() -> None:
    queried = {s.metric for _, expr, _ in expressions() for s in read_query(expr).selectors}
    for key in ("free", "used", "reserved", "nominated", "capacity"):
        assert f"confidential_pods_extender_node_epc_{key}_bytes" in queried
    assert {
        "confidential_pods_extender_request_duration_seconds_bucket",
        "confidential_pods_extender_requests_total",
        "confidential_pods_webhook_reviews_total",
        "confidential_pods_webhook_review_duration_seconds_bucket",
        "confidential_pods_extender_watch_relists_total",
        "confidential_pods_extender_watch_errors_total",
        "confidential_pods_extender_reservations_expired_total",
        "confidential_pods_extender_preemption_nodes_total",
        "confidential_pods_webhook_certificate_expiry_timestamp_seconds",
    } <= queried


# ----------------------------------------------------------------- docs/metrics.md


def documented(section: str) -> set[tuple[str, str]]:
    """(family name, type) of every table row of ``## <section>`` in docs/metrics.md.

    The document names counters as queried (``X_total``), histograms and gauges by the family name.
    """
    text = METRICS_DOC.read_text(encoding="utf-8")
    (body,) = re.findall(rf"^## {section}\b.*?(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    rows = re.findall(r"^\| `(\w+)` \| (\w+) \|", body, flags=re.MULTILINE)
    assert rows, f"no metric table under ## {section}"
    families = set()
    for name, kind in rows:
        if kind == "counter":
            assert name.endswith("_total"), f"docs/metrics.md: counter {name} without _total"
            name = name.removesuffix("_total")
        families.add((name, kind))
    return families


def own_families(families: list[Metric]) -> set[tuple[str, str]]:
    """(name, type) of each family, less the ``X_created`` gauges the text format adds for counters and
    histograms ``X`` (docs/metrics.md mentions them once, at the top)."""
    companions = {f"{f.name}_created" for f in families if f.type in ("counter", "histogram")}
    return {(f.name, f.type) for f in families if f.name not in companions}


@pytest.mark.parametrize("server", ["webhook", "extender"])
def test_docs_list_exactly_the_metrics_each_server_exports(exported: Exported, server: str) -> None:
    assert documented(server.capitalize()) == own_families(getattr(exported, server))
