"""`chorus models push | ls | rm`: a repository in the model store on the bus (`nats:`), or
read from a folder, with no ONNX Runtime needed (these are the platform team's commands)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from chorus.cli.common import (
    Progress,
    add_nats,
    add_output,
    add_router,
    emit,
    nats_url,
    router,
    wants_json,
)
from chorus.core.model_store import (
    DEFAULT_BUCKET,
    SCHEME,
    ModelStore,
    StoredVersion,
    StoreError,
    address,
    identify,
    version_folders,
)

T = TypeVar("T")


async def with_store(
    url: str, bucket: str, create: bool, work: Callable[[ModelStore], Awaitable[T]]
) -> T:
    from chorus.core.natsclient import connect_once

    nc = await connect_once(url)
    try:
        return await work(await ModelStore.open(nc, bucket, create=create))
    finally:
        await nc.close()


def cmd_models_push(args: argparse.Namespace) -> int:
    bucket = address(args.store)
    if bucket is None:
        print(f"chorus models push: --store: expected {SCHEME} or {SCHEME}BUCKET, "
              f"got {args.store!r}", file=sys.stderr)  # fmt: skip
        return 2
    try:
        folders = version_folders(args.path)
        for folder in folders:
            identify(folder)
        _check_locally(args.path)
    except (StoreError, ValueError) as err:
        print(f"chorus models push: {err}", file=sys.stderr)
        return 2

    said = Progress("models push")

    def progress(name: str, size: int) -> None:
        if not args.quiet:
            said(f"{name}  {_size(size)}")

    pushed = asyncio.run(
        with_store(nats_url(args), bucket, True, lambda s: s.push(args.path, on_file=progress))
    )
    if wants_json(args):
        emit([_row(r) for r in pushed])
        return 0
    for record in pushed:
        print(f"pushed {record.model} v{record.version} to {SCHEME}{bucket} "
              f"({len(record.files)} files, {_size(record.size)})")  # fmt: skip
    return 0


def _check_locally(path: Path) -> None:
    """The same checks a model service makes at load, before anything is uploaded, where the
    services' dependencies are installed (the base install checks the layout only)."""
    try:
        from chorus.services import repository
    except ImportError:
        return
    for folder in version_folders(path):
        repository.read_version(folder)


def cmd_models_ls(args: argparse.Namespace) -> int:
    if args.router or args.live:
        return _alive(router(args), wants_json(args))
    bucket = address(args.repository)
    if bucket is None:
        rows = [_row_from_folder(f) for f in _folders_or_none(args.repository)]
        where = str(args.repository)
    else:
        records = asyncio.run(
            with_store(nats_url(args), bucket, False, lambda s: s.versions(args.model))
        )
        rows = [_row(r) for r in records]
        where = f"{SCHEME}{bucket}"
    if args.model:
        rows = [r for r in rows if r["model"] == args.model]
    if wants_json(args):
        emit(rows)
        return 0
    if not rows:
        print(f"no models in {where}")
        return 0
    print(f"{'MODEL':16} {'VERSION':8} {'SIZE':>9}  {'PUSHED':26} CAPABILITIES")
    for r in rows:
        print(f"{r['model']:16} {r['version']:8} {_size(r['size']):>9}  "
              f"{r['pushed_at'][:26] or '-':26} {','.join(r['capabilities'])}")  # fmt: skip
    return 0


def _alive(target: str, as_json: bool) -> int:
    from chorus.client import TaskClient

    with TaskClient(target) as client:
        models = client.list_models().models
    if as_json:
        emit([{"model": m.name, "version": m.version, "capabilities": list(m.capabilities),
               "replicas": list(m.replicas), "devices": list(m.devices),
               "inputs": [{"name": i.name, "datatype": i.datatype, "shape": list(i.shape)}
                          for i in m.inputs]} for m in models])  # fmt: skip
        return 0
    for m in models:
        does, devices = ",".join(m.capabilities), ",".join(m.devices)
        print(f"{m.name} v{m.version}  {does}  replicas={len(m.replicas)} {devices}")
    return 0


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n:.1f} GB"


def _folders_or_none(root: Path) -> list[Path]:
    try:
        return version_folders(root)
    except StoreError:
        return []


def _row(record: StoredVersion) -> dict[str, Any]:
    return {
        "model": record.model,
        "version": record.version,
        "size": record.size,
        "capabilities": list(record.manifest.get("capabilities", [])),
        "files": record.files,
        "pushed_at": record.pushed_at,
    }


def _row_from_folder(folder: Path) -> dict[str, Any]:
    model, version, manifest = identify(folder)
    files = [p for p in folder.rglob("*") if p.is_file()]
    return {
        "model": model,
        "version": version,
        "size": sum(p.stat().st_size for p in files),
        "capabilities": list(manifest.get("capabilities", [])),
        "files": sorted(p.relative_to(folder).as_posix() for p in files),
        "pushed_at": "",
    }


def cmd_models_rm(args: argparse.Namespace) -> int:
    bucket = address(args.repository)
    if bucket is None:
        print(f"chorus models rm: works on the model store ({SCHEME} or {SCHEME}BUCKET); "
              f"for a folder, delete {args.repository}/{args.model}", file=sys.stderr)  # fmt: skip
        return 2
    try:
        gone = asyncio.run(
            with_store(nats_url(args), bucket, False, lambda s: s.remove(args.model, args.version))
        )
    except StoreError as err:
        print(f"chorus models rm: {err}", file=sys.stderr)
        return 1
    if wants_json(args):
        emit([_row(r) for r in gone])
        return 0
    for record in gone:
        print(f"removed {record.model} v{record.version} from {SCHEME}{bucket}")
    return 0


def through_store(
    args: argparse.Namespace,
    run: Callable[[argparse.Namespace], int],
    *,
    numbered: str = "",
    keep_existing: bool = False,
) -> int:
    """A command that writes a folder repository, pointed at the store instead: it writes a
    temporary folder, and what it wrote is pushed. `numbered` names the model whose next
    version number comes from the store; `keep_existing` leaves versions already stored."""
    bucket = address(args.repository)
    if bucket is None:
        return run(args)
    url = nats_url(args)
    stored = asyncio.run(with_store(url, bucket, True, lambda s: s.versions(numbered)))
    if numbered and not args.version:
        numbers = [int(r.version) for r in stored if r.version.isdigit()]
        args.version = str(max(numbers, default=0) + 1)
    with tempfile.TemporaryDirectory(prefix="chorus-push-") as tmp:
        code = run(argparse.Namespace(**{**vars(args), "repository": Path(tmp)}))
        if code != 0:
            return code
        have = {(r.model, r.version) for r in stored} if keep_existing else set()
        folders = [f for f in _folders_or_none(Path(tmp)) if identify(f)[:2] not in have]

        async def push(store: ModelStore) -> list[StoredVersion]:
            return [r for f in folders for r in await store.push(f)]

        for record in asyncio.run(with_store(url, bucket, True, push)):
            print(f"pushed {record.model} v{record.version} to {SCHEME}{bucket}",
                  file=sys.stderr if wants_json(args) else sys.stdout)  # fmt: skip
        if keep_existing and len(folders) < len(_folders_or_none(Path(tmp))):
            print(f"versions already in {SCHEME}{bucket} were left as they are",
                  file=sys.stderr if wants_json(args) else sys.stdout)  # fmt: skip
    return 0


def fetch_to_temp(repository: Path, url: str) -> Path:
    """A `nats:` repository's every version, digests checked, in a temporary folder (for
    `chorus models check` and `chorus up`, which read a folder)."""
    bucket = address(repository)
    assert bucket is not None
    root = Path(tempfile.mkdtemp(prefix=f"chorus-{bucket}-"))

    async def fetch(store: ModelStore) -> None:
        for record in await store.versions():
            await store.fetch(record, root)

    asyncio.run(with_store(url, bucket, False, fetch))
    return root


def _said(action: str, command: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    """A store command whose refusal (a bad bucket name, a missing version) is one line."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except StoreError as err:
            print(f"chorus models {action}: {err}", file=sys.stderr)
            return 2

    return run


def add_arguments(models: Any) -> None:
    """The store's subcommands on `chorus models`."""
    push = models.add_parser(
        "push", help="upload a repository, a model's folder or a version folder to the store"
    )
    push.add_argument("path", type=Path, metavar="PATH",
                      help="MODEL/VERSION/manifest.json under it, or VERSION/manifest.json, "
                           "or manifest.json")  # fmt: skip
    push.add_argument("--store", default=SCHEME,
                      help=f"{SCHEME} (bucket {DEFAULT_BUCKET}) or {SCHEME}BUCKET")  # fmt: skip
    add_nats(push, "the NATS of the store")
    push.add_argument("--quiet", action="store_true", help="no progress line per file")
    add_output(push)
    push.set_defaults(func=_said("push", cmd_models_push))

    ls = models.add_parser("ls", help="the models and versions of the store or a folder")
    ls.add_argument("model", nargs="?", default="", help="only this model")
    ls.add_argument("--repository", type=Path, default=Path(SCHEME),
                    help=f"{SCHEME}, {SCHEME}BUCKET or a folder (default {SCHEME})")  # fmt: skip
    add_nats(ls, "the NATS of the store")
    add_router(ls, "instead of the store: the models this router sees alive")
    ls.add_argument("--live", action="store_true",
                    help="the models the router sees alive (at $CHORUS_ROUTER)")  # fmt: skip
    add_output(ls)
    ls.set_defaults(func=_said("ls", cmd_models_ls))

    rm = models.add_parser(
        "rm",
        help="remove a model's version (or every version) from the store; model "
        "services unload it and fall back to the highest left",
    )
    rm.add_argument("model", help="the model to remove")
    rm.add_argument("--version", default="", help="default: every version")
    rm.add_argument("--repository", type=Path, default=Path(SCHEME),
                    help=f"{SCHEME} or {SCHEME}BUCKET (default {SCHEME})")  # fmt: skip
    add_nats(rm, "the NATS of the store")
    add_output(rm)
    rm.set_defaults(func=_said("rm", cmd_models_rm))
