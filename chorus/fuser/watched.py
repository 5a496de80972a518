"""A JetStream key-value bucket mirrored in memory by a watch: reads on the fusion path never
wait on NATS, and a write by any fuser replica reaches every replica."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Generic, TypeVar

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from chorus.core.jetstream import ensure_bucket
from chorus.core.spawner import cancel

CAS_ATTEMPTS = 20


def decode_floats(value: bytes) -> dict[str, float]:
    """A JSON object of numbers (weights, temperatures), as floats."""
    return {k: float(v) for k, v in json.loads(value or b"{}").items()}


def encode_floats(values: dict[str, float]) -> bytes:
    return json.dumps(values).encode()


T = TypeVar("T")


class WatchedBucket(Generic[T]):
    def __init__(
        self,
        js: JetStreamContext,
        bucket: str,
        decode: Callable[[bytes], T],
        encode: Callable[[T], bytes],
        history: int = 1,
        replicas: int = 1,
    ) -> None:
        self.js = js
        self.bucket = bucket
        self._decode = decode
        self._encode = encode
        self._history = history
        self._replicas = replicas
        self._kv: KeyValue | None = None
        self._cache: dict[str, T] = {}
        self._watch: asyncio.Task[None] | None = None

    @property
    def kv(self) -> KeyValue:
        assert self._kv is not None, f"{self.bucket}: start() first"
        return self._kv

    async def start(self, watch: bool = True) -> None:
        self._kv = await ensure_bucket(self.js, self.bucket, self._replicas, history=self._history)
        if watch:
            watcher = await self._kv.watchall()
            self._watch = asyncio.create_task(self._follow(watcher), name=f"{self.bucket}-watch")

    async def _follow(self, watcher: KeyValue.KeyWatcher) -> None:
        async for entry in watcher:
            if entry is None or entry.value is None:
                continue
            with contextlib.suppress(ValueError, KeyError, TypeError):
                self._cache[entry.key] = self._decode(entry.value)

    async def stop(self) -> None:
        await cancel(self._watch)
        self._watch = None

    def cached(self, key: str) -> T | None:
        return self._cache.get(key)

    def remember(self, key: str, value: T) -> None:
        """What this replica just wrote, before its own watch brings it back."""
        self._cache[key] = value

    async def update(self, key: str, change: Callable[[T | None], T]) -> T:
        """Apply `change` to the stored value atomically: compare-and-set, retried when
        another replica wrote in between."""
        for _ in range(CAS_ATTEMPTS):
            try:
                entry = await self.kv.get(key)
                current: T | None = self._decode(entry.value or b"")
                revision: int | None = entry.revision
            except KeyNotFoundError:
                current, revision = None, None
            new = change(current)
            value = self._encode(new)
            try:
                if revision is None:
                    await self.kv.create(key, value)
                else:
                    await self.kv.update(key, value, last=revision)
            except KeyWrongLastSequenceError:
                continue
            except Exception as exc:
                if revision is None and "wrong last sequence" in str(exc).lower():
                    continue
                raise
            self.remember(key, new)
            return new
        raise RuntimeError(f"{self.bucket} {key!r}: too many concurrent updates")
