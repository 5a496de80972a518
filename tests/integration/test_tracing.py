"""One task is one trace: spans from the router, every member and the fuser, joined through
the `traceparent` carried in NATS headers. The OTLP collector is outside Chorus, so the test
stands one up itself: a gRPC TraceService that keeps what it is sent."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from chorus.client import TaskClient
from chorus.launch.mesh import Mesh
from tests.support import DEMO


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans: list[tuple[str, str, bytes, bytes]] = []  # service, name, trace, parent
        self.lock = threading.Lock()

    def Export(self, request, context):  # type: ignore[no-untyped-def]
        with self.lock:
            for rs in request.resource_spans:
                service = next(
                    a.value.string_value for a in rs.resource.attributes if a.key == "service.name"
                )
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        self.spans.append((service, s.name, s.trace_id, s.parent_span_id))
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def collector() -> Iterator[tuple[Collector, int]]:
    sink = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield sink, port
    server.stop(grace=None)


def test_one_task_is_one_trace_across_processes(
    collector: tuple[Collector, int], model_repo: Path, tmp_path: Path
) -> None:
    # A NATS of its own: the session mesh's untraced replicas share the queue groups.
    sink, port = collector
    env = {
        "CHORUS_TRACING_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    traceparent = f"00-{trace_id}-00f067aa0ba902b7-01"
    with (
        Mesh(model_repo, tmp_path, models=DEMO, extra_env=env) as mesh,
        TaskClient(mesh.router_target) as client,
    ):
        client.submit("classify/digits", {"input": np.zeros((1, 64), np.float32)},
                      timeout_s=10, metadata=[("traceparent", traceparent)])  # fmt: skip
        want = {("chorus-router", "chorus.task"), ("chorus-fuser", "fuse")}
        want |= {("chorus-model", f"infer {m}") for m in DEMO}
        want |= {("chorus-router", f"request model {m}") for m in DEMO}
        want.add(("chorus-router", "request fuser"))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with sink.lock:
                got = {(svc, name) for svc, name, t, _ in sink.spans if t.hex() == trace_id}
            if want <= got:
                break
            time.sleep(0.1)
    assert want <= got, f"missing spans: {want - got}"
    with sink.lock:
        in_trace = [s for s in sink.spans if s[2].hex() == trace_id]
    # The router's task span continues the caller's span; nothing in the trace is a new root.
    task = next(s for s in in_trace if s[1] == "chorus.task")
    assert task[3].hex() == "00f067aa0ba902b7"
    assert all(parent for *_, parent in in_trace)
