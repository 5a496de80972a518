"""The one-way data path on real processes: members answer the fuser, not the router.

One mesh, two routers: the mesh's own (one-way, CHORUS_ROUTER_ONE_WAY=1) and one with
CHORUS_ROUTER_ONE_WAY=0 (members answer the router, which then asks the fuser), so both
paths answer the same tasks side by side. The fuser counts the answers it received directly.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest

from chorus.client import TaskClient
from chorus.demo.datasets import digits_split
from chorus.launch.mesh import Mesh
from chorus.launch.natsserver import NatsServer
from tests.support import DEMO, scrape, total

CAPABILITY = "classify/digits"


def _wait_models(target: str, n: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    with TaskClient(target) as c:
        while sum(len(m.replicas) for m in c.list_models().models) < n:
            assert time.monotonic() < deadline, f"fewer than {n} replicas alive"
            time.sleep(0.1)


def _spawn_router(mesh: Mesh, name: str, env: dict[str, str]) -> str:
    mesh.spawn(name, ["router", "--grpc-port", "0", "--nats-url", mesh.nats_url],
               env=env)  # fmt: skip
    return str(mesh.child(name).ready["grpc"])


@pytest.fixture(scope="module")
def both_paths(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tmp = tmp_path_factory.mktemp("one-way")
    with (
        NatsServer(tmp / "js") as server,
        Mesh(model_repo, tmp / "mesh", models=DEMO, nats_url=server.url,
             extra_env={"CHORUS_ROUTER_ONE_WAY": "1"}) as mesh,
    ):  # fmt: skip
        _spawn_router(mesh, "router-two-hop", {"CHORUS_ROUTER_ONE_WAY": "0"})
        _wait_models(mesh.router_target, len(DEMO))
        yield mesh


def test_both_paths_give_the_same_answers_and_only_one_way_answers_the_fuser(
    both_paths: Mesh,
) -> None:
    mesh = both_paths
    two_hop = str(mesh.child("router-two-hop").ready["grpc"])
    fuser = str(mesh.child("fuser").ready["metrics"])
    router = str(mesh.child("router").ready["metrics"])
    x = digits_split().x_test[:40]

    def collected() -> float:
        """Member answers the fuser received: each counted once, as `ok`, or as `retried`
        when an attempt before it failed or was hedged (which load alone can cause)."""
        seen = scrape(fuser)
        return sum(
            total(seen, "chorus_fuser_collected_answers_total", outcome=outcome)
            for outcome in ("ok", "retried")
        )

    with TaskClient(mesh.router_target) as one, TaskClient(two_hop) as other:
        one.submit(CAPABILITY, {"input": x[:1]})  # the router has heard the fuser by now
        before = collected()
        direct = [one.submit(CAPABILITY, {"input": x[i : i + 1]}) for i in range(len(x))]
        middle = collected()
        relayed = [other.submit(CAPABILITY, {"input": x[i : i + 1]}) for i in range(len(x))]
        after = collected()
    assert middle - before == len(DEMO) * len(x)
    assert after == middle, "the two-hop router's members answered the fuser"
    assert total(scrape(router), "chorus_router_one_way_fallbacks_total") == 0
    for a, b in zip(direct, relayed, strict=True):
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_allclose(a.probabilities, b.probabilities, rtol=1e-6)
        assert set(a.members) == set(b.members) == set(DEMO)
        for model in DEMO:
            np.testing.assert_array_equal(a.members[model]["label"], b.members[model]["label"])
        assert a.response.explanation.policy == b.response.explanation.policy


def test_under_load_tasks_are_stacked_and_answer_as_alone(both_paths: Mesh) -> None:
    """16 callers at once: members answer in joined calls, the fuser fuses those tasks in
    stacked passes, and every task's answer is the one the two-hop router gives it alone."""
    mesh = both_paths
    fuser = str(mesh.child("fuser").ready["metrics"])
    two_hop = str(mesh.child("router-two-hop").ready["grpc"])
    x = digits_split().x_test[:160]

    def stacked() -> tuple[float, float]:
        text = scrape(fuser)
        return (
            total(text, "chorus_fuser_stacked_tasks_count"),
            total(text, "chorus_fuser_stacked_tasks_sum"),
        )

    passes_before, tasks_before = stacked()
    with TaskClient(mesh.router_target) as one, ThreadPoolExecutor(16) as pool:
        loaded = list(pool.map(lambda i: one.submit(CAPABILITY, {"input": x[i : i + 1]}),
                               range(len(x))))  # fmt: skip
    passes, tasks = stacked()
    assert passes > passes_before
    assert (tasks - tasks_before) > (passes - passes_before), "no pass fused two tasks"
    with TaskClient(two_hop) as other:
        for i, got in enumerate(loaded):
            alone = other.submit(CAPABILITY, {"input": x[i : i + 1]})
            np.testing.assert_array_equal(got.labels, alone.labels)
            # A member runs a joined call's rows as one batch, whose float sums may differ
            # from a single row's in the last bits.
            np.testing.assert_allclose(got.probabilities, alone.probabilities, rtol=1e-5)
            assert [r.status for r in got.response.explanation.rows] == [
                r.status for r in alone.response.explanation.rows
            ]


@pytest.fixture(scope="module")
def one_slow(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """logreg as is and mlp slowed past the attempt timeout, with routers asking for at
    least one member (the default) and for both."""
    tmp = tmp_path_factory.mktemp("one-slow")
    env = {"CHORUS_ROUTER_ATTEMPT_TIMEOUT_S": "0.3", "CHORUS_ROUTER_ONE_WAY": "1"}
    with (
        NatsServer(tmp / "js") as server,
        Mesh(model_repo, tmp / "mesh", models=["logreg"], nats_url=server.url,
             extra_env=env) as mesh,
    ):  # fmt: skip
        mesh.spawn("mlp", [*mesh.model_command("mlp"), "--delay-ms", "1500"])
        _spawn_router(mesh, "router-both", {**env, "CHORUS_ROUTER_MIN_MEMBERS": "2"})
        _wait_models(mesh.router_target, 2)
        yield mesh


def test_a_member_past_the_fusers_wait_is_named_missing(one_slow: Mesh) -> None:
    x = digits_split().x_test[:1]
    with TaskClient(one_slow.router_target) as c:
        start = time.monotonic()
        result = c.submit(CAPABILITY, {"input": x}, deadline_ms=3000)
        took = time.monotonic() - start
    assert set(result.members) == {"logreg"}
    missing = dict(result.response.explanation.missing)
    assert set(missing) == {"mlp"}
    assert "no answer within" in missing["mlp"]
    assert took < 1.4, "the fuser waited past its share of the attempt timeouts"


def test_too_few_members_fails_the_task_naming_the_missing_one(one_slow: Mesh) -> None:
    x = digits_split().x_test[:1]
    target = str(one_slow.child("router-both").ready["grpc"])
    with TaskClient(target) as c, pytest.raises(grpc.RpcError) as info:
        c.submit(CAPABILITY, {"input": x}, deadline_ms=3000)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "1 member(s) answered, 2 needed" in info.value.details()
    assert "mlp" in info.value.details()
