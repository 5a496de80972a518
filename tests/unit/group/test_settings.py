"""What each member of a co-hosted group runs with: its own name, the group's replica, and the
group's batching and inline bounds over the model service's defaults."""

from __future__ import annotations

from pathlib import Path

from chorus.core.config import GroupConfig, ModelServiceConfig
from chorus.group.settings import GROUP_MAX_BATCH, member_config


def test_members_take_the_groups_bounds_and_their_own_names(tmp_path: Path) -> None:
    group = GroupConfig(name="digits", models="logreg,mlp", inline_below_ms=0.7)
    model = ModelServiceConfig(repository=tmp_path, grpc_port=50061, metrics_port=9100)
    assert model.inline_below_ms != 0.7
    for name in group.members:
        c = member_config(group, model, name, "r1")
        assert (c.model, c.group, c.group_replica, c.replica) == (
            name,
            "digits",
            "r1",
            f"r1-{name}",
        )
        assert not c.own_ports  # the group's ports serve it
        assert c.inline_below_ms == 0.7
        assert c.max_batch == GROUP_MAX_BATCH
        assert c.repository == tmp_path


def test_a_members_own_batching_wins_and_a_group_may_keep_calls_off_the_loop() -> None:
    group = GroupConfig(name="digits", models="logreg", inline_below_ms=0)
    c = member_config(group, ModelServiceConfig(max_batch=4), "logreg", "r1")
    assert c.inline_below_ms == 0  # never on the loop
    assert c.max_batch == 4
