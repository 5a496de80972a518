"""`chorus models …`, `chorus fusion …`, `chorus plan` and `chorus review`: the commands that
build, check and control models and read what the mesh decided."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sys

from chorus.cli.common import Progress, add_nats, emit, nats_url, router, wants_json


def cmd_models_build(args: argparse.Namespace) -> int:
    from chorus.cli.store import through_store

    return through_store(args, _build, keep_existing=not args.force)


def _build(args: argparse.Namespace) -> int:
    from chorus.demo.build import build_demo

    progress = Progress("models build")
    written = build_demo(args.repository, force=args.force,
                         on_model=lambda name: progress(f"training {name}"))  # fmt: skip
    if args.bench:
        from chorus.demo.build_cnn import build_cnn

        progress("writing the CNN")
        cnn = build_cnn(args.repository, force=args.force)
        written += [cnn] if cnn is not None else []
    manifests = [json.loads((path / "manifest.json").read_text()) for path in written]
    if wants_json(args):
        emit([{"model": m["name"], "version": m["version"], "path": str(path),
               "metrics": m.get("metrics", {})} for m, path in zip(manifests, written,
                                                                   strict=True)])  # fmt: skip
        return 0
    for manifest, path in zip(manifests, written, strict=True):
        print(f"built {manifest['name']} v{manifest['version']} -> {path} ", manifest["metrics"])
    if not written:
        print(f"all demo models already in {args.repository} (use --force to rebuild)")
    return 0


def cmd_fusion_calibrate(args: argparse.Namespace) -> int:
    from chorus.cli.fusion_calibrate import Options, run

    return run(
        Options(
            router=router(args),
            nats_url=nats_url(args),
            capability=args.capability,
            inputs=args.input,
            truth=args.truth,
            policy=args.policy,
            coverage=args.coverage,
            extend=args.extend,
            as_json=wants_json(args),
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
    if wants_json(args):
        emit({"model": done.model, "version": done.version, "temperature": done.temperature,
              "rows": done.rows, "before": done.before, "after": done.after,
              "written": None if args.dry_run else str(done.manifest)})  # fmt: skip
        return 0
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
    if wants_json(args):
        emit({"model": m.name, "version": m.version, "path": str(mv.path),
              "inputs": [{"name": i.name, "datatype": i.datatype, "shape": list(i.shape)}
                         for i in m.inputs],
              "scores_output": m.scores_output, "output_kind": m.output_kind,
              "labels": list(m.labels)})  # fmt: skip
        return 0
    print(f"added {m.name} v{m.version} -> {mv.path}")
    for spec in m.inputs:
        print(f"  input  {spec.name} {spec.datatype} {list(spec.shape)}")
    print(f"  scores {m.scores_output} ({m.output_kind}) labels {list(m.labels)}")
    return 0


def cmd_models_check(args: argparse.Namespace) -> int:
    from chorus.cli.store import fetch_to_temp
    from chorus.core.model_store import DigestMismatch, StoreError, address
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
    except (repository.ManifestError, StoreError) as err:
        print(f"chorus models check: {err}", file=sys.stderr)
        return 2
    finally:
        if root != args.repository:
            shutil.rmtree(root, ignore_errors=True)
    if wants_json(args):
        emit([{"model": mv.manifest.name, "version": mv.manifest.version,
               "capabilities": list(mv.manifest.capabilities),
               "output_kind": mv.manifest.output_kind} for mv in found])  # fmt: skip
    else:
        for mv in found:
            m = mv.manifest
            print(f"ok  {m.name} v{m.version}  {','.join(m.capabilities)}  {m.output_kind}")
    if not found:
        print(f"no models in {args.repository}", file=sys.stderr)
        return 2
    return 0


def cmd_fusion_report(args: argparse.Namespace) -> int:
    from chorus.cli.report import main as report

    return report(args.repository, as_json=wants_json(args), progress=Progress("fusion report"))


def plan_arguments(p: argparse.ArgumentParser) -> None:
    from chorus.planner.cli import add_arguments

    add_arguments(p)
    p.add_argument(
        "--live", action="store_true", help="re-plan from live heartbeats onto chorus.plan"
    )
    add_nats(p, "with --live: where the heartbeats come from and plans go")
    p.add_argument("--every", type=float, default=10.0, help="seconds between checks (--live)")
    p.add_argument("-o", "--output", choices=["text", "json"], default="text",
                   help="text for people (default) or JSON (the same as --json; with --live, "
                        "one plan a line)")  # fmt: skip


def cmd_plan(args: argparse.Namespace) -> int:
    from chorus.planner import load_inputs
    from chorus.planner.cli import render, run

    args.json = args.json or wants_json(args)
    if not args.live:
        return run(args)

    async def live() -> None:
        import nats

        from chorus.core.jetstream import servers
        from chorus.core.natsclient import connect_once
        from chorus.planner.live import LivePlanner

        url = nats_url(args)
        await (await connect_once(url)).close()  # unreachable: one line now, not minutes of retries
        nc = await nats.connect(servers(url))
        planner = LivePlanner(nc, load_inputs(args.inputs), every_s=args.every)
        seen = 0

        async def show() -> None:
            nonlocal seen
            while True:
                await asyncio.sleep(args.every / 2)
                for plan in planner.plans[seen:]:
                    text = json.dumps(plan.to_dict()) if args.json else render(plan)
                    print(text, flush=True)
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
            nats_url=nats_url(args),
            router=router(args),
            reviewer=args.reviewer or getpass.getuser(),
            capability=args.capability,
            answers=tuple(args.answer),
            list_only=args.list,
            wait_s=args.wait,
            ack_wait_s=args.ack_wait,
            as_json=wants_json(args),
        )
    )


def cmd_models_control(args: argparse.Namespace) -> int:
    import grpc

    from chorus.core import model_control

    try:
        if args.action == "index":
            found = model_control.index(args.service)
            if wants_json(args):
                emit([{"model": model, "version": version, "state": state, "reason": reason}
                      for model, version, state, reason in found])  # fmt: skip
            for model, version, state, reason in [] if wants_json(args) else found:
                print(f"{model} v{version}  {state}" + (f"  ({reason})" if reason else ""))
        elif args.action == "load":
            model_control.load(args.service, args.model, args.version)
        else:
            model_control.unload(args.service, args.model, args.version)
        if args.action != "index":
            done = {"action": args.action, "model": args.model, "version": args.version}
            if wants_json(args):
                emit(done)
            else:
                print(f"{args.action}ed {args.model}" + (f" v{args.version}" if args.version
                                                          else ""))  # fmt: skip
    except grpc.RpcError as err:
        print(f"chorus models {args.action}: {err.code().name}: {err.details()}", file=sys.stderr)
        return 1
    return 0
