"""`chorus models …`, `chorus fusion …`, `chorus plan` and `chorus review`: the commands that
build, check and control models and read what the mesh decided."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sys


def cmd_models_build(args: argparse.Namespace) -> int:
    from chorus.cli.store import through_store

    return through_store(args, _build, keep_existing=not args.force)


def _build(args: argparse.Namespace) -> int:
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


def cmd_fusion_calibrate(args: argparse.Namespace) -> int:
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


def cmd_models_calibrate(args: argparse.Namespace) -> int:
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


def cmd_models_add(args: argparse.Namespace) -> int:
    from chorus.cli.store import through_store

    return through_store(args, _add, numbered=args.name)


def _add(args: argparse.Namespace) -> int:
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


def cmd_models_check(args: argparse.Namespace) -> int:
    from chorus.cli.store import fetch_to_temp, nats_url
    from chorus.core.model_store import DigestMismatch, address
    from chorus.services import repository

    root = args.repository
    try:
        if address(root) is not None:
            # Every version fetched and its digests checked, then checked as a folder is.
            root = fetch_to_temp(root, nats_url(args))
        found = repository.check(root)
    except DigestMismatch as err:
        print(f"chorus models check: {err}", file=sys.stderr)
        return 1
    except repository.ManifestError as err:
        print(f"chorus models check: {err}", file=sys.stderr)
        return 2
    finally:
        if root != args.repository:
            shutil.rmtree(root, ignore_errors=True)
    for mv in found:
        m = mv.manifest
        print(f"ok  {m.name} v{m.version}  {','.join(m.capabilities)}  {m.output_kind}")
    if not found:
        print(f"no models in {args.repository}", file=sys.stderr)
        return 2
    return 0


def cmd_fusion_report(args: argparse.Namespace) -> int:
    from chorus.cli.report import main as report

    return report(args.repository)


def plan_arguments(p: argparse.ArgumentParser) -> None:
    from chorus.planner.cli import add_arguments

    add_arguments(p)
    p.add_argument(
        "--live", action="store_true", help="re-plan from live heartbeats onto chorus.plan"
    )
    p.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    p.add_argument("--every", type=float, default=10.0, help="seconds between checks (--live)")


def cmd_plan(args: argparse.Namespace) -> int:
    from chorus.planner import load_inputs
    from chorus.planner.cli import render, run

    if not args.live:
        return run(args)

    async def live() -> None:
        import nats

        from chorus.core.jetstream import servers
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


def cmd_review(args: argparse.Namespace) -> int:
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


def cmd_status(args: argparse.Namespace) -> int:
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


def cmd_models_control(args: argparse.Namespace) -> int:
    import grpc

    from chorus.core import model_control

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
