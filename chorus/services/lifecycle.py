"""The versions of one model a service holds, and which one each request gets.

Versions load, warm up and swap in while requests keep flowing: a request holds the version
it started on until it is answered, and a version taken out of service closes only after
its last request. New versions are found by polling the repository (a new directory with a
complete manifest), or loaded and unloaded on demand through the repository RPCs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from chorus.core.config import ModelServiceConfig
from chorus.core.errors import FailedPrecondition, NotFound, Unavailable
from chorus.core.spawner import Spawner, cancel
from chorus.services import repository
from chorus.services.batcher import DynamicBatcher
from chorus.services.repository import Manifest, version_key
from chorus.services.runtime import OnnxModel, RunSettings

log = logging.getLogger(__name__)

READY = "READY"
LOADING = "LOADING"
UNAVAILABLE = "UNAVAILABLE"


@dataclass
class Loaded:
    model: OnnxModel
    batcher: DynamicBatcher
    users: int = 0
    retiring: bool = False
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def manifest(self) -> Manifest:
        return self.model.manifest

    @property
    def version(self) -> str:
        return self.model.manifest.version


@dataclass(frozen=True)
class VersionState:
    version: str
    state: str
    reason: str = ""


class ModelHost:
    def __init__(
        self,
        config: ModelServiceConfig,
        *,
        on_batch: Callable[[int], None] | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.name = config.model
        self._on_batch = on_batch
        self._on_change = on_change
        self._loaded: dict[str, Loaded] = {}
        self._states: dict[str, VersionState] = {}
        self._refused: dict[str, str] = {}
        self._lock = asyncio.Lock()
        self._closing = Spawner()
        self._watcher: asyncio.Task[None] | None = None

    @property
    def current(self) -> Loaded | None:
        """The highest loaded version: what a request that names no version gets."""
        if not self._loaded:
            return None
        return self._loaded[max(self._loaded, key=version_key)]

    def ready(self, version: str = "") -> bool:
        return version in self._loaded if version else bool(self._loaded)

    def loaded(self) -> list[Loaded]:
        return [self._loaded[v] for v in sorted(self._loaded, key=version_key)]

    @contextlib.contextmanager
    def use(self, version: str = "") -> Iterator[Loaded]:
        """Hold a version for the length of one request."""
        if version:
            loaded = self._loaded.get(version)
            if loaded is None:
                raise self._not_loaded(version)
        else:
            current = self.current
            if current is None:
                raise Unavailable(f"model {self.name}: no version is loaded on this replica")
            loaded = current
        loaded.users += 1
        try:
            yield loaded
        finally:
            loaded.users -= 1
            if loaded.users == 0:
                loaded.idle.set()

    def _not_loaded(self, version: str) -> NotFound | Unavailable:
        if version in repository.versions(self.config.repository, self.name):
            loaded = ", ".join(sorted(self._loaded, key=version_key)) or "none"
            return Unavailable(
                f"model {self.name} version {version} is not loaded (loaded: {loaded}); "
                "load it with RepositoryModelLoad"
            )
        return NotFound(f"model {self.name} has no version {version!r} in the repository")

    def index(self) -> list[VersionState]:
        """Every version on disk, loaded or refused, and its state."""
        on_disk = repository.versions(self.config.repository, self.name)
        names = sorted(set(on_disk) | set(self._loaded) | set(self._refused), key=version_key)
        return [self._state(v) for v in names]

    def _state(self, version: str) -> VersionState:
        if version in self._refused and version not in self._loaded:
            return VersionState(version, UNAVAILABLE, self._refused[version])
        return self._states.get(version, VersionState(version, UNAVAILABLE, "not loaded"))

    def refuse(self, version: str, reason: str) -> None:
        """A version that will not be loaded (its files failed their digest check): the
        index says why, and whatever serves now keeps serving."""
        self._refused[version] = reason
        log.error("model %s v%s: %s", self.name, version, reason)

    def forget(self, version: str) -> None:
        self._refused.pop(version, None)
        self._states.pop(version, None)

    async def load(self, version: str | None = None) -> str:
        """Load (or reload) a version, the highest on disk when none is named; once it is
        ready, the other versions beyond `keep_versions` are taken out of service."""
        async with self._lock:
            mv = repository.load(self.config.repository, self.name, version)
            v = mv.manifest.version
            self._states[v] = VersionState(v, LOADING)
            settings = RunSettings.resolve(mv.manifest.runtime, self.config)
            try:
                model = await asyncio.to_thread(
                    OnnxModel,
                    mv,
                    device=self.config.device,
                    settings=settings,
                    delay_s=self.config.delay_ms / 1000,
                    noise=self.config.noise,
                )
            except Exception as exc:
                reason = f"load failed: {exc}"
                self._states[v] = VersionState(
                    v, READY if v in self._loaded else UNAVAILABLE, reason
                )
                log.error("model %s v%s: %s", self.name, v, reason)
                raise FailedPrecondition(f"model {self.name} version {v}: {reason}") from None
            batcher = DynamicBatcher(
                model,
                max_batch=settings.max_batch,
                max_delay_s=settings.max_batch_delay_ms / 1000,
                on_batch=self._on_batch,
            )
            replaced = self._loaded.get(v)
            self._loaded[v] = Loaded(model, batcher)
            self._states[v] = VersionState(v, READY)
            if replaced is not None:
                self._retire(replaced)
            # The version just loaded stays (a rollback to an older one sticks); of the others,
            # the highest keep_versions - 1 stay beside it.
            others = sorted((x for x in self._loaded if x != v), key=version_key, reverse=True)
            for old in others[self.config.keep_versions - 1 :]:
                self._retire(self._loaded.pop(old))
                self._states[old] = VersionState(old, UNAVAILABLE, f"replaced by version {v}")
            log.info("model %s: version %s ready (%s)", self.name, v, model.provider)
        self._changed()
        return v

    async def unload(self, version: str = "") -> list[str]:
        async with self._lock:
            if version and version not in self._loaded:
                raise self._not_loaded(version)
            gone = [version] if version else list(self._loaded)
            for v in gone:
                self._retire(self._loaded.pop(v))
                self._states[v] = VersionState(v, UNAVAILABLE, "unloaded")
        self._changed()
        return gone

    def watch(self) -> None:
        """Poll the repository for versions never seen before and load the newest."""
        if self.config.reload_poll_s > 0 and self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(), name=f"reload-{self.name}")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.config.reload_poll_s)
            try:
                on_disk = repository.versions(self.config.repository, self.name)
                fresh = [v for v in on_disk if v not in self._states]
                for v in fresh[:-1]:
                    self._states[v] = VersionState(v, UNAVAILABLE, "not loaded")
                if fresh and self._newer(fresh[-1]):
                    await self.load(fresh[-1])
                elif fresh:
                    self._states[fresh[-1]] = VersionState(fresh[-1], UNAVAILABLE, "not loaded")
            except Exception as exc:
                log.warning("model %s: repository poll: %s", self.name, exc)

    def _newer(self, version: str) -> bool:
        current = self.current
        return current is None or version_key(version) > version_key(current.version)

    def mark_seen(self) -> None:
        """Versions on disk at start are not 'new': the watcher loads only what lands later."""
        for v in repository.versions(self.config.repository, self.name):
            self._states.setdefault(v, VersionState(v, UNAVAILABLE, "not loaded"))

    def _retire(self, loaded: Loaded) -> None:
        loaded.retiring = True
        self._closing.spawn(self._close_when_idle(loaded), name=f"close-{self.name}")

    async def _close_when_idle(self, loaded: Loaded) -> None:
        while loaded.users:
            loaded.idle.clear()
            await loaded.idle.wait()
        await loaded.batcher.close()
        await asyncio.to_thread(loaded.model.close)
        log.info("model %s: version %s closed", self.name, loaded.version)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    async def close(self) -> None:
        await cancel(self._watcher)
        self._watcher = None
        for v in list(self._loaded):
            self._retire(self._loaded.pop(v))
        await self._closing.close()
