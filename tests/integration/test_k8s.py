"""The Kubernetes manifests under k8s/, the Grafana dashboard, and chorus/planner/autoscale.py.

Builds every overlay with `kubectl kustomize` and validates each object against the Kubernetes
OpenAPI schemas (kubernetes-validate, strict), checks that the pieces agree with each other
(ports, probes, the config the services will read, autoscaler targets, ServiceMonitor
selection, metric names) and checks the replica arithmetic the autoscalers will do.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client import CollectorRegistry

from chorus.config import FuserConfig, ModelServiceConfig, RouterConfig, from_env
from chorus.fuser.metrics import FuserMetrics
from chorus.launch.natsserver import find_binary, free_port, wait_for_jetstream
from chorus.planner.autoscale import PrometheusScaling, desired_replicas, prometheus_scaling
from chorus.router.metrics import RouterMetrics
from chorus.services.metrics import ModelMetrics
from tests.support import k8s_refs

OVERLAYS = ("cpu", "gpu", "cpu-hpa")
MODELS = ("logreg", "forest", "mlp", "knn", "stack", "caption")
SCALED = ("logreg", "forest", "mlp")
"""Members autoscale; the arbiter, stacker and caption model run one replica each."""
NAMESPACE = "chorus"
NATS_URLS = ",".join(f"nats://nats-{i}.nats-headless:4222" for i in range(3))
IMAGE = "ghcr.io/chorus-mesh/chorus:0.1.0"
PROMETHEUS = "http://prometheus-operated.monitoring.svc:9090"
# The oldest Kubernetes these manifests are meant for (native gRPC probes are GA from 1.27,
# topologySpreadConstraints.matchLabelKeys on by default from 1.27) and the newest schema known.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())


_SAMPLE_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
    "info": ("_info",),
}


def _exported(registry: CollectorRegistry) -> set[str]:
    """The sample names a scrape shows for each family, whether or not it has samples yet."""
    return {
        family.name + suffix
        for family in registry.collect()
        for suffix in _SAMPLE_SUFFIXES[family.type]
    }


# What the services export (Prometheus text names), read from their own registries: anything
# the dashboard or the autoscalers query must be defined by one of them. (Whether it shows
# up under load is test_observability's question.)
KNOWN_METRICS: frozenset[str] = frozenset(
    name
    for registry in (RouterMetrics().registry, FuserMetrics().registry, ModelMetrics("m").registry)
    for name in _exported(registry)
)


# --- minimal schemas for the custom resources ------------------------------------------------
# kubernetes-validate only knows the built-in API groups; ScaledObject (KEDA) and ServiceMonitor
# (Prometheus Operator) come from CRDs whose OpenAPI schemas are not vendored here (and fetching
# them would need the network). These schemas pin what the manifests rely on: required fields,
# their types, and - with additionalProperties false where we list the whole field set - that no
# field is misspelt (a misspelt field is silently dropped by the API server).

_QUANTITY_STRING = {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$"}
_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "namespace": {"type": "string"},
        "labels": _LABELS,
        "annotations": _LABELS,
    },
}

SCALED_OBJECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "name": {"type": "string"},
                        "envSourceContainerName": {"type": "string"},
                    },
                },
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                "idleReplicaCount": {"type": "integer", "minimum": 0},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "fallback": {"type": "object"},
                "advanced": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "horizontalPodAutoscalerConfig": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "name": {"type": "string"},
                                # Checked against the real HPA schema in the test below.
                                "behavior": {"type": "object"},
                            },
                        },
                        "scalingModifiers": {"type": "object"},
                    },
                },
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "additionalProperties": False,
                        "properties": {
                            "type": {"type": "string"},
                            "name": {"type": "string"},
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "useCachedMetrics": {"type": "boolean"},
                            "authenticationRef": {"type": "object"},
                            # KEDA trigger metadata is map[string]string: numbers must be quoted.
                            "metadata": {
                                "type": "object",
                                "additionalProperties": {"type": "string"},
                            },
                        },
                        "if": {"properties": {"type": {"const": "prometheus"}}},
                        "then": {
                            "properties": {
                                "metadata": {
                                    "required": ["serverAddress", "query", "threshold"],
                                    "properties": {
                                        "serverAddress": {"type": "string", "format": "uri"},
                                        "query": {"type": "string", "minLength": 1},
                                        "threshold": _QUANTITY_STRING,
                                        "activationThreshold": _QUANTITY_STRING,
                                    },
                                }
                            }
                        },
                    },
                },
            },
        },
    },
}

SERVICE_MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "properties": {
                "jobLabel": {"type": "string"},
                "namespaceSelector": {"type": "object"},
                "selector": {
                    "type": "object",
                    "minProperties": 1,
                    "properties": {
                        "matchLabels": _LABELS,
                        "matchExpressions": {"type": "array"},
                    },
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "targetPort": {"type": ["string", "integer"]},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": r"^[0-9]+(ms|s|m|h)$"},
                            "scrapeTimeout": {"type": "string", "pattern": r"^[0-9]+(ms|s|m|h)$"},
                            "honorLabels": {"type": "boolean"},
                            "relabelings": {"type": "array"},
                            "metricRelabelings": {"type": "array"},
                        },
                    },
                },
            },
        },
    },
}

CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): SCALED_OBJECT_SCHEMA,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR_SCHEMA,
}


# --- building ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built() -> dict[str, list[dict[str, Any]]]:
    """`kubectl kustomize` output of every overlay, parsed."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not on PATH: the overlays are built with `kubectl kustomize`")
    out = {}
    for overlay in OVERLAYS:
        run = subprocess.run(
            [kubectl, "kustomize", str(k8s_refs.K8S / "overlays" / overlay)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert run.returncode == 0, f"kubectl kustomize k8s/overlays/{overlay}:\n{run.stderr}"
        out[overlay] = [doc for doc in yaml.safe_load_all(run.stdout) if doc]
    return out


def _of(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = _pod_spec(obj)
    return [*spec.get("initContainers", []), *spec["containers"]]


def _config(objs: list[dict[str, Any]]) -> dict[str, str]:
    (cm,) = [
        o
        for o in objs
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("chorus-config")
    ]
    data: dict[str, str] = cm["data"]
    return data


def _port(container: dict[str, Any], name: str) -> int:
    (port,) = [p["containerPort"] for p in container.get("ports", []) if p["name"] == name]
    return int(port)


def _model_deployments(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        o["metadata"]["labels"]["chorus.dev/model"]: o
        for o in objs
        if o["kind"] == "Deployment"
        and o["metadata"]["labels"].get("app.kubernetes.io/component") == "model"
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_builds_with_the_expected_objects(
    built: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    objs = built[overlay]
    deployments = _of(objs, "Deployment")
    assert set(deployments) == {
        "chorus-router",
        "chorus-fuser",
        *(f"chorus-model-{m}" for m in MODELS),
    }
    assert set(_of(objs, "Service")) >= {
        "chorus-router",
        "chorus-fuser",
        "nats",
        *(f"chorus-model-{m}" for m in MODELS),
    }
    assert set(_of(objs, "PodDisruptionBudget")) == {*deployments, "nats"}
    assert set(_of(objs, "StatefulSet")) == {"nats"}
    assert set(_of(objs, "ServiceMonitor")) == {"chorus"}
    assert set(_model_deployments(objs)) == set(MODELS)
    autoscaler = "HorizontalPodAutoscaler" if overlay == "cpu-hpa" else "ScaledObject"
    other = "ScaledObject" if overlay == "cpu-hpa" else "HorizontalPodAutoscaler"
    assert not _of(objs, other), f"{overlay} should use only {autoscaler}"
    for o in objs:
        if o["kind"] != "Namespace":
            assert o["metadata"].get("namespace") == NAMESPACE, o["metadata"]["name"]


# --- schema validation ---------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates(built: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    checked = set()
    for obj in built[overlay]:
        key = (obj["apiVersion"], obj["kind"])
        if key in CRD_SCHEMAS:
            jsonschema.validate(obj, CRD_SCHEMAS[key], format_checker=jsonschema.FormatChecker())
        else:
            for version in K8S_VERSIONS:
                kubernetes_validate.validate(obj, version, strict=True)
        checked.add(obj["kind"])
    assert {"Deployment", "Service", "StatefulSet", "PodDisruptionBudget", "ConfigMap"} <= checked


def test_prometheus_adapter_rules_validate() -> None:
    (cm,) = [d for d in yaml.safe_load_all(k8s_refs.ADAPTER_RULES.read_text()) if d]
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(cm, version, strict=True)
    config = k8s_refs.adapter_config()
    for section in ("rules", "externalRules"):
        for rule in config[section]:
            assert {"seriesQuery", "metricsQuery", "resources", "name"} <= set(rule)
            assert (
                "<<.Series>>" in rule["metricsQuery"]
                and "<<.LabelMatchers>>" in rule["metricsQuery"]
            )


def test_keda_hpa_behavior_validates_as_an_hpa_behavior(
    built: dict[str, list[dict[str, Any]]],
) -> None:
    # KEDA copies advanced.horizontalPodAutoscalerConfig.behavior into the HPA it creates, so
    # check it against the real autoscaling/v2 schema by wrapping it in an HPA.
    for so in _of(built["cpu"], "ScaledObject").values():
        behavior = so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        hpa = {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": so["metadata"]["name"]},
            "spec": {
                "scaleTargetRef": so["spec"]["scaleTargetRef"],
                "maxReplicas": so["spec"]["maxReplicaCount"],
                "behavior": behavior,
            },
        }
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(hpa, version, strict=True)


def test_crd_schemas_catch_mistakes() -> None:
    (so, *_) = k8s_refs.scaled_objects()
    bad = json.loads(json.dumps(so))
    bad["spec"]["triggers"][0]["metadata"]["threshold"] = 4  # must be a string
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCALED_OBJECT_SCHEMA)
    bad = json.loads(json.dumps(so))
    bad["spec"]["minReplicas"] = 1  # the HPA's spelling, not KEDA's
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCALED_OBJECT_SCHEMA)
    sm = yaml.safe_load((k8s_refs.K8S / "base" / "servicemonitor.yaml").read_text())
    jsonschema.validate(sm, SERVICE_MONITOR_SCHEMA)
    del sm["spec"]["endpoints"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(sm, SERVICE_MONITOR_SCHEMA)


# --- the pieces agree ---------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_config_is_what_the_services_read(
    built: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    objs = built[overlay]
    env = _config(objs)
    assert set(env["CHORUS_MODELS"].split(",")) == set(MODELS)
    model = from_env(ModelServiceConfig, "model", env=env)
    router = from_env(RouterConfig, "router", env=env)
    fuser = from_env(FuserConfig, "fuser", env=env)
    assert model.host == router.host == fuser.host == "0.0.0.0"
    assert model.nats_url == router.nats_url == fuser.nats_url == NATS_URLS
    assert model.repository == Path("/models")
    deployments = _of(objs, "Deployment")

    (rc,) = deployments["chorus-router"]["spec"]["template"]["spec"]["containers"]
    assert _port(rc, "grpc") == router.grpc_port
    assert _port(rc, "metrics") == router.metrics_port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert rc[probe]["grpc"]["port"] == router.grpc_port

    (fc,) = deployments["chorus-fuser"]["spec"]["template"]["spec"]["containers"]
    assert _port(fc, "metrics") == fuser.metrics_port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert fc[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}

    for name, dep in _model_deployments(objs).items():
        spec = _pod_spec(dep)
        (mc,) = spec["containers"]
        assert dep["spec"]["template"]["metadata"]["labels"]["chorus.dev/model"] == name
        assert mc["args"] == ["serve", "model", "--model", "$(MODEL_NAME)"]
        (model_env,) = [e for e in mc["env"] if e["name"] == "MODEL_NAME"]
        assert (
            model_env["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['chorus.dev/model']"
        )
        assert _port(mc, "grpc") == model.grpc_port
        assert _port(mc, "metrics") == model.metrics_port
        for probe in ("startupProbe", "readinessProbe"):
            assert mc[probe]["grpc"]["port"] == model.grpc_port
        # Liveness must not follow readiness: an unloaded model is not a dead process.
        assert mc["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
        (init,) = spec["initContainers"]
        assert init["args"] == ["models", "build", "--repository", str(model.repository)]
        mounts = {
            m["name"]: m for c in (init, mc) for m in c["volumeMounts"] if m["name"] == "models"
        }
        assert mounts["models"]["mountPath"] == str(model.repository)
        assert {"name": "models", "emptyDir": {"sizeLimit": "256Mi"}} in spec["volumes"]
        envs = [e.get("configMapRef", {}).get("name") for e in mc["envFrom"]]
        assert envs == [_config_name(objs)]


def _config_name(objs: list[dict[str, Any]]) -> str:
    (name,) = [
        o["metadata"]["name"]
        for o in objs
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("chorus-config")
    ]
    return str(name)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_containers_are_locked_down_and_sized(
    built: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    for obj in built[overlay]:
        if obj["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod = _pod_spec(obj)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        for c in _containers(obj):
            where = f"{obj['metadata']['name']}/{c['name']}"
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, where
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, where
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], where
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), where
            assert {"cpu", "memory"} <= set(c["resources"]["limits"]), where
            expected = "nats:2.10" if obj["kind"] == "StatefulSet" else IMAGE
            assert c["image"] == expected, where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nats_is_a_three_node_jetstream_cluster_with_a_volume_per_pod(
    built: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    objs = built[overlay]
    nats = _of(objs, "StatefulSet")["nats"]
    (c,) = _pod_spec(nats)["containers"]
    args = c["args"]
    assert "-js" in args and args[args.index("-sd") + 1] == "/data"
    (claim,) = nats["spec"]["volumeClaimTemplates"]
    assert {"name": claim["metadata"]["name"], "mountPath": "/data"} in c["volumeMounts"]
    service = _of(objs, "Service")["nats"]
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("client", 4222)]
    assert (
        service["spec"]["selector"].items()
        <= nats["spec"]["template"]["metadata"]["labels"].items()
    )
    # Three nodes, routed to each other, and the services know them all.
    replicas = nats["spec"]["replicas"]
    assert replicas == 3
    headless = _of(objs, "Service")[nats["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True  # routes form before ready
    pods = [f"{nats['metadata']['name']}-{i}.{headless['metadata']['name']}" for i in range(3)]
    cluster_port = _port(c, "cluster")
    assert args[args.index("--cluster") + 1] == f"nats://0.0.0.0:{cluster_port}"
    assert args[args.index("--routes") + 1].split(",") == [
        f"nats://{p}:{cluster_port}" for p in pods
    ]
    assert {(p["name"], p["port"]) for p in headless["spec"]["ports"]} >= {
        ("client", _port(c, "client")),
        ("cluster", cluster_port),
    }
    # The services are given every node, so they keep three replicas from the first connect.
    env = _config(objs)
    assert env["CHORUS_NATS_URL"].split(",") == [f"nats://{p}:{_port(c, 'client')}" for p in pods]
    assert int(env.get("CHORUS_JETSTREAM_REPLICAS", "0")) in (0, replicas)
    labels = nats["spec"]["template"]["metadata"]["labels"]
    budget = _of(objs, "PodDisruptionBudget")["nats"]
    assert budget["spec"]["maxUnavailable"] == 1  # two of three keep the Raft quorum
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (term,) = _pod_spec(nats)["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= labels.items()
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]  # one volume per pod


def test_the_manifests_nats_flags_form_a_jetstream_cluster(
    built: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    """The StatefulSet's own arguments, run by the bundled nats-server with each pod's DNS
    name and ports swapped for loopback ones: three nodes join and elect a meta leader."""
    nats = _of(built["cpu"], "StatefulSet")["nats"]
    (c,) = _pod_spec(nats)["containers"]
    pods = [f"nats-{i}" for i in range(3)]
    client, route, monitor = ([free_port() for _ in pods] for _ in range(3))
    routes = {f"nats://{p}.nats-headless:{_port(c, 'cluster')}": f"nats://127.0.0.1:{route[i]}"
              for i, p in enumerate(pods)}  # fmt: skip
    procs = []
    try:
        for i, pod in enumerate(pods):
            args = [
                a.replace("$(POD_NAME)", pod)
                .replace("/data", str(tmp_path / pod))
                .replace("nats://0.0.0.0:6222", f"nats://127.0.0.1:{route[i]}")
                for a in c["args"]
            ]
            args[args.index("-m") + 1] = str(monitor[i])
            at = args.index("--routes") + 1
            args[at] = ",".join(routes[r] for r in args[at].split(","))
            procs.append(subprocess.Popen(
                [find_binary(), "-a", "127.0.0.1", "-p", str(client[i]), *args],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
        wait_for_jetstream(",".join(f"nats://127.0.0.1:{p}" for p in client), timeout_s=30)
        with urllib.request.urlopen(f"http://127.0.0.1:{monitor[0]}/jsz", timeout=5) as r:
            meta = json.load(r)["meta_cluster"]
        assert meta["cluster_size"] == 3 and meta["leader"] in pods
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_and_budgets_select_their_pods(
    built: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    objs = built[overlay]
    deployments = _of(objs, "Deployment")
    for name, dep in deployments.items():
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
        for kind, selector in (
            ("Service", lambda o: o["spec"]["selector"]),
            ("PodDisruptionBudget", lambda o: o["spec"]["selector"]["matchLabels"]),
        ):
            obj = _of(objs, kind)[name]
            sel = selector(obj)
            assert sel.items() <= labels.items(), f"{kind} {name}"
            # ... and no other Deployment's pods (the models share all labels but one).
            for other, odep in deployments.items():
                if other != name:
                    assert not sel.items() <= odep["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_monitor_scrapes_every_service(
    built: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    objs = built[overlay]
    sm = _of(objs, "ServiceMonitor")["chorus"]
    selector = sm["spec"]["selector"]["matchLabels"]
    (endpoint,) = sm["spec"]["endpoints"]
    scraped = {
        name
        for name, svc in _of(objs, "Service").items()
        if selector.items() <= svc["metadata"].get("labels", {}).items()
        and endpoint["port"] in {p["name"] for p in svc["spec"]["ports"]}
    }
    assert scraped == {"chorus-router", "chorus-fuser", *(f"chorus-model-{m}" for m in MODELS)}


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_keda_scales_each_model_and_the_router(
    built: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    objs = built[overlay]
    deployments = _of(objs, "Deployment")
    scaled = _of(objs, "ScaledObject")
    targets = sorted(so["spec"]["scaleTargetRef"]["name"] for so in scaled.values())
    assert targets == sorted(["chorus-router", *(f"chorus-model-{m}" for m in SCALED)])
    for so in scaled.values():
        rule = prometheus_scaling(so)
        assert rule.target in deployments
        (trigger,) = so["spec"]["triggers"]
        assert trigger["metadata"]["serverAddress"] == PROMETHEUS
        assert f'namespace="{NAMESPACE}"' in rule.query
        assert 1 <= rule.min_replicas <= rule.max_replicas
        if rule.target == "chorus-router":
            assert k8s_refs.promql_metric_names(rule.query) == {"chorus_router_tasks_total"}
            assert "rate(" in rule.query and rule.metric_type == "AverageValue"
        else:
            model = deployments[rule.target]["metadata"]["labels"]["chorus.dev/model"]
            assert k8s_refs.promql_metric_names(rule.query) == {
                "chorus_model_in_flight",
                "chorus_router_member_waiting",
            }
            assert rule.query.count(f'model="{model}"') == 3
            assert "/ count(" in rule.query and "or vector(0)" in rule.query
            assert rule.metric_type == "Value"


def test_hpa_scales_each_model_and_the_router_on_adapter_metrics(
    built: dict[str, list[dict[str, Any]]],
) -> None:
    objs = built["cpu-hpa"]
    deployments = _of(objs, "Deployment")
    hpas = _of(objs, "HorizontalPodAutoscaler")
    targets = sorted(h["spec"]["scaleTargetRef"]["name"] for h in hpas.values())
    assert targets == sorted(["chorus-router", *(f"chorus-model-{m}" for m in SCALED)])
    assert all(h["spec"]["scaleTargetRef"]["name"] in deployments for h in hpas.values())
    exposed = k8s_refs.adapter_exposed_names()
    wanted = k8s_refs.hpa_metric_names()
    assert set(wanted) == {"Pods", "External"}
    assert wanted["Pods"] <= exposed["custom"]
    assert wanted["External"] <= exposed["external"]


def test_gpu_overlay_puts_models_on_gpus(built: dict[str, list[dict[str, Any]]]) -> None:
    for overlay in OVERLAYS:
        objs = built[overlay]
        models = _model_deployments(objs)
        for dep in _of(objs, "Deployment").values():
            pod = _pod_spec(dep)
            (main,) = pod["containers"]
            gpus = main["resources"]["limits"].get("nvidia.com/gpu")
            env = {e["name"]: e.get("value") for e in main.get("env", [])}
            is_gpu_model = overlay == "gpu" and dep in models.values()
            if is_gpu_model:
                assert str(gpus) == "1", dep["metadata"]["name"]
                assert env["CHORUS_MODEL_DEVICE"] == "cuda"
                assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
                assert {
                    "key": "nvidia.com/gpu",
                    "operator": "Exists",
                    "effect": "NoSchedule",
                } in pod["tolerations"]
            else:
                assert gpus is None, f"{overlay}: {dep['metadata']['name']}"
                assert "nodeSelector" not in pod and "tolerations" not in pod
            for init in pod.get("initContainers", []):
                assert "nvidia.com/gpu" not in init["resources"]["limits"]
        device = _config(objs)["CHORUS_MODEL_DEVICE"]
        assert device == ("auto" if overlay == "gpu" else "cpu")
        if overlay == "gpu":
            assert all(
                prometheus_scaling(so).max_replicas <= 4
                for name, so in _of(objs, "ScaledObject").items()
                if name != "chorus-router"
            )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_dashboard_configmap_carries_the_dashboard(
    built: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    cm = _of(built[overlay], "ConfigMap")["chorus-dashboard"]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["chorus-dashboard.json"]) == k8s_refs.load_dashboard()


# --- metric names and the dashboard (no kubectl needed) ------------------------------------------


def test_every_referenced_metric_is_exported() -> None:
    referenced = k8s_refs.referenced_metric_names()
    assert referenced, "found no metric names: the reference scanner is broken"
    unknown = referenced - KNOWN_METRICS
    assert not unknown, f"queried but not exported by any Chorus service: {sorted(unknown)}"
    # Each source is scanned (a source whose queries silently vanished would pass the above).
    for queries in (
        k8s_refs.dashboard_queries(),
        k8s_refs.keda_queries(),
        k8s_refs.adapter_queries(),
    ):
        assert queries and all(k8s_refs.promql_metric_names(q) for q in queries)


def test_promql_scanner() -> None:
    names = k8s_refs.promql_metric_names
    assert names(
        "histogram_quantile(0.95, sum by (le, model) "
        '(rate(foo_bucket{model=~"a|b", x="bar_total"}[5m])))'
    ) == {"foo_bucket"}
    assert names("sum(rate(a_total[1m])) / ignoring(x) group_left sum(b) > bool 2e3") == {
        "a_total",
        "b",
    }
    assert names('avg(avg_over_time(m{namespace="ns"}[$__rate_interval] offset 5m))') == {"m"}
    assert names('count({__name__="up", job="x"}) or vector(0)') == {"up"}
    assert names("sum(rate(s_total{<<.LabelMatchers>>}[1m])) by (<<.GroupBy>>)") == {"s_total"}
    with pytest.raises(ValueError, match="not PromQL"):
        names("sum(rate(a_total[1m])")
    with pytest.raises(ValueError, match="not PromQL"):
        names("avg(a) offset 5m")


def test_dashboard_shape() -> None:
    d = k8s_refs.load_dashboard()
    assert d["schemaVersion"] == 39
    assert d["uid"] and d["title"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = d["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for p in panels:
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"] and all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"])
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0
    exprs = {p["title"]: " ".join(t["expr"] for t in p.get("targets", [])) for p in panels}

    def panel_with(*needles: str) -> str:
        found = [t for t, e in exprs.items() if all(n in e for n in needles)]
        assert found, f"no panel queries {needles}"
        return found[0]

    panel_with("chorus_router_tasks_total", "by (outcome)")
    panel_with(
        "chorus_router_task_seconds_bucket",
        *(f"histogram_quantile({q}," for q in ("0.5", "0.95", "0.99")),
    )
    panel_with("chorus_router_member_seconds_bucket", "model")
    panel_with("chorus_model_in_flight", "by (model)")
    panel_with("chorus_router_live_replicas", "by (model)")
    panel_with("chorus_model_batch_size")
    panel_with("chorus_fuser_conflicts_total", "rate(")
    panel_with("chorus_fuser_agreement_ratio")
    panel_with("chorus_fuser_collected_answers_total", "by (model, outcome)")
    panel_with("chorus_fuser_stacked_tasks_sum", "chorus_fuser_stacked_tasks_count")
    (table,) = [p for p in panels if p["type"] == "table"]
    assert "chorus_model_info" in exprs[table["title"]]
    assert "provider" in exprs[table["title"]]


# --- chorus/planner/autoscale.py ------------------------------------------------------------------


def _settle(rule: PrometheusScaling, replicas: int, load: float, rounds: int = 10) -> list[int]:
    """Evaluate repeatedly while `load` requests are in flight, spread over the replicas."""
    seen = []
    for _ in range(rounds):
        per_replica = load / replicas if replicas else load
        replicas = rule.desired_replicas(replicas, per_replica)
        seen.append(replicas)
    return seen


def _model_rule() -> PrometheusScaling:
    (so,) = [o for o in k8s_refs.scaled_objects() if o["metadata"]["name"] == "chorus-model-logreg"]
    return prometheus_scaling(so)


def test_reads_the_scaled_object() -> None:
    rule = _model_rule()
    assert rule.target == "chorus-model-logreg"
    assert rule.target_value == 4.0 and rule.metric_type == "Value"
    assert (rule.min_replicas, rule.max_replicas) == (1, 10)
    assert "chorus_model_in_flight" in rule.query
    (router,) = [o for o in k8s_refs.scaled_objects() if o["metadata"]["name"] == "chorus-router"]
    assert prometheus_scaling(router).metric_type == "AverageValue"
    # KEDA's defaults where a field is absent.
    bare = {
        "kind": "ScaledObject",
        "metadata": {"name": "x"},
        "spec": {
            "scaleTargetRef": {"name": "d"},
            "triggers": [{"type": "prometheus", "metadata": {"query": "q", "threshold": "2.5"}}],
        },
    }
    rule = prometheus_scaling(bare)
    assert (rule.min_replicas, rule.max_replicas, rule.metric_type) == (0, 100, "AverageValue")
    assert (rule.target_value, rule.activation_threshold) == (2.5, 0.0)
    with pytest.raises(ValueError, match="threshold"):
        prometheus_scaling(
            {**bare, "spec": {"triggers": [{"type": "prometheus", "metadata": {"query": "q"}}]}}
        )
    with pytest.raises(ValueError, match="no trigger"):
        prometheus_scaling({**bare, "spec": {"triggers": [{"type": "cpu", "metadata": {}}]}})
    with pytest.raises(ValueError, match="expected a number"):
        prometheus_scaling(
            {
                **bare,
                "spec": {
                    "triggers": [
                        {"type": "prometheus", "metadata": {"query": "q", "threshold": "lots"}}
                    ]
                },
            }
        )


def test_replicas_rise_with_load_and_fall_back_when_idle() -> None:
    rule = _model_rule()  # target 4 in flight per replica, 1..10 replicas
    replicas, history = 1, []
    for load in (2, 6, 12, 24, 36):
        replicas = _settle(rule, replicas, load)[-1]
        history.append(replicas)
    assert history == sorted(history) and history[0] == 1 and history[-1] == 9
    # Steady state: each replica near the target, inside the tolerance band.
    assert abs(36 / 9 - 4) / 4 <= 0.1
    assert _settle(rule, replicas, 0)[-1] == rule.min_replicas == 1
    # Overload: capped at maxReplicaCount.
    assert _settle(rule, 1, 1000)[-1] == rule.max_replicas


def test_formula_and_tolerance_band() -> None:
    # ceil(current * value / target)
    assert desired_replicas(3, 8, 4) == 6
    assert desired_replicas(3, 5, 4) == 4  # 3.75 -> 4
    assert desired_replicas(4, 1, 4) == 1
    # Within 10% of the target nothing moves, either way.
    for value in (3.61, 3.9, 4.0, 4.3, 4.39):
        assert desired_replicas(5, value, 4) == 5, value
    assert desired_replicas(5, 4.5, 4) == 6  # 12.5% over
    assert desired_replicas(5, 3.5, 4) == 5  # 12.5% under: ceil(4.375) = 5
    assert desired_replicas(5, 3.0, 4) == 4
    assert desired_replicas(5, 4.3, 4, tolerance=0.0) == 6
    # AverageValue: the value is a total, spread over the replicas (the router's task rate).
    assert desired_replicas(2, 120, 50, metric_type="AverageValue") == 3
    assert desired_replicas(2, 105, 50, metric_type="AverageValue") == 2  # 5% over
    assert desired_replicas(4, 90, 50, metric_type="AverageValue") == 2


def test_clamping() -> None:
    assert desired_replicas(2, 100, 4, max_replicas=10) == 10
    assert desired_replicas(8, 0, 4, min_replicas=2) == 2
    assert desired_replicas(3, 0, 4) == 1
    # A target that was scaled to zero by hand comes back to its minimum.
    assert desired_replicas(0, 0, 4, min_replicas=2) == 2


def test_activation_to_and_from_zero() -> None:
    kw: dict[str, Any] = {"min_replicas": 0, "max_replicas": 10, "activation_threshold": 0.5}
    assert desired_replicas(0, 0, 4, **kw) == 0
    assert desired_replicas(0, 0.5, 4, **kw) == 0  # at the threshold is still inactive
    assert desired_replicas(0, 0.6, 4, **kw) == 1  # woken to one; the HPA takes it from there
    assert desired_replicas(0, 50, 4, **kw) == 1
    assert desired_replicas(1, 50, 4, **kw) == 10
    assert desired_replicas(3, 2, 4, **kw) == 2  # active: normal HPA rule, floor 1
    assert desired_replicas(3, 0.4, 4, **kw) == 0  # inactive: scaled to zero
    # With a minimum of one, the activation threshold plays no part.
    assert desired_replicas(3, 0.4, 4, min_replicas=1, activation_threshold=0.5) == 1
    # A whole cycle: idle at zero, a burst, idle again.
    rule = PrometheusScaling("d", "q", 4.0, 0.5, "Value", 0, 10)
    assert _settle(rule, 0, 0)[-1] == 0
    burst = _settle(rule, 0, 20)
    assert burst[0] == 1 and burst[-1] == 5
    assert _settle(rule, 5, 0)[-1] == 0


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="target_value"):
        desired_replicas(1, 1, 0)
    with pytest.raises(ValueError, match="metric_value"):
        desired_replicas(1, float("nan"), 4)
    with pytest.raises(ValueError, match="replica bounds"):
        desired_replicas(1, 1, 4, min_replicas=5, max_replicas=2)
    with pytest.raises(ValueError, match="current_replicas"):
        desired_replicas(-1, 1, 4)
