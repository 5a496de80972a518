"""A request handed to a service in this process as its NATS endpoint would receive it: the
group gives its fuser the task this way, so the fuser's one handler (metrics, records,
errors) serves both the mesh and the group, with no message on the bus."""

from __future__ import annotations

import asyncio

from chorus.core.calls.request import ERROR_CODE_HEADER, ERROR_HEADER
from chorus.core.errors import ChorusError


class LocalRequest:
    """`data` and `headers` in, the handler's answer out of `answer()`."""

    __slots__ = ("data", "headers", "reply")

    def __init__(self, data: bytes, headers: dict[str, str] | None) -> None:
        self.data = data
        self.headers = headers
        self.reply: asyncio.Future[tuple[bytes, dict[str, str] | None]] = (
            asyncio.get_running_loop().create_future()
        )

    async def respond(self, data: bytes = b"", headers: dict[str, str] | None = None) -> None:
        if not self.reply.done():
            self.reply.set_result((data, headers))

    async def respond_error(
        self,
        code: str,
        description: str,
        data: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> None:
        await self.respond(
            data, {**(headers or {}), ERROR_CODE_HEADER: code, ERROR_HEADER: description}
        )

    async def answer(self) -> bytes:
        """The handler's reply, or the error it answered with, raised as the ChorusError."""
        data, headers = await self.reply
        code = (headers or {}).get(ERROR_CODE_HEADER)
        if code is not None:
            raise ChorusError.from_code_name(code, (headers or {}).get(ERROR_HEADER, ""))
        return data
