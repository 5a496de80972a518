"""What each member of a co-hosted group runs with: the model service's settings, with the
member's own name, the group's replica and the group's batching and inline bounds. Apart from
the service so that it can be read (and tested) without loading a model service."""

from __future__ import annotations

from dataclasses import replace

from chorus.core.config import GroupConfig, ModelServiceConfig

GROUP_MAX_BATCH = 64
GROUP_BATCH_DELAY_MS = 0.05
"""Members in a group batch the tasks that reach them in the same turn of the event loop (a
task's members all start together, so the tasks in flight line up), waiting next to nothing
for more: unless the member's own settings say otherwise."""


def member_config(
    group: GroupConfig, model: ModelServiceConfig, name: str, replica: str
) -> ModelServiceConfig:
    """`model`: the settings every member starts from (its repository, batching, device);
    `replica`: the group replica's name, which the member's heartbeats carry. A member serves
    no ports of its own: the group's gRPC port serves its KServe model and the group's one
    metrics endpoint its metrics."""
    return replace(
        model,
        model=name,
        replica=f"{replica}-{name}",
        group=group.name,
        group_replica=replica,
        nats_url=group.nats_url,
        own_ports=False,
        max_batch=model.max_batch or GROUP_MAX_BATCH,
        max_batch_delay_ms=model.max_batch_delay_ms or GROUP_BATCH_DELAY_MS,
        inline_below_ms=group.inline_below_ms,
    )
