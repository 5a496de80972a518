"""Every service (models, fuser, router) is a NATS micro service (ADR-32): `$SRV.*` finds them
without Chorus, and their replies conform to the micro v1 schemas."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import nats
import nats.errors
from nats.aio.client import Client as NATS

from chorus.core import subjects
from chorus.core.context import Priority
from chorus.launch.mesh import Mesh
from chorus.pb import task_pb2
from tests.support import DEMO, drive, request


async def test_services_answer_micro_discovery(mesh: Mesh) -> None:
    nc = await nats.connect(mesh.nats_url)
    try:
        info = json.loads((await nc.request("$SRV.INFO.chorus-model-forest", b"", timeout=5)).data)
        assert info["metadata"]["capabilities"].split(",")[0] == "classify/digits"
        subjects = {e["subject"] for e in info["endpoints"]}
        replica = info["metadata"]["replica"]
        assert subjects == {"chorus.infer.forest", f"chorus.infer.forest.{replica}"}
        assert {e["queue_group"] for e in info["endpoints"]} == {"forest", replica}

        fuser = json.loads((await nc.request("$SRV.PING.chorus-fuser", b"", timeout=5)).data)
        assert fuser["name"] == "chorus-fuser"
        stats = json.loads((await nc.request("$SRV.STATS.chorus-fuser", b"", timeout=5)).data)
        assert stats["endpoints"][0]["subject"] == "chorus.fuse"
        assert stats["endpoints"][0]["queue_group"] == "fuser"
    finally:
        await nc.close()


SCHEMAS = Path(__file__).resolve().parents[1] / "data" / "nats_micro_v1"
"""The micro v1 response schemas of NATS ADR-32, from nats-io/jsm.go (see the README there)."""


def _rfc3339(value: object) -> bool:
    """jsonschema checks "date-time" only with an optional package: RFC 3339, zone included."""
    return not isinstance(value, str) or datetime.fromisoformat(value).tzinfo is not None


def _validator(verb: str) -> jsonschema.Draft7Validator:
    schema = json.loads((SCHEMAS / f"{verb.lower()}_response.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    formats = jsonschema.FormatChecker()
    formats.checks("date-time", raises=ValueError)(_rfc3339)
    return jsonschema.Draft7Validator(schema, format_checker=formats)


async def _everyone(nc: NATS, verb: str, expected: set[str]) -> dict[str, dict[str, Any]]:
    """Every service's reply to `$SRV.<verb>` (all of them answer one request), by name; once
    the expected ones have answered, late ones get a moment more."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await nc.publish(f"$SRV.{verb}", b"", reply=inbox)
    replies: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 10
    try:
        while time.monotonic() < deadline:
            done = expected <= {r["name"] for r in replies.values()}
            try:
                msg = await sub.next_msg(
                    timeout=0.3 if done else max(deadline - time.monotonic(), 0.01)
                )
            except nats.errors.TimeoutError:
                if done:
                    break
                continue
            reply = json.loads(msg.data)
            replies[f"{reply['name']}/{reply['id']}"] = reply
    finally:
        await sub.unsubscribe()
    return replies


async def test_every_service_answers_micro_v1(mesh: Mesh) -> None:
    """$SRV.PING/INFO/STATS from every service, the router's included, are valid against the
    micro v1 schemas, and each STATS endpoint's `data` carries numbers that move with tasks."""
    names = {"chorus-router", "chorus-fuser", *(f"chorus-model-{m}" for m in mesh.models)}
    nc = await nats.connect(mesh.nats_url)
    try:
        before = await _stats(nc, names)
        tasks = 12
        answers = await drive(mesh.router_target, [request(i) for i in range(tasks)], 1)
        assert all(isinstance(r, task_pb2.SubmitResponse) for _, r in answers), answers
        for verb in ("PING", "INFO", "STATS"):
            check = _validator(verb)
            replies = await _everyone(nc, verb, names)
            assert names <= {r["name"] for r in replies.values()}, (verb, sorted(replies))
            for who, reply in replies.items():
                errors = [f"{e.json_path}: {e.message}" for e in check.iter_errors(reply)]
                assert not errors, (verb, who, errors)
        after = await _stats(nc, names)
        router_status = json.loads((await nc.request(subjects.ROUTER_STATUS, b"", timeout=5)).data)
    finally:
        await nc.close()

    for name, endpoints in after.items():
        for endpoint, stats in endpoints.items():
            assert isinstance(stats["data"], dict) and stats["data"], (name, endpoint, stats)

    def moved(name: str, endpoint: str, *path: str) -> float:
        new, old = after[name][endpoint]["data"], before[name][endpoint]["data"]
        for key in path:
            new, old = new.get(key, 0), old.get(key, 0)
        return float(new) - float(old)

    router = after["chorus-router"]["status"]["data"]
    assert moved("chorus-router", "status", "tasks", "ok") >= tasks
    assert set(router["queued"]) == set(router["in_flight"]) == {p.label for p in Priority}
    assert router["mean_task_ms"] > 0 and router["live_replicas"] >= len(mesh.models)
    assert router_status["tasks"]["ok"] >= router["tasks"]["ok"]

    fuser = after["chorus-fuser"]["fuse"]["data"]
    assert moved("chorus-fuser", "fuse", "requests", "ok") >= tasks
    assert fuser["mean_fuse_ms"] > 0 and fuser["in_flight"] >= 0
    fused = sum(
        after["chorus-fuser"][e]["num_requests"] - before["chorus-fuser"][e]["num_requests"]
        for e in ("fuse", "fuse-replica")
    )
    assert fused >= tasks

    for member in DEMO:  # every classify/digits member served each task
        name = f"chorus-model-{member}"
        data = after[name]["infer"]["data"]
        assert moved(name, "infer", "requests", "ok") >= tasks, (member, data)
        assert data["mean_batch_rows"] >= 1 and data["mean_compute_ms"] > 0, (member, data)
        assert set(data["queued"]) == {p.label for p in Priority} and data["slots"] >= 1
        assert data == after[name]["infer-replica"]["data"], "one core behind both endpoints"


async def _stats(nc: NATS, names: set[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """Each expected service's STATS endpoints by name (one replica of each in this mesh)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name in names:
        reply = json.loads((await nc.request(f"$SRV.STATS.{name}", b"", timeout=5)).data)
        out[name] = {e["name"]: e for e in reply["endpoints"]}
    return out
