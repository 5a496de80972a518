"""A model service whose repository is `nats:`: the store's versions of its model, fetched into
a local folder it serves from as from any repository, and kept in step as versions are pushed
and removed.

The host never sees a file that failed its digest: a version is fetched whole and checked
before it lands in the folder, so a corrupted push is refused while the version already
serving goes on serving. Removing the serving version falls back to the highest left, which is
how a rollback is done (`chorus models rm MODEL --version V`).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

from chorus.core.errors import NotFound
from chorus.core.model_store import DigestMismatch, ModelStore, StoredVersion, version_key
from chorus.core.spawner import cancel
from chorus.services import repository
from chorus.services.lifecycle import ModelHost

log = logging.getLogger(__name__)

RESUBSCRIBE_S = 1.0


class StoreSync:
    def __init__(self, store: ModelStore, model: str, root: Path) -> None:
        self.store = store
        self.model = model
        self.root = root
        """The local folder (a repository) the host is given."""
        self.refused: dict[str, str] = {}
        self._seen: dict[str, StoredVersion] = {}
        self._task: asyncio.Task[None] | None = None

    async def fetch_all(self) -> list[str]:
        """Every version of the model into the folder before the service starts; a version
        that fails its check is refused, and only when every one does is that an error."""
        records = await self.store.versions(self.model)
        if not records:
            raise NotFound(
                f"model {self.model!r} has no version in the model store "
                f"nats:{self.store.bucket}; push one with `chorus models push`"
            )
        fetched: list[str] = []
        failure: DigestMismatch | None = None
        for record in records:
            self._seen[record.version] = record
            try:
                await self.store.fetch(record, self.root)
            except DigestMismatch as exc:
                self.refused[record.version] = exc.message
                failure = exc
                continue
            fetched.append(record.version)
        if not fetched and failure is not None:
            raise failure
        log.info("model %s: versions %s fetched from nats:%s into %s",
                 self.model, ", ".join(fetched), self.store.bucket, self.root)  # fmt: skip
        return fetched

    def follow(self, host: ModelHost) -> None:
        for version, reason in self.refused.items():
            host.refuse(version, reason)
        if self._task is None:
            self._task = asyncio.create_task(self._follow(host), name=f"store-{self.model}")

    async def _follow(self, host: ModelHost) -> None:
        while True:
            try:
                async for change in self.store.changes(self.model):
                    if change.record is None:
                        await self._removed(host, change.version)
                    elif self._seen.get(change.version) != change.record:
                        await self._pushed(host, change.record)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("model %s: following nats:%s: %s", self.model, self.store.bucket, exc)
            await asyncio.sleep(RESUBSCRIBE_S)

    async def _pushed(self, host: ModelHost, record: StoredVersion) -> None:
        version = record.version
        self._seen[version] = record
        try:
            await self.store.fetch(record, self.root)
        except DigestMismatch as exc:
            host.refuse(version, exc.message)
            return
        host.forget(version)
        current = host.current
        if current is None or version_key(version) >= version_key(current.version):
            await host.load(version)

    async def _removed(self, host: ModelHost, version: str) -> None:
        if self._seen.pop(version, None) is None and not host.ready(version):
            return
        host.forget(version)
        await asyncio.to_thread(shutil.rmtree, self.root / self.model / version, True)
        left = repository.versions(self.root, self.model)
        current = host.current
        # The fallback is loaded before the removed version goes, so no request finds none.
        fallback = left[-1] if left else ""
        if (
            fallback
            and not host.ready(fallback)
            and (current is None or current.version == version)
        ):
            await host.load(fallback)
        if host.ready(version):
            await host.unload(version)
        log.info("model %s: version %s removed from the store", self.model, version)

    async def close(self) -> None:
        await cancel(self._task)
        self._task = None
