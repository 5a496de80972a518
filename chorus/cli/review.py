"""`chorus review`: people answer the rows the fuser escalated.

Cases wait in the JetStream stream CHORUS_REVIEW whether or not a reviewer is connected; a
reviewer takes them through one shared durable consumer, so two reviewers never get the same
case at once, and a case taken but not answered (the reviewer quit) comes back after
`ack_wait_s`. An answer goes to the router's Review call, which completes the task and feeds
the truth to the members' weights; only then is the case acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig

from chorus.client import AsyncTaskClient
from chorus.core.codec import from_tensor
from chorus.core.natsclient import connect_once
from chorus.core.subjects import kv_key
from chorus.pb import wire_pb2

STREAM = "CHORUS_REVIEW"
CONSUMER = "chorus-reviewers"


@dataclass(frozen=True)
class ReviewOptions:
    nats_url: str
    router: str
    reviewer: str
    capability: str = ""
    answers: tuple[str, ...] = ()
    """ROW=LABEL pairs for the next case, instead of asking on the terminal."""
    list_only: bool = False
    wait_s: float = 2.0
    ack_wait_s: float = 60.0
    max_cases: int = 0
    as_json: bool = False
    """One JSON document at the end (the cases seen, what was answered) instead of text."""


def describe(case: wire_pb2.ReviewCase) -> str:
    lines = [f"task {case.task_id}  ({case.capability}), rows to review: {list(case.review_rows)}"]
    scores = {m.model: from_tensor(m.probabilities) for m in case.members}
    for r in case.review_rows:
        row = case.rows[r]
        votes = ", ".join(
            f"{name} {case.labels[int(np.argmax(p[r]))]} ({float(np.max(p[r])):.2f})"
            for name, p in scores.items()
        )
        lines.append(f"  row {r}: the mesh says {case.labels[row.label]} ({row.confidence:.2f}); "
                     f"members: {votes}")  # fmt: skip
    return "\n".join(lines)


def case_document(case: wire_pb2.ReviewCase) -> dict[str, Any]:
    """A case as JSON: each row under review with the mesh's answer and each member's."""
    scores = {m.model: from_tensor(m.probabilities) for m in case.members}
    rows = []
    for r in case.review_rows:
        row = case.rows[r]
        rows.append({
            "row": int(r),
            "label": case.labels[row.label],
            "confidence": row.confidence,
            "members": {name: {"label": case.labels[int(np.argmax(p[r]))],
                               "confidence": float(np.max(p[r]))} for name, p in scores.items()},
        })  # fmt: skip
    return {"task_id": case.task_id, "capability": case.capability,
            "labels": list(case.labels), "rows": rows}  # fmt: skip


def parse_answers(case: wire_pb2.ReviewCase, answers: tuple[str, ...]) -> dict[int, int]:
    out = {}
    for a in answers:
        row, sep, label = a.partition("=")
        if not sep or not row.isdigit():
            raise ValueError(f"--answer: expected ROW=LABEL, got {a!r}")
        if label not in case.labels:
            raise ValueError(f"--answer: {label!r} is not one of the labels {list(case.labels)}")
        if int(row) not in case.review_rows:
            raise ValueError(f"--answer: row {row} is not under review ({list(case.review_rows)})")
        out[int(row)] = list(case.labels).index(label)
    return out


def ask_terminal(case: wire_pb2.ReviewCase) -> dict[int, int]:
    out = {}
    for r in case.review_rows:
        while True:
            given = input(f"row {r}: your answer ({'/'.join(case.labels)}, empty to skip): ")
            if not given:
                break
            if given in case.labels:
                out[int(r)] = list(case.labels).index(given)
                break
            print(f"  not a label: {given!r}")
    return out


async def review(
    opts: ReviewOptions,
    ask: Callable[[wire_pb2.ReviewCase], dict[int, int]],
    seen_cases: list[dict[str, Any]] | None = None,
) -> int:
    """Work through waiting cases; returns how many were answered. Each case shown is
    printed, or with `opts.as_json` added to `seen_cases` (with the rows answered)."""
    nc = await connect_once(opts.nats_url)
    answered = 0
    try:
        js = nc.jetstream()
        subject = "chorus.review." + (opts.capability or ">")
        durable = CONSUMER + (
            "-" + kv_key(opts.capability).replace("/", "_") if opts.capability else ""
        )
        sub = await js.pull_subscribe(
            subject, durable=durable, stream=STREAM,
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=opts.ack_wait_s),
        )  # fmt: skip
        async with AsyncTaskClient(opts.router) as client:
            seen: set[int] = set()
            while not opts.max_cases or answered < opts.max_cases:
                try:
                    (msg,) = await sub.fetch(1, timeout=opts.wait_s)
                except NatsTimeout:
                    break
                sequence = msg.metadata.sequence.stream
                if sequence in seen:  # every waiting case has been shown once
                    await msg.nak()
                    break
                seen.add(sequence)
                case = wire_pb2.ReviewCase.FromString(msg.data)
                shown = case_document(case)
                if opts.as_json and seen_cases is not None:
                    seen_cases.append(shown)
                else:
                    print(describe(case), flush=True)
                if opts.list_only:
                    await msg.nak()
                    continue
                answers = parse_answers(case, opts.answers) if opts.answers else ask(case)
                if not answers:
                    await msg.nak()
                    continue
                rows = sorted(answers)
                result = await client.review(
                    case.task_id, rows, [answers[r] for r in rows], capability=case.capability,
                    reviewer=opts.reviewer, decisions=list(case.rows), timeout_s=10,
                )  # fmt: skip
                await msg.ack()
                answered += 1
                shown["answered"] = {str(r): case.labels[answers[r]] for r in rows}
                if not opts.as_json:
                    print(f"  answered {len(rows)} row(s); task {result.task_id} updated",
                          flush=True)  # fmt: skip
                if opts.answers:
                    break
        await sub.unsubscribe()
    finally:
        await nc.close()
    return answered


def main(opts: ReviewOptions) -> int:
    cases: list[dict[str, Any]] = []
    try:
        done = asyncio.run(review(opts, ask_terminal, cases))
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    if opts.as_json:
        print(json.dumps({"cases": cases, "answered": done}, indent=2))
    else:
        print(f"{done} case(s) answered")
    return 0
