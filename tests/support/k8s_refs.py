"""Which Prometheus metrics the Kubernetes manifests and the Grafana dashboard name.

Read straight from the files under chorus/deploy/k8s/ (no kubectl needed), so any test can
compare them with
what the services really export: tests/integration/test_k8s.py against the services'
registries, a live-mesh test against a scrape. The names come out of the PromQL itself, parsed by
promql-parser, so a metric that is not prefixed chorus_ is caught as well, and a query that
Prometheus would reject fails here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import yaml

from tests.support import REPO

K8S = REPO / "chorus" / "deploy" / "k8s"
DASHBOARD = K8S / "base" / "grafana" / "chorus-dashboard.json"
KEDA_OBJECTS = K8S / "components" / "keda" / "scaledobjects.yaml"
HPA_OBJECTS = K8S / "components" / "hpa" / "hpa.yaml"
ADAPTER_VALUES = K8S / "components" / "hpa" / "prometheus-adapter-values.yaml"
ALERTS = K8S / "base" / "alerts.yaml"

_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<expr>.*?)(?:,\s*[a-zA-Z_]\w*)?\)\s*$", re.S)
_GRAFANA_RANGES = re.compile(r"\$\{?__(?:rate_interval|interval|range)\}?")
_EQUAL = promql_parser.MatchOp.Equal
_ADAPTER_TEMPLATES = {"<<.LabelMatchers>>": 'namespace="chorus"', "<<.GroupBy>>": "pod"}


def fill_adapter_templates(expr: str) -> str:
    """An adapter rule's query as prometheus-adapter sends it for the namespace `chorus`,
    grouped by pod."""
    for template, value in _ADAPTER_TEMPLATES.items():
        expr = expr.replace(template, value)
    return expr


def parse_promql(expr: str) -> promql_parser.Expr:
    """Parse as Prometheus would, after filling in what Grafana and prometheus-adapter
    substitute before sending a query (a range variable, the adapter's templates)."""
    text = _GRAFANA_RANGES.sub("1m", expr)
    for template, value in _ADAPTER_TEMPLATES.items():
        text = text.replace(template, value)
    try:
        return promql_parser.parse(text)
    except ValueError as exc:
        raise ValueError(f"not PromQL ({exc}): {expr}") from None


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (the parser's selectors, not a text scan)."""
    names: set[str] = set()

    def visit(node: promql_parser.Expr) -> None:
        if not isinstance(node, promql_parser.VectorSelector):
            return
        name = node.name or next(
            (m.value for m in node.matchers.matchers if m.name == "__name__" and m.op == _EQUAL),
            None,
        )
        if name:
            names.add(name)

    promql_parser.walk(parse_promql(expr), pre_visit=visit)
    return names


def promql_name_patterns(expr: str) -> set[str]:
    """The `__name__=~"…"` regular expressions an expression selects metrics by (a Grafana
    variable over several services' metrics, say), anchored as Prometheus anchors them."""
    patterns: set[str] = set()

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            patterns.update(
                f"^(?:{m.value})$"
                for m in node.matchers.matchers
                if m.name == "__name__" and m.op == promql_parser.MatchOp.Re
            )

    promql_parser.walk(parse_promql(expr), pre_visit=visit)
    return patterns


def _walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _walk_panels(panel.get("panels", []))


def load_dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_queries() -> list[str]:
    """Every PromQL expression in the dashboard: panel targets and query variables."""
    dashboard = load_dashboard()
    queries = [
        target["expr"]
        for panel in _walk_panels(dashboard.get("panels", []))
        for target in panel.get("targets", [])
        if target.get("expr")
    ]
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var.get("query")
        raw = query.get("query", "") if isinstance(query, dict) else str(query or "")
        for text in (raw, var.get("definition", "")):
            match = _LABEL_VALUES.match(text)
            if match:
                queries.append(match.group("expr"))
            elif text:
                queries.append(text)
    return queries


def dashboard_variable_selector(variable: dict[str, Any]) -> str:
    """The series selector of a query variable's `label_values(selector, label)`, which
    Grafana sends to Prometheus' series API."""
    query = variable.get("query")
    raw = query.get("query", "") if isinstance(query, dict) else str(query or "")
    match = _LABEL_VALUES.match(raw)
    if match is None:
        raise ValueError(f"variable {variable.get('name')}: not label_values(...): {raw}")
    return match.group("expr")


def _yaml_objects(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def scaled_objects() -> list[dict[str, Any]]:
    return _yaml_objects(KEDA_OBJECTS)


def keda_queries() -> list[str]:
    return [
        trigger["metadata"]["query"]
        for obj in scaled_objects()
        for trigger in obj["spec"]["triggers"]
        if trigger["type"] == "prometheus"
    ]


def adapter_values() -> dict[str, Any]:
    """The Helm values snippet for the prometheus-adapter chart."""
    values: dict[str, Any] = yaml.safe_load(ADAPTER_VALUES.read_text())
    return values


def adapter_config() -> dict[str, Any]:
    """The adapter's own config as the chart writes it from the values: rules.custom as
    `rules`, rules.external as `externalRules`."""
    rules = adapter_values()["rules"]
    return {"rules": rules.get("custom") or [], "externalRules": rules.get("external") or []}


def _adapter_rules() -> Iterator[tuple[str, dict[str, Any]]]:
    config = adapter_config()
    for section in ("rules", "externalRules", "resourceRules"):
        for rule in config.get(section) or []:
            if isinstance(rule, dict) and "seriesQuery" in rule:
                yield section, rule


def adapter_queries() -> list[str]:
    """seriesQuery and metricsQuery of every rule, with the adapter's templates filled in."""
    queries = []
    for _section, rule in _adapter_rules():
        series = rule["seriesQuery"]
        queries.append(series)
        (name,) = promql_metric_names(series)
        queries.append(rule["metricsQuery"].replace("<<.Series>>", name))
    return queries


def adapter_exposed_names() -> dict[str, set[str]]:
    """The metric names prometheus-adapter serves: "custom" (Pods) and "external" metrics."""
    exposed: dict[str, set[str]] = {"custom": set(), "external": set()}
    for section, rule in _adapter_rules():
        (series,) = promql_metric_names(rule["seriesQuery"])
        naming = rule.get("name") or {}
        name = re.sub(naming.get("matches", "^(.*)$"), naming.get("as", r"\1"), series)
        exposed["external" if section == "externalRules" else "custom"].add(name)
    return exposed


def hpa_objects() -> list[dict[str, Any]]:
    return _yaml_objects(HPA_OBJECTS)


def hpa_metric_names() -> dict[str, set[str]]:
    """The metric names the HPAs ask for, by metric source type ("Pods", "External")."""
    wanted: dict[str, set[str]] = {}
    for hpa in hpa_objects():
        for metric in hpa["spec"].get("metrics", []):
            kind = metric["type"]
            source = metric[kind[0].lower() + kind[1:]]
            if "metric" in source:
                wanted.setdefault(kind, set()).add(source["metric"]["name"])
    return wanted


def referenced_metric_names() -> set[str]:
    """Every Prometheus metric the dashboard, the KEDA queries and the adapter rules read."""
    names: set[str] = set()
    for expr in [*dashboard_queries(), *keda_queries(), *adapter_queries()]:
        names |= promql_metric_names(expr)
    return names


def referenced_name_patterns() -> set[str]:
    """Every `__name__` regular expression the dashboard, KEDA and adapter queries use."""
    patterns: set[str] = set()
    for expr in [*dashboard_queries(), *keda_queries(), *adapter_queries()]:
        patterns |= promql_name_patterns(expr)
    return patterns


def prometheus_rule() -> dict[str, Any]:
    """The PrometheusRule of the alerts (and the recording rules they read)."""
    (rule,) = _yaml_objects(ALERTS)
    return rule


def rule_groups() -> list[dict[str, Any]]:
    """The rule groups as a Prometheus rule file (`groups:`) holds them."""
    groups: list[dict[str, Any]] = prometheus_rule()["spec"]["groups"]
    return groups


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in rule_groups() for r in g["rules"] if "alert" in r]


def recording_rules() -> list[dict[str, Any]]:
    return [r for g in rule_groups() for r in g["rules"] if "record" in r]
