"""Model repositories kept on the bus: a JetStream Object Store bucket, so a model pod needs
nothing but a NATS address to find its model (as Triton reads `s3://` and KServe a
`storageUri`).

A version is its files, each an object `files/<model>/<version>/<path>`, and a record
`versions/<model>/<version>` naming every file with its SHA-256. The record is written last
and removed first, so a reader never sees a version that is half there. Files stream in
chunks both ways (the object store's own 128 KiB chunks), so a model of hundreds of MB never
sits whole in memory.

A repository is named `nats:` (the default bucket) or `nats:BUCKET` wherever a folder is
taken; `address()` tells the two apart.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import re
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

from nats.aio.client import Client
from nats.js.api import ObjectStoreConfig
from nats.js.errors import BadRequestError, DigestMismatchError, NotFoundError
from nats.js.object_store import ObjectStore

from chorus.core.errors import FailedPrecondition
from chorus.core.jetstream import raise_replicas, replicas_for

SCHEME = "nats:"
DEFAULT_BUCKET = "chorus-models"
MANIFEST = "manifest.json"
RECORDS = "versions/"
FILES = "files/"
_BUCKET_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_HASH_BLOCK = 1 << 20


class StoreError(ValueError):
    """A push, a listing or a removal the store cannot do, said in one line."""


class DigestMismatch(FailedPrecondition):
    """A fetched file is not the file that was pushed: refused, never loaded."""

    def __init__(self, model: str, version: str, path: str, expected: str, got: str) -> None:
        super().__init__(
            f"model {model} version {version}: {path} has SHA-256 {got}, but the store's "
            f"record says {expected}; the version is refused"
        )
        self.model, self.version, self.path = model, version, path
        self.expected, self.got = expected, got


def address(repository: str | Path) -> str | None:
    """The bucket a repository names (`nats:` or `nats:BUCKET`), None for a folder."""
    text = str(repository)
    if not text.startswith(SCHEME):
        return None
    bucket = text[len(SCHEME) :].strip("/") or DEFAULT_BUCKET
    if not _BUCKET_NAME.match(bucket):
        raise StoreError(
            f"repository {text!r}: a bucket name takes letters, digits, '-' and '_' only"
        )
    return bucket


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class StoredVersion:
    """One version's record: what was pushed, file by file, and the manifest it serves by."""

    model: str
    version: str
    files: dict[str, str]
    """Path inside the version folder -> SHA-256 (hex)."""
    size: int
    pushed_at: str
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{RECORDS}{self.model}/{self.version}"

    def file_key(self, path: str) -> str:
        return f"{FILES}{self.model}/{self.version}/{path}"

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "model": self.model,
                "version": self.version,
                "files": self.files,
                "size": self.size,
                "pushed_at": self.pushed_at,
                "manifest": self.manifest,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> StoredVersion:
        data = json.loads(raw)
        return cls(
            model=str(data["model"]),
            version=str(data["version"]),
            files={str(k): str(v) for k, v in data["files"].items()},
            size=int(data.get("size", 0)),
            pushed_at=str(data.get("pushed_at", "")),
            manifest=dict(data.get("manifest") or {}),
        )


@dataclass(frozen=True)
class Change:
    """A version appeared (`record` set) or was removed (`record` None) in the store."""

    model: str
    version: str
    record: StoredVersion | None


def version_folders(path: Path) -> list[Path]:
    """The version folders under `path`: a repository (model/version/manifest.json), one
    model's folder (version/manifest.json) or one version folder (manifest.json)."""
    if (path / MANIFEST).is_file():
        return [path]
    found = sorted(p.parent for p in path.glob(f"*/{MANIFEST}"))
    if found:
        return found
    found = sorted(p.parent for p in path.glob(f"*/*/{MANIFEST}"))
    if not found:
        raise StoreError(
            f"{path}: no model version here (expected MODEL/VERSION/{MANIFEST}, "
            f"VERSION/{MANIFEST} or {MANIFEST})"
        )
    return found


def identify(folder: Path) -> tuple[str, str, dict[str, Any]]:
    """(model, version, manifest) of a version folder, from its manifest: the name the
    model's services and pods are started with, so it must be one they can take."""
    source = folder / MANIFEST
    try:
        manifest = json.loads(source.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StoreError(f"{source}: not a readable JSON manifest ({exc})") from None
    if not isinstance(manifest, dict):
        raise StoreError(f"{source}: expected a JSON object")
    model = str(manifest.get("name") or folder.parent.name)
    version = str(manifest.get("version") or folder.name)
    for what, value in (("name", model), ("version", version)):
        if not _NAME.match(value):
            raise StoreError(f"{source}: {what}: {value!r} is not a usable name")
    onnx = folder / str(manifest.get("file", "model.onnx"))
    if not onnx.is_file():
        raise StoreError(f"{source}: file: {onnx.name!r} is not in {folder}")
    return model, version, manifest


class ModelStore:
    """One bucket of model versions, through a connection the caller owns."""

    def __init__(self, bucket: str, objects: ObjectStore) -> None:
        self.bucket = bucket
        self._objects = objects

    @classmethod
    async def open(cls, nc: Client, bucket: str = DEFAULT_BUCKET, *, create: bool = False) -> Self:
        """The bucket, made (replicated like every JetStream state here) when `create`."""
        js = nc.jetstream()
        try:
            objects = await js.object_store(bucket)
        except NotFoundError:
            if not create:
                raise StoreError(
                    f"model store {SCHEME}{bucket} does not exist on this NATS; "
                    "`chorus models push` makes it"
                ) from None
            replicas = replicas_for(nc)
            objects = await js.create_object_store(
                bucket,
                ObjectStoreConfig(
                    description="Chorus model repository: files/ and versions/ records",
                    replicas=replicas,
                ),
            )
            return cls(bucket, objects)
        if create:
            info = await js.stream_info(f"OBJ_{bucket}")
            await raise_replicas(js, info.config, replicas_for(nc))
        return cls(bucket, objects)

    async def push(
        self,
        folder: Path,
        *,
        on_file: Callable[[str, int], None] | None = None,
    ) -> list[StoredVersion]:
        """Every version under `folder`, each file streamed and its record written last; a
        version already in the store is replaced whole."""
        pushed = []
        for version_dir in version_folders(folder):
            model, version, manifest = identify(version_dir)
            files: dict[str, str] = {}
            size = 0
            for path in sorted(p for p in version_dir.rglob("*") if p.is_file()):
                rel = path.relative_to(version_dir).as_posix()
                if rel.startswith(".") or "/." in rel:
                    continue
                with path.open("rb") as f:
                    info = await self._objects.put(f"{FILES}{model}/{version}/{rel}", f)
                files[rel] = _hex(info.digest)
                size += int(info.size or 0)
                if on_file is not None:
                    on_file(f"{model}/{version}/{rel}", int(info.size or 0))
            record = StoredVersion(
                model, version, files, size, datetime.now(UTC).isoformat(), manifest
            )
            await self._objects.put(record.key, record.to_json())
            pushed.append(record)
        return pushed

    async def versions(self, model: str = "") -> list[StoredVersion]:
        """Every version's record (of one model, when named)."""
        prefix = f"{RECORDS}{model}/" if model else RECORDS
        try:
            infos = await self._objects.list(ignore_deletes=True)
        except NotFoundError:
            return []
        records = []
        for info in infos:
            if info.name.startswith(prefix):
                records.append(await self._record(info.name))
        return sorted(records, key=lambda r: (r.model, version_key(r.version)))

    async def _record(self, key: str) -> StoredVersion:
        return StoredVersion.from_json((await self._objects.get(key)).data or b"{}")

    async def remove(self, model: str, version: str = "") -> list[StoredVersion]:
        """A version (or every version of a model): record first, so no reader starts on
        it, then its files."""
        gone = [r for r in await self.versions(model) if not version or r.version == version]
        if not gone:
            what = f"version {version} of {model!r}" if version else f"model {model!r}"
            raise StoreError(f"{SCHEME}{self.bucket} has no {what}")
        for record in gone:
            await self._objects.delete(record.key)
            for path in record.files:
                with contextlib.suppress(NotFoundError):
                    await self._objects.delete(record.file_key(path))
        return gone

    async def fetch(self, record: StoredVersion, root: Path) -> Path:
        """The version as a folder `root/model/version`, every file checked against its
        record; a folder already there whose files match is kept. DigestMismatch when a
        file is not what was pushed (nothing is left behind)."""
        dest = root / record.model / record.version
        if await asyncio.to_thread(_matches, dest, record):
            return dest
        staging = root / record.model / f".{record.version}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            for rel, expected in record.files.items():
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with target.open("wb") as f:
                        await self._objects.get(record.file_key(rel), writeinto=f)
                except DigestMismatchError:
                    got = "unknown (its chunks do not hash to the object's own digest)"
                    raise DigestMismatch(record.model, record.version, rel, expected, got) from None
                except NotFoundError:
                    raise DigestMismatch(
                        record.model, record.version, rel, expected, "none (the file is gone)"
                    ) from None
                got = await asyncio.to_thread(sha256_file, target)
                if got != expected:
                    raise DigestMismatch(record.model, record.version, rel, expected, got)
            if dest.exists():
                # Stale or partial: moved aside whole, never emptied under another reader.
                old = dest.with_name(f".{record.version}.{uuid.uuid4().hex[:8]}.old")
                with contextlib.suppress(FileNotFoundError):
                    dest.rename(old)
                await asyncio.to_thread(shutil.rmtree, old, True)
            try:
                staging.rename(dest)
            except OSError:
                # Another replica sharing the cache placed it first.
                if not await asyncio.to_thread(_matches, dest, record):
                    raise
        finally:
            if staging.exists():
                await asyncio.to_thread(shutil.rmtree, staging, True)
        return dest

    async def changes(self, model: str = "") -> AsyncIterator[Change]:
        """Every version's record now, then each push and removal as it happens."""
        prefix = f"{RECORDS}{model}/" if model else RECORDS
        watcher = await self._objects.watch()
        try:
            async for info in watcher:
                if info is None or not info.name.startswith(prefix):
                    continue
                name, _, version = info.name[len(RECORDS) :].rpartition("/")
                if info.deleted:
                    yield Change(name, version, None)
                    continue
                try:
                    record = await self._record(info.name)
                except (NotFoundError, BadRequestError, json.JSONDecodeError, KeyError):
                    continue
                yield Change(name, version, record)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()


def _hex(object_digest: str | None) -> str:
    """The object store's own SHA-256 of the bytes it took ("SHA-256=<base64url>"), as hex:
    the digest of exactly what was uploaded, with no second read of the file."""
    encoded = (object_digest or "").partition("=")[2]
    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).hex()


def _matches(dest: Path, record: StoredVersion) -> bool:
    if not dest.is_dir():
        return False
    return all(
        (dest / rel).is_file() and sha256_file(dest / rel) == digest
        for rel, digest in record.files.items()
    )


def version_key(version: str) -> tuple[int, str]:
    """Numbered versions in numeric order, above any named ones."""
    return (int(version), "") if version.isdigit() else (-1, version)
