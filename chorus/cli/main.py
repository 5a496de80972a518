"""The `chorus` command: build models, run services, start a local mesh, submit tasks."""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
from pathlib import Path

from chorus import __version__
from chorus.cli.common import EXIT_CODES, NATS_ENV, add_nats, add_output, add_router
from chorus.cli.defaults import (
    CAPABILITY,
    DEFAULT_DATA_DIR,
    DEFAULT_REPOSITORY,
    DEMO_REPOSITORY,
    PRIORITIES,
)
from chorus.cli.extras import EXIT_MISSING, extra_for, install_hint, missing_line
from chorus.cli.k8s import add_arguments as k8s_arguments
from chorus.cli.models import (
    cmd_fusion_calibrate,
    cmd_fusion_report,
    cmd_models_add,
    cmd_models_build,
    cmd_models_calibrate,
    cmd_models_check,
    cmd_models_control,
    cmd_plan,
    cmd_review,
    plan_arguments,
)
from chorus.cli.placement import add_arguments as placement_arguments
from chorus.cli.run import cmd_bench, cmd_demo, cmd_submit, cmd_up
from chorus.cli.serve import (
    cmd_serve_fuser,
    cmd_serve_group,
    cmd_serve_model,
    cmd_serve_router,
)
from chorus.cli.store import add_arguments as store_arguments
from chorus.cli.tasks import cmd_feedback, cmd_result, cmd_status
from chorus.core.config import ConfigError


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    command = " ".join(itertools.takewhile(lambda t: not t.startswith("-"), argv))
    needs: tuple[str, ...] = ("demo",) if getattr(args, "demo", False) else args.extras
    missing = missing_line(needs) if needs else None
    if missing is not None:
        print(f"chorus {command}: {missing}", file=sys.stderr)
        return EXIT_MISSING
    try:
        return int(args.func(args) or 0)
    except ConfigError as err:
        print(f"chorus {command}: configuration: {err}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:
        extra = extra_for(err.name or "")
        if extra is None:
            raise
        print(f"chorus {command}: needs {err.name}, not installed: {install_hint((extra,))}",
              file=sys.stderr)  # fmt: skip
        return EXIT_MISSING
    except Exception as err:
        line = _unreachable(err)
        if line is None:
            raise
        print(f"chorus {command}: {line}", file=sys.stderr)
        return 1


def _unreachable(err: Exception) -> str | None:
    """One line for a service that did not answer (a gRPC status, or NATS not reachable),
    instead of a traceback; None for anything else, which is a bug worth its traceback."""
    import grpc
    import nats.errors

    if isinstance(err, grpc.RpcError) and hasattr(err, "code"):
        return f"{err.code().name}: {err.details()}"
    from chorus.core.natsclient import NatsUnreachable

    if isinstance(err, NatsUnreachable):
        return f"cannot reach {err}"
    if isinstance(err, nats.errors.NoServersError | nats.errors.TimeoutError):
        return f"NATS: {err}"
    return None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="chorus", description=__doc__, epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("--version", action="version", version=f"chorus {__version__}",
                   help="print the version and exit")  # fmt: skip
    # The extras (pyproject) each command needs beyond the base install; `main` checks them.
    p.set_defaults(extras=())
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    models = sub.add_parser("models", help="the model repository").add_subparsers(
        required=True, metavar="ACTION"
    )
    build = models.add_parser("build", help="train the demo models and write them as ONNX")
    build.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY,
                       help="a folder, or the model store (nats: or nats:BUCKET): built in a "
                            "temporary folder and pushed")  # fmt: skip
    add_nats(build, "for a nats: repository")
    build.add_argument("--force", action="store_true", help="rebuild models that exist")
    build.add_argument("--bench", action="store_true", help="also the CNN for throughput work")
    add_output(build)
    build.set_defaults(func=cmd_models_build, extras=("services", "train"))
    add = models.add_parser(
        "add", help="add an ONNX file to a repository; the graph gives inputs and outputs"
    )
    add.add_argument("onnx_file", type=Path, metavar="MODEL.onnx", help="the model's ONNX file")
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
    add.add_argument("--description", default="", help="one line for people, in the manifest")
    add.add_argument("--force", action="store_true", help="replace an existing version")
    add.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY,
                     help="a folder, or the model store (nats: or nats:BUCKET): the version "
                          "is pushed, numbered after the store's highest")  # fmt: skip
    add_nats(add, "for a nats: repository")
    add_output(add)
    add.set_defaults(func=cmd_models_add, extras=("services",))
    cal = models.add_parser(
        "calibrate", help="fit a classifier's temperature on held-out rows, store it"
    )
    cal.add_argument("--model", required=True, help="the model to calibrate")
    cal.add_argument("--version", default=None, help="default: the highest")
    cal.add_argument("--input", action="append", required=True, metavar="NAME=FILE",
                     help="held-out rows of an input (.npy or .csv); repeat per input")  # fmt: skip
    cal.add_argument("--truth", required=True, type=Path,
                     help="the rows' true class indices (.npy or .csv)")  # fmt: skip
    cal.add_argument("--dry-run", action="store_true", help="fit and report, write nothing")
    cal.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY,
                     help=f"the folder repository (default {DEFAULT_REPOSITORY})")  # fmt: skip
    add_output(cal)
    cal.set_defaults(func=cmd_models_calibrate, extras=("services",))
    chk = models.add_parser("check", help="validate every manifest of a repository")
    chk.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY,
                     help="a folder, or the model store: nats: or nats:BUCKET")  # fmt: skip
    add_nats(chk, "for a nats: repository")
    add_output(chk)
    chk.set_defaults(func=cmd_models_check)
    plan = sub.add_parser("plan", help="replicas per model and device, as a mixed-integer program")
    plan.set_defaults(func=cmd_plan, extras=("control",))
    plan_arguments(plan)
    k8s_arguments(sub)
    rv = sub.add_parser("review", help="answer the rows the fuser escalated to people")
    add_nats(rv, "where the review cases wait (JetStream)")
    add_router(rv, "the router that takes the answers")
    rv.add_argument("--reviewer", default="", help="your name on the answers (default: $USER)")
    rv.add_argument("--capability", default="", help="only this capability's cases")
    rv.add_argument("--answer", action="append", default=[], metavar="ROW=LABEL",
                    help="answer the next case without asking (repeatable)")  # fmt: skip
    rv.add_argument("--list", action="store_true", help="show waiting cases, answer none")
    rv.add_argument("--wait", type=float, default=2.0, help="seconds to wait for a case")
    rv.add_argument("--ack-wait", type=float, default=60.0,
                    help="an unanswered case returns to the queue after this long")  # fmt: skip
    add_output(rv)
    rv.set_defaults(func=cmd_review)
    status = sub.add_parser("status", help="live replicas and their load, as the router sees them")
    add_router(status)
    status.add_argument("--watch", type=float, nargs="?", const=2.0, metavar="SECONDS",
                        help="show it again every SECONDS (default 2) until Ctrl-C")  # fmt: skip
    add_output(status)
    status.set_defaults(func=cmd_status)
    store_arguments(models)
    for action, what in (
        ("index", "the versions one model service has, and their state"),
        ("load", "load (or reload) a version on one model service; the highest without --version"),
        ("unload", "unload a version (all without --version) on one model service"),
    ):
        control = models.add_parser(action, help=what)
        control.add_argument("--service", required=True, metavar="HOST:PORT",
                             help="the model service's KServe gRPC address")  # fmt: skip
        if action != "index":
            control.add_argument("--model", required=True, help="the model's name")
            control.add_argument("--version", default="",
                                 help="the version (default: " + ("the highest)" if action ==
                                 "load" else "every version)"))  # fmt: skip
        add_output(control)
        control.set_defaults(func=cmd_models_control, action=action)

    fusion = sub.add_parser("fusion", help="fusion on held-out data").add_subparsers(
        required=True, metavar="ACTION"
    )
    report = fusion.add_parser("report", help="accuracy of every strategy and conflict policy")
    report.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY,
                        help="where the demo models are (built there when missing)")  # fmt: skip
    add_output(report)
    report.set_defaults(func=cmd_fusion_report, extras=("demo",))
    fcal = fusion.add_parser(
        "calibrate", help="held-out rows and their truth as the conformal policy's calibration"
    )
    fcal.add_argument("--capability", required=True, help="the capability to calibrate")
    fcal.add_argument("--input", action="append", required=True, metavar="NAME=FILE",
                      help="held-out rows of an input (.npy or .csv), repeatable")  # fmt: skip
    fcal.add_argument("--truth", required=True, type=Path,
                      help="true class indices, or true values, one per row")  # fmt: skip
    fcal.add_argument("--policy", default="", help="fusion strategy (default: the capability's)")
    fcal.add_argument("--coverage", type=float, default=0.9, help="for the printed summary")
    fcal.add_argument("--extend", action="store_true", help="add to the rows already stored")
    add_router(fcal, "the router the rows go through")
    add_nats(fcal, "where the calibration is stored")
    add_output(fcal)
    fcal.set_defaults(func=cmd_fusion_calibrate)

    serve = sub.add_parser(
        "serve", help="run one service in the foreground (prints one JSON line once serving)"
    ).add_subparsers(required=True, metavar="SERVICE")
    sm = serve.add_parser("model", help="a model service (KServe v2 gRPC + NATS)")
    sm.add_argument("--model", required=True, help="the model to serve (its folder's name)")
    sm.add_argument("--repository", type=Path,
                    help="a folder or nats:BUCKET (default $CHORUS_MODEL_REPOSITORY)")  # fmt: skip
    sm.add_argument("--grpc-port", type=int, help="KServe gRPC port (0: a free one)")
    sm.add_argument("--device", choices=["auto", "cpu", "cuda"],
                    help="where to run (default auto: CUDA when usable)")  # fmt: skip
    sm.add_argument("--delay-ms", type=float, help="fault injection: slow every inference")
    sm.add_argument("--noise", type=float, help="fault injection: noise on float inputs")
    _common(sm)
    sm.set_defaults(func=cmd_serve_model, extras=("services",))
    sr = serve.add_parser("router", help="the router (chorus.v1.TaskService)")
    sr.add_argument("--grpc-port", type=int, help="the task API's port (0: a free one)")
    _common(sr)
    sr.set_defaults(func=cmd_serve_router, extras=("control",))
    sf = serve.add_parser("fuser", help="a fuser replica")
    _common(sf)
    sf.set_defaults(func=cmd_serve_fuser, extras=("control",))
    sg = serve.add_parser(
        "group", help="a co-hosted group: its members' model services and a fuser in one process"
    )
    sg.add_argument("--name", required=True,
                    help="the group's name: tasks come on chorus.infer.group:NAME")  # fmt: skip
    sg.add_argument("--models", required=True, help="its members, comma-separated")
    sg.add_argument("--repository", type=Path,
                    help="a folder or nats:BUCKET (default $CHORUS_MODEL_REPOSITORY)")  # fmt: skip
    sg.add_argument("--grpc-port", type=int,
                    help="KServe gRPC port: the group as one model, each member as its own "
                         "(0: a free one)")  # fmt: skip
    sg.add_argument("--device", choices=["auto", "cpu", "cuda"],
                    help="where the members run (default auto: CUDA when usable)")  # fmt: skip
    _common(sg)
    sg.set_defaults(func=cmd_serve_group, extras=("services", "control"))

    up = sub.add_parser(
        "up", help="start nats-server, every model of a repository, the fuser and the router"
    )
    _mesh_args(up)
    placement_arguments(up)
    up.add_argument("--demo", action="store_true",
                    help=f"build the demo models (into {DEMO_REPOSITORY} unless --repository) "
                         "and serve them")  # fmt: skip
    up.add_argument("--replicas", type=int, default=0,
                    help="processes per model (default: each manifest's replicas)")  # fmt: skip
    add_output(up)
    up.set_defaults(func=cmd_up, extras=("services", "local"))

    submit = sub.add_parser(
        "submit",
        help="send your own rows (--input) to a capability, or the demo's held-out digits",
    )
    _submit_args(submit)
    add_router(submit)
    submit.add_argument("--capability", default=CAPABILITY,
                        help=f"what to do with the rows (default {CAPABILITY})")  # fmt: skip
    submit.add_argument("--input", action="append", default=[], metavar="NAME=FILE",
                        help="an input from a .npy array or .csv rows (a header line is "
                             "skipped); repeat per input; all rows go as one task")  # fmt: skip
    submit.add_argument("--priority", choices=[p.lower() for p in PRIORITIES], default="normal",
                        help="queue priority (default normal)")  # fmt: skip
    submit.add_argument("--deadline-ms", type=int, default=0,
                        help="the router's time budget (0: its default)")  # fmt: skip
    submit.add_argument("--conflict", default="",
                        help="conflict policy: none, quorum, negotiate, arbiter, escalate or "
                             "conformal (default: the router's)")  # fmt: skip
    submit.add_argument("--task-id", default="", help="your id for the task (default: made)")
    submit.add_argument("--async", dest="run_async", action="store_true",
                        help="store the task durably and print its id at once "
                             "(then `chorus result ID`)")  # fmt: skip
    submit.add_argument("--idempotency-key", default=None,
                        help="with --async: the same key never runs a task twice")  # fmt: skip
    add_output(submit)
    submit.set_defaults(func=cmd_submit)

    result = sub.add_parser("result", help="an async task's state and, once done, its answer")
    result.add_argument("task_id", metavar="ID", help="the id `chorus submit --async` printed")
    result.add_argument("--watch", action="store_true",
                        help="print every state until the task is done or failed")  # fmt: skip
    result.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="with --watch: give up after this long (default: none)")  # fmt: skip
    result.add_argument("--show", type=int, default=10, help="rows to print")
    add_router(result)
    add_output(result)
    result.set_defaults(func=cmd_result)

    feedback = sub.add_parser(
        "feedback", help="the true answer for a finished task; the members' weights learn"
    )
    feedback.add_argument("task_id", metavar="ID", help="the task's id (submit prints it)")
    truth = feedback.add_mutually_exclusive_group(required=True)
    truth.add_argument("--labels", metavar="I,J,...",
                       help="true class indices, one per row (a classification)")  # fmt: skip
    truth.add_argument("--values", metavar="X,Y,...",
                       help="true values, one per row (a regression)")  # fmt: skip
    feedback.add_argument("--rows", metavar="R,S,...", default="",
                          help="the rows the truth is for (default: every row)")  # fmt: skip
    add_router(feedback)
    add_output(feedback)
    feedback.set_defaults(func=cmd_feedback)

    demo = sub.add_parser("demo", help="up + submit + down, in one command")
    _mesh_args(demo)
    _submit_args(demo)
    add_output(demo)
    demo.set_defaults(func=cmd_demo, extras=("demo",))

    bench = sub.add_parser(
        "bench", help="one digit per request through bare ORT, a service, the mesh (and Ray)"
    )
    bench.add_argument("--requests", type=int, default=2000, help="per path and concurrency")
    bench.add_argument("--concurrency", type=int, nargs="+", default=[1, 16],
                       help="requests in flight at once, one run each (default 1 16)")  # fmt: skip
    bench.add_argument("--paths", nargs="+",
                       choices=["bare", "service", "mesh", "cohosted", "cohosted-nats",
                                "cohosted-kserve", "cohosted-kserve-stream", "ray",
                                "ray-single", "triton-ensemble", "triton-single",
                                "triton-ensemble-stream", "triton-single-stream"],
                       help="default: bare service mesh, and both Ray Serve layouts with "
                       "--ray-python; cohosted (the members and a fuser in one group "
                       "process, behind the router's gRPC), cohosted-nats (the same behind the "
                       "router's NATS endpoint), cohosted-kserve (the group asked as one KServe "
                       "model, no router; -stream: on one ModelStreamInfer stream) and the "
                       "Triton layouts only when named")  # fmt: skip
    bench.add_argument("--ray-python", type=Path,
                       help="a python with ray[serve], onnxruntime, numpy and aiohttp")  # fmt: skip
    bench.add_argument("--triton-venv", type=Path,
                       help="the virtualenv with nvidia-pytriton for the triton paths (default "
                       "~/.cache/chorus/triton-venv, built there on first use)")  # fmt: skip
    bench.add_argument("--triton-queue-delay-us", type=int, default=0,
                       help="every Triton model's max_queue_delay_microseconds (default 0, "
                       "Triton's own: no added wait)")  # fmt: skip
    bench.add_argument("--triton-instances", type=int, default=1,
                       help="every Triton model's instance count (default 1, Triton's own for "
                       "a Python-backend model)")  # fmt: skip
    bench.add_argument("--repository", type=Path, default=DEMO_REPOSITORY,
                       help=f"the demo models (default {DEMO_REPOSITORY})")  # fmt: skip
    bench.add_argument("--out", type=Path, default=Path("bench/results"),
                       help="folder for the results JSON and plot")  # fmt: skip
    bench.add_argument("--keep-tasks", action="store_true",
                       help="the fuser keeps every task (a JetStream write each)")  # fmt: skip
    bench.add_argument("--rounds", type=int, default=1,
                       help="measure every path this many times, in alternating order, and "
                       "record the medians (a ratio is taken within each round)")  # fmt: skip
    bench.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    add_output(bench)
    bench.set_defaults(func=cmd_bench, extras=("bench",))
    return p


def _common(p: argparse.ArgumentParser) -> None:
    add_nats(p)
    p.add_argument("--metrics-port", type=int,
                   help="Prometheus /metrics port (0: a free one)")  # fmt: skip


def _mesh_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repository", type=Path,
                   help=f"the model repository (default {DEFAULT_REPOSITORY}; "
                        f"{DEMO_REPOSITORY} for the demo)")  # fmt: skip
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                   help=f"JetStream files and logs (default {DEFAULT_DATA_DIR})")  # fmt: skip
    p.add_argument("--nats-url", metavar="URL",
                   help="a running NATS (JetStream) to use instead of starting nats-server, "
                        "e.g. the one a `nats:` repository was pushed to; default "
                        f"${NATS_ENV} when set")  # fmt: skip
    p.add_argument("--router-port", type=int, default=50051,
                   help="0: a free port, printed once the mesh is up")  # fmt: skip
    p.add_argument("--nats-port", type=int, default=4222,
                   help="port of the nats-server it starts (default 4222)")  # fmt: skip
    p.add_argument("--nats-cluster", type=int, default=1, metavar="N",
                   help="N clustered nats-servers, JetStream R3 from 3 on")  # fmt: skip


def _submit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--limit", type=int, default=0, help="rows to send (0 = all)")
    p.add_argument("--batch", type=int, default=1, help="digits per task (the demo's digits)")
    p.add_argument("--policy", default="",
                   help="a fusion strategy (soft_vote, weighted_mean, ...); default: the "
                        "capability's")  # fmt: skip
    p.add_argument("--show", type=int, default=10, help="answers to print")


if __name__ == "__main__":
    sys.exit(main())
