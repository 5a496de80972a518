"""NATS connections for the command-line tools: the same credentials as the services
(CHORUS_SECURITY_*), one attempt, and a failure raised once, naming the server, instead of
logged per retry."""

from __future__ import annotations

import nats.errors
from nats.aio.client import Client

from chorus.core.config import SecurityConfig
from chorus.core.environment import from_env
from chorus.core.errors import describe_error
from chorus.core.jetstream import servers
from chorus.core.security import nats_options

CONNECT_TIMEOUT_S = 5


class NatsUnreachable(ConnectionError):
    pass


async def connect_once(url: str) -> Client:
    seen: list[Exception] = []

    async def quiet(exc: Exception) -> None:
        seen.append(exc)

    nc = Client()
    try:
        await nc.connect(
            servers(url),
            allow_reconnect=False,
            # nats-py drops a server from its pool only past a positive attempt count; with
            # 0 its first connect would retry forever.
            max_reconnect_attempts=1,
            reconnect_time_wait=0,
            connect_timeout=CONNECT_TIMEOUT_S,
            error_cb=quiet,
            **nats_options(from_env(SecurityConfig, "security")),
        )
    except (OSError, nats.errors.Error, TimeoutError) as exc:
        last = seen[-1] if seen and isinstance(exc, nats.errors.NoServersError) else exc
        raise NatsUnreachable(f"NATS at {url}: {describe_error(last)}") from None
    return nc
