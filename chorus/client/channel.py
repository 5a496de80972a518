"""How a client dials the router: the target (one address, a list of routers, or a DNS name
served round robin), TLS and the API key, compression, and the retry policy gRPC applies
to the calls that are safe to repeat.

Retries are gRPC's own (the `retryPolicy` of a service config, with exponential backoff and
jitter, bounded by each call's deadline), not a loop in Python, so the blocking and asyncio
clients retry alike. Only idempotent calls are retried: reads (ListModels, GetResult,
WatchResult before its first answer, the health check) and SubmitAsync, which the client
always sends with an idempotency key. Submit, Feedback and Review are not: a repeat could run
a task twice or teach the weights twice.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from chorus.client.errors import InvalidArgument
from chorus.client.ops import HEALTH_SERVICE, SERVICE
from chorus.core.config import SecurityConfig
from chorus.core.security import BALANCED_SCHEMES, call_metadata, channel_credentials

ROUTER_ENV = "CHORUS_ROUTER"
DEFAULT_ROUTER = "127.0.0.1:50051"
IDEMPOTENT = ("ListModels", "GetResult", "WatchResult", "SubmitAsync")


@dataclass(frozen=True)
class RetryPolicy:
    """gRPC's retry policy for the idempotent calls; `max_attempts` counts the first (gRPC
    caps it at 5), the n-th retry waits a random time up to
    min(initial_backoff_s * multiplier**(n-1), max_backoff_s)."""

    max_attempts: int = 4
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    multiplier: float = 2.0
    codes: tuple[str, ...] = ("UNAVAILABLE",)

    def __post_init__(self) -> None:
        if not 2 <= self.max_attempts <= 5:
            raise InvalidArgument(
                f"retry: max_attempts must be 2 to 5 (gRPC's cap), got {self.max_attempts}"
            )
        if self.initial_backoff_s <= 0 or self.max_backoff_s <= 0 or self.multiplier <= 0:
            raise InvalidArgument("retry: backoffs and multiplier must be above 0")
        unknown = [c for c in self.codes if c not in grpc.StatusCode.__members__]
        if unknown:
            raise InvalidArgument(f"retry: codes {unknown} are not gRPC status names")

    def method_config(self) -> dict[str, Any]:
        return {
            "name": [{"service": SERVICE, "method": m} for m in IDEMPOTENT]
            + [{"service": HEALTH_SERVICE, "method": "Check"}],
            "retryPolicy": {
                "maxAttempts": self.max_attempts,
                "initialBackoff": f"{self.initial_backoff_s}s",
                "maxBackoff": f"{self.max_backoff_s}s",
                "backoffMultiplier": self.multiplier,
                "retryableStatusCodes": list(self.codes),
            },
        }


@dataclass(frozen=True)
class Dial:
    """Everything a channel is made from."""

    target: str
    options: list[tuple[str, Any]] = field(default_factory=list)
    credentials: grpc.ChannelCredentials | None = None
    metadata: tuple[tuple[str, str], ...] = ()


def router_target(given: str | Sequence[str] | None) -> tuple[str, str | None]:
    """(the gRPC target, the authority to present) for what the caller named: None reads
    $CHORUS_ROUTER (else 127.0.0.1:50051); "a:1,b:2" or a list is several routers, called
    round robin; a `dns:///name:port` target round robin over every address the name has;
    a bare host:port, one connection."""
    if given is None:
        given = os.environ.get(ROUTER_ENV) or DEFAULT_ROUTER
    if isinstance(given, str):
        if given.startswith((*BALANCED_SCHEMES, "unix:")) or "," not in given:
            return given.strip(), None
        given = given.split(",")
    addresses = [a.strip() for a in given if a.strip()]
    if not addresses:
        raise InvalidArgument("router: no address given")
    if len(addresses) == 1:
        return addresses[0], None
    hosts = [_split(a) for a in addresses]
    literal = [_ip(h) for h, _ in hosts]
    if all(ip is not None for ip in literal):
        return _ip_target([(ip, port) for ip, (_, port) in zip(literal, hosts, strict=True)]), None  # type: ignore[misc]
    # Host names: resolved once, now; for names whose addresses change, use dns:///name:port.
    resolved: list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]] = []
    for host, port in hosts:
        for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
            resolved.append((ipaddress.ip_address(info[4][0]), port))
    v4 = [r for r in resolved if r[0].version == 4]
    return _ip_target(list(dict.fromkeys(v4 or resolved))), addresses[0]


def _split(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise InvalidArgument(f"router: expected HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _ip_target(
    addresses: list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]],
) -> str:
    versions = {ip.version for ip, _ in addresses}
    if versions == {4}:
        return "ipv4:" + ",".join(f"{ip}:{port}" for ip, port in addresses)
    if versions == {6}:
        return "ipv6:" + ",".join(f"[{ip}]:{port}" for ip, port in addresses)
    raise InvalidArgument("router: a list mixes IPv4 and IPv6 addresses; give one family")


def dial(
    target: str | Sequence[str] | None,
    security: SecurityConfig,
    *,
    tls: bool,
    api_key: str | None,
    metadata: Sequence[tuple[str, str]],
    retry: RetryPolicy | None,
) -> Dial:
    resolved, authority = router_target(target)
    balanced = resolved.startswith(BALANCED_SCHEMES)
    config: dict[str, Any] = {}
    if balanced:
        # One connection per router address, calls spread over them (not gRPC's default,
        # pick_first, which would keep every call on one router).
        config["loadBalancingConfig"] = [{"round_robin": {}}]
    if retry is not None:
        config["methodConfig"] = [retry.method_config()]
    options: list[tuple[str, Any]] = [
        ("grpc.service_config", json.dumps(config)),
        ("grpc.enable_retries", 1 if retry is not None else 0),
    ]
    if authority is not None:
        options.append(("grpc.default_authority", authority))
    credentials = channel_credentials(security)
    if credentials is None and tls:
        credentials = grpc.ssl_channel_credentials()  # the system's roots
    keyed = call_metadata(security)
    if api_key is not None:
        keyed = (("x-api-key", api_key),)
    return Dial(resolved, options, credentials, (*keyed, *metadata))
