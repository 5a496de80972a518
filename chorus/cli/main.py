"""The `chorus` command: build models, run services, start a local mesh, submit tasks."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import logging
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

DEFAULT_REPOSITORY = Path("models")
DEFAULT_DATA_DIR = Path(".chorus")
DEMO_REPOSITORY = DEFAULT_DATA_DIR / "demo-models"
"""Where `chorus demo` and `chorus up --demo` build the demo: never a user's repository."""
GC_FIRST_GENERATION = 20_000
"""Allocations between young-generation collections in a serving process (CPython: 700)."""
DEMO_MODELS = ["logreg", "forest", "mlp", "knn", "stack", "gate", "caption"]
"""Three members, the arbiter, the stacking meta-model, the gate and the caption model.
(The multi-task model is built too, but not started: it would join classify/digits.)"""
CAPABILITY = "classify/digits"
PRIORITIES = ("CRITICAL", "NORMAL", "BATCH")
STOP_WHILE_STARTING_S = 0.5
"""How long a service stopped before it served may take to close what it had opened."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or 0)
    except Exception as err:
        line = _unreachable(err)
        if line is None:
            raise
        command = " ".join(itertools.takewhile(lambda t: not t.startswith("-"), argv))
        print(f"chorus {command}: {line}", file=sys.stderr)
        return 1


def _unreachable(err: Exception) -> str | None:
    """One line for a service that did not answer (a gRPC status, or NATS not reachable),
    instead of a traceback; None for anything else, which is a bug worth its traceback."""
    import grpc
    import nats.errors

    if isinstance(err, grpc.RpcError) and hasattr(err, "code"):
        return f"{err.code().name}: {err.details()}"
    from chorus.natsclient import NatsUnreachable

    if isinstance(err, NatsUnreachable):
        return f"cannot reach {err}"
    if isinstance(err, nats.errors.NoServersError | nats.errors.TimeoutError):
        return f"NATS: {err}"
    return None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chorus", description=__doc__)
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    models = sub.add_parser("models", help="the model repository").add_subparsers(
        required=True, metavar="ACTION"
    )
    build = models.add_parser("build", help="train the demo models and write them as ONNX")
    build.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    build.add_argument("--force", action="store_true", help="rebuild models that exist")
    build.add_argument("--bench", action="store_true", help="also the CNN for throughput work")
    build.set_defaults(func=_models_build)
    add = models.add_parser(
        "add", help="add an ONNX file to a repository; the graph gives inputs and outputs"
    )
    add.add_argument("onnx_file", type=Path, metavar="MODEL.onnx")
    add.add_argument("--name", required=True, help="the model's name (its folder)")
    add.add_argument("--capability", required=True, action="append", dest="capabilities",
                     help="what it answers, e.g. classify/cancer or regress/diabetes "
                          "(repeatable)")  # fmt: skip
    labels = add.add_mutually_exclusive_group()
    labels.add_argument("--labels", default="", help="class names in column order: a,b,c")
    labels.add_argument("--labels-file", type=Path, help="class names, one per line")
    add.add_argument("--kind", default="probabilities",
                     choices=["probabilities", "logits", "binary", "regression"],
                     help="what the scores are (default probabilities)")  # fmt: skip
    add.add_argument("--version", default="", help="default: the next number")
    add.add_argument("--scores-output", default="",
                     help="the output holding the scores, when the graph has several")  # fmt: skip
    add.add_argument("--temperature", type=float,
                     help="a classifier's calibration (`chorus models calibrate`)")  # fmt: skip
    add.add_argument("--replicas", type=int, default=1, help="processes `chorus up` starts")
    add.add_argument("--description", default="")
    add.add_argument("--force", action="store_true", help="replace an existing version")
    add.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    add.set_defaults(func=_models_add)
    cal = models.add_parser(
        "calibrate", help="fit a classifier's temperature on held-out rows, store it"
    )
    cal.add_argument("--model", required=True)
    cal.add_argument("--version", default=None, help="default: the highest")
    cal.add_argument("--input", action="append", required=True, metavar="NAME=FILE",
                     help="held-out rows of an input (.npy or .csv); repeat per input")  # fmt: skip
    cal.add_argument("--truth", required=True, type=Path,
                     help="the rows' true class indices (.npy or .csv)")  # fmt: skip
    cal.add_argument("--dry-run", action="store_true", help="fit and report, write nothing")
    cal.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    cal.set_defaults(func=_models_calibrate)
    chk = models.add_parser("check", help="validate every manifest of a repository")
    chk.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    chk.set_defaults(func=_models_check)
    plan = sub.add_parser("plan", help="replicas per model and device, as a mixed-integer program")
    plan.set_defaults(func=_plan)
    _plan_arguments(plan)
    rv = sub.add_parser("review", help="answer the rows the fuser escalated to people")
    rv.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    rv.add_argument("--router", default="127.0.0.1:50051")
    rv.add_argument("--reviewer", default="")
    rv.add_argument("--capability", default="", help="only this capability's cases")
    rv.add_argument("--answer", action="append", default=[], metavar="ROW=LABEL",
                    help="answer the next case without asking (repeatable)")  # fmt: skip
    rv.add_argument("--list", action="store_true", help="show waiting cases, answer none")
    rv.add_argument("--wait", type=float, default=2.0, help="seconds to wait for a case")
    rv.add_argument("--ack-wait", type=float, default=60.0,
                    help="an unanswered case returns to the queue after this long")  # fmt: skip
    rv.set_defaults(func=_review)
    status = sub.add_parser("status", help="live replicas and their load, as the router sees them")
    status.add_argument("--router", default="127.0.0.1:50051")
    status.set_defaults(func=_status)
    ls = models.add_parser("ls", help="list the models a running router sees")
    ls.add_argument("--router", default="127.0.0.1:50051")
    ls.set_defaults(func=_models_ls)
    for action, what in (
        ("index", "the versions one model service has, and their state"),
        ("load", "load (or reload) a version on one model service; the highest without --version"),
        ("unload", "unload a version (all without --version) on one model service"),
    ):
        control = models.add_parser(action, help=what)
        control.add_argument("--service", required=True, metavar="HOST:PORT",
                             help="the model service's KServe gRPC address")  # fmt: skip
        if action != "index":
            control.add_argument("--model", required=True)
            control.add_argument("--version", default="")
        control.set_defaults(func=_models_control, action=action)

    fusion = sub.add_parser("fusion", help="fusion on held-out data").add_subparsers(
        required=True, metavar="ACTION"
    )
    report = fusion.add_parser("report", help="accuracy of every strategy and conflict policy")
    report.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    report.set_defaults(func=_fusion_report)
    fcal = fusion.add_parser(
        "calibrate", help="held-out rows and their truth as the conformal policy's calibration"
    )
    fcal.add_argument("--capability", required=True)
    fcal.add_argument("--input", action="append", required=True, metavar="NAME=FILE",
                      help="held-out rows of an input (.npy or .csv), repeatable")  # fmt: skip
    fcal.add_argument("--truth", required=True, type=Path,
                      help="true class indices, or true values, one per row")  # fmt: skip
    fcal.add_argument("--policy", default="", help="fusion strategy (default: the capability's)")
    fcal.add_argument("--coverage", type=float, default=0.9, help="for the printed summary")
    fcal.add_argument("--extend", action="store_true", help="add to the rows already stored")
    fcal.add_argument("--router", default="127.0.0.1:50051")
    fcal.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    fcal.set_defaults(func=_fusion_calibrate)

    serve = sub.add_parser("serve", help="run one service in the foreground").add_subparsers(
        required=True, metavar="SERVICE"
    )
    sm = serve.add_parser("model", help="a model service (KServe v2 gRPC + NATS)")
    sm.add_argument("--model", required=True)
    sm.add_argument("--repository", type=Path)
    sm.add_argument("--grpc-port", type=int)
    sm.add_argument("--device", choices=["auto", "cpu", "cuda"])
    sm.add_argument("--delay-ms", type=float, help="fault injection: slow every inference")
    sm.add_argument("--noise", type=float, help="fault injection: noise on float inputs")
    _common(sm)
    sm.set_defaults(func=_serve_model)
    sr = serve.add_parser("router", help="the router (chorus.v1.TaskService)")
    sr.add_argument("--grpc-port", type=int)
    _common(sr)
    sr.set_defaults(func=_serve_router)
    sf = serve.add_parser("fuser", help="a fuser replica")
    _common(sf)
    sf.set_defaults(func=_serve_fuser)

    up = sub.add_parser(
        "up", help="start nats-server, every model of a repository, the fuser and the router"
    )
    _mesh_args(up)
    up.add_argument("--demo", action="store_true",
                    help=f"build the demo models (into {DEMO_REPOSITORY} unless --repository) "
                         "and serve them")  # fmt: skip
    up.add_argument("--replicas", type=int, default=0,
                    help="processes per model (default: each manifest's replicas)")  # fmt: skip
    up.set_defaults(func=_up)

    submit = sub.add_parser(
        "submit",
        help="send your own rows (--input) to a capability, or the demo's held-out digits",
    )
    _submit_args(submit)
    submit.add_argument("--router", default="127.0.0.1:50051")
    submit.add_argument("--capability", default=CAPABILITY)
    submit.add_argument("--input", action="append", default=[], metavar="NAME=FILE",
                        help="an input from a .npy array or .csv rows (a header line is "
                             "skipped); repeat per input; all rows go as one task")  # fmt: skip
    submit.add_argument("--json", action="store_true",
                        help="print outputs, members' outputs and explanation as JSON")  # fmt: skip
    submit.add_argument("--priority", choices=[p.lower() for p in PRIORITIES], default="normal")
    submit.add_argument("--deadline-ms", type=int, default=0)
    submit.set_defaults(func=_submit)

    demo = sub.add_parser("demo", help="up + submit + down, in one command")
    _mesh_args(demo)
    _submit_args(demo)
    demo.set_defaults(func=_demo)

    bench = sub.add_parser(
        "bench", help="one digit per request through bare ORT, a service, the mesh (and Ray)"
    )
    bench.add_argument("--requests", type=int, default=2000, help="per path and concurrency")
    bench.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    bench.add_argument("--paths", nargs="+",
                       choices=["bare", "service", "mesh", "ray", "ray-single"],
                       help="default: bare service mesh, and both Ray Serve layouts with "
                       "--ray-python")  # fmt: skip
    bench.add_argument("--ray-python", type=Path,
                       help="a python with ray[serve], onnxruntime, numpy and aiohttp")  # fmt: skip
    bench.add_argument("--repository", type=Path, default=DEMO_REPOSITORY)
    bench.add_argument("--out", type=Path, default=Path("bench/results"))
    bench.add_argument("--keep-tasks", action="store_true",
                       help="the fuser keeps every task (a JetStream write each)")  # fmt: skip
    bench.add_argument("--no-progress", action="store_true")
    bench.set_defaults(func=_bench)
    return p


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nats-url")
    p.add_argument("--metrics-port", type=int)


def _mesh_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repository", type=Path,
                   help=f"the model repository (default {DEFAULT_REPOSITORY}; "
                        f"{DEMO_REPOSITORY} for the demo)")  # fmt: skip
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--router-port", type=int, default=50051)
    p.add_argument("--nats-port", type=int, default=4222)
    p.add_argument("--nats-cluster", type=int, default=1, metavar="N",
                   help="N clustered nats-servers, JetStream R3 from 3 on")  # fmt: skip


def _submit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--limit", type=int, default=0, help="rows to send (0 = all)")
    p.add_argument("--batch", type=int, default=1, help="digits per task (the demo's digits)")
    p.add_argument("--policy", default="",
                   help="a fusion strategy (soft_vote, weighted_mean, ...); default: the "
                        "capability's")  # fmt: skip
    p.add_argument("--show", type=int, default=10, help="answers to print")


def _models_build(args: argparse.Namespace) -> int:
    from chorus.demo.build import build_demo

    written = build_demo(args.repository, force=args.force)
    if args.bench:
        from chorus.demo.build_cnn import build_cnn

        cnn = build_cnn(args.repository, force=args.force)
        written += [cnn] if cnn is not None else []
    for path in written:
        manifest = json.loads((path / "manifest.json").read_text())
        print(f"built {manifest['name']} v{manifest['version']} -> {path} ", manifest["metrics"])
    if not written:
        print(f"all demo models already in {args.repository} (use --force to rebuild)")
    return 0


def _fusion_calibrate(args: argparse.Namespace) -> int:
    from chorus.cli.fusion_calibrate import Options, run

    return run(
        Options(
            router=args.router,
            nats_url=args.nats_url,
            capability=args.capability,
            inputs=args.input,
            truth=args.truth,
            policy=args.policy,
            coverage=args.coverage,
            extend=args.extend,
        )
    )


def _models_calibrate(args: argparse.Namespace) -> int:
    from chorus.cli.calibrate import calibrate
    from chorus.cli.submit_inputs import InputError, read_input
    from chorus.services.manifest import ManifestError

    try:
        feeds = {name: array for name, _, array in map(read_input, args.input)}
        _, _, truth = read_input(f"truth={args.truth}")
        done = calibrate(args.repository, args.model, feeds, truth, args.version,
                         write=not args.dry_run)  # fmt: skip
    except (InputError, ValueError, ManifestError, LookupError) as err:
        print(f"chorus models calibrate: {err}", file=sys.stderr)
        return 2
    print(f"{done.model} v{done.version}: temperature {done.temperature:.4f} "
          f"from {done.rows} held-out rows")  # fmt: skip
    print(f"{'':10}{'before':>10}{'after':>10}")
    for key in done.before:
        print(f"{key:10}{done.before[key]:>10.4f}{done.after[key]:>10.4f}")
    if args.dry_run:
        print("dry run: nothing written")
    else:
        print(f"wrote temperature to {done.manifest}; a running model service announces it "
              "after `chorus models load` or a restart")  # fmt: skip
    return 0


def _models_add(args: argparse.Namespace) -> int:
    from chorus.services.add_model import AddError, AddRequest, add

    labels = tuple(x.strip() for x in args.labels.split(",") if x.strip())
    if args.labels_file is not None:
        labels = tuple(x.strip() for x in args.labels_file.read_text().splitlines() if x.strip())
    try:
        mv = add(
            AddRequest(
                onnx_file=args.onnx_file,
                repository=args.repository,
                name=args.name,
                capabilities=tuple(args.capabilities),
                labels=labels,
                output_kind=args.kind,
                version=args.version,
                scores_output=args.scores_output,
                temperature=args.temperature,
                replicas=args.replicas,
                description=args.description,
                force=args.force,
            )
        )
    except AddError as err:
        print(f"chorus models add: {err}", file=sys.stderr)
        return 2
    m = mv.manifest
    print(f"added {m.name} v{m.version} -> {mv.path}")
    for spec in m.inputs:
        print(f"  input  {spec.name} {spec.datatype} {list(spec.shape)}")
    print(f"  scores {m.scores_output} ({m.output_kind}) labels {list(m.labels)}")
    return 0


def _models_check(args: argparse.Namespace) -> int:
    from chorus.services import repository

    try:
        found = repository.check(args.repository)
    except repository.ManifestError as err:
        print(f"chorus models check: {err}", file=sys.stderr)
        return 2
    for mv in found:
        m = mv.manifest
        print(f"ok  {m.name} v{m.version}  {','.join(m.capabilities)}  {m.output_kind}")
    if not found:
        print(f"no models in {args.repository}", file=sys.stderr)
        return 2
    return 0


def _fusion_report(args: argparse.Namespace) -> int:
    from chorus.cli.report import main as report

    return report(args.repository)


def _plan_arguments(p: argparse.ArgumentParser) -> None:
    from chorus.planner.cli import add_arguments

    add_arguments(p)
    p.add_argument(
        "--live", action="store_true", help="re-plan from live heartbeats onto chorus.plan"
    )
    p.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    p.add_argument("--every", type=float, default=10.0, help="seconds between checks (--live)")


def _plan(args: argparse.Namespace) -> int:
    from chorus.planner import load_inputs
    from chorus.planner.cli import render, run

    if not args.live:
        return run(args)

    async def live() -> None:
        import nats

        from chorus.jetstream import servers
        from chorus.planner.live import LivePlanner

        nc = await nats.connect(servers(args.nats_url))
        planner = LivePlanner(nc, load_inputs(args.inputs), every_s=args.every)
        seen = 0

        async def show() -> None:
            nonlocal seen
            while True:
                await asyncio.sleep(args.every / 2)
                for plan in planner.plans[seen:]:
                    print(render(plan), flush=True)
                seen = len(planner.plans)

        try:
            await asyncio.gather(planner.run(), show())
        finally:
            await nc.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(live())
    return 0


def _review(args: argparse.Namespace) -> int:
    import getpass

    from chorus.cli.review import ReviewOptions, main

    return main(
        ReviewOptions(
            nats_url=args.nats_url,
            router=args.router,
            reviewer=args.reviewer or getpass.getuser(),
            capability=args.capability,
            answers=tuple(args.answer),
            list_only=args.list,
            wait_s=args.wait,
            ack_wait_s=args.ack_wait,
        )
    )


def _status(args: argparse.Namespace) -> int:
    from chorus.client import TaskClient

    with TaskClient(args.router) as client:
        listed = client.list_models()
    models = listed.models
    print(f"JetStream: {listed.jetstream_replicas} replica(s) of every stream and bucket")
    print(f"{'model':<10} {'replica':<20} {'device':<6} {'in-flight':>9} {'queued':>6} "
          f"{'ms/req':>7} {'slots':>5} {'seen':>6}")  # fmt: skip
    for m in models:
        for r in m.replica_info:
            print(f"{m.name:<10} {r.replica:<20} {r.device:<6} {r.in_flight:>9} "
                  f"{sum(r.queue.values()):>6} {r.ewma_ms:>7.2f} {r.capacity:>5} "
                  f"{r.heartbeat_age_s:>5.1f}s")  # fmt: skip
    return 0


def _models_ls(args: argparse.Namespace) -> int:
    from chorus.client import TaskClient

    with TaskClient(args.router) as client:
        for m in client.list_models().models:
            does, devices = ",".join(m.capabilities), ",".join(m.devices)
            print(f"{m.name} v{m.version}  {does}  replicas={len(m.replicas)} {devices}")
    return 0


def _models_control(args: argparse.Namespace) -> int:
    import grpc

    from chorus import model_control

    try:
        if args.action == "index":
            for model, version, state, reason in model_control.index(args.service):
                print(f"{model} v{version}  {state}" + (f"  ({reason})" if reason else ""))
        elif args.action == "load":
            model_control.load(args.service, args.model, args.version)
        else:
            model_control.unload(args.service, args.model, args.version)
    except grpc.RpcError as err:
        print(f"chorus models {args.action}: {err.code().name}: {err.details()}", file=sys.stderr)
        return 1
    return 0


def _run_service(service: Any, ready: dict[str, Any]) -> int:
    """Run until SIGTERM/SIGINT, printing one JSON line on stdout once serving."""

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if not await _start_unless_stopped(service, stop):
            return 1
        try:
            _settle_garbage_collector()
            print(
                json.dumps({k: v(service) if callable(v) else v for k, v in ready.items()}),
                flush=True,
            )
            await stop.wait()
        finally:
            await service.stop()
        return 0

    return int(_event_loop_runner()(run()))


async def _start_unless_stopped(service: Any, stop: asyncio.Event) -> bool:
    """Start, unless a signal comes first: a service still waiting for NATS stops at once
    and says what it was waiting for, instead of retrying past SIGTERM."""
    starting = asyncio.ensure_future(service.start())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if starting.done():
        starting.result()
        return True
    starting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await starting
    with contextlib.suppress(Exception):
        await asyncio.wait_for(service.stop(), STOP_WHILE_STARTING_S)
    from chorus.service import describe_error

    waited = getattr(service, "nats_url", "") or "NATS"
    last = getattr(service, "nats_error", None)
    reason = f" (last error: {describe_error(last)})" if last is not None else ""
    print(f"chorus: stopped before serving: could not reach NATS at {waited}{reason}",
          file=sys.stderr)  # fmt: skip
    return False


def _settle_garbage_collector() -> None:
    """A serving process allocates many short-lived objects per request; with start-up's
    objects frozen out of the collector and a larger first generation, collections are rarer
    and cheaper (measured: about 2% more throughput on a model service, bench/README.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_FIRST_GENERATION, 20, 20)


def _event_loop_runner() -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def _serve_model(args: argparse.Namespace) -> int:
    from chorus.config import ModelServiceConfig, from_env
    from chorus.services.app import ModelService

    cfg = from_env(
        ModelServiceConfig,
        "model",
        model=args.model,
        repository=args.repository,
        grpc_port=args.grpc_port,
        device=args.device,
        delay_ms=args.delay_ms,
        noise=args.noise,
        nats_url=args.nats_url,
        metrics_port=args.metrics_port,
    )
    return _run_service(
        ModelService(cfg),
        {
            "service": "model",
            "name": cfg.model,
            "grpc": lambda s: f"{cfg.host}:{s.grpc_port}",
            "metrics": lambda s: f"{cfg.host}:{s.metrics_port}",
            "provider": lambda s: s.model.provider,
            "replica": lambda s: s.replica,
        },
    )


def _serve_router(args: argparse.Namespace) -> int:
    from chorus.config import RouterConfig, from_env
    from chorus.router.app import RouterService

    cfg = from_env(
        RouterConfig,
        "router",
        grpc_port=args.grpc_port,
        nats_url=args.nats_url,
        metrics_port=args.metrics_port,
    )
    return _run_service(
        RouterService(cfg),
        {
            "service": "router",
            "grpc": lambda s: f"{cfg.host}:{s.grpc_port}",
            "metrics": lambda s: f"{cfg.host}:{s.metrics_port}",
        },
    )


def _serve_fuser(args: argparse.Namespace) -> int:
    from chorus.config import FuserConfig, from_env
    from chorus.fuser.app import FuserService

    cfg = from_env(FuserConfig, "fuser", nats_url=args.nats_url, metrics_port=args.metrics_port)
    return _run_service(
        FuserService(cfg),
        {"service": "fuser", "metrics": lambda s: f"{cfg.host}:{s.metrics_port}"},
    )


def _serving_plan(args: argparse.Namespace) -> tuple[Path, list[str], dict[str, int]]:
    """The repository, the models to start and each one's processes: the demo's when asked
    for (built first), else every model the repository holds, as their manifests say."""
    from chorus.services import repository

    demo = getattr(args, "demo", False) or args.func is _demo
    root = args.repository or (DEMO_REPOSITORY if demo else DEFAULT_REPOSITORY)
    if demo:
        from chorus.demo.build import build_demo

        for path in build_demo(root):
            print(f"built demo model {path}")
        found = [repository.load(root, name) for name in DEMO_MODELS]
    else:
        found = repository.check(root)
        if not found:
            raise repository.ManifestError(
                f"{root}: no models here; add one with `chorus models add MODEL.onnx --name N "
                "--capability C --repository DIR`, or run the demo with `chorus up --demo`"
            )
    replicas = {mv.manifest.name: args.replicas or mv.manifest.replicas for mv in found}
    return root, [mv.manifest.name for mv in found], replicas


def _start_mesh(args: argparse.Namespace) -> Any:
    from chorus.launch.mesh import Mesh

    root, models, replicas = _serving_plan(args)
    mesh = Mesh(
        root,
        args.data_dir,
        models=models,
        replicas=replicas,
        nats_port=args.nats_port,
        router_port=args.router_port,
        nats_cluster=args.nats_cluster,
    )
    mesh.start()
    print(f"nats     {mesh.nats_url}  (JetStream in {args.data_dir / 'jetstream'})")
    for child in mesh.children:
        print(child.describe())
    print(f"logs in {args.data_dir / 'logs'}")
    return mesh


def _up(args: argparse.Namespace) -> int:
    from chorus.services.repository import ManifestError

    if args.replicas < 0:
        print("chorus up: --replicas must be at least 1", file=sys.stderr)
        return 2
    try:
        mesh = _start_mesh(args)
    except ManifestError as err:
        print(f"chorus up: {err}", file=sys.stderr)
        return 2
    print(f"mesh up; try: chorus submit --router {mesh.router_target}   (Ctrl-C stops)", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    try:
        while not stop.wait(0.2):
            exited = [c.name for c in mesh.children if c.proc.poll() is not None]
            if exited:
                print(f"{', '.join(exited)} exited; see {args.data_dir / 'logs'}", flush=True)
                break
    finally:
        print("stopping the mesh", flush=True)
        mesh.stop()
    return 0 if stop.is_set() else 1


def _submit(args: argparse.Namespace) -> int:
    if args.input:
        from chorus.cli.submit_inputs import Options, run_submit_inputs
        from chorus.context import Priority

        return run_submit_inputs(
            Options(
                router=args.router,
                capability=args.capability,
                inputs=args.input,
                policy=args.policy,
                priority=Priority[args.priority.upper()],
                deadline_ms=args.deadline_ms,
                limit=args.limit,
                show=args.show,
                as_json=args.json,
            )
        )
    if args.capability != CAPABILITY or args.json:
        print(f"chorus submit: --input NAME=FILE is needed for {args.capability}"
              + (" with --json" if args.json else "")
              + f" (without it, the demo's held-out digits go to {CAPABILITY})",
              file=sys.stderr)  # fmt: skip
        return 2
    from chorus.cli.submit import run_submit

    return run_submit(args.router, args.limit, args.batch, args.policy, args.show)


def _demo(args: argparse.Namespace) -> int:
    from chorus.cli.submit import run_submit

    if args.data_dir == DEFAULT_DATA_DIR:
        args.data_dir = Path(tempfile.mkdtemp(prefix="chorus-demo-"))
    args.replicas = 0
    mesh = _start_mesh(args)
    try:
        return run_submit(mesh.router_target, args.limit, args.batch, args.policy, args.show)
    finally:
        mesh.stop()
        print("mesh stopped")


def _bench(args: argparse.Namespace) -> int:
    from chorus.bench import plot
    from chorus.bench.paths import RAY_LAYOUTS
    from chorus.bench.run import Options, run

    paths = args.paths or ["bare", "service", "mesh", *(RAY_LAYOUTS if args.ray_python else [])]
    if set(RAY_LAYOUTS) & set(paths) and args.ray_python is None:
        print("chorus bench: the ray paths need --ray-python", file=sys.stderr)
        return 2
    if args.requests < 1 or min(args.concurrency) < 1:
        print("chorus bench: --requests and --concurrency must be at least 1", file=sys.stderr)
        return 2
    outcome = run(
        Options(
            requests=args.requests,
            concurrency=tuple(dict.fromkeys(args.concurrency)),
            paths=tuple(paths),
            ray_python=args.ray_python,
            repository=args.repository,
            out=args.out,
            progress=not args.no_progress,
            keep_tasks=args.keep_tasks,
        )
    )
    print(f"results  {outcome.json_path}")
    if outcome.plot_path is not None:
        print(f"plot     {outcome.plot_path}")
    else:
        print(f"no plot: matplotlib is not installed ({plot.INSTALL_HINT})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
