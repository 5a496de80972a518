"""Label-free member reliability (Dawid-Skene): the EM finds known annotator accuracies, the
online estimate kept in JetStream ranks a degraded demo member last with no feedback at all,
and the dawid_skene strategy is at least as accurate as the soft vote on held-out digits."""

from __future__ import annotations

import json
import time
from pathlib import Path

import nats
import numpy as np
import pytest

from chorus.client import TaskClient
from chorus.core.codec import to_tensor
from chorus.core.context import CallContext, Priority
from chorus.demo.datasets import LABELS, digits_split
from chorus.fuser.fusion import Tools, fuse
from chorus.fuser.reliability import MIN_ROWS, ReliabilityStore, estimate
from chorus.pb import wire_pb2
from chorus.services import repository
from chorus.services.runtime import OnnxModel
from tests.support import REPO

CTX = CallContext.start("t", Priority.NORMAL, 60.0)
DEGRADED = "forest"
TASK_ROWS = 20
RECORDED = REPO / "bench" / "results" / "dawid-skene-crowdkit.json"


def _annotators(
    rows: int, accuracies: list[float], classes: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, classes, rows)
    votes = np.empty((rows, len(accuracies)), dtype=np.int64)
    for m, acc in enumerate(accuracies):
        right = rng.random(rows) < acc
        wrong = (truth + rng.integers(1, classes, rows)) % classes
        votes[:, m] = np.where(right, truth, wrong)
    return votes, truth


def test_em_recovers_known_accuracies() -> None:
    true_acc = [0.9, 0.85, 0.8, 0.45]
    votes, truth = _annotators(3000, true_acc, classes=5)
    counts = estimate(votes, 5)
    np.testing.assert_allclose(counts.accuracy(), true_acc, atol=0.03)
    assert int(np.argmin(counts.accuracy())) == 3
    majority = np.array([np.bincount(v, minlength=5).argmax() for v in votes])
    posterior = counts.posterior(votes)
    assert np.mean(posterior.argmax(axis=1) == truth) >= np.mean(majority == truth)


def _digits_members(model_repo: Path) -> dict[str, np.ndarray]:
    split = digits_split()
    out = {}
    for name in ("logreg", DEGRADED, "mlp"):
        noise = 6.0 if name == DEGRADED else 0.0  # what `chorus serve model --noise 6` does
        model = OnnxModel(repository.load(model_repo, name), noise=noise)
        try:
            out[name] = model.run({"input": split.x_test}).outputs["probabilities"]
        finally:
            model.close()
    return out


def _call(members: dict[str, np.ndarray], rows: slice, policy: str) -> wire_pb2.FuseCall:
    c = wire_pb2.FuseCall(capability="classify/digits", task_id="t", policy=policy, labels=LABELS)
    for name, p in members.items():
        c.members.add(model=name, probabilities=to_tensor("p", p[rows].astype(np.float32)))
    return c


async def test_online_estimate_ranks_the_degraded_member_last_without_labels(
    model_repo: Path, nats_url: str
) -> None:
    members = _digits_members(model_repo)
    y = digits_split().y_test
    accuracy = {n: float(np.mean(p.argmax(axis=1) == y)) for n, p in members.items()}
    assert min(accuracy, key=accuracy.__getitem__) == DEGRADED
    nc = await nats.connect(nats_url)
    try:
        store = ReliabilityStore(nc.jetstream(), bucket="test_reliability")
        await store.start()
        tools = Tools(reliability=store.get)
        early, _ = await fuse(_call(members, slice(0, TASK_ROWS), "dawid_skene"), CTX, tools)
        assert "needs 30" in early.rows[0].rule  # no estimate yet: the majority vote, said so
        names = list(members)
        votes = np.stack([members[n].argmax(axis=1) for n in names], axis=1)
        for start in range(0, len(y), TASK_ROWS):  # what the fuser does after each task
            store.observe("classify/digits", names, votes[start : start + TASK_ROWS], 10)
            await store.flush()
        found = store.get("classify/digits")
        assert found is not None and found.counts.rows == pytest.approx(len(y))
        estimated = dict(zip(found.members, found.counts.accuracy(), strict=True))
        assert min(estimated, key=estimated.__getitem__) == DEGRADED
        ds, _ = await fuse(_call(members, slice(None), "dawid_skene"), CTX, tools)
        soft, _ = await fuse(_call(members, slice(None), "soft_vote"), CTX, tools)
    finally:
        await nc.close()
    ds_acc = np.mean(np.array([r.label for r in ds.rows]) == y)
    soft_acc = np.mean(np.array([r.label for r in soft.rows]) == y)
    print(f"\nestimated {estimated}\ntrue {accuracy}\ndawid_skene {ds_acc:.4f} soft {soft_acc:.4f}")
    assert ds_acc >= soft_acc
    assert f"from {len(y)} rows of votes" in ds.rows[0].rule
    assert len(y) >= MIN_ROWS


def test_em_agrees_with_crowd_kits_recorded_answers() -> None:
    """bench/dawid_skene_vs_crowdkit.py ran crowd-kit in a throwaway venv on these votes;
    the differences left come from our smoothing (0.5 pseudo-counts per cell)."""
    record = json.loads(RECORDED.read_text())
    votes = np.asarray(record["votes"])
    counts = estimate(votes, 4)
    agree = np.mean(counts.posterior(votes).argmax(axis=1) == np.asarray(record["labels"]))
    assert agree >= 0.99
    np.testing.assert_allclose(counts.accuracy(), record["accuracy"], atol=0.02)
    assert list(np.argsort(counts.accuracy())) == list(np.argsort(record["accuracy"]))


def test_the_fuser_service_learns_from_every_task_and_serves_dawid_skene(
    client: TaskClient,
) -> None:
    """Through the mesh: the fuser adds each task's votes and pushes them to the bucket
    every couple of seconds; with no feedback sent, the strategy then runs on the estimate."""
    x = digits_split().x_test
    deadline = time.monotonic() + 30
    while True:
        for start in range(0, 100, TASK_ROWS):
            client.submit("classify/digits", {"input": x[start : start + TASK_ROWS]})
        result = client.submit("classify/digits", {"input": x[:50]}, policy="dawid_skene")
        rule = result.response.explanation.rows[0].rule
        if "rows of votes (estimated accuracy" in rule or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert "dawid_skene: posterior" in rule and "estimated accuracy" in rule, rule
    assert result.response.explanation.policy == "dawid_skene"
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1.0, rtol=1e-5)
