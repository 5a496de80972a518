"""A co-hosted group on real processes: the digits members and a fuser in `chorus serve group`
processes (two replicas), a real router and nats-server. Each member's answer equals bare ONNX
Runtime on the same rows and the fused answer their soft vote; a group replica killed mid-run
loses no task; bad bytes sent to the group get a clear error and it keeps serving."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import nats
import numpy as np
import onnxruntime as ort
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from chorus.client import TaskClient
from chorus.core.calls.request import ERROR_CODE_HEADER, ERROR_HEADER
from chorus.launch.mesh import Mesh
from tests.support import DEMO

GROUP = "digits"
CAPABILITY = "classify/digits"


@pytest.fixture(scope="module")
def group_mesh(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with Mesh(
        model_repo,
        tmp_path_factory.mktemp("cohosted"),
        models=list(DEMO),
        groups={GROUP: list(DEMO)},
        replicas={f"group:{GROUP}": 2},
    ) as running:
        yield running


def _bare(model_repo: Path, model: str, x: np.ndarray) -> np.ndarray:
    manifest = json.loads((model_repo / model / "1" / "manifest.json").read_text())
    session = ort.InferenceSession(
        str(model_repo / model / "1" / manifest["file"]), providers=["CPUExecutionProvider"]
    )
    out = session.run([manifest["scores_output"]], {manifest["inputs"][0]["name"]: x})
    return np.asarray(out[0])


def test_members_answer_as_bare_onnx_runtime_and_the_group_fuses_their_soft_vote(
    group_mesh: Mesh, model_repo: Path
) -> None:
    rng = np.random.default_rng(7)
    with TaskClient(group_mesh.router_target) as client:
        for _ in range(5):
            x = (rng.random((3, 64)) * 16).astype(np.float32)
            result = client.submit(CAPABILITY, {"input": x}, policy="soft_vote")
            replicas = {m.replica for m in result.response.members}
            # Every member answered from one group replica: its name is the member's prefix.
            groups = {r.rsplit("-", 1)[0] for r in replicas}
            assert len(groups) == 1, replicas
            assert groups.pop().startswith(f"{GROUP}-")
            own = []
            for model in DEMO:
                expected = _bare(model_repo, model, x)
                got = result.members[model]["probabilities"]
                np.testing.assert_allclose(got, expected, atol=1e-6)
                own.append(expected)
            np.testing.assert_allclose(result.probabilities, np.mean(own, axis=0), atol=1e-5)
            assert list(result.labels) == list(np.argmax(np.mean(own, axis=0), axis=1))


def test_tasks_in_flight_together_get_their_own_answers_fused_in_shared_passes(
    group_mesh: Mesh, model_repo: Path
) -> None:
    rows = (np.random.default_rng(11).random((64, 64)) * 16).astype(np.float32)
    expected = np.mean([_bare(model_repo, m, rows) for m in DEMO], axis=0)

    def one(i: int) -> np.ndarray:
        with TaskClient(group_mesh.router_target) as client:
            got = client.submit(CAPABILITY, {"input": rows[i : i + 1]}, policy="soft_vote")
        return np.asarray(got.probabilities)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one, range(len(rows))))
    np.testing.assert_allclose(np.concatenate(answers), expected, atol=1e-5)
    tasks = passes = 0.0
    for i in range(2):
        scraped = urllib.request.urlopen(
            f"http://{group_mesh.child(f'group-{GROUP}-{i}').ready['metrics']}/metrics", timeout=5
        ).read().decode()  # fmt: skip
        for family in text_string_to_metric_families(scraped):
            if family.name == "chorus_fuser_stacked_tasks":
                for sample in family.samples:
                    tasks += sample.value if sample.name.endswith("_sum") else 0
                    passes += sample.value if sample.name.endswith("_count") else 0
    assert passes > 0
    assert tasks > passes, "no pass fused more than one task"


def test_one_scrape_of_a_group_shows_its_members_its_fuser_and_itself(group_mesh: Mesh) -> None:
    address = group_mesh.child(f"group-{GROUP}-0").ready["metrics"]
    scraped = urllib.request.urlopen(f"http://{address}/metrics", timeout=5).read().decode()
    families = {f.name: f for f in text_string_to_metric_families(scraped)}
    in_flight = {s.labels["model"] for s in families["chorus_model_in_flight"].samples}
    assert in_flight == set(DEMO)
    assert "chorus_fuser_requests" in families
    (group,) = families["chorus_group_tasks_in_flight"].samples
    assert group.labels == {"group": GROUP}
    # Each member has its own NATS connection; the merged scrape still names the series once.
    assert len(families["chorus_model_nats_connected"].samples) == 1
    # No member and not the fuser listens on a port of its own: the group's two serve them.
    child = group_mesh.child(f"group-{GROUP}-0")
    listening = {
        c.laddr.port
        for c in psutil.Process(child.proc.pid).net_connections("tcp")
        if c.status == psutil.CONN_LISTEN
    }
    ports = {int(child.ready[k].rsplit(":", 1)[1]) for k in ("grpc", "metrics")}
    assert listening == ports
    with urllib.request.urlopen(f"http://{address}/readyz", timeout=5) as ready:
        assert ready.status == 200
        assert ready.read().decode().startswith(f"ok: group {GROUP} serving")


def test_the_group_answers_as_one_kserve_model_as_its_tasks_are_answered(
    group_mesh: Mesh, model_repo: Path
) -> None:
    """The ensemble a Triton user calls: tritonclient's ModelInfer naming the group runs the
    members and fuses them in the group's process, with the answer a router's task gets."""
    import tritonclient.grpc as tc
    from tritonclient.utils import InferenceServerException

    x = (np.random.default_rng(5).random((4, 64)) * 16).astype(np.float32)
    with TaskClient(group_mesh.router_target) as tasks:
        submitted = tasks.submit(CAPABILITY, {"input": x}, policy="soft_vote")
    client = tc.InferenceServerClient(url=group_mesh.child(f"group-{GROUP}-0").ready["grpc"])
    try:
        assert client.is_model_ready(GROUP)
        meta = client.get_model_metadata(GROUP)
        assert meta.platform == "ensemble"
        assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
            ("input", "FP32", [-1, 64])
        ]
        inp = tc.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        result = client.infer(GROUP, [inp])
        np.testing.assert_allclose(
            result.as_numpy("probabilities"), submitted.probabilities, atol=1e-6
        )
        own = np.mean([_bare(model_repo, m, x) for m in DEMO], axis=0)
        np.testing.assert_allclose(result.as_numpy("probabilities"), own, atol=1e-5)
        assert list(result.as_numpy("label")) == list(np.argmax(own, axis=1))
        assert set(result.as_numpy("status")) <= {b"agreed", b"conflicted", b"resolved"}
        params = result.get_response().parameters
        assert params["policy"].string_param == "soft_vote"
        assert params["capability"].string_param == CAPABILITY
        assert sorted(params["members"].string_param.split(",")) == sorted(DEMO)
        # A conflict policy that reads the inputs gets them; one that does not, none.
        negotiated = client.infer(GROUP, [inp], parameters={"conflict": "negotiate"})
        assert negotiated.get_response().parameters["conflict_policy"].string_param == "negotiate"
        assert negotiated.as_numpy("probabilities").shape == own.shape
        first = client.infer(GROUP, [inp], priority=1, parameters={"min_members": 3})
        np.testing.assert_allclose(first.as_numpy("probabilities"), own, atol=1e-5)
        with pytest.raises(InferenceServerException, match="priority"):
            client.infer(GROUP, [inp], priority=7)
        # One address serves each member too, as its own model.
        alone = client.infer("mlp", [inp], outputs=[tc.InferRequestedOutput("probabilities")])
        np.testing.assert_allclose(
            alone.as_numpy("probabilities"), _bare(model_repo, "mlp", x), atol=1e-6
        )
        names = {m.name for m in client.get_model_repository_index().models}
        assert names == {GROUP, *DEMO}
        # The fuser kept the task, as a router's: its truth teaches the members' weights
        # (last: the weights differ from here on).
        with TaskClient(group_mesh.router_target) as tasks:
            learned = tasks.feedback(
                params["task_id"].string_param, labels=np.argmax(own, axis=1).tolist()
            )
        assert set(learned.weights) == set(DEMO)
    finally:
        client.close()


def test_the_groups_model_answers_a_stream_of_requests_each_by_its_id(group_mesh: Mesh) -> None:
    import queue

    import tritonclient.grpc as tc

    rows = (np.random.default_rng(9).random((12, 64)) * 16).astype(np.float32)
    answers: queue.Queue[tuple[object, object]] = queue.Queue()
    client = tc.InferenceServerClient(url=group_mesh.child(f"group-{GROUP}-0").ready["grpc"])
    try:
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        for i in range(len(rows)):
            inp = tc.InferInput("input", [1, 64], "FP32")
            inp.set_data_from_numpy(rows[i : i + 1])
            client.async_stream_infer(GROUP, [inp], request_id=str(i))
        got = {}
        for _ in range(len(rows)):
            result, error = answers.get(timeout=10)
            assert error is None, error
            got[result.get_response().id] = result.as_numpy("probabilities")
        client.stop_stream()
        whole = client.infer(GROUP, [_input(tc, rows)]).as_numpy("probabilities")
    finally:
        client.close()
    assert sorted(got, key=int) == [str(i) for i in range(len(rows))]
    # Rows batched differently round differently in the last float bit.
    np.testing.assert_allclose(
        np.concatenate([got[str(i)] for i in range(len(rows))]), whole, atol=1e-6
    )


def test_concurrent_calls_to_the_groups_model_share_its_members_runs(group_mesh: Mesh) -> None:
    """Sixteen callers on one channel, as Triton's users drive an ensemble: the gRPC server
    hands calls to the event loop in batches (pygrpc-native) and calls asked alike join one
    task (chorus.group.joining), so a member's ONNX Runtime run takes rows of several calls,
    where on grpc.aio nearly every run took one row."""
    import tritonclient.grpc as tc

    child = group_mesh.child(f"group-{GROUP}-0")
    rows = (np.random.default_rng(5).random((160, 64)) * 16).astype(np.float32)
    client = tc.InferenceServerClient(url=child.ready["grpc"])
    try:
        whole = client.infer(GROUP, [_input(tc, rows)]).as_numpy("probabilities")
        before = _batch_sizes(child.ready["metrics"])

        def one(i: int) -> tuple[np.ndarray, str]:
            got = client.infer(GROUP, [_input(tc, rows[i : i + 1])])
            task_id = got.get_response().parameters["task_id"].string_param
            return np.asarray(got.as_numpy("probabilities")), task_id

        with ThreadPoolExecutor(16) as pool:
            answers, ids = zip(*pool.map(one, range(len(rows))), strict=True)
    finally:
        client.close()
    # Rows batched differently round differently in the last float bit.
    np.testing.assert_allclose(np.concatenate(answers), whole, atol=1e-6)
    # Calls joined into one task are each kept under their own id, with their own row: one
    # label is the truth a call's feedback takes, whoever shared its task.
    assert len(set(ids)) == len(rows)
    with TaskClient(group_mesh.router_target) as tasks:
        for i in (40, 100, 159):
            label = int(np.argmax(answers[i]))
            assert set(tasks.feedback(ids[i], labels=[label]).weights) == set(DEMO)
    after = _batch_sizes(child.ready["metrics"])
    for model in DEMO:
        runs = after[model][1] - before[model][1]
        taken = after[model][0] - before[model][0]
        assert taken == len(rows), (model, taken)
        # grpc.aio here: 1.03 rows a run; pygrpc-native about 4.7.
        assert taken / runs >= 1.5, f"{model}: {runs} runs for {taken} rows"


def _batch_sizes(address: str) -> dict[str, tuple[float, float]]:
    """Each member's rows run and runs made so far: chorus_model_batch_size's sum and count."""
    scraped = urllib.request.urlopen(f"http://{address}/metrics", timeout=5).read().decode()
    (family,) = (
        f for f in text_string_to_metric_families(scraped) if f.name == "chorus_model_batch_size"
    )
    found: dict[str, list[float]] = {}
    for sample in family.samples:
        kept = found.setdefault(sample.labels["model"], [0.0, 0.0])
        if sample.name.endswith("_sum"):
            kept[0] = sample.value
        elif sample.name.endswith("_count"):
            kept[1] = sample.value
    return {model: (rows, runs) for model, (rows, runs) in found.items()}


def _input(tc: Any, x: np.ndarray) -> Any:
    inp = tc.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return inp


@pytest.mark.parametrize(
    ("model", "shape", "parameters", "outputs", "code", "says"),
    [
        (GROUP, [1, 63], {}, [], "INVALID_ARGUMENT", "inputs['input']"),
        (GROUP, [1, 64], {"temperature": "2"}, [], "INVALID_ARGUMENT", "parameters"),
        (GROUP, [1, 64], {"capability": "classify/text"}, [], "INVALID_ARGUMENT", "classify/text"),
        (GROUP, [1, 64], {"min_members": "two"}, [], "INVALID_ARGUMENT", "min_members"),
        (GROUP, [1, 64], {}, ["explanation"], "INVALID_ARGUMENT", "explanation"),
        (GROUP, [1, 64], {"policy": "loudest"}, [], "INVALID_ARGUMENT", "loudest"),
        ("digit", [1, 64], {}, [], "NOT_FOUND", "'digit'"),
    ],
)
def test_bad_requests_to_the_groups_model_get_clear_errors_and_it_keeps_serving(
    group_mesh: Mesh,
    model: str,
    shape: list[int],
    parameters: dict[str, Any],
    outputs: list[str],
    code: str,
    says: str,
) -> None:
    import tritonclient.grpc as tc
    from tritonclient.utils import InferenceServerException

    client = tc.InferenceServerClient(url=group_mesh.child(f"group-{GROUP}-0").ready["grpc"])
    try:
        x = np.zeros(shape, np.float32)
        with pytest.raises(InferenceServerException) as err:
            client.infer(
                model,
                [_input(tc, x)],
                parameters=parameters or None,
                outputs=[tc.InferRequestedOutput(o) for o in outputs] or None,
            )
        assert err.value.status() == f"StatusCode.{code}"
        assert says in err.value.message()
        good = client.infer(GROUP, [_input(tc, np.zeros((1, 64), np.float32))])
        assert good.as_numpy("probabilities").shape == (1, 10)
    finally:
        client.close()


def test_an_input_no_member_takes_is_refused_by_name(group_mesh: Mesh) -> None:
    import tritonclient.grpc as tc
    from tritonclient.utils import InferenceServerException

    client = tc.InferenceServerClient(url=group_mesh.child(f"group-{GROUP}-0").ready["grpc"])
    try:
        x = np.zeros((1, 64), np.float32)
        pixels = tc.InferInput("pixels", [1, 64], "FP32")
        pixels.set_data_from_numpy(x)
        with pytest.raises(InferenceServerException) as err:
            client.infer(GROUP, [_input(tc, x), pixels])
        assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "['pixels'] taken by no member" in err.value.message()
    finally:
        client.close()


def test_the_group_counts_its_tasks_by_how_they_came_and_how_they_ended(
    group_mesh: Mesh,
) -> None:
    """After the tests above: a router's tasks over NATS, the KServe model's unary and
    streamed calls, and the bad requests refused."""
    address = group_mesh.child(f"group-{GROUP}-0").ready["metrics"]
    scraped = urllib.request.urlopen(f"http://{address}/metrics", timeout=5).read().decode()
    (family,) = (
        f for f in text_string_to_metric_families(scraped) if f.name == "chorus_group_tasks"
    )
    counts = {
        (s.labels["transport"], s.labels["outcome"]): s.value
        for s in family.samples
        if s.name.endswith("_total")
    }
    assert counts[("grpc", "ok")] >= 3
    assert counts[("grpc_stream", "ok")] == 12
    assert counts[("grpc", "invalid_argument")] >= 4
    assert counts[("nats", "ok")] + counts[("nats", "invalid_argument")] > 0
    assert counts[("grpc", "deadline_exceeded")] == 0


def test_a_group_replica_killed_mid_run_loses_no_task(group_mesh: Mesh) -> None:
    x = np.full((1, 64), 3.0, np.float32)
    answered = 0
    with TaskClient(group_mesh.router_target) as client:
        for i in range(60):
            if i == 20:
                group_mesh.child(f"group-{GROUP}-0").proc.kill()
            result = client.submit(CAPABILITY, {"input": x}, deadline_ms=10000)
            assert result.probabilities.shape == (1, 10)
            answered += 1
        assert answered == 60
        late = {
            m.replica.rsplit("-", 1)[0]
            for m in client.submit(CAPABILITY, {"input": x}).response.members
        }
    alive = group_mesh.child(f"group-{GROUP}-1")
    assert alive.proc.poll() is None
    assert len(late) == 1


def test_bad_bytes_to_the_group_get_a_clear_error_and_it_keeps_serving(group_mesh: Mesh) -> None:
    async def ask() -> tuple[str, str]:
        nc = await nats.connect(group_mesh.nats_url)
        try:
            msg = await nc.request(f"chorus.infer.group:{GROUP}", b"\xff not a call", timeout=5)
        finally:
            await nc.close()
        headers = msg.headers or {}
        return headers.get(ERROR_CODE_HEADER, ""), headers.get(ERROR_HEADER, "")

    code, why = asyncio.run(ask())
    assert code == "INVALID_ARGUMENT"
    assert "FuseCall" in why and "body" in why
    with TaskClient(group_mesh.router_target) as client:
        result = client.submit(CAPABILITY, {"input": np.zeros((1, 64), np.float32)})
    assert result.probabilities.shape == (1, 10)
