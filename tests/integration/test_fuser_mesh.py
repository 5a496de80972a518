"""Fusion strategies and conflict policies through the running mesh (router, models, fuser,
arbiter and stacking meta-model as separate processes on a real NATS)."""

from __future__ import annotations

import hashlib

import grpc
import nats
import numpy as np
import onnxruntime as ort
import pytest
from nats.js.api import ConsumerConfig

from chorus.client import AsyncTaskClient, Conflict, NotFound, TaskClient
from chorus.core import subjects
from chorus.core.codec import to_tensor
from chorus.demo.build_text import TEST_SEED
from chorus.demo.datasets import digit_captions, digits_split
from chorus.fuser.records import REVIEW_STREAM, review_subject
from chorus.launch.mesh import Mesh
from chorus.pb import wire_pb2
from chorus.services import repository
from tests.support import DEMO

CAPABILITY = "classify/digits"


def submit_all(client: TaskClient, capability: str, inputs: dict[str, np.ndarray], **kw) -> list:  # type: ignore[no-untyped-def, type-arg]
    rows = next(iter(inputs.values())).shape[0]
    results = []
    for lo in range(0, rows, 60):
        batch = {k: v[lo : lo + 60] for k, v in inputs.items()}
        results.append(client.submit(capability, batch, **kw))
    return results


def accuracy(results: list, y: np.ndarray) -> float:  # type: ignore[type-arg]
    return float(np.mean(np.concatenate([r.labels for r in results]) == y))


def test_stacking_beats_the_best_member(client: TaskClient, model_repo) -> None:  # type: ignore[no-untyped-def]
    split = digits_split()
    results = submit_all(client, CAPABILITY, {"input": split.x_test}, policy="stacking")
    fused = accuracy(results, split.y_test)
    members = {
        m: float(np.mean(np.concatenate([r.members[m]["label"] for r in results]) == split.y_test))
        for m in DEMO
    }
    print(f"\nstacking {fused:.4f}, members {members}")
    assert fused >= max(members.values())
    rule = results[0].response.explanation.rows[0].rule
    assert rule.startswith("stacking: stack over ['logreg', 'forest', 'mlp']")


def test_arbiter_settles_conflicts_with_its_own_answer(client: TaskClient, model_repo) -> None:  # type: ignore[no-untyped-def]
    split = digits_split()
    result = client.submit(CAPABILITY, {"input": split.x_test}, conflict="arbiter")
    rows = result.response.explanation.rows
    resolved = [i for i, r in enumerate(rows) if r.status == "resolved"]
    assert resolved, "held-out digits always have some conflicts"
    knn = ort.InferenceSession(
        str(repository.load(model_repo, "knn").onnx_path), providers=["CPUExecutionProvider"]
    )
    want = knn.run(["label"], {"input": split.x_test[resolved]})[0]
    assert [rows[i].label for i in resolved] == want.tolist()
    assert all(rows[i].rule.startswith("arbiter: knn decided") for i in resolved)
    assert {r.status for r in rows} <= {"agreed", "resolved"}


def test_quorum_of_all_marks_every_split_unresolved(client: TaskClient) -> None:
    x = digits_split().x_test
    result = client.submit(CAPABILITY, {"input": x}, conflict=Conflict("quorum", quorum=3))
    rows = result.response.explanation.rows
    split = [i for i, r in enumerate(rows) if len(set(r.votes.values())) > 1]
    unresolved = [i for i, r in enumerate(rows) if r.status == "unresolved"]
    assert split and unresolved == split
    assert all(result.labels[i] == -1 for i in unresolved)
    assert result.response.explanation.conflict_policy == "quorum"


def test_negotiation_reports_rounds(client: TaskClient) -> None:
    x = digits_split().x_test
    policy = Conflict("negotiate", max_rounds=2, concede_below=0.99)
    rows = client.submit(CAPABILITY, {"input": x}, conflict=policy, timeout_s=60).explanation.rows
    negotiated = [r for r in rows if r.rule.startswith("negotiate:")]
    assert negotiated
    for r in negotiated:
        if r.status == "resolved":
            assert 1 <= r.round <= 2
        else:
            assert r.status == "conflicted" and r.round == 2


async def test_escalated_rows_wait_durably_for_review(mesh: Mesh, client: TaskClient) -> None:
    x = digits_split().x_test[:120]
    result = client.submit(CAPABILITY, {"input": x}, conflict="escalate", task_id="esc-1")
    flagged = [
        i for i, r in enumerate(result.response.explanation.rows) if r.status == "needs_review"
    ]
    assert flagged
    nc = await nats.connect(mesh.nats_url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(
            review_subject(CAPABILITY), durable=None, stream=REVIEW_STREAM,
            config=ConsumerConfig(deliver_policy="all"),
        )  # fmt: skip
        cases = [wire_pb2.ReviewCase.FromString(m.data) for m in await sub.fetch(10, timeout=5)]
    finally:
        await nc.close()
    case = next(c for c in cases if c.task_id == "esc-1")
    assert list(case.review_rows) == flagged
    assert sorted(m.model for m in case.members) == sorted(DEMO)
    assert case.inputs[0].raw == x.tobytes()


async def test_member_rejects_an_input_whose_hash_does_not_match(mesh: Mesh) -> None:
    body = wire_pb2.InferCall(
        inputs=[to_tensor("input", np.zeros((1, 64), np.float32))]
    ).SerializeToString()
    nc = await nats.connect(mesh.nats_url)
    try:
        bad = {"Chorus-Input-Sha256": hashlib.sha256(b"something else").hexdigest()}
        reply = await nc.request(subjects.infer("forest"), body, timeout=5, headers=bad)
        assert reply.headers["Nats-Service-Error-Code"] == "DATA_LOSS"
        assert "input altered in transit" in reply.headers["Nats-Service-Error"]
        good = {"Chorus-Input-Sha256": hashlib.sha256(body).hexdigest()}
        reply = await nc.request(subjects.infer("forest"), body, timeout=5, headers=good)
        assert (
            wire_pb2.InferReply.FromString(reply.data).input_sha256 == good["Chorus-Input-Sha256"]
        )
    finally:
        await nc.close()


def test_multimodal_late_fusion_beats_each_modality(client: TaskClient) -> None:
    split = digits_split()
    x, y = split.x_test, split.y_test
    captions = digit_captions(y, TEST_SEED)
    image = accuracy(submit_all(client, CAPABILITY, {"input": x}), y)
    text = accuracy(submit_all(client, "classify/digits-text", {"caption": captions}), y)
    both = submit_all(client, "classify/digits+caption", {"input": x, "caption": captions})
    fused = accuracy(both, y)
    print(f"\nimage-only {image:.4f}, text-only {text:.4f}, image+caption {fused:.4f}")
    assert sorted(both[0].members) == sorted([*DEMO, "caption"])
    assert fused > image and fused > text


async def test_feedback_for_an_unknown_task_is_not_found(mesh: Mesh) -> None:
    async with AsyncTaskClient(mesh.router_target) as client:
        with pytest.raises(NotFound) as info:
            await client.feedback("nope", labels=[1])
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no fused task 'nope'" in info.value.details()


def test_gated_fusion_through_the_mesh(client: TaskClient) -> None:
    split = digits_split()
    results = submit_all(client, CAPABILITY, {"input": split.x_test}, policy="gated")
    fused = accuracy(results, split.y_test)
    soft = accuracy(submit_all(client, CAPABILITY, {"input": split.x_test}), split.y_test)
    print(f"\ngated {fused:.4f}, soft vote {soft:.4f}")
    assert fused >= soft
    assert results[0].response.explanation.rows[0].rule.startswith("gated: weights ")
