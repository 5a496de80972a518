"""What every command shares: where the router and NATS are (flag, else CHORUS_ROUTER /
CHORUS_NATS_URL, else the loopback defaults), `-o json` output, and progress lines."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

ROUTER_ENV = "CHORUS_ROUTER"
NATS_ENV = "CHORUS_NATS_URL"
DEFAULT_ROUTER = "127.0.0.1:50051"
DEFAULT_NATS = "nats://127.0.0.1:4222"

EXIT_CODES = """\
exit status:
  0  done
  1  the task or command failed: a gRPC status, a router or NATS that cannot be reached,
     an async task that failed, a stored file whose digest does not match
  2  usage: a bad flag, input file or manifest, a configuration error, an extra to install
  the reason is one line on stderr

environment:
  CHORUS_ROUTER    the router's address for every command that calls it (--router wins)
  CHORUS_NATS_URL  the NATS every command connects to (--nats-url wins)
"""


def add_router(p: argparse.ArgumentParser, what: str = "the router's gRPC address") -> None:
    p.add_argument("--router", metavar="HOST:PORT",
                   help=f"{what}; default ${ROUTER_ENV}, else {DEFAULT_ROUTER} "
                        "(several as a,b: spread round robin)")  # fmt: skip


def add_nats(p: argparse.ArgumentParser, what: str = "the NATS server") -> None:
    p.add_argument("--nats-url", metavar="URL",
                   help=f"{what}; default ${NATS_ENV}, else {DEFAULT_NATS}")  # fmt: skip


def router(args: argparse.Namespace) -> str:
    """--router, else CHORUS_ROUTER, else the loopback default: flags win."""
    return str(getattr(args, "router", None) or os.environ.get(ROUTER_ENV) or DEFAULT_ROUTER)


def nats_url(args: argparse.Namespace) -> str:
    """--nats-url, else CHORUS_NATS_URL, else the loopback default: flags win."""
    return str(getattr(args, "nats_url", None) or os.environ.get(NATS_ENV) or DEFAULT_NATS)


def add_output(p: argparse.ArgumentParser) -> None:
    """`-o json` (or `--json`) prints one JSON document on stdout instead of text."""
    p.add_argument("-o", "--output", choices=["text", "json"], default="text",
                   help="text for people (default) or one JSON document for programs")  # fmt: skip
    p.add_argument("--json", dest="output", action="store_const", const="json",
                   help="the same as -o json")  # fmt: skip


def wants_json(args: argparse.Namespace) -> bool:
    return getattr(args, "output", "text") == "json"


def emit(document: Any) -> None:
    print(json.dumps(document, indent=2, default=_plain), flush=True)


def _plain(value: Any) -> Any:
    """numpy scalars and arrays, paths and sets as JSON has them."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, set | frozenset):
        return sorted(value)
    return str(value)


class Progress:
    """Short lines on stderr for work that takes a while, so stdout stays the result (and
    `-o json` stays parseable): "chorus models build: training mlp (12.3 s)"."""

    def __init__(self, command: str) -> None:
        self.command = command
        self.started = time.monotonic()

    def __call__(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"chorus {self.command}: {message} ({elapsed:.1f} s)", file=sys.stderr, flush=True)
