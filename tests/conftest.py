"""Shared fixtures: a real nats-server, a real model repository and a real mesh of processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chorus.client import TaskClient
from chorus.demo.build import CAPTION, build_demo
from chorus.launch.mesh import Mesh
from tests.support import DEMO, HELPERS, open_nats


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
