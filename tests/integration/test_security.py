"""Nobody in who does not belong: TLS and mTLS on gRPC, API keys with per-capability
authorisation, NATS with passwords, permissions and TLS; secrets never reach the logs."""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import grpc
import nats
import numpy as np
import pytest

from chorus.client import TaskClient
from chorus.core.config import SecurityConfig
from chorus.core.security import nats_options
from chorus.launch.mesh import Mesh
from chorus.launch.natsserver import NatsServer
from tests.support.pki import Authority

X = {"input": np.zeros((1, 64), np.float32)}
APP_KEY = "app-key-7f3e9c"
TEXT_KEY = "text-only-key-51ab"
NATS_PASSWORD = "n4ts-secret-pw"


def _users(tmp: Path) -> str:
    """NATS: the mesh's services may do anything; `app` may only use the request inbox."""
    (tmp / "nats-password").write_text(NATS_PASSWORD)
    return f"""
authorization {{
  users = [
    {{user: mesh, password: "{NATS_PASSWORD}"}}
    {{user: app, password: "app-pw", permissions: {{publish: {{deny: ["chorus.>", "$JS.>"]}}}}}}
  ]
}}
"""


@pytest.fixture(scope="module")
def secured(
    model_repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Mesh, Authority, Path]]:
    tmp = tmp_path_factory.mktemp("secure")
    ca = Authority(tmp / "pki")
    server = ca.issue("router.chorus", server=True)
    keys = {
        "app": {"key_sha256": hashlib.sha256(APP_KEY.encode()).hexdigest(), "capabilities": ["*"]},
        "texter": {
            "key_sha256": hashlib.sha256(TEXT_KEY.encode()).hexdigest(),
            "capabilities": ["classify/digits-text"],
        },
        "cert-app": {"mtls_cn": "cert-app", "capabilities": ["classify/digits"]},
    }
    (tmp / "keys.json").write_text(json.dumps(keys))
    (tmp / "app.key").write_text(APP_KEY)
    env = {
        "CHORUS_SECURITY_TLS_CERT": str(server.cert),
        "CHORUS_SECURITY_TLS_KEY": str(server.key),
        "CHORUS_SECURITY_TLS_CA": str(ca.ca),
        "CHORUS_SECURITY_API_KEYS_FILE": str(tmp / "keys.json"),
        "CHORUS_SECURITY_API_KEY_FILE": str(tmp / "app.key"),
        "CHORUS_SECURITY_NATS_USER": "mesh",
        "CHORUS_SECURITY_NATS_PASSWORD_FILE": str(tmp / "nats-password"),
    }
    with NatsServer(tmp / "js", config=_users(tmp)) as ns, Mesh(
        model_repo, tmp / "mesh", models=["logreg"], nats_url=ns.url, extra_env=env
    ) as mesh:  # fmt: skip
        yield mesh, ca, tmp


def client(mesh: Mesh, ca: Authority, key: str = "", **kw: str) -> TaskClient:
    tmp = ca.root.parent
    keyfile = ""
    if key:
        (tmp / "caller.key").write_text(key)
        keyfile = str(tmp / "caller.key")
    return TaskClient(
        mesh.router_target, SecurityConfig(tls_ca=str(ca.ca), api_key_file=keyfile, **kw)
    )


def test_tls_required_and_plaintext_refused(secured) -> None:  # type: ignore[no-untyped-def]
    mesh, ca, _ = secured
    with client(mesh, ca, APP_KEY) as c:
        assert c.submit("classify/digits", X).labels.shape == (1,)
    with (
        TaskClient(mesh.router_target, SecurityConfig()) as plain,
        pytest.raises(grpc.RpcError) as info,
    ):
        plain.submit("classify/digits", X, timeout_s=3)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_api_keys_and_per_capability_authorisation(secured) -> None:  # type: ignore[no-untyped-def]
    mesh, ca, _ = secured
    with client(mesh, ca) as anonymous, pytest.raises(grpc.RpcError) as info:
        anonymous.submit("classify/digits", X)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "x-api-key" in info.value.details()
    with client(mesh, ca, "not-a-key") as wrong, pytest.raises(grpc.RpcError) as info:
        wrong.submit("classify/digits", X)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with client(mesh, ca, TEXT_KEY) as texter, pytest.raises(grpc.RpcError) as info:
        texter.submit("classify/digits", X)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "caller 'texter' may not use capability 'classify/digits'" in info.value.details()


async def test_nats_refuses_strangers_and_enforces_permissions(secured) -> None:  # type: ignore[no-untyped-def]
    mesh, _, _ = secured
    # A stranger (raw socket: nats-py leaks its transport when a connect is refused).
    host, port = mesh.nats_url.removeprefix("nats://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        info = json.loads(s.recv(4096).decode().split(" ", 1)[1])
        assert info["auth_required"] is True
        s.sendall(b'CONNECT {"verbose":false}\r\nPING\r\n')
        assert b"Authorization Violation" in s.recv(4096)
    errors: list[Exception] = []

    async def on_error(e: Exception) -> None:
        errors.append(e)

    nc = await nats.connect(mesh.nats_url, user="app", password="app-pw", error_cb=on_error,
                            allow_reconnect=False)  # fmt: skip
    try:
        await nc.publish("chorus.infer.logreg", b"x")
        await nc.flush(timeout=2)
        import asyncio

        for _ in range(20):
            if errors:
                break
            await asyncio.sleep(0.1)
    finally:
        await nc.close()
    assert any("permissions violation" in str(e).lower() for e in errors), errors


def test_secrets_never_reach_the_logs(secured) -> None:  # type: ignore[no-untyped-def]
    mesh, _, _ = secured
    logs = "".join(p.read_text(errors="replace") for p in (mesh.data_dir / "logs").glob("*.log"))
    assert logs
    for secret in (APP_KEY, TEXT_KEY, NATS_PASSWORD):
        assert secret not in logs


def test_mtls_identity_authorises(model_repo: Path, tmp_path: Path) -> None:
    ca = Authority(tmp_path / "pki")
    server = ca.issue("router.chorus", server=True)
    allowed = ca.issue("cert-app", server=False)
    stranger = Authority(tmp_path / "other").issue("cert-app", server=False)
    keys = {"cert-app": {"mtls_cn": "cert-app", "capabilities": ["classify/digits"]}}
    (tmp_path / "keys.json").write_text(json.dumps(keys))
    env = {
        "CHORUS_SECURITY_TLS_CERT": str(server.cert),
        "CHORUS_SECURITY_TLS_KEY": str(server.key),
        "CHORUS_SECURITY_TLS_CA": str(ca.ca),
        "CHORUS_SECURITY_MTLS": "1",
        "CHORUS_SECURITY_API_KEYS_FILE": str(tmp_path / "keys.json"),
        "CHORUS_SECURITY_CLIENT_CERT": str(allowed.cert),
        "CHORUS_SECURITY_CLIENT_KEY": str(allowed.key),
    }
    with NatsServer(tmp_path / "js") as ns, Mesh(
        model_repo, tmp_path / "mesh", models=["logreg"], nats_url=ns.url, extra_env=env
    ) as mesh:  # fmt: skip
        good = SecurityConfig(
            tls_ca=str(ca.ca), client_cert=str(allowed.cert), client_key=str(allowed.key)
        )
        with TaskClient(mesh.router_target, good) as c:
            assert c.submit("classify/digits", X).labels.shape == (1,)
        no_cert = SecurityConfig(tls_ca=str(ca.ca))
        with TaskClient(mesh.router_target, no_cert) as c, pytest.raises(grpc.RpcError) as info:
            c.submit("classify/digits", X, timeout_s=3)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        forged = SecurityConfig(
            tls_ca=str(ca.ca), client_cert=str(stranger.cert), client_key=str(stranger.key)
        )
        with TaskClient(mesh.router_target, forged) as c, pytest.raises(grpc.RpcError) as info:
            c.submit("classify/digits", X, timeout_s=3)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_nats_over_tls_refuses_plaintext(tmp_path: Path) -> None:
    ca = Authority(tmp_path / "pki")
    server = ca.issue("nats.chorus", server=True)
    conf = f'tls {{ cert_file: "{server.cert}", key_file: "{server.key}", ca_file: "{ca.ca}" }}'
    with NatsServer(tmp_path / "js", config=conf) as ns:
        # A plaintext client: the server announces TLS is required and drops a plain CONNECT.
        # (Raw socket: nats-py leaks its transport when a TLS handshake fails.)
        with socket.create_connection((ns.host, ns.port), timeout=5) as s:
            info = json.loads(s.recv(4096).decode().split(" ", 1)[1])
            assert info["tls_required"] is True
            s.sendall(b'CONNECT {"verbose":false}\r\nPING\r\n')
            reply = s.recv(4096)
            assert b"PONG" not in reply

        nc = await nats.connect(ns.url, allow_reconnect=False,
                                **nats_options(SecurityConfig(nats_ca=str(ca.ca))))  # fmt: skip
        try:
            assert nc.is_connected
            await nc.flush(timeout=2)
        finally:
            await nc.close()
