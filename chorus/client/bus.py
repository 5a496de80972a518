"""The task API over NATS, for applications already on the bus: `BusTaskClient.submit` sends
the gRPC API's own SubmitRequest to `chorus.submit` (any router replica answers) and returns
the same `TaskResult`, or raises the same `TaskError` family, as `AsyncTaskClient.submit`.
One NATS request per task: no HTTP/2 framing, no gRPC front door."""

from __future__ import annotations

import time
from typing import Any

import nats.errors
from nats.aio.client import Client

from chorus.client import ops
from chorus.client.errors import error_for
from chorus.client.types import Inputs, TaskResult
from chorus.core import subjects
from chorus.core.context import DEADLINE
from chorus.core.errors import ERROR_CODE_HEADER, ERROR_HEADER
from chorus.core.security import API_KEY_HEADER

DEFAULT_TIMEOUT_S = 30.0


class BusTaskClient:
    def __init__(
        self, nc: Client, *, timeout_s: float = DEFAULT_TIMEOUT_S, api_key: str | None = None
    ) -> None:
        """`nc`: the application's own NATS connection; `timeout_s`: each task's deadline
        unless a call gives its own (it travels to the router as Chorus-Deadline-Ms)."""
        self.nc = nc
        self.timeout_s = timeout_s
        self.api_key = api_key

    async def submit(
        self,
        capability: str,
        inputs: Inputs,
        *,
        timeout_s: float | None = None,
        **task: Any,
    ) -> TaskResult:
        """As `AsyncTaskClient.submit` (`task`: priority, deadline_ms, policy, task_id,
        conflict, pipeline, cascade), over the bus."""
        op = ops.submit(capability, inputs, **task)
        timeout = timeout_s if timeout_s is not None else self.timeout_s
        headers = {DEADLINE: str(int((time.time() + timeout) * 1000))}
        if self.api_key:
            headers[API_KEY_HEADER] = self.api_key
        body = op.request.SerializeToString()
        try:
            msg = await self.nc.request(subjects.SUBMIT, body, timeout=timeout, headers=headers)
        except nats.errors.NoRespondersError:
            raise error_for(
                "UNAVAILABLE", f"no router is subscribed to {subjects.SUBMIT}"
            ) from None
        except nats.errors.TimeoutError:
            raise error_for("DEADLINE_EXCEEDED", f"no answer within {timeout:g} s") from None
        found = msg.headers or {}
        code = found.get(ERROR_CODE_HEADER)
        if code is not None:
            raise error_for(code, found.get(ERROR_HEADER, ""), task_id=op.request.task_id)
        return op.decode(op.response(msg.data))
