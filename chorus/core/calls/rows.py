"""A reply to a joined call, cut back into one reply per task by rows: the router does it
for two-hop joined calls, the fuser for one-way ones."""

from __future__ import annotations

from chorus.core.errors import DataLoss
from chorus.pb import tensor_pb2, wire_pb2


def split_rows(reply: wire_pb2.InferReply, rows: list[int]) -> list[wire_pb2.InferReply]:
    """The joined reply, cut back into one reply per call by rows."""
    total = sum(rows)
    parts = [
        wire_pb2.InferReply(
            model=reply.model,
            version=reply.version,
            replica=reply.replica,
            compute_ms=reply.compute_ms,
            input_sha256=reply.input_sha256,
        )
        for _ in rows
    ]
    for t in reply.outputs:
        if not t.shape or int(t.shape[0]) != total or len(t.raw) % max(total, 1):
            raise DataLoss(
                f"model {reply.model}: output {t.name!r} has shape {list(t.shape)}, "
                f"not the {total} rows it was sent"
            )
        row_bytes = len(t.raw) // total
        start = 0
        for part, n in zip(parts, rows, strict=True):
            part.outputs.append(
                tensor_pb2.Tensor(
                    name=t.name,
                    datatype=t.datatype,
                    shape=[n, *t.shape[1:]],
                    raw=t.raw[start * row_bytes : (start + n) * row_bytes],
                )
            )
            start += n
    return parts
