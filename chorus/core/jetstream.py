"""Streams and key-value buckets with the replica count the NATS deployment calls for.

One server keeps one copy; a cluster of three or more keeps three (Raft, R3), so a node can
die without losing a stored task, result or weight. The count is CHORUS_JETSTREAM_REPLICAS,
or when that is 0, 3 where the client sees three or more servers (the URLs it was given and
those the servers announce) and 1 otherwise. Creation uses it; a stream or bucket that
exists with fewer replicas (made on one node, say, before the cluster grew) is raised to it.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue

from chorus.core.config import JetStreamConfig
from chorus.core.environment import from_env

log = logging.getLogger(__name__)

CLUSTER_REPLICAS = 3


def servers(url: str) -> list[str]:
    """A comma-separated NATS URL (every node of a cluster) as nats-py takes it."""
    return [u.strip() for u in url.split(",") if u.strip()]


def replicas_for(nc: Client, config: JetStreamConfig | None = None) -> int:
    cfg = config or from_env(JetStreamConfig, "jetstream")
    if cfg.replicas > 0:
        return cfg.replicas
    seen = {(u.hostname, u.port) for u in nc.servers}
    return CLUSTER_REPLICAS if len(seen) >= CLUSTER_REPLICAS else 1


async def ensure_stream(js: JetStreamContext, config: StreamConfig, replicas: int) -> None:
    try:
        info = await js.stream_info(str(config.name))
    except NotFoundError:
        await js.add_stream(dataclasses.replace(config, num_replicas=replicas))
        log.info("stream %s created with %d replica(s)", config.name, replicas)
        return
    await raise_replicas(js, info.config, replicas)


async def ensure_bucket(
    js: JetStreamContext, bucket: str, replicas: int, **options: Any
) -> KeyValue:
    try:
        kv = await js.key_value(bucket)
    except NotFoundError:
        kv = await js.create_key_value(bucket=bucket, replicas=replicas, **options)
        log.info("bucket %s created with %d replica(s)", bucket, replicas)
        return kv
    info = await js.stream_info(f"KV_{bucket}")
    await raise_replicas(js, info.config, replicas)
    return kv


async def raise_replicas(js: JetStreamContext, config: StreamConfig, replicas: int) -> None:
    have = config.num_replicas or 1
    if have < replicas:
        await js.update_stream(dataclasses.replace(config, num_replicas=replicas))
        log.info("stream %s raised from %d to %d replicas", config.name, have, replicas)
