"""Starts a whole mesh as separate processes: nats-server, fuser, router, model services.

Used by `chorus up`, `chorus demo` and the integration tests, so the tests exercise the very
launcher people run. Each child prints one JSON line on stdout when it is ready to serve.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from chorus.launch.natsserver import NatsCluster, NatsServer, Running


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    ready: dict[str, Any] = field(default_factory=dict)
    log: Path | None = None
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        parts = [f"{self.name:<8}"]
        if "grpc" in self.ready:
            parts.append(f"gRPC {self.ready['grpc']}")
        if "metrics" in self.ready:
            parts.append(f"metrics http://{self.ready['metrics']}/metrics")
        if "provider" in self.ready:
            parts.append(self.ready["provider"])
        return "  ".join(parts)


class StartFailed(RuntimeError):
    """A child exited, or stayed silent, before it was ready; the message carries the last
    line of its log (the error that stopped it, usually)."""


def _last_line(log: Path | None) -> str:
    if log is None or not log.exists():
        return ""
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _wait_ready(child: Child, timeout_s: float) -> None:
    assert child.proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(child.proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout_s
    buf = b""
    try:
        while time.monotonic() < deadline:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            chunk = os.read(child.proc.stdout.fileno(), 65536)
            if not chunk:  # stdout closed: the child is exiting
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.proc.wait(timeout=5)
                break
            buf += chunk
            for line in buf.splitlines():
                if line.startswith(b"{"):
                    child.ready = json.loads(line)
                    return
    finally:
        sel.close()
    last = _last_line(child.log)
    where = (f": {last}" if last else "") + (f" (see {child.log})" if child.log else "")
    code = child.proc.poll()
    if code is not None:
        raise StartFailed(f"{child.name} exited with status {code} before it was ready{where}")
    raise StartFailed(f"{child.name} did not become ready in {timeout_s}s{where}")


class Mesh(Running):
    """nats-server (embedded unless `nats_url` is given) plus every service, as processes."""

    def __init__(
        self,
        repository: Path,
        data_dir: Path,
        *,
        models: list[str],
        nats_url: str | None = None,
        nats_port: int = 0,
        router_port: int = 0,
        fusers: int = 1,
        extra_env: dict[str, str] | None = None,
        model_args: dict[str, list[str]] | None = None,
        replicas: dict[str, int] | None = None,
        nats_cluster: int = 1,
        groups: dict[str, list[str]] | None = None,
    ) -> None:
        """`model_args` adds flags to one model's `chorus serve model`, e.g. a fault flag;
        `replicas` starts that many processes of a model (one by default); `nats_cluster`
        of 3 or more runs a JetStream cluster of that many nodes instead of one server
        (`nats_port` is then the first node's). `groups` co-hosts models: each group's members
        run in `chorus serve group` processes (`replicas["group:<name>"]` of them, one by
        default) instead of a process each."""
        self.repository = repository
        self.data_dir = data_dir
        self.models = models
        self.router_port = router_port
        """0 until the router is up when none was asked for: it binds a port of its own choosing
        and says which, so no other process can take the port between a pick and its bind."""
        self.fusers = fusers
        self.extra_env = extra_env or {}
        self.model_args = model_args or {}
        self.replicas = replicas or {}
        self.groups = groups or {}
        self.nats: NatsServer | NatsCluster | None = None
        if nats_url is None and nats_cluster > 1:
            self.nats = NatsCluster(data_dir / "jetstream", nats_cluster, first_port=nats_port)
        elif nats_url is None:
            self.nats = NatsServer(
                data_dir / "jetstream", port=nats_port, log=data_dir / "logs" / "nats.log"
            )
        self.nats_url = nats_url or self.nats.url  # type: ignore[union-attr]
        self.children: list[Child] = []

    @property
    def router_target(self) -> str:
        return f"127.0.0.1:{self.router_port}"

    def spawn(
        self,
        name: str,
        args: list[str],
        timeout_s: float = 60.0,
        env: dict[str, str] | None = None,
    ) -> Child:
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"{name}.log"
        env = {**os.environ, "CHORUS_NATS_URL": self.nats_url, **self.extra_env, **(env or {})}
        with open(log, "ab") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "chorus.cli", "serve", *args],
                stdout=subprocess.PIPE,
                stderr=err,
                env=env,
            )
        child = Child(name, proc, log=log, args=args, env=env)
        self.children.append(child)
        _wait_ready(child, timeout_s)
        return child

    def start(self) -> Self:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            if self.nats is not None:
                self.nats.start()
            nats = ["--nats-url", self.nats_url]
            for i in range(self.fusers):
                self.spawn(f"fuser-{i}" if self.fusers > 1 else "fuser", ["fuser", *nats])
            # The router before the models (it learns of them from their heartbeats): a
            # router port already held fails the start in seconds, not after every model.
            router = self.spawn("router", ["router", "--grpc-port", str(self.router_port), *nats])
            self.router_port = int(str(router.ready["grpc"]).rsplit(":", 1)[1])
            router.args[router.args.index("--grpc-port") + 1] = str(self.router_port)
            grouped = {m for members in self.groups.values() for m in members}
            for m in self.models:
                if m in grouped:
                    continue
                count = self.replicas.get(m, 1)
                for i in range(count):
                    self.spawn(m if count == 1 else f"{m}-{i}", self.model_command(m))
            for g, members in self.groups.items():
                count = self.replicas.get(f"group:{g}", 1)
                for i in range(count):
                    name = f"group-{g}" if count == 1 else f"group-{g}-{i}"
                    self.spawn(name, self.group_command(g, members))
            self.wait_for_models(len(self.models))
        except BaseException:
            self.stop()
            raise
        return self

    def model_command(self, model: str) -> list[str]:
        return [
            "model", "--model", model, "--repository", str(self.repository),
            "--nats-url", self.nats_url, *self.model_args.get(model, []),
        ]  # fmt: skip

    def group_command(self, group: str, members: list[str]) -> list[str]:
        return [
            "group", "--name", group, "--models", ",".join(members),
            "--repository", str(self.repository), "--nats-url", self.nats_url,
        ]  # fmt: skip

    def wait_for_models(self, count: int, timeout_s: float = 30.0) -> None:

        deadline = time.monotonic() + timeout_s
        from chorus.client import TaskClient
        from chorus.core.config import SecurityConfig
        from chorus.core.environment import from_env

        security = from_env(SecurityConfig, "security", env={**os.environ, **self.extra_env})
        with TaskClient(self.router_target, security) as client:
            while time.monotonic() < deadline:
                if len(client.list_models().models) >= count:
                    return
                time.sleep(0.1)
        raise TimeoutError(f"router saw fewer than {count} models within {timeout_s}s")

    def child(self, name: str) -> Child:
        return next(c for c in self.children if c.name == name)

    def restart(self, name: str, *, kill: bool = False) -> Child:
        """Stop one service (SIGTERM, or SIGKILL with `kill`) and start it again as it was."""
        old = self.child(name)
        old.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        old.proc.wait(timeout=15)
        if old.proc.stdout is not None:
            old.proc.stdout.close()
        self.children.remove(old)
        return self.spawn(name, old.args, env=old.env)

    def stop(self) -> None:
        for child in reversed(self.children):
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        for child in reversed(self.children):
            try:
                child.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
            if child.proc.stdout is not None:
                child.proc.stdout.close()
        self.children.clear()
        if self.nats is not None:
            self.nats.stop()
