"""All configuration, typed, in one place. Every field has a default that runs on a laptop.

Each field can be set from the environment as CHORUS_<SECTION>_<FIELD> (for example
CHORUS_ROUTER_GRPC_PORT=50051) or, for every section at once, CHORUS_<FIELD> (for example
CHORUS_NATS_URL); command-line flags override the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
MiB = 1024 * 1024

T = TypeVar("T")


@dataclass(frozen=True)
class ModelServiceConfig:
    model: str = "logreg"
    repository: Path = Path("models")
    nats_url: str = DEFAULT_NATS_URL
    host: str = "127.0.0.1"
    grpc_port: int = 0
    metrics_port: int = 0
    replica: str = ""
    heartbeat_s: float = 1.0
    device: str = "auto"
    intra_op_threads: int = 0
    """ONNX Runtime threads per session (0: the manifest's `runtime`, else 1)."""
    instances: int = 0
    """Sessions serving at once, each on its own thread (0: the manifest's, else 1)."""
    max_message_bytes: int = 4 * MiB
    max_concurrent_streams: int = 256
    default_budget_s: float = 10.0
    queue_limit: int = 256
    """Requests that may wait per priority class before RESOURCE_EXHAUSTED."""
    max_batch: int = 0
    """Rows one ONNX Runtime call may take from concurrent requests (1: no batching; 0: the
    manifest's `runtime.max_batch`, else 1)."""
    max_batch_delay_ms: float = 0.0
    """How long the first request of a batch waits for company (0: the manifest's, else 2)."""
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
        if self.delay_ms < 0 or self.noise < 0:
            raise ValueError("delay_ms and noise must be >= 0")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device: expected auto, cpu or cuda, got {self.device!r}")
        for name in ("instances", "intra_op_threads", "max_batch"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected >= 0, got {getattr(self, name)}")
        if self.max_batch_delay_ms < 0 or self.reload_poll_s < 0:
            raise ValueError("max_batch_delay_ms and reload_poll_s must be >= 0")
        if self.keep_versions < 1:
            raise ValueError(f"keep_versions: expected >= 1, got {self.keep_versions}")
        if self.heartbeat_s <= 0:
            raise ValueError(f"heartbeat_s must be > 0, got {self.heartbeat_s}")


@dataclass(frozen=True)
class RouterConfig:
    nats_url: str = DEFAULT_NATS_URL
    host: str = "127.0.0.1"
    grpc_port: int = 50051
    metrics_port: int = 0
    default_budget_s: float = 5.0
    default_policy: str = "soft_vote"
    default_conflict_policy: str = "none"
    max_message_bytes: int = 4 * MiB
    max_concurrent_streams: int = 256
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
        if self.default_budget_s <= 0:
            raise ValueError(f"default_budget_s must be > 0, got {self.default_budget_s}")
        if self.max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {self.max_rows}")


@dataclass(frozen=True)
class FuserConfig:
    nats_url: str = DEFAULT_NATS_URL
    host: str = "127.0.0.1"
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


@dataclass(frozen=True)
class JetStreamConfig:
    replicas: int = 0
    """Copies of every stream and bucket; 0: 3 on a cluster of three or more, else 1."""
    ping_interval_s: int = 1
    """How often each service pings its NATS server. Two unanswered pings mark the server
    hung (frozen, partitioned) and the client moves to another node; nats-py's default of
    2 min would leave a service stalled on a hung node that long."""


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


def from_env(cls: type[T], section: str, env: dict[str, str] | None = None, **overrides: Any) -> T:
    """Build `cls` from defaults, then CHORUS_<SECTION>_<FIELD> variables, then `overrides`.

    `overrides` whose value is None are ignored, so unset CLI flags fall through.
    """
    source = os.environ if env is None else env
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        for key in (f"CHORUS_{section}_{f.name}".upper(), f"CHORUS_{f.name}".upper()):
            if key in source:
                values[f.name] = _parse(hints[f.name], source[key], key)
                break
    values.update({k: v for k, v in overrides.items() if v is not None})
    return replace(cls(), **values)  # type: ignore[type-var]


def _parse(kind: Any, raw: str, key: str) -> Any:
    try:
        if kind is bool:
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if kind in (int, float, str, Path):
            return kind(raw)
    except ValueError:
        raise ValueError(f"{key}: expected {kind.__name__}, got {raw!r}") from None
    raise TypeError(f"{key}: unsupported type {kind}")
