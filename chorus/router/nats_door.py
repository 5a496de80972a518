"""The task API on the bus: Submit as a NATS micro endpoint (`chorus.submit`, queue group
`router`), for applications already on NATS. The request and reply are the gRPC API's own
bytes (a SubmitRequest, a SubmitResponse); admission, priority, deadlines and the checks are
the same TaskRunner's; errors come back as the micro protocol's error headers, a gRPC status
name and its message. The caller's deadline travels as `Chorus-Deadline-Ms` (epoch ms), its
API key, where the router asks for one, as an `x-api-key` header."""

from __future__ import annotations

import time

from chorus.core import tracing
from chorus.core.context import DEADLINE
from chorus.core.errors import InvalidArgument, respond_error
from chorus.core.micro import Responder
from chorus.core.security import Authorizer
from chorus.core.spawner import Spawner
from chorus.pb import task_pb2
from chorus.router.task import TaskRunner
from chorus.router.validate import needed_capabilities


class NatsDoor:
    def __init__(self, runner: TaskRunner, authorizer: Authorizer) -> None:
        self.runner = runner
        self.authorizer = authorizer
        self._requests = Spawner()

    async def on_submit(self, request: Responder) -> None:
        # nats-py runs one subscription's callbacks one after another; serve concurrently.
        self._requests.spawn(self.submit(request))

    async def submit(self, request: Responder) -> None:
        headers = request.headers or {}
        try:
            try:
                req = task_pb2.SubmitRequest.FromString(request.data)
            except Exception:
                raise InvalidArgument("body: not a chorus.v1.SubmitRequest message") from None
            self._admit(headers, req)
            metadata = dict(headers) if tracing.enabled() else None
            response = await self.runner.submit(req, _remaining_s(headers), metadata)
        except Exception as exc:
            await respond_error(request, exc, "router")
            return
        await request.respond(response.SerializeToString())

    async def close(self) -> None:
        await self._requests.close()

    def _admit(self, headers: dict[str, str], req: task_pb2.SubmitRequest) -> None:
        if not self.authorizer.enabled:
            return
        caller = self.authorizer.caller({k.lower(): v for k, v in headers.items()}, None)
        for capability in needed_capabilities(self.runner.pipelines, req):
            self.authorizer.check(caller, capability)


def _remaining_s(headers: dict[str, str]) -> float | None:
    """The caller's own deadline, as a gRPC caller's would be: what is left of it (None:
    none given, the task's deadline_ms or the router's default budget decides)."""
    raw = headers.get(DEADLINE)
    if raw is None:
        return None
    try:
        return int(raw) / 1000 - time.time()
    except ValueError:
        raise InvalidArgument(
            f"header {DEADLINE}: expected epoch milliseconds, got {raw!r}"
        ) from None
