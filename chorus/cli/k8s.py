"""`chorus k8s render`: a kustomize overlay for the models of a store, from the manifests
shipped inside the package, so a pip-installed user deploys without a source checkout."""

from __future__ import annotations

import argparse
import copy
import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from chorus import __version__
from chorus.cli.common import add_nats, add_output, emit, wants_json
from chorus.core.errors import ChorusError, InvalidArgument
from chorus.planner.k8s import PACKAGED_K8S

DEFAULT_NAMESPACE = "chorus"
DEFAULT_PROMETHEUS = "http://prometheus-operated.monitoring.svc:9090"
DEFAULT_REPOSITORY = "nats:chorus-models"
IMAGES = ("chorus-control", "chorus-model-cpu", "chorus-model-gpu")
REGISTRY = "ghcr.io/chorus-mesh"
GPU_MAX_REPLICAS = 4
"""One GPU per replica: a GPU model's autoscaler stops at the GPUs it may take."""

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_PROMETHEUS = re.compile(r"^https?://[^./:]+\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.|:|/|$)")
_TEMPLATE_MODEL = "logreg"
"""The demo member whose ScaledObject (components/keda) every rendered model's copies."""


def k8s_name(model: str, kind: str = "model") -> str:
    """The model's (or group's) name as Kubernetes objects may carry it (chorus-model-<this>);
    model names may hold underscores, object names may not. Labels and queries keep the real
    name."""
    name = model.lower().replace("_", "-").replace(".", "-")
    if not _DNS_LABEL.match(name) or len(name) > 63 - len(f"chorus-{kind}-"):
        raise InvalidArgument(
            f"k8s: {kind} {model!r} cannot name a Deployment (chorus-{kind}-{name}): use "
            f"letters, digits, '-' or '_', at most {63 - len(f'chorus-{kind}-')} characters"
        )
    return name


def render(
    out: Path,
    models: Sequence[str],
    *,
    repository: str = DEFAULT_REPOSITORY,
    namespace: str = DEFAULT_NAMESPACE,
    prometheus: str = DEFAULT_PROMETHEUS,
    gpu: Sequence[str] = (),
    groups: Mapping[str, Sequence[str]] | None = None,
    version: str = __version__,
) -> Path:
    """Write a deployable overlay into `out`: a copy of the packaged base and settings
    component, one directory per model (Deployment, Service, PodDisruptionBudget from the
    base's model template), a KEDA ScaledObject per model and for the router, and a
    kustomization naming the store, namespace, Prometheus and image tags. `groups` co-hosts
    members: each group gets one Deployment (the base's group template, `chorus serve group`)
    and a ScaledObject on its own demand, and its members no Deployment of their own. The NATS
    Secret is not written: it holds a password, made with kubectl (see the kustomization's
    header)."""
    import yaml

    models = list(dict.fromkeys(models))
    if not models:
        raise InvalidArgument("k8s: no models: pass --models m1,m2,...")
    names = {m: k8s_name(m) for m in models}
    clash = len(set(names.values())) < len(names)
    if clash:
        raise InvalidArgument(f"k8s: models {sorted(names)} give clashing Kubernetes names")
    unknown = [g for g in gpu if g not in names]
    if unknown:
        raise InvalidArgument(f"k8s: --gpu {', '.join(unknown)}: not among --models")
    groups = dict(groups or {})
    group_names = {g: k8s_name(g, "group") for g in groups}
    grouped = [m for members in groups.values() for m in members]
    for group, members in groups.items():
        strangers = [m for m in members if m not in names]
        if strangers or len(members) < 2:
            raise InvalidArgument(
                f"k8s: group {group}: expected two or more of --models, got {list(members)}"
            )
    twice = sorted({m for m in grouped if grouped.count(m) > 1})
    if twice:
        raise InvalidArgument(f"k8s: {', '.join(twice)} in more than one group")
    on_gpu = sorted(set(gpu) & set(grouped))
    if on_gpu:
        raise InvalidArgument(
            f"k8s: {', '.join(on_gpu)}: a member on a GPU stays in its own service, not a group"
        )
    alone = {m: n for m, n in names.items() if m not in grouped}
    if not repository.startswith("nats:"):
        raise InvalidArgument(
            f"k8s: --repository {repository!r}: model pods load from the store, nats:<bucket>"
        )
    if not _DNS_LABEL.match(namespace):
        raise InvalidArgument(f"k8s: --namespace {namespace!r} is not a Kubernetes name")
    if not _PROMETHEUS.match(prometheus):
        raise InvalidArgument(
            f"k8s: --prometheus {prometheus!r}: expected http://<service>.<namespace>.svc:<port> "
            "(the namespace admits Prometheus in the NetworkPolicy)"
        )

    out.mkdir(parents=True, exist_ok=True)
    for part in ("base", "components/settings"):
        shutil.rmtree(out / part, ignore_errors=True)
        shutil.copytree(PACKAGED_K8S / part, out / part)
    shutil.rmtree(out / "groups", ignore_errors=True)
    (out / "models").mkdir(exist_ok=True)
    for group, name in group_names.items():
        held = {"chorus.dev/members": ",".join(groups[group])}
        _instance(out / "groups" / name, "group", name, {"chorus.dev/group": group}, held)
    for model, name in alone.items():
        _instance(out / "models" / name, "model", name, {"chorus.dev/model": model})

    settings = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "chorus-settings",
            "annotations": {"config.kubernetes.io/local-config": "true"},
        },
        "data": {"namespace": namespace, "prometheus": prometheus},
    }
    (out / "settings.yaml").write_text(
        "# The one place for the namespace and the Prometheus address "
        "(components/settings copies them).\n" + yaml.safe_dump(settings, sort_keys=False)
    )
    (out / "autoscaling.yaml").write_text(
        "# KEDA: one ScaledObject per model and per co-hosted group (demand per replica) and "
        "the router's (task rate).\n"
        + yaml.safe_dump_all(_scaled_objects(alone, group_names), sort_keys=False)
    )

    body: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [
            "settings.yaml",
            "base",
            *(f"models/{n}" for n in alone.values()),
            *(f"groups/{n}" for n in group_names.values()),
            "autoscaling.yaml",
        ],
        "components": ["components/settings"],
        "configMapGenerator": [
            {
                "name": "chorus-config",
                "behavior": "merge",
                "literals": [
                    f"CHORUS_MODELS={','.join(models)}",
                    f"CHORUS_MODEL_REPOSITORY={repository}",
                ],
            }
        ],
    }
    if gpu:
        shutil.copyfile(PACKAGED_K8S / "overlays/gpu/model-gpu.yaml", out / "model-gpu.yaml")
        targets = "^chorus-model-(" + "|".join(names[g] for g in gpu) + ")$"
        body["patches"] = [
            {"path": "model-gpu.yaml", "target": {"kind": "Deployment", "name": targets}},
            {
                "target": {"kind": "ScaledObject", "name": targets},
                "patch": yaml.safe_dump(
                    [{"op": "replace", "path": "/spec/maxReplicaCount", "value": GPU_MAX_REPLICAS}]
                ),
            },
        ]
    body["images"] = [{"name": f"{REGISTRY}/{image}", "newTag": version} for image in IMAGES]
    header = [
        "# Written by `chorus k8s render`: Chorus for the models "
        f"{', '.join(models)} of {repository}.",
        "# Before `kubectl apply -k` this folder, the namespace needs the Secret chorus-nats:",
        f"#   kubectl create namespace {namespace}",
        f"#   kubectl -n {namespace} create secret generic chorus-nats \\",
        '#     --from-literal=user=chorus --from-literal=password="$(openssl rand -hex 24)"',
    ]
    if gpu:
        header.append(f"# On GPUs (model-gpu image, one nvidia.com/gpu each): {', '.join(gpu)}.")
    for group, members in groups.items():
        header.append(f"# Co-hosted, one pod a replica: group {group} of {', '.join(members)}.")
    (out / "kustomization.yaml").write_text(
        "\n".join(header) + "\n" + yaml.safe_dump(body, sort_keys=False)
    )
    return out


def _instance(
    folder: Path,
    template: str,
    name: str,
    labels: dict[str, str],
    annotations: dict[str, str] | None = None,
) -> None:
    """One copy of the base's `template` (model or group): its objects named with `-<name>`,
    selected by `labels`, its pods carrying `annotations`."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    kustomization: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [f"../../base/{template}"],
        "nameSuffix": f"-{name}",
        "labels": [{"pairs": labels, "includeSelectors": True}],
    }
    if annotations:
        kustomization["commonAnnotations"] = annotations
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))


def _scaled_objects(names: dict[str, str], groups: dict[str, str]) -> list[dict[str, Any]]:
    import yaml

    path = PACKAGED_K8S / "components" / "keda" / "scaledobjects.yaml"
    packaged = {d["metadata"]["name"]: d for d in yaml.safe_load_all(path.read_text()) if d}
    template = packaged[f"chorus-model-{_TEMPLATE_MODEL}"]
    objects = []
    for model, name in names.items():
        so = copy.deepcopy(template)
        so["metadata"]["name"] = so["spec"]["scaleTargetRef"]["name"] = f"chorus-model-{name}"
        so["metadata"]["labels"]["chorus.dev/model"] = model
        trigger = so["spec"]["triggers"][0]["metadata"]
        trigger["query"] = trigger["query"].replace(
            f'model="{_TEMPLATE_MODEL}"', f'model="{model}"'
        )
        objects.append(so)
    for group, name in groups.items():
        so = copy.deepcopy(template)
        so["metadata"]["name"] = so["spec"]["scaleTargetRef"]["name"] = f"chorus-group-{name}"
        labels = so["metadata"]["labels"]
        labels.pop("chorus.dev/model")
        labels.update({"app.kubernetes.io/component": "group", "chorus.dev/group": group})
        # A model's demand per replica, read off the group: the tasks in flight on its
        # replicas. The routers' waiting term stays, 0 for a group: a router sends a group
        # each task at once (no joined calls wait for a slot), as a live test shows.
        trigger = so["spec"]["triggers"][0]["metadata"]
        trigger["query"] = (
            trigger["query"]
            .replace(f'waiting{{namespace="chorus",model="{_TEMPLATE_MODEL}"}}',
                     f'waiting{{namespace="chorus",model="group:{group}"}}')
            .replace("chorus_model_in_flight", "chorus_group_tasks_in_flight")
            .replace(f'model="{_TEMPLATE_MODEL}"', f'group="{group}"')
        )  # fmt: skip
        objects.append(so)
    objects.append(packaged["chorus-router"])
    return objects


def add_arguments(sub: Any) -> None:
    """`chorus k8s render` under the `chorus` parser's subcommands."""
    k8s = sub.add_parser("k8s", help="Kubernetes manifests").add_subparsers(
        required=True, metavar="ACTION"
    )
    r = k8s.add_parser(
        "render",
        help="write a kustomize overlay for your models (from the manifests in the package)",
    )
    r.add_argument("--out", type=Path, required=True, help="folder to write (kubectl apply -k)")
    r.add_argument(
        "--models",
        help="comma-separated model names, one Deployment each (default: every model of "
        "--from, else of the store named by --repository)",
    )
    r.add_argument(
        "--from", dest="source", type=Path, metavar="DIR",
        help="a folder repository whose models to deploy (push it with `chorus models push`)",
    )  # fmt: skip
    add_nats(r, "to list the store's models")
    r.add_argument("--repository", default=DEFAULT_REPOSITORY, help="the store, nats:<bucket>")
    r.add_argument("--namespace", default=DEFAULT_NAMESPACE,
                   help=f"the Kubernetes namespace (default {DEFAULT_NAMESPACE})")  # fmt: skip
    r.add_argument("--prometheus", default=DEFAULT_PROMETHEUS, help="what KEDA queries")
    r.add_argument(
        "--gpu",
        nargs="+",
        default=[],
        metavar="MODEL",
        help="models run on a GPU (model-gpu image, one nvidia.com/gpu per replica)",
    )
    r.add_argument(
        "--group", action="append", default=[], metavar="NAME=M1,M2",
        help="co-host these models and a fuser in one Deployment (repeatable); the operator's "
             "choice wins over --plan's",
    )  # fmt: skip
    r.add_argument("--plan", type=Path, metavar="INPUTS",
                   help="plan inputs (YAML, as `chorus plan --inputs`): co-host where the "
                        "plan's placement says so")  # fmt: skip
    add_output(r)
    r.set_defaults(func=cmd_render, extras=("control",))


def _groups(args: argparse.Namespace, models: list[str]) -> dict[str, list[str]]:
    """The groups named by --group, then those --plan's placement co-hosts among the models
    left (a model is in one group at most)."""
    out: dict[str, list[str]] = {}
    for spec in args.group:
        name, _, members = spec.partition("=")
        if not name or not members:
            raise InvalidArgument(f"k8s: --group {spec!r}: expected NAME=MODEL1,MODEL2")
        out[name.strip()] = [m.strip() for m in members.split(",") if m.strip()]
    if args.plan is not None:
        from chorus.planner.inputs import load_inputs
        from chorus.planner.placement import groups, placements

        taken = {m for members in out.values() for m in members}
        for name, members in groups(placements(load_inputs(args.plan))).items():
            left = [m for m in members if m in models and m not in taken]
            if len(left) >= 2 and name not in out:
                out[name] = left
                taken.update(left)
    return out


def _models(args: argparse.Namespace) -> list[str]:
    """The models named, else those of the folder given, else those of the store."""
    import asyncio

    from chorus.cli.common import nats_url
    from chorus.cli.store import with_store
    from chorus.core.model_store import StoreError, address, identify, version_folders

    if args.models:
        return [m.strip() for m in args.models.split(",") if m.strip()]
    try:
        if args.source is not None:
            return sorted({identify(f)[0] for f in version_folders(args.source)})
        bucket = address(args.repository)
        if bucket is None:
            return []
        records = asyncio.run(with_store(nats_url(args), bucket, False, lambda s: s.versions()))
    except StoreError as exc:
        raise InvalidArgument(f"k8s: {exc}") from None
    return sorted({r.model for r in records})


def cmd_render(args: argparse.Namespace) -> int:
    try:
        models = _models(args)
        groups = _groups(args, models)
        out = render(
            args.out,
            models,
            repository=args.repository,
            namespace=args.namespace,
            prometheus=args.prometheus,
            gpu=args.gpu,
            groups=groups,
        )
    except ChorusError as exc:
        print(f"chorus k8s render: {exc}", file=sys.stderr)
        return 1
    if wants_json(args):
        emit({"kustomization": str(out / "kustomization.yaml"), "models": models,
              "gpu": list(args.gpu), "groups": groups,
              "namespace": args.namespace})  # fmt: skip
        return 0
    print(f"wrote {out}/kustomization.yaml: kubectl apply -k {out}")
    return 0
