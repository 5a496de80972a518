"""`chorus status`, `chorus result` and `chorus feedback`: what the router knows about the
mesh and about tasks, as tables or (`-o json`) JSON."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from chorus.cli.common import emit, router, wants_json


def cmd_status(args: argparse.Namespace) -> int:
    from chorus.client import TaskClient

    with TaskClient(router(args)) as client:
        if args.watch is None:
            _show_status(client.list_models(), wants_json(args))
            return 0
        if args.watch <= 0:
            print("chorus status: --watch must be above 0 seconds", file=sys.stderr)
            return 2
        # Ctrl-C ends the watch between refreshes: as a flag, never as an exception raised in
        # the middle of a gRPC call, which could leave the channel hanging on close.
        stop = threading.Event()
        previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
        try:
            while not stop.is_set():
                listed = client.list_models()
                if not wants_json(args) and sys.stdout.isatty():
                    print("\033[H\033[J", end="")  # clear the screen, like watch(1)
                _show_status(listed, wants_json(args), compact=True)
                stop.wait(args.watch)
        finally:
            signal.signal(signal.SIGINT, previous)
    return 0


def status_document(listed: Any) -> dict[str, Any]:
    return {
        "jetstream_replicas": listed.jetstream_replicas,
        "replicas": [
            {
                "model": m.name,
                "version": m.version,
                "replica": r.replica,
                "device": r.device,
                "in_flight": r.in_flight,
                "queued": sum(r.queue.values()),
                "queue": dict(r.queue),
                "ms_per_request": r.ewma_ms,
                "slots": r.capacity,
                "heartbeat_age_s": r.heartbeat_age_s,
            }
            for m in listed.models
            for r in m.replica_info
        ],
    }


def _show_status(listed: Any, as_json: bool, compact: bool = False) -> None:
    doc = status_document(listed)
    if as_json:
        if compact:  # one line per refresh: a stream of JSON documents (NDJSON)
            import json

            print(json.dumps(doc), flush=True)
        else:
            emit(doc)
        return
    print(f"JetStream: {doc['jetstream_replicas']} replica(s) of every stream and bucket")
    print(f"{'model':<10} {'replica':<20} {'device':<6} {'in-flight':>9} {'queued':>6} "
          f"{'ms/req':>7} {'slots':>5} {'seen':>6}")  # fmt: skip
    for r in doc["replicas"]:
        print(f"{r['model']:<10} {r['replica']:<20} {r['device']:<6} {r['in_flight']:>9} "
              f"{r['queued']:>6} {r['ms_per_request']:>7.2f} {r['slots']:>5} "
              f"{r['heartbeat_age_s']:>5.1f}s")  # fmt: skip
    sys.stdout.flush()


def state_document(state: Any) -> dict[str, Any]:
    from chorus.cli.submit_inputs import as_json

    doc: dict[str, Any] = {
        "task_id": state.task_id,
        "state": str(state.state),
        "attempts": state.attempts,
    }
    if state.result is not None:
        doc["result"] = as_json(state.result)
    if state.error is not None:
        doc["error"] = {"code": state.error.code().name, "message": state.error.message}
    return doc


def cmd_result(args: argparse.Namespace) -> int:
    import json

    from chorus.cli.submit_inputs import as_table
    from chorus.client import TaskClient

    with TaskClient(router(args)) as client:
        if args.watch:
            states = client.watch(args.task_id, timeout_s=args.timeout)
        else:
            states = iter([client.result(args.task_id)])
        last = None
        for state in states:
            last = state
            if wants_json(args):
                # --watch prints one document a line as the states come (NDJSON).
                doc = state_document(state)
                print(json.dumps(doc) if args.watch else json.dumps(doc, indent=2), flush=True)
            elif not state.finished:
                print(f"{state.task_id}  {state.state}", flush=True)
    if last is None:
        return 1
    if not wants_json(args):
        if last.result is not None:
            print(f"{last.task_id}  done")
            print(as_table(last.result, args.show))
        elif last.error is not None:
            print(f"{last.task_id}  failed: {last.error.code().name}: {last.error.message}")
    return 1 if last.error is not None else 0


def _numbers(flag: str, text: str, kind: type) -> list[Any]:
    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(
            f"{flag}: expected comma-separated {kind.__name__}s, got {text!r}"
        ) from None


def cmd_feedback(args: argparse.Namespace) -> int:
    from chorus.client import TaskClient

    try:
        labels = _numbers("--labels", args.labels, int) if args.labels is not None else None
        values = _numbers("--values", args.values, float) if args.values is not None else None
        rows = _numbers("--rows", args.rows, int)
    except ValueError as err:
        print(f"chorus feedback: {err}", file=sys.stderr)
        return 2
    with TaskClient(router(args)) as client:
        learned = client.feedback(args.task_id, labels=labels, values=values, rows=rows or None)
    if wants_json(args):
        emit({"task_id": args.task_id, "capability": learned.capability,
              "weights": learned.weights})  # fmt: skip
        return 0
    print(f"{args.task_id}: learned; weights for {learned.capability}:")
    for model, weight in sorted(learned.weights.items()):
        print(f"  {model:<16} {weight:.4f}")
    return 0
