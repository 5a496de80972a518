"""FuseCall -> FuseReply: decode the members, run the chosen strategy, explain every row."""

from __future__ import annotations

from chorus.codec import from_tensor, to_tensor
from chorus.errors import InvalidArgument
from chorus.pb import task_pb2, wire_pb2
from fuser import strategies
from fuser.strategies import Fused, MemberScores

DEFAULT_POLICY = "soft_vote"


def decode_members(call: wire_pb2.FuseCall) -> list[MemberScores]:
    members = []
    seen: set[str] = set()
    for m in call.members:
        if m.model in seen:
            raise InvalidArgument(f"members: model {m.model!r} appears twice")
        seen.add(m.model)
        probs = from_tensor(m.probabilities, field=f"members[{m.model!r}].probabilities")
        if probs.ndim != 2:
            raise InvalidArgument(
                f"members[{m.model!r}].probabilities: expected [rows, classes], "
                f"got shape {list(probs.shape)}"
            )
        members.append(MemberScores(m.model, probs, m.weight, m.version))
    return members


def fuse(call: wire_pb2.FuseCall) -> tuple[wire_pb2.FuseReply, Fused]:
    strategy = strategies.get(call.policy or DEFAULT_POLICY)
    members = decode_members(call)
    fused = strategy.fuse(members)
    if call.labels and len(call.labels) != fused.probabilities.shape[1]:
        raise InvalidArgument(
            f"labels: {len(call.labels)} given for {fused.probabilities.shape[1]} "
            "probability columns"
        )
    votes = [m.votes for m in members]
    rows = [
        task_pb2.RowDecision(
            label=int(fused.labels[r]),
            confidence=float(fused.confidence[r]),
            agreement=float(fused.agreement[r]),
            votes={m.model: int(v[r]) for m, v in zip(members, votes, strict=True)},
            rule=fused.rules[r],
        )
        for r in range(len(fused.labels))
    ]
    reply = wire_pb2.FuseReply(
        policy=strategy.name,
        probabilities=to_tensor("probabilities", fused.probabilities),
        rows=rows,
    )
    return reply, fused
