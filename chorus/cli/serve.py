"""`chorus serve model|router|fuser`: one service in this process, until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import signal
import sys
from typing import Any

from chorus.cli.defaults import (
    GC_FIRST_GENERATION,
    STOP_WHILE_STARTING_S,
)
from chorus.core.spawner import cancel


def _run_service(service: Any, ready: dict[str, Any]) -> int:
    """Run until SIGTERM/SIGINT, printing one JSON line on stdout once serving."""

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if not await _start_unless_stopped(service, stop):
            return 1
        try:
            _settle_garbage_collector()
            print(
                json.dumps({k: v(service) if callable(v) else v for k, v in ready.items()}),
                flush=True,
            )
            await stop.wait()
        finally:
            await service.stop()
        return 0

    return int(_event_loop_runner()(run()))


async def _start_unless_stopped(service: Any, stop: asyncio.Event) -> bool:
    """Start, unless a signal comes first: a service still waiting for NATS stops at once
    and says what it was waiting for, instead of retrying past SIGTERM."""
    starting = asyncio.ensure_future(service.start())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    from chorus.core.errors import ChorusError, describe_error

    if starting.done():
        failed = starting.exception()
        if failed is None:
            return True
        # What had started (NATS, consumers, threads) is stopped before the error is told,
        # so the process exits at once instead of waiting on them.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(service.stop(), STOP_WHILE_STARTING_S)
        if not isinstance(failed, OSError | ChorusError):
            raise failed
        print(f"chorus: could not start: {describe_error(failed)}", file=sys.stderr)
        return False
    await cancel(starting)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(service.stop(), STOP_WHILE_STARTING_S)

    waited = getattr(service, "nats_url", "") or "NATS"
    last = getattr(service, "nats_error", None)
    reason = f" (last error: {describe_error(last)})" if last is not None else ""
    print(f"chorus: stopped before serving: could not reach NATS at {waited}{reason}",
          file=sys.stderr)  # fmt: skip
    return False


def _settle_garbage_collector() -> None:
    """A serving process allocates many short-lived objects per request; with start-up's
    objects frozen out of the collector and a larger first generation, collections are rarer
    and cheaper (measured: about 2% more throughput on a model service, bench/README.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_FIRST_GENERATION, 20, 20)


def _event_loop_runner() -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def cmd_serve_model(args: argparse.Namespace) -> int:
    from chorus.core.config import ModelServiceConfig
    from chorus.core.environment import check_environment, from_env
    from chorus.services.app import ModelService

    check_environment()
    cfg = from_env(
        ModelServiceConfig,
        "model",
        model=args.model,
        repository=args.repository,
        grpc_port=args.grpc_port,
        device=args.device,
        delay_ms=args.delay_ms,
        noise=args.noise,
        nats_url=args.nats_url,
        metrics_port=args.metrics_port,
    )
    return _run_service(
        ModelService(cfg),
        {
            "service": "model",
            "name": cfg.model,
            "grpc": lambda s: f"{cfg.host}:{s.grpc_port}",
            "metrics": lambda s: f"{cfg.host}:{s.metrics_port}",
            "provider": lambda s: s.model.provider,
            "replica": lambda s: s.replica,
        },
    )


def cmd_serve_router(args: argparse.Namespace) -> int:
    from chorus.core.config import RouterConfig
    from chorus.core.environment import check_environment, from_env
    from chorus.router.app import RouterService

    check_environment()
    cfg = from_env(
        RouterConfig,
        "router",
        grpc_port=args.grpc_port,
        nats_url=args.nats_url,
        metrics_port=args.metrics_port,
    )
    return _run_service(
        RouterService(cfg),
        {
            "service": "router",
            "grpc": lambda s: f"{cfg.host}:{s.grpc_port}",
            "metrics": lambda s: f"{cfg.host}:{s.metrics_port}",
        },
    )


def cmd_serve_fuser(args: argparse.Namespace) -> int:
    from chorus.core.config import FuserConfig
    from chorus.core.environment import check_environment, from_env
    from chorus.fuser.app import FuserService

    check_environment()
    cfg = from_env(FuserConfig, "fuser", nats_url=args.nats_url, metrics_port=args.metrics_port)
    return _run_service(
        FuserService(cfg),
        {"service": "fuser", "metrics": lambda s: f"{cfg.host}:{s.metrics_port}"},
    )


def cmd_serve_group(args: argparse.Namespace) -> int:
    from chorus.core.config import FuserConfig, GroupConfig, ModelServiceConfig
    from chorus.core.environment import check_environment, from_env
    from chorus.group.service import GroupService

    check_environment()
    cfg = from_env(
        GroupConfig,
        "group",
        name=args.name,
        models=args.models,
        nats_url=args.nats_url,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
    )
    model = from_env(ModelServiceConfig, "model", repository=args.repository, device=args.device)
    fuser = from_env(FuserConfig, "fuser")
    return _run_service(
        GroupService(cfg, model, fuser),
        {
            "service": "group",
            "name": cfg.name,
            "replica": lambda s: s.replica,
            "grpc": lambda s: f"{cfg.host}:{s.grpc_port}",
            "metrics": lambda s: f"{cfg.host}:{s.metrics_port}",
            "members": lambda s: list(s.members),
        },
    )
