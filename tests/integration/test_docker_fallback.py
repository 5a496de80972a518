"""A Docker engine that answers but cannot pull or run images must not fail the suite: the
NATS fixture falls back to the bundled nats-server and says why. The engine here is a fake
(outside the system): it answers /_ping and refuses everything else."""

from __future__ import annotations

import asyncio
import http.server
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from tests.support import open_nats


class _Refusing(http.server.BaseHTTPRequestHandler):
    def _answer(self) -> None:
        if self.path.endswith("/_ping"):
            body, status = b"OK", 200
        else:
            body, status = b'{"message": "pull access denied: no registry reachable"}', 500
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _answer

    def address_string(self) -> str:  # a unix socket has no client address
        return "fake-docker"

    def log_message(self, format: str, *args: object) -> None:
        return


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def refusing_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    sock = tmp_path / "docker.sock"
    server = _UnixServer(str(sock), _Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{sock}")
    monkeypatch.setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def test_an_engine_that_cannot_pull_falls_back_to_the_bundled_server(
    refusing_engine: None, tmp_path: Path
) -> None:
    warned = pytest.warns(UserWarning, match="Docker engine could not start NATS")
    with warned, open_nats(tmp_path / "nats") as (url, how):
        assert how.startswith("the bundled nats-server (Docker engine could not start")

        async def roundtrip() -> bytes:
            nc = await nats.connect(url)
            sub = await nc.subscribe("ping")
            await nc.publish("ping", b"pong")
            msg = await sub.next_msg(timeout=5)
            await nc.close()
            return msg.data

        assert asyncio.run(roundtrip()) == b"pong"
