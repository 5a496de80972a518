"""A real Prometheus scrapes a live mesh, and every query in chorus/deploy/k8s/ meets it.

Debian's `prometheus` (.ci/run installs it where apt works; without it these tests skip and
say so) scrapes each service of a mesh every second, with the labels the Prometheus Operator
adds from the ServiceMonitor (namespace, pod, service, container, endpoint, job), and loads the
PrometheusRule's rules. Through its HTTP API:

- idle: every KEDA trigger and prometheus-adapter query returns series of value 0, the
  dashboard's `$namespace` resolves, no dashboard query answers NaN, and no alert is pending;
- under load: every dashboard query returns data, none empty, none NaN (GPU panels only where
  a model runs on CUDA);
- KEDA's and the HPA's formulas (chorus/planner/autoscale.py) applied to what Prometheus
  returns give more replicas under load and the minimum back at idle.

One mesh (forest slowed to 40 ms, so load queues on it) and one Prometheus serve every test
but the last: the ScaledObject `chorus k8s render --group` writes for a co-hosted group, whose
query Prometheus answers from a live group (its members slowed to 20 ms) and its router.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from chorus.cli.k8s import render
from chorus.client import TaskClient
from chorus.launch.mesh import Mesh
from chorus.launch.natsserver import NatsServer, free_port
from chorus.planner.autoscale import desired_replicas, prometheus_scaling
from tests.support import DEMO, k8s_refs

pytestmark = pytest.mark.timeout(300)
"""The mesh, Prometheus and the first scrapes come up in the first test's time."""

NAMESPACE = "chorus"
"""What the manifests' queries name (components/settings' default)."""
SLOW = "forest"
SCRAPE_S = 1
RATE_INTERVAL = "5s"
"""Grafana's $__rate_interval for a 1 s scrape: at least four scrapes."""
SCALED_WINDOW = "10s"
"""The autoscalers' 1 m windows, shortened for the formula tests to fit a 1 s scrape and a
test's minutes: the same query shape over ten scrapes."""
GPU_METRICS = ("chorus_model_gpu_",)
"""Panels that only a model on CUDA feeds (NVML)."""
LOAD_CLIENTS = 16
LOAD_S = 18.0
GROUP = "digits"
GROUP_MEMBERS = ["logreg", "forest", "mlp"]


Vector = list[dict[str, Any]]


@dataclass
class Prom:
    url: str

    def query(self, expr: str) -> Vector:
        """An instant query's result vector (scalars come back as one unlabelled sample)."""
        data = urllib.parse.urlencode({"query": expr}).encode()
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/query", data=data, timeout=10) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"Prometheus refused {expr}: {exc.read().decode()}") from None
        assert body["status"] == "success", f"{expr}: {body}"
        result = body["data"]
        if result["resultType"] == "scalar":
            return [{"metric": {}, "value": result["result"]}]
        vector: Vector = result["result"]
        return vector

    def values(self, expr: str) -> list[float]:
        return [float(s["value"][1]) for s in self.query(expr)]

    def one(self, expr: str) -> float:
        found = self.values(expr)
        assert len(found) == 1, f"{expr}: expected one sample, got {found}"
        return found[0]


def _operator_labels(name: str) -> dict[str, str]:
    """What the Prometheus Operator puts on a target of the ServiceMonitor: the pod's and
    Service's names as the manifests make them (chorus-router, chorus-model-<name>, ...)."""
    service = f"chorus-model-{name}" if name in DEMO else f"chorus-{name}"
    return {
        "namespace": NAMESPACE,
        "pod": f"{service}-0",
        "service": service,
        "container": "model" if name in DEMO else name,
        "endpoint": "metrics",
        "job": service,
    }


def _config(mesh: Mesh, rules: Path) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": f"{SCRAPE_S}s", "evaluation_interval": f"{SCRAPE_S}s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                "job_name": "chorus",
                "scrape_interval": f"{SCRAPE_S}s",
                "scrape_timeout": f"{SCRAPE_S}s",
                "static_configs": [
                    {"targets": [str(c.ready["metrics"])], "labels": _operator_labels(c.name)}
                    for c in mesh.children
                ],
            }
        ],
    }


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        pytest.skip("prometheus is not on PATH (Debian package prometheus; .ci/run installs it)")
    return found


@pytest.fixture(scope="module")
def observed(
    prometheus_binary: str, model_repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Mesh, Prom]]:
    tmp = tmp_path_factory.mktemp("prometheus")
    with (
        NatsServer(tmp / "js") as server,
        Mesh(
            model_repo, tmp / "mesh", models=DEMO, nats_url=server.url,
            model_args={SLOW: ["--delay-ms", "40"]},
        ) as mesh,
        _scraping(prometheus_binary, mesh, tmp, f'chorus_router_live_replicas{{model="{SLOW}"}}')
        as prom,
    ):  # fmt: skip
        yield mesh, prom


@pytest.fixture(scope="module")
def group_observed(
    prometheus_binary: str, model_repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Mesh, Prom]]:
    """The digits members co-hosted in one group process (each slowed to 20 ms, so tasks
    stay in flight there), a router and Prometheus scraping them."""
    tmp = tmp_path_factory.mktemp("prometheus-group")
    with (
        NatsServer(tmp / "js") as server,
        Mesh(
            model_repo, tmp / "mesh", models=GROUP_MEMBERS, nats_url=server.url,
            groups={GROUP: GROUP_MEMBERS}, extra_env={"CHORUS_MODEL_DELAY_MS": "20"},
        ) as mesh,
        _scraping(prometheus_binary, mesh, tmp, f'chorus_group_tasks_in_flight{{group="{GROUP}"}}')
        as prom,
    ):  # fmt: skip
        yield mesh, prom


@contextlib.contextmanager
def _scraping(binary: str, mesh: Mesh, tmp: Path, seen: str) -> Iterator[Prom]:
    """Prometheus scraping every process of `mesh` and evaluating the PrometheusRule, ready
    once every target is up and `seen` (a series the mesh makes from its start) is stored."""
    rules = tmp / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": _fast_rule_groups()}))
    config = tmp / "prometheus.yml"
    config.write_text(yaml.safe_dump(_config(mesh, rules)))
    port = free_port()
    with (tmp / "prometheus.log").open("w") as log:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            prom = Prom(f"http://127.0.0.1:{port}")
            _wait_ready(prom, proc, tmp / "prometheus.log", len(mesh.children), seen)
            yield prom
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _fast_rule_groups() -> list[dict[str, Any]]:
    """The PrometheusRule's groups, evaluated every second like the scrape."""
    groups = k8s_refs.rule_groups()
    for g in groups:
        g.pop("interval", None)
    return groups


def _wait_ready(
    prom: Prom, proc: subprocess.Popen[bytes], log: Path, targets: int, seen: str
) -> None:
    """Ready, every target scraped up, and a few scrapes of `seen` stored (rates need two)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"prometheus exited: {log.read_text()[-2000:]}"
        try:
            up = prom.values('up{job=~"chorus-.+"}')
        except OSError:
            up = []
        if len(up) == targets and all(v == 1 for v in up):
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"targets not all up: {up}\n{log.read_text()[-2000:]}")
    # The routers' per-model series start with the models' first heartbeats.
    while time.monotonic() < deadline:
        if sum(prom.values(f"count_over_time({seen}[1m])")) >= 4:
            return
        time.sleep(0.5)
    raise AssertionError(f"{seen} never reached Prometheus")


def _grafana(expr: str) -> str:
    """A dashboard query as Grafana sends it with every variable on All."""
    text = expr.replace("$namespace", NAMESPACE)
    for var in ("$model", "$pod", "$capability"):
        text = text.replace(var, ".*")
    return re.sub(r"\$\{?__rate_interval\}?", RATE_INTERVAL, text)


def _scaled(expr: str) -> str:
    return expr.replace("[1m]", f"[{SCALED_WINDOW}]")


def _nan(values: list[float]) -> bool:
    return any(math.isnan(v) for v in values)


def _gpu(expr: str) -> bool:
    return any(m in expr for m in GPU_METRICS)


def _on_cuda(prom: Prom) -> bool:
    return bool(prom.query('chorus_model_info{provider="CUDAExecutionProvider"}'))


def _adapter_metric_queries() -> list[str]:
    """The adapter's metricsQuery of each rule (its seriesQuery is a discovery selector)."""
    queries = k8s_refs.adapter_queries()
    return [k8s_refs.fill_adapter_templates(q) for q in queries[1::2]]


def _load(target: str, clients: int, seconds: float, errors: list[BaseException]) -> None:
    stop = time.monotonic() + seconds
    x = {"input": np.zeros((1, 64), np.float32)}

    def run() -> None:
        with TaskClient(target) as client:
            while time.monotonic() < stop:
                try:
                    client.submit("classify/digits", x, timeout_s=10)
                except Exception as exc:
                    errors.append(exc)
                    return

    threads = [threading.Thread(target=run) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_idle_every_autoscaler_query_answers_zero_and_namespace_resolves(
    observed: tuple[Mesh, Prom],
) -> None:
    _, prom = observed
    # $namespace: the dashboard's variable, from a series every router has from its start.
    dashboard = k8s_refs.load_dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    selector = k8s_refs.dashboard_variable_selector(variables["namespace"])
    namespaces = {s["metric"].get("namespace") for s in prom.query(selector)}
    assert namespaces == {NAMESPACE}
    for name in ("capability", "model", "pod"):
        found = prom.query(_grafana(k8s_refs.dashboard_variable_selector(variables[name])))
        assert {s["metric"].get(name) for s in found} - {None}, f"${name} resolves to nothing"

    autoscaler = [*k8s_refs.keda_queries(), *_adapter_metric_queries()]
    assert len(autoscaler) == 7
    empty, not_zero = [], []
    for q in autoscaler:
        values = prom.values(q)
        if not values:
            empty.append(q)
        elif any(v != 0 for v in values):
            not_zero.append((q, values))
    assert not empty, f"idle, no series for: {empty}"
    assert not not_zero, f"idle, not 0: {not_zero}"
    # The adapter finds its series (seriesQuery) before traffic too.
    for series in k8s_refs.adapter_queries()[0::2]:
        assert prom.query(series), f"adapter discovers nothing: {series}"

    # No dashboard query answers NaN while idle; all but the GPU panels and the learned
    # member weights (set by the first fused task) answer something.
    cuda = _on_cuda(prom)
    nan, nothing = [], []
    for expr in k8s_refs.dashboard_queries():
        values = prom.values(_grafana(expr))
        if _nan(values):
            nan.append(expr)
        if not values and not (_gpu(expr) and not cuda) and "chorus_fuser_model_weight" not in expr:
            nothing.append(expr)
    assert not nan, f"idle, NaN from: {nan}"
    assert not nothing, f"idle, no data from: {nothing}"

    # No prometheus_client `_created` series reach Prometheus.
    series = prom.one('count({__name__=~"chorus_.+"})')
    assert prom.query('{__name__=~"chorus_.+_created"}') == []
    print(f"\nidle: {series:.0f} chorus series in Prometheus, none _created")

    # A healthy idle mesh pages nobody: Prometheus itself evaluates the PrometheusRule.
    assert prom.query("ALERTS") == [], prom.query("ALERTS")


def test_under_load_every_dashboard_query_has_data_and_autoscalers_scale(
    observed: tuple[Mesh, Prom],
) -> None:
    mesh, prom = observed
    cuda = _on_cuda(prom)
    keda = {
        o["spec"]["scaleTargetRef"]["name"]: prometheus_scaling(o)
        for o in k8s_refs.scaled_objects()
    }
    model_rule, router_rule = keda[f"chorus-model-{SLOW}"], keda["chorus-router"]
    (pods_rule,) = [
        r for r in k8s_refs.adapter_config()["rules"] if "in_flight" in r["seriesQuery"]
    ]
    hpa_target = 4.0

    def hpa_in_flight() -> float:
        """The HPA's Pods metric for the slow model: the adapter's metricsQuery for its pod,
        as the adapter sends it, summed over the pods (the HPA averages, then multiplies)."""
        query = (
            pods_rule["metricsQuery"]
            .replace("<<.Series>>", "chorus_model_in_flight")
            .replace("<<.LabelMatchers>>", f'namespace="{NAMESPACE}",pod="chorus-model-{SLOW}-0"')
            .replace("<<.GroupBy>>", "pod")
        )
        return sum(prom.values(_scaled(query)))

    errors: list[BaseException] = []
    loader = threading.Thread(target=_load, args=(mesh.router_target, LOAD_CLIENTS, LOAD_S, errors))
    started = time.monotonic()
    loader.start()
    try:
        time.sleep(float(SCALED_WINDOW[:-1]) + 1.5)
        demand = prom.one(_scaled(model_rule.query))
        task_rate = prom.one(_scaled(router_rule.query))
        in_flight = hpa_in_flight()

        nan, nothing = [], []
        for expr in k8s_refs.dashboard_queries():
            if _gpu(expr) and not cuda:
                assert not prom.query(_grafana(expr)), f"GPU series on a CPU-only mesh: {expr}"
                continue
            values = prom.values(_grafana(expr))
            if not values:
                nothing.append(expr)
            elif _nan(values):
                nan.append(expr)
        keda_loaded = {q: prom.values(q) for q in k8s_refs.keda_queries()}
        keda_loaded |= {q: prom.values(q) for q in _adapter_metric_queries()}
        assert time.monotonic() - started < LOAD_S, "the checks ran past the load"
    finally:
        loader.join()
    assert not errors, f"{len(errors)} callers stopped early; the first: {errors[0]!r}"
    assert not nothing, f"under load, no data from: {nothing}"
    assert not nan, f"under load, NaN from: {nan}"
    assert all(v and not _nan(v) for v in keda_loaded.values()), keda_loaded
    assert any(v > 0 for v in keda_loaded[model_rule.query]), "KEDA's 1 m demand rose"

    up_model = model_rule.desired_replicas(model_rule.min_replicas, demand)
    up_router = router_rule.desired_replicas(router_rule.min_replicas, task_rate)
    up_hpa = desired_replicas(1, in_flight, hpa_target, min_replicas=1, max_replicas=10,
                              metric_type="AverageValue")  # fmt: skip
    # Back to idle: the windows drain.
    time.sleep(float(SCALED_WINDOW[:-1]) + 3)
    idle_demand = prom.one(_scaled(model_rule.query))
    idle_rate = prom.one(_scaled(router_rule.query))
    idle_in_flight = hpa_in_flight()
    down_model = model_rule.desired_replicas(up_model, idle_demand)
    down_router = router_rule.desired_replicas(up_router, idle_rate)
    down_hpa = desired_replicas(up_hpa, idle_in_flight, hpa_target, min_replicas=1,
                                max_replicas=10, metric_type="AverageValue")  # fmt: skip
    print(
        f"\nPrometheus, {SCALED_WINDOW} windows: {SLOW} demand {demand:.1f}/replica -> "
        f"{up_model} replicas (KEDA), in flight {in_flight:.1f} -> {up_hpa} (HPA); router "
        f"{task_rate:.0f} tasks/s -> {up_router}; idle: demand {idle_demand}, {idle_rate} "
        f"tasks/s -> {down_model}, {down_hpa}, {down_router}"
    )
    # The README's promise: demand past the target of 4 asks for more model replicas (about
    # 13 -> 4 on its machine), the router one replica per 50 tasks/s, and idle gives the
    # minimum back.
    assert demand > model_rule.target_value
    assert up_model == math.ceil(demand / model_rule.target_value) and up_model >= 2
    # The plain HPA reads in-flight alone (a Pods metric cannot add the routers' queue), so it
    # asks for no more than KEDA and scales later under joined calls, as the README says.
    assert 0 < in_flight < demand and up_hpa <= up_model
    expected_router = min(8, max(2, math.ceil(task_rate / router_rule.target_value)))
    assert up_router == expected_router
    assert (idle_demand, idle_rate, idle_in_flight) == (0, 0, 0)
    assert (down_model, down_hpa, down_router) == (1, 1, 2)
    # The load was healthy: nothing fires (ALERTS keeps pending ones too).
    assert not [a for a in prom.query("ALERTS") if a["metric"].get("alertstate") == "firing"]


def test_a_groups_scaled_object_reads_its_demand_from_a_live_group(
    group_observed: tuple[Mesh, Prom], tmp_path: Path
) -> None:
    mesh, prom = group_observed
    out = render(tmp_path / "k8s", GROUP_MEMBERS, groups={GROUP: GROUP_MEMBERS})
    objects = [o for o in yaml.safe_load_all((out / "autoscaling.yaml").read_text()) if o]
    (scaled,) = [o for o in objects if o["metadata"]["name"] == f"chorus-group-{GROUP}"]
    rule = prometheus_scaling(scaled)
    assert prom.values(_scaled(rule.query)) == [0.0], "idle, the group's demand is 0"

    errors: list[BaseException] = []
    loader = threading.Thread(target=_load, args=(mesh.router_target, LOAD_CLIENTS, 14.0, errors))
    loader.start()
    try:
        time.sleep(float(SCALED_WINDOW[:-1]) + 1.5)
        demand = prom.one(_scaled(rule.query))
        in_flight = prom.one(f'sum(chorus_group_tasks_in_flight{{group="{GROUP}"}})')
        waiting = prom.values(f'chorus_router_member_waiting{{model="group:{GROUP}"}}')
    finally:
        loader.join()
    assert not errors, f"{len(errors)} callers stopped early; the first: {errors[0]!r}"
    up = rule.desired_replicas(rule.min_replicas, demand)
    print(
        f"\ngroup {GROUP}: demand {demand:.1f}/replica ({in_flight:.0f} in flight) -> {up} "
        f"replicas (KEDA)"
    )
    # A router sends the group each task at once: none wait for it there, so the query's
    # waiting term (a model's) adds nothing, and the demand is the group's own.
    assert all(v == 0 for v in waiting), waiting
    # 16 callers on members that take 20 ms keep the group's one replica past its target.
    assert demand > rule.target_value
    assert up == math.ceil(demand / rule.target_value) and up >= 2
