"""GET /livez on a service's metrics port: 503 while its event loop is stuck, 200 once it
runs again, and 200 while NATS is unreachable (that is readiness's business, not liveness's)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from chorus.core.config import FuserConfig
from chorus.core.environment import from_env
from chorus.fuser.app import FuserService
from chorus.launch.natsserver import free_port

STALL_S = 1.0


def _livez(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def test_a_blocked_event_loop_fails_livez_until_it_runs_again(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHORUS_LIVENESS_STALL_S", str(STALL_S))
    service = FuserService(from_env(FuserConfig, "fuser", nats_url=nats_url, metrics_port=0))
    async with service:
        port = service.metrics_port
        await asyncio.sleep(1.2)  # a tick or two on a free loop
        status, body = await asyncio.to_thread(_livez, port)
        assert status == 200, body
        # /metrics is still there, beside it.
        metrics = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        )
        assert b"chorus_fuser_nats_connected 1.0" in metrics

        seen: list[tuple[float, int, str]] = []
        polling = threading.Event()

        def poll() -> None:
            while not polling.is_set():
                seen.append((time.monotonic(), *_livez(port)))
                time.sleep(0.1)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        blocked_at = time.monotonic()
        time.sleep(STALL_S + 1.5)  # the event loop itself is held, as by a blocking call
        unblocked_at = time.monotonic()
        await asyncio.sleep(1.0)
        polling.set()
        await asyncio.to_thread(poller.join, 5)

    during = [(s, b) for t, s, b in seen if blocked_at + STALL_S + 0.3 < t < unblocked_at]
    after = [(s, b) for t, s, b in seen if t > unblocked_at + 0.3]
    assert during and after, seen
    assert all(s == 503 for s, _ in during), during
    assert "fuser: event loop stalled: no tick for" in during[-1][1]
    assert all(s == 200 for s, _ in after), after
    before = [s for t, s, _ in seen if t < blocked_at + STALL_S - 0.3]
    assert before and all(s == 200 for s in before)


def test_livez_answers_200_while_nats_is_unreachable() -> None:
    """A NATS outage must restart nothing: the router has no NATS (its gRPC health, the
    readiness probe, says NOT_SERVING) and is still live."""
    dead = f"nats://127.0.0.1:{free_port()}"
    metrics_port = free_port()
    command = [sys.executable, "-m", "chorus.cli", "serve", "router", "--nats-url", dead,
               "--grpc-port", str(free_port()), "--metrics-port", str(metrics_port)]  # fmt: skip
    env = {**os.environ, "CHORUS_LIVENESS_STALL_S": "2"}
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 60
        answers: list[tuple[int, str]] = []
        while time.monotonic() < deadline and len(answers) < 4:
            try:
                answers.append(_livez(metrics_port))
                time.sleep(1.0)  # across several ticks, past the 2 s limit
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        assert len(answers) == 4, "the router never served /livez"
        assert all(status == 200 for status, _ in answers), answers
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=10)
