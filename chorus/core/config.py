"""All configuration, typed, in one place. Every field has a default that runs on a laptop.

Each section is a frozen dataclass whose `__post_init__` checks its values: a number out of
its range or a name outside its choices is a ConfigError naming the field. Reading them from
the environment (CHORUS_<SECTION>_<FIELD>, CHORUS_<FIELD>) is chorus.core.environment's job.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chorus.core.wire import DEFAULT_POLICY

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
MiB = 1024 * 1024
MAX_PORT = 65535
MAX_JETSTREAM_REPLICAS = 5
"""JetStream keeps at most five copies of a stream."""
DEVICES = ("auto", "cpu", "cuda")
GRPC_ENGINES = ("native", "grpcio")


class ConfigError(ValueError):
    """A setting out of its range or of the wrong kind; `field` names it."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


Rule = tuple[Callable[[Any], bool], str]
"""A check on one value, and what it expects (for the error). NaN fails every range."""
PORT: Rule = (lambda v: 0 <= v <= MAX_PORT, f"a port from 0 (any free one) to {MAX_PORT}")
POSITIVE: Rule = (lambda v: v > 0, "> 0")
NON_NEGATIVE: Rule = (lambda v: v >= 0, ">= 0")
FINITE_NON_NEGATIVE: Rule = (lambda v: 0 <= v < math.inf, "a finite number >= 0")
AT_LEAST_ONE: Rule = (lambda v: v >= 1, ">= 1")
SHARE: Rule = (lambda v: 0 <= v <= 1, "between 0 and 1")
OPEN_SHARE: Rule = (lambda v: 0 < v < 1, "strictly between 0 and 1")
NOT_EMPTY: Rule = (lambda v: bool(str(v).strip()), "a non-empty value")
REPLICAS: Rule = (
    lambda v: 0 <= v <= MAX_JETSTREAM_REPLICAS,
    f"0 (by the cluster's size) to {MAX_JETSTREAM_REPLICAS}",
)


def check(config: Any, rule: Rule, names: str) -> None:
    """Raise ConfigError for the first of `names` (space-separated fields) whose value on
    `config` breaks `rule`."""
    accepts, expected = rule
    for name in names.split():
        value = getattr(config, name)
        if not accepts(value):
            raise ConfigError(f"{name}: expected {expected}, got {value!r}", name)


def check_choice(config: Any, name: str, choices: Iterable[str]) -> None:
    value, allowed = getattr(config, name), tuple(choices)
    if value not in allowed:
        raise ConfigError(
            f"{name}: expected {', '.join(allowed[:-1])} or {allowed[-1]}, got {value!r}", name
        )


@dataclass(frozen=True)
class ModelServiceConfig:
    model: str = "logreg"
    repository: Path = Path("models")
    nats_url: str = DEFAULT_NATS_URL
    host: str = "127.0.0.1"
    grpc_port: int = 0
    metrics_port: int = 0
    replica: str = ""
    group: str = ""
    """The co-hosted group this model runs in ("" alone); set by `chorus serve group`."""
    group_replica: str = ""
    """That group's replica (its process), which the group's members share."""
    heartbeat_s: float = 1.0
    device: str = "auto"
    intra_op_threads: int = 0
    """ONNX Runtime threads per session (0: the manifest's `runtime`, else 1)."""
    instances: int = 0
    """Sessions serving at once, each on its own thread (0: the manifest's, else 1)."""
    max_message_bytes: int = 4 * MiB
    max_concurrent_streams: int = 256
    grpc_engine: str = "native"
    """Who serves the gRPC port: "native" (pygrpc-native, HTTP/2 off the GIL, calls handed
    over in batches) or "grpcio" (grpc.aio); a TLS port is always grpc.aio's
    (chorus.core.grpcserver.make_server)."""
    default_budget_s: float = 10.0
    queue_limit: int = 256
    """Requests that may wait per priority class before RESOURCE_EXHAUSTED."""
    max_batch: int = 0
    """Rows one ONNX Runtime call may take from concurrent requests (1: no batching; 0: the
    manifest's `runtime.max_batch`, else 1)."""
    max_batch_delay_ms: float = 0.0
    """How long the first request of a batch waits for company (0: the manifest's, else 2)."""
    inline_below_ms: float = 0.2
    """An ONNX Runtime call measured shorter than this runs on the event loop instead of a
    worker thread, whose handoff would cost more than the call (0: always a worker thread).
    A member of a group takes the group's bound instead (GroupConfig.inline_below_ms)."""
    own_ports: bool = True
    """False: no gRPC or metrics port of its own, as a member of a co-hosted group, whose
    ports serve its KServe model and its metrics."""
    reload_poll_s: float = 2.0
    """How often a folder repository is checked for a new version to hot-load (0: never); a
    `nats:` repository is watched instead, each push seen as it lands."""
    cache_dir: Path = Path.home() / ".cache" / "chorus" / "models"
    """Where a `nats:` repository's versions are fetched to (one folder per bucket); files
    already there that match the store's digests are not fetched again."""
    keep_versions: int = 1
    """Versions kept loaded side by side; the highest serves requests that name none."""
    aging_s: float = 2.0
    """A request's class improves by one per this many seconds waited (no starvation)."""
    delay_ms: float = 0.0
    """Fault injection: added to every inference (a slow replica)."""
    noise: float = 0.0
    """Fault injection: std of Gaussian noise added to float inputs (a degraded member)."""

    def __post_init__(self) -> None:
        check(self, NOT_EMPTY, "model nats_url host")
        check(self, PORT, "grpc_port metrics_port")
        check_choice(self, "device", DEVICES)
        check_choice(self, "grpc_engine", GRPC_ENGINES)
        check(self, POSITIVE, "heartbeat_s default_budget_s aging_s")
        check(self, AT_LEAST_ONE, "max_message_bytes max_concurrent_streams keep_versions")
        check(
            self,
            NON_NEGATIVE,
            "intra_op_threads instances queue_limit max_batch max_batch_delay_ms "
            "inline_below_ms reload_poll_s delay_ms noise",
        )


@dataclass(frozen=True)
class RouterConfig:
    nats_url: str = DEFAULT_NATS_URL
    host: str = "127.0.0.1"
    grpc_port: int = 50051
    metrics_port: int = 0
    default_budget_s: float = 5.0
    default_policy: str = DEFAULT_POLICY
    default_conflict_policy: str = "none"
    max_message_bytes: int = 4 * MiB
    max_concurrent_streams: int = 256
    grpc_engine: str = "native"
    """Who serves the gRPC port: "native" (pygrpc-native, HTTP/2 off the GIL, calls handed
    over in batches) or "grpcio" (grpc.aio); a TLS port is always grpc.aio's
    (chorus.core.grpcserver.make_server)."""
    max_rows: int = 1024
    max_tensor_elements: int = 1 << 22
    """Elements per input tensor (4M): bigger ones are refused before any work."""
    max_deadline_s: float = 3600.0
    """Longer task deadlines are refused as a mistake rather than held for days."""
    max_concurrent_tasks: int = 64
    """Tasks dispatched at once; the rest wait in the priority queues."""
    queue_limit: int = 1024
    """Tasks that may wait per priority class before RESOURCE_EXHAUSTED."""
    aging_s: float = 2.0
    replica_choice: str = "power_of_two"
    """power_of_two (load-aware) or queue_group (NATS picks at random)."""
    max_attempts: int = 3
    attempt_timeout_s: float = 2.0
    hedge: bool = True
    coalesce_rows: int = 256
    """Under load, concurrent tasks' calls to one model go as one call of up to this many
    rows (0: every task alone); members count a joined call's tasks in their in-flight."""
    min_members: int = 1
    """Members that must answer for a task to get an answer (the rest are named missing)."""
    one_way: bool = True
    """Single-stage tasks go router -> members -> fuser -> router: members answer a fuser
    replica directly (one NATS round trip in series, not two). Off: members answer the
    router, which then asks the fuser; pipelines, cascades and multi-task models always do."""
    breaker_failures: int = 3
    breaker_cooldown_s: float = 5.0
    plan_routing: bool = False
    """Send each task to one model drawn by the published plan's traffic split (chorus.plan),
    for capabilities it splits, instead of to the whole ensemble."""
    pipelines_dir: Path = Path("pipelines")
    """YAML pipeline specs, loaded at start; a missing folder means no pipelines."""
    async_workers: int = 4
    """Durable tasks taken from each priority's JetStream stream at once."""
    ack_wait_s: float = 30.0
    """A durable task not finished this long after delivery is delivered again."""
    result_ttl_s: float = 3600.0
    dedupe_window_s: float = 600.0
    """SubmitAsync calls with the same idempotency key within this window run once."""

    def __post_init__(self) -> None:
        # default_policy and default_conflict_policy name the fuser's strategies and
        # policies, which only the fuser knows; replica_choice is checked against the
        # choosers when the router builds its calls (chorus.core.calls.choice.get).
        check(
            self, NOT_EMPTY, "nats_url host default_policy default_conflict_policy replica_choice"
        )
        check_choice(self, "grpc_engine", GRPC_ENGINES)
        check(self, PORT, "grpc_port metrics_port")
        check(
            self,
            POSITIVE,
            "default_budget_s max_deadline_s aging_s attempt_timeout_s ack_wait_s "
            "result_ttl_s dedupe_window_s",
        )
        check(
            self,
            AT_LEAST_ONE,
            "max_message_bytes max_concurrent_streams max_rows max_tensor_elements "
            "max_concurrent_tasks max_attempts min_members breaker_failures "
            "async_workers",
        )
        check(self, NON_NEGATIVE, "queue_limit coalesce_rows breaker_cooldown_s")


@dataclass(frozen=True)
class FuserConfig:
    nats_url: str = DEFAULT_NATS_URL
    host: str = "127.0.0.1"
    own_ports: bool = True
    """False: no metrics port of its own, as a co-hosted group's fuser, whose port serves
    its metrics."""
    min_margin: float = 0.2
    """A row is conflicted when the fused top-1 leads top-2 by less than this..."""
    max_entropy: float = 0.5
    """...or the fused distribution's normalised entropy exceeds this..."""
    min_vote_margin: float = 0.34
    """...or the top voted class leads the runner-up by less than this share of members."""
    max_relative_spread: float = 0.1
    """A regression row is conflicted when its members' spread exceeds this share of the
    fused value's magnitude..."""
    max_spread: float = 1.0
    """...and this absolute spread (so values near zero do not all conflict)."""
    conformal_coverage: float = 0.9
    """The conformal policy's coverage when a request does not name one."""
    learn_temperatures: bool = False
    """Let Feedback move each classifier's temperature (fuser.temperatures). Off by default:
    on the demo, one-row feedback tasks left the fused accuracy where it was, where Hedge
    weights alone raise it (README, Fusion)."""
    keep_tasks: bool = True
    """Keep each fused task's member scores (JetStream KV, 24 h) so Feedback can teach the
    weights; one JetStream write per task after its reply."""
    stack_tasks: bool = True
    """Fuse tasks whose members answered together in one stacked pass (fuser.batch); off,
    every task is fused alone, with the same replies."""
    metrics_port: int = 0
    default_budget_s: float = 10.0
    """The deadline of a fuse request that carries none (a router always sends its task's
    deadline; a hand-made request may not)."""
    heartbeat_s: float = 1.0
    """How often each replica tells routers it takes one-way tasks (subjects.FUSER_HEARTBEATS);
    a router forgets a replica silent for 3 s (router.one_way.FUSER_TTL_S)."""

    def __post_init__(self) -> None:
        check(self, NOT_EMPTY, "nats_url host")
        check(self, PORT, "metrics_port")
        check(self, SHARE, "min_margin max_entropy min_vote_margin")
        check(self, FINITE_NON_NEGATIVE, "max_relative_spread max_spread")
        check(self, OPEN_SHARE, "conformal_coverage")
        check(self, POSITIVE, "default_budget_s heartbeat_s")


@dataclass(frozen=True)
class JetStreamConfig:
    replicas: int = 0
    """Copies of every stream and bucket; 0: 3 on a cluster of three or more, else 1."""
    ping_interval_s: int = 1
    """How often each service pings its NATS server. Two unanswered pings mark the server
    hung (frozen, partitioned) and the client moves to another node; nats-py's default of
    2 min would leave a service stalled on a hung node that long."""

    def __post_init__(self) -> None:
        check(self, REPLICAS, "replicas")
        check(self, AT_LEAST_ONE, "ping_interval_s")


@dataclass(frozen=True)
class SecurityConfig:
    """TLS, authentication and authorisation; everything off by default (loopback demo).

    Secrets are only ever named by file path here; their contents are read when needed and
    never logged.
    """

    tls_cert: str = ""
    """PEM certificate every gRPC server of this process presents; set with tls_key."""
    tls_key: str = ""
    tls_ca: str = ""
    """PEM CA bundle: servers verify client certificates with it (mtls), clients verify
    servers with it."""
    mtls: bool = False
    """Servers require a client certificate signed by tls_ca."""
    client_cert: str = ""
    client_key: str = ""
    api_keys_file: str = ""
    """Router: JSON {"<caller>": {"key_sha256": "...", "capabilities": ["classify/digits", ...]}};
    with it set, every call needs an `x-api-key` (or an mTLS identity listed as "mtls_cn")."""
    api_key_file: str = ""
    """Clients: file holding the API key to send."""
    nats_user: str = ""
    nats_password_file: str = ""
    nats_token_file: str = ""
    nats_ca: str = ""
    """PEM CA for a NATS server that requires TLS (with nats_cert/nats_key for mutual TLS)."""
    nats_cert: str = ""
    nats_key: str = ""


@dataclass(frozen=True)
class TracingConfig:
    otlp_endpoint: str = ""
    """gRPC OTLP collector, e.g. http://otel-collector:4317; empty turns tracing off."""


@dataclass(frozen=True)
class LivenessConfig:
    stall_s: float = 10.0
    """How long a service's event loop may go without running a tick before GET /livez
    answers 503 (and Kubernetes restarts the pod). Inference runs on executor threads, so a
    loop held this long is stuck, not busy."""

    def __post_init__(self) -> None:
        check(self, POSITIVE, "stall_s")


@dataclass(frozen=True)
class GroupConfig:
    """A co-hosted group (`chorus serve group`): its members' model services and a fuser in
    one process, each member still its own session, KServe v2 model, subjects and heartbeats;
    the members' own settings are CHORUS_MODEL_*'s, the fuser's CHORUS_FUSER_*'s."""

    name: str = ""
    """The group's name: tasks come on chorus.infer.group:<name>[.<replica>]."""
    models: str = ""
    """Its members, comma-separated, as they are named in the repository."""
    nats_url: str = DEFAULT_NATS_URL
    host: str = "127.0.0.1"
    grpc_port: int = 0
    """Where the group answers as one KServe v2 model (and each member as its own), as
    Triton serves an ensemble: chorus.group.ensemble. 0: any free port."""
    metrics_port: int = 0
    replica: str = ""
    """This group replica's name, shared by its members' heartbeats ("" makes one)."""
    default_budget_s: float = 10.0
    join_rows: int = 256
    """The most rows that concurrent KServe calls to the group's model, asked alike, join into
    one task while one runs (chorus.group.joining); 0: every call a task of its own."""
    inline_below_ms: float = 1.0
    """The members' bound for running an ONNX Runtime call on the event loop, higher than a
    model service's own: the loop spends more on each task (three members, the fuse) than a
    short call costs it, and a worker's handoff, its wait for the GIL and its colder caches
    cost more than that (a demo forest on varied digits: 0.12 ms on the loop, 0.3 on a
    worker). Measured in process at 16: 1,405-2,130 tasks/s at 1 ms or more, 1,203-1,688 at
    0.2 (bench/README.md). 0: always a worker thread."""

    def __post_init__(self) -> None:
        check(self, NOT_EMPTY, "nats_url host")
        check(self, PORT, "grpc_port metrics_port")
        check(self, POSITIVE, "default_budget_s")
        check(self, NON_NEGATIVE, "inline_below_ms join_rows")
        if self.name and not re.fullmatch(r"[A-Za-z0-9_-]+", self.name):
            raise ConfigError(
                f"name: expected letters, digits, '-' or '_' (one NATS subject token), "
                f"got {self.name!r}",
                "name",
            )

    @property
    def members(self) -> tuple[str, ...]:
        """The members named; a group must have a name and at least one (checked where one
        starts: the defaults describe no group)."""
        found = tuple(m.strip() for m in self.models.split(",") if m.strip())
        if not self.name or not found:
            raise ConfigError(
                f"a group needs a name and its members (got name {self.name!r}, "
                f"models {self.models!r})",
                "name" if not self.name else "models",
            )
        return found


SECTIONS: dict[str, type[Any]] = {
    "model": ModelServiceConfig,
    "group": GroupConfig,
    "router": RouterConfig,
    "fuser": FuserConfig,
    "jetstream": JetStreamConfig,
    "security": SecurityConfig,
    "tracing": TracingConfig,
    "liveness": LivenessConfig,
}
"""Each section's class: CHORUS_<SECTION>_<FIELD> and CHORUS_<FIELD> set its fields."""
