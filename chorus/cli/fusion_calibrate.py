"""`chorus fusion calibrate`: held-out rows with their truth through the mesh, stored as the
conformal policy's calibration for one capability and fusion strategy.

The rows go through the router like any task, so the scores are those of the fused answers
the mesh really gives (members' temperatures and weights included).
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from chorus.cli.submit_inputs import InputError, read_input, typed_inputs
from chorus.client import TaskClient
from chorus.core.natsclient import NatsUnreachable, connect_once
from chorus.fuser.conformal import ConformalStore, label_sets, nonconformity, threshold

BATCH_ROWS = 512


@dataclass(frozen=True)
class Options:
    router: str
    nats_url: str
    capability: str
    inputs: list[str]
    truth: Path
    policy: str = ""
    coverage: float = 0.9
    extend: bool = False
    as_json: bool = False


def run(opts: Options) -> int:
    try:
        given = [read_input(arg) for arg in opts.inputs]
        _, _, truth = read_input(f"truth={opts.truth}")
        with TaskClient(opts.router) as client:
            arrays = typed_inputs(client, opts.capability, given)
            rows = len(next(iter(arrays.values())))
            if len(truth) != rows:
                raise InputError(f"--truth: {len(truth)} rows, but the inputs have {rows}")
            fused, strategy, regression = [], opts.policy, False
            for start in range(0, rows, BATCH_ROWS):
                part = {k: v[start : start + BATCH_ROWS] for k, v in arrays.items()}
                result = client.submit(opts.capability, part, policy=opts.policy)
                regression = "value" in result.outputs
                fused.append(result.value if regression else result.probabilities)
                strategy = result.response.explanation.policy
    except InputError as err:
        print(f"chorus fusion calibrate: {err}", file=sys.stderr)
        return 2
    except grpc.RpcError as err:
        print(f"chorus fusion calibrate: {err.code().name}: {err.details()}", file=sys.stderr)
        return 1
    values = np.concatenate(fused)
    scores = nonconformity(values, truth if regression else truth.reshape(-1), regression)
    try:
        kept = asyncio.run(_store(opts, strategy, scores))
    except NatsUnreachable as err:
        print(f"chorus fusion calibrate: cannot reach {err}", file=sys.stderr)
        return 1
    q = threshold(scores, opts.coverage)
    if opts.as_json:
        doc = {"capability": opts.capability, "policy": strategy, "stored_rows": kept,
               "new_rows": len(scores), "coverage": opts.coverage, "threshold": q}  # fmt: skip
        if not regression:
            counts = np.array([len(s) for s in label_sets(values, q)])
            doc |= {"labels_per_set": float(np.mean(counts)),
                    "conflicted_share": float(np.mean(counts != 1))}  # fmt: skip
        print(json.dumps(doc, indent=2))
        return 0
    print(f"{opts.capability} fused by {strategy}: {kept} calibration rows stored "
          f"({len(scores)} new)")  # fmt: skip
    if regression:
        print(f"at {opts.coverage:.0%} coverage: intervals are the fused value +- {q:.4g}")
    else:
        sizes = [len(s) for s in label_sets(values, q)]
        print(f"at {opts.coverage:.0%} coverage: threshold {q:.4f}; on these rows "
              f"{np.mean(sizes):.2f} labels per set, {np.mean(np.array(sizes) != 1):.1%} "
              "of rows conflicted")  # fmt: skip
    return 0


async def _store(opts: Options, strategy: str, scores: np.ndarray) -> int:
    nc = await connect_once(opts.nats_url)
    try:
        store = ConformalStore(nc.jetstream())
        await store.start(watch=False)
        return await store.put(opts.capability, strategy, scores, extend=opts.extend)
    finally:
        await nc.close()
