"""The model's NATS side: a micro service answering chorus.infer.<model>[.<replica>].

Registering through nats.micro makes every replica discoverable with `$SRV.PING/INFO/STATS`;
heartbeats on chorus.hb.<model> add what the router needs to route (specs, load, device).
"""

from __future__ import annotations

from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.micro.request import Request
from nats.micro.service import Service
from opentelemetry.trace import SpanKind

from chorus.core import micro, subjects, tracing
from chorus.core.codec import from_tensor, to_tensor
from chorus.core.context import (
    CAPABILITY,
    MAX_TASKS_PER_CALL,
    TASKS,
    CallContext,
    Priority,
    received_digest,
)
from chorus.core.errors import InvalidArgument, respond_error
from chorus.core.heartbeat import Heartbeat, HeartbeatLoop
from chorus.core.spawner import Spawner
from chorus.pb import wire_pb2
from chorus.services import heads
from chorus.services.inference import InferenceCore
from chorus.services.lifecycle import ModelHost
from chorus.services.metrics import ModelMetrics


class NatsWorker:
    def __init__(
        self,
        nc: Client,
        host: ModelHost,
        metrics: ModelMetrics,
        *,
        replica: str,
        heartbeat_s: float,
        default_budget_s: float,
        core: InferenceCore,
        group: str = "",
        group_replica: str = "",
    ) -> None:
        self.nc = nc
        self.host = host
        self.name = host.name
        self.metrics = metrics
        self.replica = replica
        self.group = group
        self.group_replica = group_replica
        self.heartbeat_s = heartbeat_s
        self.default_budget_s = default_budget_s
        self._service: Service | None = None
        self._discover: Subscription | None = None
        self._beat = HeartbeatLoop(self.announce, heartbeat_s, f"heartbeat-{self.name}")
        self._requests = Spawner()
        self.core = core

    async def start(self) -> None:
        if self._service is not None:
            return
        name = self.name
        current = self.host.current
        assert current is not None, "start the worker once a version is loaded"
        manifest = current.manifest
        self._service = await micro.register(
            self.nc,
            name=f"chorus-model-{name}",
            description=manifest.description or name,
            metadata={
                "model": name,
                "model_version": manifest.version,
                "capabilities": ",".join(manifest.capabilities),
                "replica": self.replica,
            },
            endpoints=[
                micro.Endpoint("infer", subjects.infer(name), name, self._on_infer, self.stats),
                micro.Endpoint(
                    "infer-replica",
                    subjects.infer_replica(name, self.replica),
                    self.replica,
                    self._on_infer,
                    self.stats,
                ),
            ],
        )
        self._discover = await self.nc.subscribe(subjects.DISCOVER, cb=self._on_discover)
        await self.announce()
        self._beat.start()

    async def stop(self) -> None:
        await self._beat.stop()
        if self._discover is not None:
            await self._discover.unsubscribe()
            self._discover = None
        if self._service is not None:
            await self._service.stop()
            self._service = None
        await self._requests.close()

    def heartbeat(self) -> Heartbeat | None:
        """What the router should know; None while no version is loaded, so the registry
        lets this replica expire instead of routing to it."""
        current = self.host.current
        if current is None:
            return None
        manifest = current.manifest
        return Heartbeat(
            model=manifest.name,
            version=manifest.version,
            replica=self.replica,
            capabilities=manifest.capabilities,
            inputs=manifest.inputs,
            outputs=manifest.outputs,
            labels=heads.primary_labels(manifest),
            scores_output=manifest.scores_output,
            device=current.model.device,
            in_flight=self.core.in_flight,
            interval_s=self.heartbeat_s,
            members=manifest.members,
            queue={p.label: self.core.scheduler.depth(p) for p in Priority},
            ewma_ms=self.core.ewma_ms,
            capacity=self.core.scheduler.slots,
            heads=heads.heartbeat_heads(manifest),
            output_kind=manifest.output_kind,
            temperature=manifest.temperature,
            group=self.group,
            group_replica=self.group_replica,
        )

    def stats(self) -> dict[str, Any]:
        """This replica's live numbers for `$SRV.STATS` (both endpoints share one core, so
        they report the same): read from the scheduler and the metrics, nothing kept anew."""
        core, metrics = self.core, self.metrics
        current = self.host.current
        return {
            "version": current.manifest.version if current is not None else "",
            "in_flight": core.in_flight,
            "queued": {p.label: core.scheduler.depth(p) for p in Priority},
            "slots": core.scheduler.slots,
            "requests": micro.totals(
                metrics.requests, "outcome", model=self.name, transport="nats"
            ),
            "mean_batch_rows": micro.mean(metrics.rows, model=self.name),
            "mean_compute_ms": micro.mean(metrics.latency, model=self.name) * 1000,
            "ewma_ms": core.ewma_ms,
        }

    async def announce(self) -> None:
        """Heartbeat now (at start, on discovery, and when the loaded versions change)."""
        beat = self.heartbeat()
        if beat is not None:
            await self.nc.publish(subjects.heartbeat(self.name), beat.to_json())

    async def _on_discover(self, msg: Msg) -> None:
        await self.announce()

    async def _on_infer(self, request: Request) -> None:
        # nats-py runs one subscription's callbacks one after another; serve concurrently.
        self._requests.spawn(self._serve(request))

    async def _serve(self, request: Request) -> None:
        with tracing.span(
            f"infer {self.name}",
            request.headers,
            kind=SpanKind.SERVER,
            model=self.name,
            replica=self.replica,
        ):
            await self._serve_traced(request)

    async def _serve_traced(self, request: Request) -> None:
        tasks = _tasks(request.headers)
        with self.core.serving(tasks):
            await self._answer(request, tasks)

    async def _answer(self, request: Request, tasks: int) -> None:
        try:
            if tasks < 1:
                raise InvalidArgument(
                    f"header {TASKS}: expected a whole number from 1 to {MAX_TASKS_PER_CALL}, "
                    f"got {(request.headers or {}).get(TASKS)!r}"
                )
            ctx = CallContext.from_headers(request.headers, default_budget_s=self.default_budget_s)
            ctx.check(f"model {self.name} ({self.replica}) started it")
            digest = received_digest(request.data, request.headers, f"model {self.name}")
            call = wire_pb2.InferCall()
            try:
                call.ParseFromString(request.data)
            except Exception:
                raise InvalidArgument("body: not a chorus.wire.v1.InferCall message") from None
            inputs = {t.name: from_tensor(t) for t in call.inputs}
            capability = (request.headers or {}).get(CAPABILITY)
            with self.host.use() as loaded:
                manifest = loaded.manifest
                heads.check_capability(manifest, capability)
                prediction = await self.core.run(ctx, loaded, inputs, augment=call.augment)
            outputs = heads.reply_outputs(manifest, capability, prediction.outputs)
            reply = wire_pb2.InferReply(
                model=manifest.name,
                version=manifest.version,
                replica=self.replica,
                outputs=[to_tensor(n, a) for n, a in outputs.items()],
                compute_ms=prediction.compute_ms,
                input_sha256=digest,
            )
            await request.respond(reply.SerializeToString())
            rows = next(iter(inputs.values())).shape[0]
            self.metrics.observe("nats", "ok", rows, prediction.compute_ms / 1000)
        except Exception as exc:
            self.metrics.observe("nats", await respond_error(request, exc, f"model {self.name}"))


def _tasks(headers: dict[str, str] | None) -> int:
    """Tasks a call carries (a joined call several); 0 when the header is not a valid count."""
    given = (headers or {}).get(TASKS)
    if given is None:
        return 1
    try:
        n = int(given)
    except ValueError:
        return 0
    return n if 1 <= n <= MAX_TASKS_PER_CALL else 0
