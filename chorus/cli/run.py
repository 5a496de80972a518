"""`chorus up`, `chorus demo`, `chorus submit`, `chorus status` and `chorus bench`: a mesh on
this machine and what talks to it."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from chorus.cli.common import NATS_ENV, Progress, emit, router, wants_json
from chorus.cli.defaults import (
    CAPABILITY,
    DEFAULT_DATA_DIR,
    DEFAULT_REPOSITORY,
    DEMO_REPOSITORY,
    DEMO_SERVED,
)


def _serving_plan(args: argparse.Namespace) -> tuple[Path, list[str], dict[str, int]]:
    """The repository, the models to start and each one's processes: the demo's when asked
    for (built first), else every model the repository holds, as their manifests say."""
    from chorus.services import repository

    wants_demo = getattr(args, "demo", False) or args.func is cmd_demo
    root = args.repository or (DEMO_REPOSITORY if wants_demo else DEFAULT_REPOSITORY)
    if wants_demo:
        from chorus.demo.build import build_demo

        progress = Progress("demo" if args.func is cmd_demo else "up")
        for path in build_demo(root, on_model=lambda name: progress(f"training {name}")):
            progress(f"built demo model {path}")
        found = [repository.load(root, name) for name in DEMO_SERVED]
    else:
        found = repository.check(root)
        if not found:
            raise repository.ManifestError(
                f"{root}: no models here; add one with `chorus models add MODEL.onnx --name N "
                "--capability C --repository DIR`, or run the demo with `chorus up --demo`"
            )
    replicas = {mv.manifest.name: args.replicas or mv.manifest.replicas for mv in found}
    return root, [mv.manifest.name for mv in found], replicas


def _stored_plan(
    args: argparse.Namespace, nats_url: str, bucket: str
) -> tuple[list[str], dict[str, int]]:
    """The models of a `nats:` repository (each one's highest version) and their processes."""
    import asyncio

    from chorus.cli.store import with_store
    from chorus.services.repository import ManifestError

    records = asyncio.run(with_store(nats_url, bucket, False, lambda s: s.versions()))
    latest = {r.model: r for r in records}
    if not latest:
        raise ManifestError(
            f"nats:{bucket} holds no models; push a repository with `chorus models push DIR`"
        )
    replicas = {m: args.replicas or int(r.manifest.get("replicas", 1)) for m, r in latest.items()}
    return sorted(latest), replicas


def _start_mesh(args: argparse.Namespace) -> Any:
    from chorus.cli.placement import groups_for
    from chorus.core.model_store import address
    from chorus.launch.mesh import Mesh

    # CHORUS_NATS_URL, like --nats-url, names a running NATS to use instead of starting one.
    args.nats_url = args.nats_url or os.environ.get(NATS_ENV) or None
    bucket = address(args.repository) if args.repository is not None else None
    extra_env = {}
    if bucket is not None:
        extra_env["CHORUS_MODEL_CACHE_DIR"] = str(args.data_dir / "model-cache")
    mesh = Mesh(
        args.repository or DEFAULT_REPOSITORY,
        args.data_dir,
        models=[],
        nats_url=args.nats_url,
        nats_port=args.nats_port,
        router_port=args.router_port,
        nats_cluster=args.nats_cluster,
        extra_env=extra_env,
    )
    try:
        if bucket is not None:
            # The store lives on the bus: NATS first, then the models it holds.
            args.data_dir.mkdir(parents=True, exist_ok=True)
            if mesh.nats is not None:
                mesh.nats.start()
            mesh.models, mesh.replicas = _stored_plan(args, mesh.nats_url, bucket)
        else:
            mesh.repository, mesh.models, mesh.replicas = _serving_plan(args)
    except BaseException:
        mesh.stop()
        raise
    mesh.groups = groups_for(args, Path(mesh.repository), mesh.models)
    if sys.stderr.isatty():  # on a terminal, say what the wait is for; in a log, the lines below
        Progress("demo" if args.func is cmd_demo else "up")(
            f"starting nats, {len(mesh.models)} model(s), the fuser and the router"
        )
    mesh.start()
    # With -o json, stdout is kept for the one document `chorus up` prints once up.
    out = sys.stderr if wants_json(args) else sys.stdout
    where = f"JetStream in {args.data_dir / 'jetstream'}" if mesh.nats else "already running"
    print(f"nats     {mesh.nats_url}  ({where})", file=out)
    for child in mesh.children:
        print(child.describe(), file=out)
    print(f"logs in {args.data_dir / 'logs'}", file=out)
    return mesh


def cmd_up(args: argparse.Namespace) -> int:
    from chorus.core.environment import check_environment
    from chorus.launch.mesh import StartFailed
    from chorus.services.repository import ManifestError

    check_environment()  # once here, before every service says the same
    if args.replicas < 0:
        print("chorus up: --replicas must be at least 1", file=sys.stderr)
        return 2
    try:
        mesh = _start_mesh(args)
    except ManifestError as err:
        print(f"chorus up: {err}", file=sys.stderr)
        return 2
    except StartFailed as err:
        print(f"chorus up: {err}", file=sys.stderr)
        return 1
    if wants_json(args):
        emit({"router": mesh.router_target, "nats": mesh.nats_url,
              "logs": str(args.data_dir / "logs"),
              "services": [c.describe() for c in mesh.children]})  # fmt: skip
    else:
        print(f"mesh up; try: chorus submit --router {mesh.router_target}   (Ctrl-C stops)",
              flush=True)  # fmt: skip
    out = sys.stderr if wants_json(args) else sys.stdout
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    try:
        while not stop.wait(0.2):
            exited = [c.name for c in mesh.children if c.proc.poll() is not None]
            if exited:
                print(f"{', '.join(exited)} exited; see {args.data_dir / 'logs'}", file=out,
                      flush=True)  # fmt: skip
                break
    finally:
        print("stopping the mesh", file=out, flush=True)
        mesh.stop()
    return 0 if stop.is_set() else 1


def cmd_submit(args: argparse.Namespace) -> int:
    if args.input:
        from chorus.cli.submit_inputs import Options, run_submit_inputs
        from chorus.core.context import Priority

        return run_submit_inputs(
            Options(
                router=router(args),
                capability=args.capability,
                inputs=args.input,
                policy=args.policy,
                priority=Priority[args.priority.upper()],
                deadline_ms=args.deadline_ms,
                limit=args.limit,
                show=args.show,
                as_json=wants_json(args),
                conflict=args.conflict,
                task_id=args.task_id,
                run_async=args.run_async,
                idempotency_key=args.idempotency_key,
            )
        )
    if args.capability != CAPABILITY or args.run_async:
        print(f"chorus submit: --input NAME=FILE is needed for {args.capability}"
              + (" with --async" if args.run_async else "")
              + f" (without it, the demo's held-out digits go to {CAPABILITY})",
              file=sys.stderr)  # fmt: skip
        return 2
    from chorus.cli.submit import run_submit

    return run_submit(router(args), args.limit, args.batch, args.policy, args.show,
                      as_json=wants_json(args))  # fmt: skip


def cmd_demo(args: argparse.Namespace) -> int:
    from chorus.cli.submit import run_submit
    from chorus.launch.mesh import StartFailed

    if args.data_dir == DEFAULT_DATA_DIR:
        args.data_dir = Path(tempfile.mkdtemp(prefix="chorus-demo-"))
    args.replicas = 0
    try:
        mesh = _start_mesh(args)
    except StartFailed as err:
        print(f"chorus demo: {err}", file=sys.stderr)
        return 1
    try:
        return run_submit(mesh.router_target, args.limit, args.batch, args.policy, args.show,
                          as_json=wants_json(args))  # fmt: skip
    finally:
        mesh.stop()
        print("mesh stopped", file=sys.stderr if wants_json(args) else sys.stdout)


def cmd_bench(args: argparse.Namespace) -> int:
    from chorus.bench import plot
    from chorus.bench.ray_path import RAY_LAYOUTS
    from chorus.bench.run import Options, run
    from chorus.bench.triton import Batching

    paths = args.paths or ["bare", "service", "mesh", *(RAY_LAYOUTS if args.ray_python else [])]
    if set(RAY_LAYOUTS) & set(paths) and args.ray_python is None:
        print("chorus bench: the ray paths need --ray-python", file=sys.stderr)
        return 2
    if args.requests < 1 or min(args.concurrency) < 1 or args.rounds < 1:
        print(
            "chorus bench: --requests, --concurrency and --rounds must be at least 1",
            file=sys.stderr,
        )
        return 2
    try:
        batching = Batching(queue_delay_us=args.triton_queue_delay_us,
                            instances=args.triton_instances)  # fmt: skip
    except ValueError as err:
        print(f"chorus bench: --triton-queue-delay-us or --triton-instances: {err}",
              file=sys.stderr)  # fmt: skip
        return 2
    if {"triton-ensemble", "triton-single"} & set(paths):
        from chorus.bench.triton import TritonUnavailable, default_venv, ensure_venv

        try:
            ensure_venv(args.triton_venv, build=False)
        except TritonUnavailable:
            print(f"building the Triton virtualenv at {args.triton_venv or default_venv()} "
                  "(once; a few minutes)", flush=True)  # fmt: skip
            try:
                ensure_venv(args.triton_venv)
            except TritonUnavailable as err:
                print(f"chorus bench: no Triton for the triton paths: {err}", file=sys.stderr)
                return 1
    outcome = run(
        Options(
            requests=args.requests,
            concurrency=tuple(dict.fromkeys(args.concurrency)),
            paths=tuple(paths),
            ray_python=args.ray_python,
            triton_venv=args.triton_venv,
            triton_batching=batching,
            repository=args.repository,
            out=args.out,
            progress=not args.no_progress,
            keep_tasks=args.keep_tasks,
            rounds=args.rounds,
        )
    )
    if wants_json(args):
        emit({"results": str(outcome.json_path),
              "plot": None if outcome.plot_path is None else str(outcome.plot_path)})  # fmt: skip
        return 0
    print(f"results  {outcome.json_path}")
    if outcome.plot_path is not None:
        print(f"plot     {outcome.plot_path}")
    else:
        print(f"no plot: matplotlib is not installed ({plot.INSTALL_HINT})")
    return 0
