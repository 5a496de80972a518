"""The same mesh against NATS in a container, where a Docker engine runs (skipped elsewhere)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from chorus.client import TaskClient
from chorus.launch.mesh import Mesh
from tests.support import docker_engine, nats_in_container

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(not docker_engine(), reason="no Docker engine on this machine"),
]


def test_mesh_on_containerised_nats(model_repo: Path, tmp_path: Path) -> None:
    with (
        nats_in_container() as url,
        Mesh(model_repo, tmp_path, models=["logreg"], nats_url=url) as mesh,
    ):
        with TaskClient(mesh.router_target) as client:
            result = client.submit("classify/digits", {"input": np.zeros((1, 64), np.float32)})
        assert list(result.members) == ["logreg"]
