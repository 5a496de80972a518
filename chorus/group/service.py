"""GroupService: a capability's members and a fuser in one process, answering a whole task in
one message.

Each member is the same `ModelService` a member alone runs (its own ONNX Runtime session,
KServe v2 model, NATS subjects and heartbeats, so it stays addressable, observable and
replaceable alone); every member's heartbeat names the group and this process's replica. The
router sends a task for the group to `chorus.infer.group:<name>[.<replica>]` through the same
member calls it uses for a model (replica choice, retries, hedging, breakers, deadlines), as a
FuseCall carrying the task's inputs. Here each member runs it through its own scheduler and
batcher (tasks arriving together share ONNX Runtime calls), and the fuser co-hosted with them
fuses the scores as it fuses a task from the bus (same metrics and errors, nothing encoded),
tasks answered in the same batch in one pass, with the strategies, conflict policies, weights
and calibration it shares with every fuser through JetStream. The answer is an InferReply whose
`fused` is the fuser's reply with each member's answer in it.

The process also serves one gRPC port, where the group answers as one KServe v2 model and
each member as its own (chorus.group.ensemble), and one metrics port for all of them
(chorus.group.metrics); the members and the fuser open no ports of their own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Self
from wsgiref.simple_server import WSGIServer

import grpc
import numpy as np
from nats.micro.request import Request
from nats.micro.service import Service

from chorus.core import micro, needs, subjects
from chorus.core.calls.quorum import too_few_members
from chorus.core.codec import from_tensor, to_tensor
from chorus.core.config import FuserConfig, GroupConfig, ModelServiceConfig
from chorus.core.context import CallContext, received_digest
from chorus.core.errors import (
    ChorusError,
    InvalidArgument,
    Unavailable,
    outcome_label,
    respond_error,
)
from chorus.core.grpcserver import add_health_and_reflection, bind, server_for
from chorus.core.metrics import serve_metrics, stop_metrics
from chorus.core.security import server_credentials
from chorus.core.spawner import Spawner
from chorus.fuser.app import FuserService
from chorus.group.ensemble import EnsembleServicer
from chorus.group.metrics import GroupMetrics
from chorus.group.settings import member_config
from chorus.pb import kserve_v2_pb2_grpc, tensor_pb2, wire_pb2
from chorus.services import heads
from chorus.services.app import KSERVE_SERVICE, STOP_GRACE_S, ModelService

log = logging.getLogger(__name__)
PREFIX = "group:"
"""A group's name on the bus, where a model's would be: chorus.infer.group:<name>."""


def model_name(group: str) -> str:
    """What the router calls the group in its member calls, breakers and metrics."""
    return f"{PREFIX}{group}"


@dataclass(frozen=True, slots=True)
class _Answer:
    model: str
    version: str
    scores: tensor_pb2.Tensor
    outputs: dict[str, np.ndarray]
    latency_ms: float


class GroupService:
    kind = "group"

    def __init__(self, config: GroupConfig, model: ModelServiceConfig, fuser: FuserConfig) -> None:
        """`model`: the settings every member starts from (its repository, batching, device);
        each member's name is its own, its group and group replica this one's."""
        self.config = config
        self.model_config = model
        self.replica = config.replica or f"{config.name}-{uuid.uuid4().hex[:8]}"
        self.members = {
            name: ModelService(member_config(config, model, name, self.replica))
            for name in config.members
        }
        # No metrics port of the fuser's own: the group serves one endpoint for all
        # (chorus.group.metrics).
        self.fuser = FuserService(replace(fuser, nats_url=config.nats_url, own_ports=False))
        self._service: Service | None = None
        self._metrics_server: WSGIServer | None = None
        self.metrics: GroupMetrics | None = None
        self._server: grpc.aio.Server | None = None
        self._ensemble: EnsembleServicer | None = None
        self.metrics_port = 0
        self.grpc_port = 0
        self._requests = Spawner()
        self.served = 0
        self.in_flight = 0
        """Tasks being answered now, for `$SRV.STATS`."""

    async def start(self) -> Self:
        if self._service is not None:
            return self
        await asyncio.gather(*(m.start() for m in self.members.values()))
        await self.fuser.start()
        metrics = self.metrics = GroupMetrics(
            self.config.name,
            lambda: self.in_flight,
            [*(m.metrics.registry for m in self.members.values()), self.fuser.metrics.registry],
        )
        self._metrics_server, self.metrics_port = serve_metrics(
            self.config.host,
            self.config.metrics_port,
            metrics.registry,
            liveness=self.fuser.alive,
            readiness=self.ready,
        )
        await self._serve_grpc()
        nc = self.fuser.nc
        name = model_name(self.config.name)
        self._service = await micro.register(
            nc,
            name=f"chorus-group-{self.config.name}",
            description=f"members {', '.join(self.members)} and a fuser in one process",
            metadata={"group": self.config.name, "replica": self.replica},
            endpoints=[
                micro.Endpoint("task", subjects.infer(name), name, self._on_task, self.stats),
                micro.Endpoint(
                    "task-replica",
                    subjects.infer_replica(name, self.replica),
                    self.replica,
                    self._on_task,
                    self.stats,
                ),
            ],
        )
        log.info("group %s (%s) serving %s", self.config.name, self.replica, list(self.members))
        return self

    async def _serve_grpc(self) -> None:
        cfg, model = self.config, self.model_config
        credentials = server_credentials(self.fuser.security)
        self._server = server_for(model, credentials)
        self._ensemble = EnsembleServicer(self, join_rows=cfg.join_rows)
        kserve_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(self._ensemble, self._server)
        health = add_health_and_reflection(self._server, [KSERVE_SERVICE])
        self.grpc_port = bind(self._server, cfg.host, cfg.grpc_port, credentials)
        await self._server.start()
        await self.fuser.report_health(health, [KSERVE_SERVICE])

    async def stop(self) -> None:
        if self._service is not None:
            await self._service.stop()
            self._service = None
        if self._server is not None:
            await self._server.stop(grace=STOP_GRACE_S)
            self._server = None
        if self._ensemble is not None and self._ensemble.joiner is not None:
            await self._ensemble.joiner.close()
        await self._requests.close()
        await self.fuser.stop()
        await asyncio.gather(*(m.stop() for m in self.members.values()))
        stop_metrics(self._metrics_server)
        self._metrics_server = None

    def ready(self) -> tuple[bool, str]:
        """Ready once the fuser and every member are (each its NATS connection and, for a
        member, a loaded model): GET /readyz on the group's metrics port."""
        for part in (*self.members.values(), self.fuser):
            ok, why = part.ready()
            if not ok:
                return False, f"group {self.config.name}: {why}"
        return True, f"ok: group {self.config.name} serving {', '.join(self.members)}"

    def stats(self) -> dict[str, object]:
        return {"tasks": self.served, "members": list(self.members), "in_flight": self.in_flight}

    async def _on_task(self, request: Request) -> None:
        self._requests.spawn(self._serve(request))

    async def _serve(self, request: Request) -> None:
        try:
            with self.counted("nats"):
                reply = await self.answer(request.data, request.headers)
        except Exception as exc:
            await respond_error(request, exc, f"group {self.config.name}")
            return
        await request.respond(reply.SerializeToString())

    async def answer(self, data: bytes, headers: dict[str, str] | None) -> wire_pb2.InferReply:
        """A task from the bus: the FuseCall a router sends, with its context in `headers`."""
        ctx = CallContext.from_headers(headers, default_budget_s=self.config.default_budget_s)
        digest = received_digest(data, headers, f"group {self.config.name}")
        try:
            call = wire_pb2.FuseCall.FromString(data)
        except Exception:
            raise InvalidArgument("body: not a chorus.wire.v1.FuseCall message") from None
        return await self.answer_call(call, ctx, headers, digest)

    async def answer_call(
        self,
        call: wire_pb2.FuseCall,
        ctx: CallContext,
        headers: dict[str, str] | None = None,
        digest: str = "",
        *,
        outputs: bool = True,
        arrays: dict[str, np.ndarray] | None = None,
        tasks: Sequence[tuple[str, int, int]] = (),
    ) -> wire_pb2.InferReply:
        """The whole task: every expected member run here, their scores fused here (a task
        from the bus, or one this process's KServe endpoint built: chorus.group.ensemble).
        `outputs`: each member's answer carries its outputs, as a router's reply needs (the
        KServe endpoint answers with the fused scores only); `arrays`: the call's inputs,
        decoded already; `tasks`: the KServe calls this task joins, each (its id, first row,
        end), kept for feedback one by one (FuserService.fuse_here)."""
        self.in_flight += 1
        try:
            if arrays is None:
                arrays = {t.name: from_tensor(t) for t in call.inputs}
            reply = await self._answer(call, arrays, ctx, headers, digest, outputs, tasks)
        finally:
            self.in_flight -= 1
        self.served += 1
        return reply

    @contextlib.contextmanager
    def counted(self, transport: str) -> Iterator[None]:
        """A task from `transport` handled, refused or failed, in `chorus_group_tasks`."""
        try:
            yield
        except Exception as exc:
            if self.metrics is not None:
                self.metrics.answered(transport, outcome_label(exc))
            raise
        if self.metrics is not None:
            self.metrics.answered(transport, "ok")

    async def _answer(
        self,
        call: wire_pb2.FuseCall,
        inputs: dict[str, np.ndarray],
        ctx: CallContext,
        headers: dict[str, str] | None,
        digest: str,
        outputs: bool,
        tasks: Sequence[tuple[str, int, int]],
    ) -> wire_pb2.InferReply:
        ctx.check(f"group {self.config.name} ({self.replica}) started it")
        expected = list(call.expected)
        for e in expected:
            if e.model not in self.members:
                raise InvalidArgument(
                    f"expected[{e.model!r}]: not a member of group {self.config.name} "
                    f"(members: {', '.join(self.members)})"
                )
        ran = await asyncio.gather(
            *(self._run(e, inputs, ctx) for e in expected),
            return_exceptions=True,
        )
        fuse = wire_pb2.FuseCall(
            policy=call.policy,
            labels=call.labels,
            capability=call.capability,
            task_id=call.task_id,
            conflict=call.conflict,
        )
        # The fuser gets the inputs only where its strategy or conflict policy reads them, as
        # a router decides for the fuser it asks.
        if needs.sends_inputs(call.policy, call.conflict.name, call.conflict.then):
            fuse.inputs.extend(call.inputs or [to_tensor(n, a) for n, a in inputs.items()])
        answers: list[_Answer] = []
        errors: dict[str, ChorusError] = {}
        for e, got in zip(expected, ran, strict=True):
            if isinstance(got, ChorusError):
                errors[e.model] = got
            elif isinstance(got, BaseException):
                errors[e.model] = Unavailable(f"model {e.model}: {got!r}")
            else:
                answers.append(got)
                fuse.members.add(
                    model=e.model, version=got.version, probabilities=got.scores,
                    scores_output=e.scores_output, output_kind=e.output_kind,
                    temperature=e.temperature,
                )  # fmt: skip
        needed = min(max(1, call.min_members), len(expected))
        if len(answers) < needed:
            raise too_few_members(call.capability, errors, len(answers), needed)
        # Fused with the tasks finishing in this turn, unless none can be.
        fused = await self.fuser.fuse_here(
            fuse, ctx, headers, together=self.in_flight > 1, tasks=tasks
        )
        for a in answers:
            fused.answers.add(
                model=a.model, version=a.version, replica=f"{self.replica}-{a.model}",
                outputs=[to_tensor(n, v) for n, v in a.outputs.items()] if outputs else [],
                latency_ms=a.latency_ms,
            )  # fmt: skip
        for model, why in errors.items():
            fused.missing[model].code = why.code_name
            fused.missing[model].message = why.message
        return wire_pb2.InferReply(
            model=model_name(self.config.name),
            replica=self.replica,
            input_sha256=digest,
            fused=fused,
        )

    async def _run(
        self,
        e: wire_pb2.Expected,
        inputs: dict[str, np.ndarray],
        ctx: CallContext,
    ) -> _Answer:
        """One member on the task's inputs it takes, queued and batched as a call from the bus
        would be (a multi-task member is never co-hosted: the router asks it through the
        two-hop path, which cuts its reply down to a head)."""
        service = self.members[e.model]
        host, core = service.host, service.core
        if host is None or core is None:
            raise Unavailable(f"model {e.model}: not loaded yet")
        start = time.perf_counter()
        with core.serving(), host.use() as loaded:
            manifest = loaded.manifest
            taken = {s.name for s in manifest.inputs}
            prediction = await core.run(
                ctx,
                loaded,
                {n: a for n, a in inputs.items() if n in taken},
                alone=self.in_flight == 1,
            )
        outputs = heads.reply_outputs(manifest, None, prediction.outputs)
        if e.scores_output not in outputs:
            raise Unavailable(f"model {e.model}: reply has no {e.scores_output!r} output")
        scores = to_tensor(e.scores_output, outputs[e.scores_output])
        return _Answer(
            e.model, manifest.version, scores, outputs, (time.perf_counter() - start) * 1000
        )
