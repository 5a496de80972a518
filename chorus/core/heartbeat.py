"""Heartbeat: what a model replica tells the router about itself, once a second; and
HeartbeatLoop, which sends any service's heartbeat on its interval.

Control-plane traffic, so JSON keeps it readable with `nats sub chorus.hb.*`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from chorus.core.spawner import cancel
from chorus.core.spec import TensorSpec

log = logging.getLogger(__name__)

VERSION = 1
HEAD_LABEL, HEAD_PROBABILITIES = "label", "probabilities"
"""The outputs of a multi-task model's reply for one head (chorus.services.heads): the head's
label index and its probabilities, already turned from the head's columns (logits through a
softmax after the model's temperature), so nothing downstream tempers them again."""


@dataclass(frozen=True)
class ScoresSource:
    """Where a member's reply for one capability carries its scores, and how the fuser reads
    them (chorus.fuser.kinds.as_scores)."""

    output: str
    kind: str
    temperature: float


class HeartbeatLoop:
    """Calls `announce` every `interval_s` on a task of its own, from start() until stop();
    a beat that fails is logged and the next one tried, so a NATS hiccup stops nothing."""

    def __init__(self, announce: Callable[[], Awaitable[None]], interval_s: float, name: str):
        self.announce = announce
        self.interval_s = interval_s
        self.name = name
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._forever(), name=self.name)

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.announce()
            except Exception as exc:
                log.warning("%s failed: %s", self.name, exc)


@dataclass(frozen=True)
class Heartbeat:
    model: str
    version: str
    replica: str
    capabilities: tuple[str, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    labels: tuple[str, ...]
    scores_output: str
    device: str
    in_flight: int = 0
    interval_s: float = 1.0
    members: tuple[str, ...] = ()
    queue: dict[str, int] = field(default_factory=dict)
    """Requests waiting, by priority class name."""
    ewma_ms: float = 0.0
    """Smoothed time one request holds an inference slot."""
    capacity: int = 1
    """Inference slots: requests served at once."""
    heads: dict[str, dict[str, Any]] = field(default_factory=dict)
    """A multi-task model's heads: capability -> {"labels": [...]}; empty for single-task."""
    output_kind: str = "probabilities"
    """What the scores output holds (the manifest's output_kind): the fuser reads it so."""
    temperature: float = 1.0
    group: str = ""
    """The co-hosted group this member runs in ("" alone): the group answers a whole task on
    `group:<name>`."""
    group_replica: str = ""
    """The group replica (the process) this member runs in, shared by its co-hosted members."""

    @property
    def regression(self) -> bool:
        return self.output_kind == "regression"

    def scores_for(self, capability: str) -> ScoresSource:
        """The scores a reply to `capability` carries: a head's probabilities for a multi-task
        model asked for one of its heads (the model applied its temperature there, so the
        fuser takes them as they are: a second softmax or temperature would flatten them),
        else the model's own scores output as its manifest's output_kind says."""
        if capability in self.heads:
            return ScoresSource(HEAD_PROBABILITIES, "probabilities", 1.0)
        return ScoresSource(self.scores_output, self.output_kind, self.temperature)

    def to_json(self) -> bytes:
        d = asdict(self)
        d["type"] = f"chorus.heartbeat.v{VERSION}"
        return json.dumps(d, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Heartbeat:
        d = json.loads(data)
        if d.get("type") != f"chorus.heartbeat.v{VERSION}":
            raise ValueError(f"not a v{VERSION} heartbeat: type={d.get('type')!r}")
        return cls(
            model=d["model"],
            version=d["version"],
            replica=d["replica"],
            capabilities=tuple(d["capabilities"]),
            inputs=tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
            outputs=tuple(TensorSpec.from_dict(t) for t in d["outputs"]),
            labels=tuple(d["labels"]),
            scores_output=d["scores_output"],
            device=d["device"],
            in_flight=int(d.get("in_flight", 0)),
            interval_s=float(d.get("interval_s", 1.0)),
            members=tuple(d.get("members", ())),
            queue={str(k): int(v) for k, v in d.get("queue", {}).items()},
            ewma_ms=float(d.get("ewma_ms", 0.0)),
            capacity=int(d.get("capacity", 1)),
            heads={str(k): dict(v) for k, v in d.get("heads", {}).items()},
            output_kind=str(d.get("output_kind", "probabilities")),
            temperature=float(d.get("temperature", 1.0)),
            group=str(d.get("group", "")),
            group_replica=str(d.get("group_replica", "")),
        )
