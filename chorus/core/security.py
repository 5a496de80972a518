"""TLS for gRPC and NATS, API keys, and per-capability authorisation of callers.

One place turns SecurityConfig into credentials, so every server and client of the mesh is
secured the same way. Secrets are read from files when needed and never logged; API keys are
kept only as SHA-256 digests.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from chorus.core.config import SecurityConfig
from chorus.core.errors import ChorusError

API_KEY_HEADER = "x-api-key"


class Unauthenticated(ChorusError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(ChorusError):
    code = grpc.StatusCode.PERMISSION_DENIED


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


def server_credentials(cfg: SecurityConfig) -> grpc.ServerCredentials | None:
    if not cfg.tls_cert:
        if cfg.mtls:
            raise ValueError("security: mtls needs tls_cert, tls_key and tls_ca")
        return None
    if not cfg.tls_key:
        raise ValueError("security: tls_cert is set but tls_key is not")
    ca = _read(cfg.tls_ca) if cfg.tls_ca else None
    if cfg.mtls and ca is None:
        raise ValueError("security: mtls needs tls_ca to verify client certificates")
    return grpc.ssl_server_credentials(
        [(_read(cfg.tls_key), _read(cfg.tls_cert))],
        root_certificates=ca,
        require_client_auth=cfg.mtls,
    )


def channel_credentials(cfg: SecurityConfig) -> grpc.ChannelCredentials | None:
    if not cfg.tls_ca:
        return None
    key = _read(cfg.client_key) if cfg.client_key else None
    cert = _read(cfg.client_cert) if cfg.client_cert else None
    return grpc.ssl_channel_credentials(_read(cfg.tls_ca), key, cert)


BALANCED_SCHEMES = ("dns:", "ipv4:", "ipv6:")
"""Targets naming a resolver, e.g. dns:///chorus-router-headless.chorus.svc:50051 or
ipv4:10.0.0.1:50051,10.0.0.2:50051, are dialled round robin over every address resolved."""


def channel_options(target: str) -> list[tuple[str, Any]]:
    """gRPC keeps one HTTP/2 connection and, by default (pick_first), sends every call over
    it: behind a ClusterIP Service a client then stays on one router however many replicas
    an autoscaler adds. A target that names its resolver (a headless Service's DNS name)
    gets round_robin instead, one connection per address, re-resolved as pods come and go;
    a bare host:port keeps pick_first, which is right for one address or a proxy."""
    if target.startswith(BALANCED_SCHEMES):
        return [("grpc.lb_policy_name", "round_robin")]
    return []


def channel(target: str, cfg: SecurityConfig) -> grpc.Channel:
    """A client channel to `target`: TLS (and a client certificate) when configured."""
    creds = channel_credentials(cfg)
    options = channel_options(target)
    if creds:
        return grpc.secure_channel(target, creds, options=options)
    return grpc.insecure_channel(target, options=options)


def aio_channel(target: str, cfg: SecurityConfig) -> grpc.aio.Channel:
    """The asyncio twin of `channel`, with the same credentials and balancing."""
    creds = channel_credentials(cfg)
    options = channel_options(target)
    if creds:
        return grpc.aio.secure_channel(target, creds, options=options)
    return grpc.aio.insecure_channel(target, options=options)


def call_metadata(cfg: SecurityConfig) -> tuple[tuple[str, str], ...]:
    if not cfg.api_key_file:
        return ()
    return ((API_KEY_HEADER, _read(cfg.api_key_file).decode().strip()),)


def nats_options(cfg: SecurityConfig) -> dict[str, Any]:
    """Keyword arguments for nats.connect."""
    opts: dict[str, Any] = {}
    if cfg.nats_user:
        opts["user"] = cfg.nats_user
        opts["password"] = _read(cfg.nats_password_file).decode().strip()
    if cfg.nats_token_file:
        opts["token"] = _read(cfg.nats_token_file).decode().strip()
    if cfg.nats_ca:
        ctx = ssl.create_default_context(cafile=cfg.nats_ca)
        if cfg.nats_cert:
            ctx.load_cert_chain(cfg.nats_cert, cfg.nats_key or None)
        opts["tls"] = ctx
    return opts


@dataclass(frozen=True)
class Caller:
    name: str
    capabilities: frozenset[str]

    def may(self, capability: str) -> bool:
        return "*" in self.capabilities or capability in self.capabilities


class Authorizer:
    """Who is calling, and may they use this capability? Off when no keys file is set."""

    def __init__(self, callers: dict[str, tuple[str, frozenset[str]]], by_cn: dict[str, Caller]):
        self._by_digest = callers
        self._by_cn = by_cn

    @property
    def enabled(self) -> bool:
        return bool(self._by_digest or self._by_cn)

    @classmethod
    def from_config(cls, cfg: SecurityConfig) -> Authorizer:
        if not cfg.api_keys_file:
            return cls({}, {})
        try:
            raw = json.loads(Path(cfg.api_keys_file).read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"security: api_keys_file {cfg.api_keys_file}: {exc}") from None
        by_digest: dict[str, tuple[str, frozenset[str]]] = {}
        by_cn: dict[str, Caller] = {}
        for name, entry in raw.items():
            caps = frozenset(entry.get("capabilities", []))
            if "key_sha256" in entry:
                by_digest[entry["key_sha256"].lower()] = (name, caps)
            if "mtls_cn" in entry:
                by_cn[entry["mtls_cn"]] = Caller(name, caps)
        return cls(by_digest, by_cn)

    def caller(self, metadata: dict[str, str], peer_cn: str | None) -> Caller | None:
        """The caller, or None when authorisation is off; Unauthenticated when unknown."""
        if not self.enabled:
            return None
        key = metadata.get(API_KEY_HEADER)
        if key:
            digest = hashlib.sha256(key.encode()).hexdigest()
            for known, (name, caps) in self._by_digest.items():
                if hmac.compare_digest(known, digest):
                    return Caller(name, caps)
            raise Unauthenticated(f"{API_KEY_HEADER}: this key is not known to the router")
        if peer_cn and peer_cn in self._by_cn:
            return self._by_cn[peer_cn]
        raise Unauthenticated(
            f"missing credentials: send an {API_KEY_HEADER} header or a client certificate "
            "the router knows"
        )

    @staticmethod
    def check(caller: Caller | None, capability: str) -> None:
        if caller is not None and not caller.may(capability):
            allowed = ", ".join(sorted(caller.capabilities)) or "none"
            raise PermissionDenied(
                f"caller {caller.name!r} may not use capability {capability!r} (allowed: {allowed})"
            )


def peer_common_name(context: grpc.aio.ServicerContext) -> str | None:
    auth = context.auth_context() or {}
    names = auth.get("x509_common_name") or []
    return names[0].decode() if names else None
