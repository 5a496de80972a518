"""The Kubernetes manifests under chorus/deploy/k8s/ (and what `chorus k8s render` writes from
them), the Grafana dashboard, and chorus/planner/autoscale.py.

Builds every overlay with `kubectl kustomize` and validates each object against the Kubernetes
OpenAPI schemas (kubernetes-validate, strict), checks that the pieces agree with each other
(ports, probes, the config the services will read, autoscaler targets, ServiceMonitor
selection, metric names) and checks the replica arithmetic the autoscalers will do.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from nats import connect as nats_connect
from prometheus_client import CollectorRegistry

from chorus import __version__
from chorus.cli.k8s import render
from chorus.core.config import FuserConfig, ModelServiceConfig, RouterConfig, SecurityConfig
from chorus.core.environment import from_env
from chorus.core.security import nats_options
from chorus.fuser.metrics import FuserMetrics
from chorus.group.metrics import GroupMetrics
from chorus.launch.natsserver import find_binary, free_port, wait_for_jetstream
from chorus.planner.autoscale import PrometheusScaling, desired_replicas, prometheus_scaling
from chorus.router.metrics import RouterMetrics
from chorus.services.gpu_metrics import NvmlCollector
from chorus.services.metrics import ModelMetrics
from tests.support import k8s_refs

OVERLAYS = ("cpu", "gpu", "cpu-hpa")
MODELS = ("logreg", "forest", "mlp", "knn", "stack", "caption")
SCALED = ("logreg", "forest", "mlp")
"""Members autoscale; the arbiter, stacker and caption model run one replica each."""
NAMESPACE = "chorus"
NATS_URLS = ",".join(f"nats://nats-{i}.nats-headless:4222" for i in range(3))
IMAGES = {
    role: f"ghcr.io/chorus-mesh/chorus-{role}:{__version__}"
    for role in ("control", "model-cpu", "model-gpu", "demo")
}
GPU_MODELS = {"gpu": {"mlp"}}
"""Models each overlay puts on a GPU; every other model stays on CPU."""
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
class _NoGpu:
    """Stands in for pynvml, so the GPU collector's metric names can be read on a CPU host."""

    def nvmlDeviceGetMemoryInfo(self, handle: object) -> SimpleNamespace:
        return SimpleNamespace(used=0, total=0)

    def nvmlDeviceGetUtilizationRates(self, handle: object) -> SimpleNamespace:
        return SimpleNamespace(gpu=0)


def _gpu_registry() -> CollectorRegistry:
    collector = NvmlCollector.__new__(NvmlCollector)
    collector._nvml, collector._handle = _NoGpu(), None
    collector.model, collector.device = "m", "0"
    registry = CollectorRegistry()
    registry.register(collector)
    return registry


# ServiceBase adds chorus_<kind>_nats_connected to each service's registry when it serves
# metrics (the kinds of chorus/router/app.py, chorus/fuser/app.py, chorus/services/app.py; not
# imported here, as the model service's module loads the KServe proto tritonclient clashes with).
SERVICE_KINDS = ("router", "fuser", "model")
KNOWN_METRICS: frozenset[str] = frozenset(
    {
        name
        for registry in (
            RouterMetrics().registry,
            FuserMetrics().registry,
            ModelMetrics("m").registry,
            GroupMetrics("g", lambda: 0).registry,
            _gpu_registry(),
        )
        for name in _exported(registry)
    }
    | {f"chorus_{kind}_nats_connected" for kind in SERVICE_KINDS}
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

_DURATION = {"type": "string", "pattern": r"^([0-9]+(ms|s|m|h|d|w|y))+$"}
PROMETHEUS_RULE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["groups"],
            "properties": {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name", "rules"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": _DURATION,
                            "rules": {
                                "type": "array",
                                "minItems": 1,
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["expr"],
                                    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                                    "properties": {
                                        "alert": {"type": "string"},
                                        "record": {"type": "string"},
                                        "expr": {"type": "string", "minLength": 1},
                                        "for": _DURATION,
                                        "labels": _LABELS,
                                        "annotations": _LABELS,
                                    },
                                },
                            },
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
    ("monitoring.coreos.com/v1", "PrometheusRule"): PROMETHEUS_RULE_SCHEMA,
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
        "chorus-router-headless",
        "chorus-fuser",
        "nats",
        *(f"chorus-model-{m}" for m in MODELS),
    }
    assert set(_of(objs, "Job")) == {"chorus-push-demo-models"}
    assert "chorus-settings" not in _of(objs, "ConfigMap"), "local-config must not be applied"
    assert set(_of(objs, "PodDisruptionBudget")) == {*deployments, "nats"}
    assert set(_of(objs, "StatefulSet")) == {"nats"}
    assert set(_of(objs, "ServiceMonitor")) == {"chorus"}
    assert set(_of(objs, "PrometheusRule")) == {"chorus"}
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
    assert {
        "Deployment",
        "Service",
        "StatefulSet",
        "PodDisruptionBudget",
        "ConfigMap",
        "NetworkPolicy",
        "Job",
        "Secret",
    } <= checked


def test_prometheus_adapter_rules_are_chart_values_that_merge() -> None:
    """Helm values under rules.custom / rules.external, which the chart adds beside its
    default rules: not a ConfigMap that would replace the adapter's own."""
    values = k8s_refs.adapter_values()
    assert set(values) == {"rules"} and "kind" not in values
    assert set(values["rules"]) == {"custom", "external"}
    config = k8s_refs.adapter_config()
    assert config["rules"] and config["externalRules"]
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
    security = from_env(SecurityConfig, "security", env=env)
    assert security.nats_password_file == "/var/run/secrets/chorus-nats/password"
    router = from_env(RouterConfig, "router", env=env)
    fuser = from_env(FuserConfig, "fuser", env=env)
    assert model.host == router.host == fuser.host == "0.0.0.0"
    assert model.nats_url == router.nats_url == fuser.nats_url == NATS_URLS
    assert str(model.repository) == "nats:chorus-models"
    assert model.cache_dir == Path("/tmp/chorus-models")
    deployments = _of(objs, "Deployment")

    (rc,) = deployments["chorus-router"]["spec"]["template"]["spec"]["containers"]
    assert _port(rc, "grpc") == router.grpc_port
    assert _port(rc, "metrics") == router.metrics_port
    for probe in ("startupProbe", "readinessProbe"):
        assert rc[probe]["grpc"]["port"] == router.grpc_port
    # Liveness is not readiness: a NATS outage (gRPC health NOT_SERVING) restarts no router.
    assert rc["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}
    assert rc["livenessProbe"] != rc["readinessProbe"]

    (fc,) = deployments["chorus-fuser"]["spec"]["template"]["spec"]["containers"]
    assert _port(fc, "metrics") == fuser.metrics_port
    assert fc["readinessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    for probe in ("startupProbe", "livenessProbe"):
        assert fc[probe]["httpGet"] == {"path": "/livez", "port": "metrics"}

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
        assert mc["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}
        # Loaded from the store into a cache on /tmp, an emptyDir: nothing built in the pod.
        assert "initContainers" not in spec
        (tmp,) = [m for m in mc["volumeMounts"] if m["name"] == "tmp"]
        assert model.cache_dir.is_relative_to(tmp["mountPath"])
        assert {"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}} in spec["volumes"]
        envs = [e.get("configMapRef", {}).get("name") for e in mc["envFrom"]]
        assert envs == [_config_name(objs)]
    for dep in deployments.values():
        for c in _pod_spec(dep)["containers"]:
            _assert_reads_nats_credentials(dep, c, security)


def _assert_reads_nats_credentials(
    workload: dict[str, Any], container: dict[str, Any], security: SecurityConfig
) -> None:
    """The user from the Secret chorus-nats as env, its password as the file the config names."""
    (user,) = [e for e in container["env"] if e["name"] == "CHORUS_SECURITY_NATS_USER"]
    assert user["valueFrom"]["secretKeyRef"] == {"name": "chorus-nats", "key": "user"}
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "nats-credentials"]
    (volume,) = [v for v in _pod_spec(workload)["volumes"] if v["name"] == "nats-credentials"]
    assert volume["secret"]["secretName"] == "chorus-nats"
    (item,) = volume["secret"]["items"]
    assert f"{mount['mountPath']}/{item['path']}" == security.nats_password_file
    assert item["key"] == "password"


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
        if obj["kind"] not in ("Deployment", "StatefulSet", "Job"):
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
            assert c["image"] == _expected_image(obj, overlay), where


def _nats_server_version() -> str:
    out = subprocess.run([find_binary(), "--version"], capture_output=True, text=True, check=True)
    (version,) = re.findall(r"v(\d+\.\d+\.\d+)", out.stdout)
    return version


def _expected_image(obj: dict[str, Any], overlay: str) -> str:
    """NATS the version the tests run; Chorus's images tagged with the package's version,
    the model images by device, everything else the control image."""
    if obj["kind"] == "StatefulSet":
        return f"nats:{_nats_server_version()}-alpine"
    labels = obj["metadata"]["labels"]
    if labels.get("app.kubernetes.io/component") == "model":
        on_gpu = labels["chorus.dev/model"] in GPU_MODELS.get(overlay, set())
        return IMAGES["model-gpu" if on_gpu else "model-cpu"]
    if obj["kind"] == "Job":
        return IMAGES["demo"]  # model-cpu plus the training the model pods do not carry
    return IMAGES["control"]


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
    """The StatefulSet's own arguments and nats.conf, run by the bundled nats-server with each
    pod's DNS name and ports swapped for loopback ones: three nodes join and elect a meta
    leader, a client with the Secret's credentials (read as the services read them) gets
    JetStream, and one without is refused."""
    objs = built["cpu"]
    nats = _of(objs, "StatefulSet")["nats"]
    (c,) = _pod_spec(nats)["containers"]
    config = tmp_path / "nats.conf"
    config.write_text(_of(objs, "ConfigMap")["nats-config"]["data"]["nats.conf"])
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "config"]
    secret = _of(objs, "Secret")["chorus-nats"]
    credentials = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    env = {e["name"]: credentials[e["valueFrom"]["secretKeyRef"]["key"]]
           for e in c["env"] if "secretKeyRef" in e.get("valueFrom", {})}  # fmt: skip
    assert set(env) == {"CHORUS_NATS_USER", "CHORUS_NATS_PASSWORD"}
    pods = [f"nats-{i}" for i in range(3)]
    client, route, monitor = ([free_port() for _ in pods] for _ in range(3))
    routes = {f"nats://{p}.nats-headless:{_port(c, 'cluster')}": f"nats://127.0.0.1:{route[i]}"
              for i, p in enumerate(pods)}  # fmt: skip
    procs = []
    try:
        for i, pod in enumerate(pods):
            args = [
                a.replace(f"{mount['mountPath']}/nats.conf", str(config))
                .replace("$(POD_NAME)", pod)
                .replace("/data", str(tmp_path / pod))
                .replace("nats://0.0.0.0:6222", f"nats://127.0.0.1:{route[i]}")
                for a in c["args"]
            ]
            args[args.index("-m") + 1] = str(monitor[i])
            at = args.index("--routes") + 1
            args[at] = ",".join(routes[r] for r in args[at].split(","))
            procs.append(subprocess.Popen(
                [find_binary(), "-a", "127.0.0.1", "-p", str(client[i]), *args],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **env},
            ))  # fmt: skip
        user, password = credentials["user"], credentials["password"]
        wait_for_jetstream(
            ",".join(f"nats://{user}:{password}@127.0.0.1:{p}" for p in client), timeout_s=30
        )
        (password_file := tmp_path / "password").write_text(password)
        security = SecurityConfig(nats_user=user, nats_password_file=str(password_file))
        assert asyncio.run(_jetstream_answers(client[1], nats_options(security)))
        assert "Authorization Violation" in _anonymous_connect(client[1])
        with urllib.request.urlopen(f"http://127.0.0.1:{monitor[0]}/jsz", timeout=5) as r:
            meta = json.load(r)["meta_cluster"]
        assert meta["cluster_size"] == 3 and meta["leader"] in pods
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def _anonymous_connect(port: int) -> str:
    """What the server answers a client that sends no credentials (the protocol by hand)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"INFO ")
        sock.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n')
        return reader.readline().decode()


async def _jetstream_answers(port: int, options: dict[str, Any]) -> bool:
    nc = await nats_connect(
        f"nats://127.0.0.1:{port}", allow_reconnect=False, max_reconnect_attempts=0, **options
    )
    try:
        await nc.jetstream().account_info()
        return True
    finally:
        await nc.close()


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
            is_gpu_model = any(dep is models.get(m) for m in GPU_MODELS.get(overlay, set()))
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
        for name, so in _of(objs, "ScaledObject").items():
            model = so["metadata"]["labels"].get("chorus.dev/model")
            capped = prometheus_scaling(so).max_replicas <= 4
            assert capped == (model in GPU_MODELS.get(overlay, set())), name


def _kustomize(path: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not on PATH: the overlays are built with `kubectl kustomize`")
    run = subprocess.run(
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, f"kubectl kustomize {path}:\n{run.stderr}"
    return [doc for doc in yaml.safe_load_all(run.stdout) if doc]


def _validate(objs: list[dict[str, Any]]) -> None:
    for obj in objs:
        key = (obj["apiVersion"], obj["kind"])
        if key in CRD_SCHEMAS:
            jsonschema.validate(obj, CRD_SCHEMAS[key], format_checker=jsonschema.FormatChecker())
        else:
            for version in K8S_VERSIONS:
                kubernetes_validate.validate(obj, version, strict=True)


def _workloads(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] in ("Deployment", "StatefulSet", "Job")]


def _autoscaled(objs: list[dict[str, Any]]) -> set[str]:
    return {
        o["spec"]["scaleTargetRef"]["name"]
        for o in objs
        if o["kind"] in ("ScaledObject", "HorizontalPodAutoscaler")
    }


def _assert_nothing_trains_but_the_push_job(objs: list[dict[str, Any]]) -> None:
    for obj in _workloads(objs):
        for c in _containers(obj):
            line = " ".join([*c.get("command", []), *c.get("args", [])])
            if obj["kind"] == "Job" and obj["metadata"]["name"] == "chorus-push-demo-models":
                # Built in the Job's /tmp and pushed to the store the model pods load from.
                assert 'models build --repository "$CHORUS_MODEL_REPOSITORY"' in line
            else:
                assert "build" not in line, f"{obj['metadata']['name']}/{c['name']}: {line}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_container_trains_models_but_the_demo_push_job(
    built: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    _assert_nothing_trains_but_the_push_job(built[overlay])
    assert _config(built[overlay])["CHORUS_MODEL_REPOSITORY"].startswith("nats:")
    (job,) = _of(built[overlay], "Job").values()
    pod = _pod_spec(job)
    assert pod["securityContext"]["runAsNonRoot"] is True
    (c,) = pod["containers"]
    (tmp,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert any(v["name"] == tmp["name"] and "emptyDir" in v for v in pod["volumes"])
    _assert_reads_nats_credentials(
        job, c, from_env(SecurityConfig, "security", env=_config(built[overlay]))
    )
    base = _kustomize(k8s_refs.K8S / "base")
    assert not _of(base, "Job") and not _model_deployments(base)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscaled_workloads_leave_replicas_to_the_autoscaler(
    built: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    objs = built[overlay]
    scaled = _autoscaled(objs)
    assert scaled == {"chorus-router", *(f"chorus-model-{m}" for m in SCALED)}
    for name, dep in _of(objs, "Deployment").items():
        if name in scaled:
            assert "replicas" not in dep["spec"], f"{overlay}: {name} sets replicas"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_deny_by_default_and_allow_the_mesh(
    built: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    policies = _of(built[overlay], "NetworkPolicy")
    deny = policies["chorus-default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny

    def ports(rule: dict[str, Any]) -> set[int]:
        return {p["port"] for p in rule["ports"]}

    nats_in = policies["chorus-nats-ingress"]["spec"]["ingress"]
    assert {4222} in [ports(r) for r in nats_in if r["from"] == [{"podSelector": {}}]]
    (routes,) = [r for r in nats_in if ports(r) == {6222}]
    assert routes["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "nats"}}}]
    (egress,) = policies["chorus-nats-egress"]["spec"]["egress"]
    assert ports(egress) == {4222, 6222}
    (clients,) = policies["chorus-clients"]["spec"]["ingress"]
    assert ports(clients) == {50051, 8001}
    (metrics,) = policies["chorus-metrics"]["spec"]["ingress"]
    assert ports(metrics) == {9100}
    assert metrics["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"
    }
    (dns,) = policies["chorus-dns"]["spec"]["egress"]
    assert ports(dns) == {53}


def test_namespace_and_prometheus_are_set_in_one_place(tmp_path: Path) -> None:
    """Change the overlay's chorus-settings alone and nothing of the old values is left:
    objects' namespaces, the Namespace, KEDA's address and query matchers, the policy."""
    copy = tmp_path / "k8s"
    shutil.copytree(k8s_refs.K8S, copy)
    settings = copy / "overlays" / "cpu" / "settings.yaml"
    text = settings.read_text()
    assert text.count("namespace: chorus") == 1 and text.count(PROMETHEUS) == 1
    settings.write_text(
        text.replace("namespace: chorus", "namespace: team-a").replace(
            PROMETHEUS, "http://prom.observability.svc:9090"
        )
    )
    objs = _kustomize(copy / "overlays" / "cpu")
    _assert_settings(objs, "team-a", "http://prom.observability.svc:9090")


def _assert_settings(objs: list[dict[str, Any]], namespace: str, prometheus: str) -> None:
    (ns,) = _of(objs, "Namespace").values()
    assert ns == {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    for o in objs:
        if o["kind"] != "Namespace":
            assert o["metadata"]["namespace"] == namespace, o["metadata"]["name"]
    scaled = _of(objs, "ScaledObject")
    assert scaled
    for so in scaled.values():
        (trigger,) = so["spec"]["triggers"]
        assert trigger["metadata"]["serverAddress"] == prometheus
        query = trigger["metadata"]["query"]
        matchers = re.findall(r'namespace="([^"]*)"', query)
        assert matchers and set(matchers) == {namespace}, query
        k8s_refs.promql_metric_names(query)  # still PromQL
    (metrics,) = _of(objs, "NetworkPolicy")["chorus-metrics"]["spec"]["ingress"]
    prometheus_ns = prometheus.split("//")[1].split(".")[1]
    assert metrics["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": prometheus_ns
    }


def test_render_writes_an_overlay_for_your_models_that_builds_and_validates(
    tmp_path: Path,
) -> None:
    """What a pip-installed user gets: `chorus k8s render`, run where no checkout is."""
    out = tmp_path / "deploy"
    cmd = [sys.executable, "-m", "chorus.cli", "k8s", "render", "--out", str(out),
           "--models", "cancer_lr,cancer_net,diabetes_ridge", "--gpu", "cancer_net",
           "--repository", "nats:team-models", "--namespace", "team-a",
           "--prometheus", "http://prom.observability.svc:9090"]  # fmt: skip
    run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    objs = _kustomize(out)
    _validate(objs)
    _assert_settings(objs, "team-a", "http://prom.observability.svc:9090")
    _assert_nothing_trains_but_the_push_job(objs)
    models = _model_deployments(objs)
    assert set(models) == {"cancer_lr", "cancer_net", "diabetes_ridge"}
    assert models["cancer_lr"]["metadata"]["name"] == "chorus-model-cancer-lr"
    env = _config(objs)
    assert env["CHORUS_MODELS"] == "cancer_lr,cancer_net,diabetes_ridge"
    assert env["CHORUS_MODEL_REPOSITORY"] == "nats:team-models"
    assert not _of(objs, "Job") and not _of(objs, "Secret")  # the Secret is the user's to make
    assert _of(objs, "NetworkPolicy") and "chorus-settings" not in _of(objs, "ConfigMap")
    for model, dep in models.items():
        (c,) = _pod_spec(dep)["containers"]
        gpus = c["resources"]["limits"].get("nvidia.com/gpu")
        on_gpu = model == "cancer_net"
        assert (str(gpus) == "1") == on_gpu, model
        assert c["image"] == IMAGES["model-gpu" if on_gpu else "model-cpu"]
        assert "replicas" not in dep["spec"]
    scaled = {prometheus_scaling(so).target: so for so in _of(objs, "ScaledObject").values()}
    assert set(scaled) == {"chorus-router", *(d["metadata"]["name"] for d in models.values())}
    for model, dep in models.items():
        rule = prometheus_scaling(scaled[dep["metadata"]["name"]])
        assert rule.query.count(f'model="{model}"') == 3
        assert rule.max_replicas == (4 if model == "cancer_net" else 10)
    with pytest.raises(Exception, match="not among --models"):
        render(tmp_path / "bad", ["a"], gpu=["b"])


def test_render_cohosts_a_group_in_one_deployment_scaled_on_its_own_demand(
    tmp_path: Path,
) -> None:
    """`--group` (and a plan's placement) put members in one group Deployment: no Deployment
    of their own, one ScaledObject on the group's demand, the namespace set in its query."""
    plan = tmp_path / "plan.yaml"
    inputs = yaml.safe_load((k8s_refs.K8S / "plan-example.yaml").read_text())
    plan.write_text(yaml.safe_dump({**inputs, "placement": {"classify/digits": "cohost"}}))
    for how in (["--group", "digits=logreg,forest,mlp"], ["--plan", str(plan)]):
        out = tmp_path / how[0].strip("-")
        cmd = [sys.executable, "-m", "chorus.cli", "k8s", "render", "--out", str(out),
               "--models", "logreg,forest,mlp,knn", "--namespace", "team-a", *how,
               "-o", "json"]  # fmt: skip
        run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        (name, members), = json.loads(run.stdout)["groups"].items()  # fmt: skip
        assert sorted(members) == ["forest", "logreg", "mlp"]
        objs = _kustomize(out)
        _validate(objs)
        assert set(_model_deployments(objs)) == {"knn"}
        dep = _of(objs, "Deployment")[f"chorus-group-{name}"]
        template = dep["spec"]["template"]["metadata"]
        assert template["labels"]["chorus.dev/group"] == name
        assert template["annotations"]["chorus.dev/members"] == ",".join(members)
        (c,) = _pod_spec(dep)["containers"]
        assert c["args"][:2] == ["serve", "group"]
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        # Its own KServe port (the group as one model), behind its Service, open to clients.
        assert {"name": "grpc", "containerPort": 8001} in c["ports"]
        service = _of(objs, "Service")[f"chorus-group-{name}"]
        assert {p["name"]: p["port"] for p in service["spec"]["ports"]}["grpc"] == 8001
        clients = _of(objs, "NetworkPolicy")["chorus-clients"]["spec"]["podSelector"]
        assert "group" in clients["matchExpressions"][0]["values"]
        assert "replicas" not in dep["spec"]
        scaled = {prometheus_scaling(so).target: so for so in _of(objs, "ScaledObject").values()}
        rule = prometheus_scaling(scaled[f"chorus-group-{name}"])
        assert (
            rule.query.count(f'chorus_group_tasks_in_flight{{namespace="team-a",group="{name}"}}')
            == 2
        )
        assert f'member_waiting{{namespace="team-a",model="group:{name}"}}' in rule.query
        assert "chorus-model-logreg" not in scaled
    with pytest.raises(Exception, match="GPU stays in its own service"):
        render(tmp_path / "bad", ["a", "b"], gpu=["b"], groups={"g": ["a", "b"]})
    with pytest.raises(Exception, match="two or more of --models"):
        render(tmp_path / "bad", ["a", "b"], groups={"g": ["a", "c"]})


def test_render_of_the_demo_models_matches_the_packaged_demo(tmp_path: Path) -> None:
    """The demo's model folders and ScaledObjects and what render writes come from one
    template; they must not drift apart."""
    out = render(tmp_path / "demo", MODELS)
    for model in MODELS:
        ours = yaml.safe_load((out / "models" / model / "kustomization.yaml").read_text())
        demo = k8s_refs.K8S / "demo" / "models" / model / "kustomization.yaml"
        theirs = yaml.safe_load(demo.read_text())
        assert ours["resources"] == ["../../base/model"]
        assert theirs["resources"] == ["../../../base/model"]
        assert {**ours, "resources": []} == {**theirs, "resources": []}
    rendered = {
        d["metadata"]["name"]: d
        for d in yaml.safe_load_all((out / "autoscaling.yaml").read_text())
        if d
    }
    for so in k8s_refs.scaled_objects():
        assert rendered[so["metadata"]["name"]] == so


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
    # A name pattern must select exported metrics, and only those (no one matches up, say).
    patterns = k8s_refs.referenced_name_patterns()
    for pattern in patterns:
        matched = {n for n in KNOWN_METRICS if re.match(pattern, n)}
        assert matched and all(n.startswith("chorus_") for n in matched), pattern
    # Each source is scanned (a source whose queries silently vanished would pass the above).
    for queries in (
        k8s_refs.dashboard_queries(),
        k8s_refs.keda_queries(),
        k8s_refs.adapter_queries(),
    ):
        assert queries and all(
            k8s_refs.promql_metric_names(q) or k8s_refs.promql_name_patterns(q) for q in queries
        )


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

    # What an operator is paged about has a panel (issue 28).
    for needles in (
        ("nats_connected",),
        ("chorus_router_queue_depth", "by (priority)"),
        ("chorus_router_in_flight", "by (priority)"),
        ("chorus_router_retries_total",),
        ("chorus_router_hedges_total",),
        ("chorus_router_circuit_state",),
        ("chorus_router_one_way_fallbacks_total",),
        ("chorus_model_gpu_memory_used_bytes",),
        ("chorus_model_gpu_utilization_ratio",),
        ('status="needs_review"',),
        ("chorus_fuser_model_weight",),
        ("chorus_router_async_backlog",),
        ("chorus_router_review_backlog",),
    ):
        panel_with(*needles)
    # Every panel says what its numbers are.
    for p in panels:
        if p["type"] != "row":
            assert p["fieldConfig"]["defaults"].get("unit"), f"no unit: {p['title']}"
    # Batch size: a mean and the whole distribution, never a quantile of integer buckets.
    batch = [p for p in panels if "chorus_model_batch_size" in exprs[p["title"]]]
    assert {p["type"] for p in batch} >= {"timeseries", "heatmap"}
    assert not any("histogram_quantile" in exprs[p["title"]] for p in batch)
    # The demand panel reads what KEDA reads: the 1 m average, not the instant value.
    demand = exprs[panel_with("chorus_router_member_waiting")]
    assert "avg_over_time(chorus_model_in_flight" in demand and "[1m]" in demand
    # Variables resolve before the first task: $namespace from a series every router exports
    # from its start (not from task counts), and $capability, $model, $pod beside it.
    assert set(variables) >= {"namespace", "capability", "model", "pod"}
    assert "chorus_router_nats_connected" in variables["namespace"]["definition"]
    assert "chorus_router_tasks_total" not in variables["namespace"]["definition"]


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
