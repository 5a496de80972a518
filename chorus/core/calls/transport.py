"""The one I/O seam of member calls: what `MemberCalls`, the router's one-way path and the
fuser's collector need of the bus, and nothing more. NATS is one implementation
(`NatsTransport`); the unit tests script another (tests/support/fakes.py).

A transport's own errors are translated where they enter: a request nobody is subscribed
to raises `NoResponders`, one unanswered in time `RequestTimeout`; callers name the model or
service in the ChorusError they make of them.
"""

from __future__ import annotations

from typing import Protocol

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout


class Message(Protocol):
    """A reply or a delivered message: nats-py's `Msg` is one as it is."""

    @property
    def subject(self) -> str: ...

    @property
    def data(self) -> bytes: ...

    @property
    def headers(self) -> dict[str, str] | None: ...


class NoResponders(Exception):
    """Nobody is subscribed to the subject a request went to."""


class RequestTimeout(Exception):
    """No reply came within the request's timeout."""


class Transport(Protocol):
    @property
    def max_payload(self) -> int:
        """The largest message the bus takes, in bytes."""
        ...

    async def request(
        self, subject: str, payload: bytes, headers: dict[str, str] | None, timeout: float
    ) -> Message:
        """The reply to one request; raises NoResponders or RequestTimeout."""
        ...

    async def publish(
        self, subject: str, payload: bytes, *, reply: str = "", headers: dict[str, str] | None
    ) -> None:
        """Sends without waiting for an answer; whoever gets it answers on `reply`."""
        ...


class NatsTransport:
    """The bus as nats-py's client is: replies are its `Msg`s, passed on unchanged."""

    __slots__ = ("nc",)

    def __init__(self, nc: Client) -> None:
        self.nc = nc

    @property
    def max_payload(self) -> int:
        return self.nc.max_payload

    async def request(
        self, subject: str, payload: bytes, headers: dict[str, str] | None, timeout: float
    ) -> Message:
        try:
            return await self.nc.request(subject, payload, timeout=timeout, headers=headers)
        except NoRespondersError:
            raise NoResponders(subject) from None
        except NatsTimeout:
            raise RequestTimeout(subject) from None

    async def publish(
        self, subject: str, payload: bytes, *, reply: str = "", headers: dict[str, str] | None
    ) -> None:
        await self.nc.publish(subject, payload, reply=reply, headers=headers)
