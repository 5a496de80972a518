"""A multi-task model's heads: one capability's answer cut out of the shared scores output.

A multi-task model runs its trunk once and writes every head's scores side by side into its
`scores_output`; its manifest's `heads` say which columns belong to which capability. Here
those columns become what a single-task model would have answered for that capability:
"label" (int64 [rows], an index into the head's labels) and "probabilities" (float32
[rows, len(labels)]). A model without heads passes through unchanged.

A head's kind says what its columns hold (manifest.HEAD_KINDS): logits take a softmax after
the manifest's temperature, probabilities are renormalised over the head's columns, a binary
column p (or a logit, through a sigmoid) becomes [1 - p, p]. The temperature is applied here,
once, for every kind, so the probabilities a head answers are the model's calibrated ones;
the router hands them to the fuser as probabilities at temperature 1 (Heartbeat.scores_for).

On NATS a call names the head it wants in the `Chorus-Capability` header; "*" asks for every
head at once, as "<capability>/label" and "<capability>/probabilities".
"""

from __future__ import annotations

import numpy as np

from chorus.core.calibration import temper
from chorus.core.errors import FailedPrecondition, InvalidArgument
from chorus.core.heartbeat import HEAD_LABEL, HEAD_PROBABILITIES
from chorus.services.repository import Head, Manifest

ALL = "*"
"""The Chorus-Capability header value that asks for every head."""


def apply_head(
    manifest: Manifest, capability: str, outputs: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """{"label", "probabilities"} of `capability`'s head; `outputs` as is without heads."""
    if not manifest.heads:
        return dict(outputs)
    head = _head(manifest, capability)
    scores = _scores(manifest, outputs)
    if max(head.columns) >= scores.shape[1]:
        raise FailedPrecondition(
            f"model {manifest.name!r}: head {capability!r} reads columns {list(head.columns)} "
            f"of {manifest.scores_output!r}, which has {scores.shape[1]}"
        )
    probabilities = head_probabilities(head, scores, manifest.temperature)
    return {
        HEAD_LABEL: np.argmax(probabilities, axis=1).astype(np.int64),
        HEAD_PROBABILITIES: probabilities,
    }


def head_probabilities(head: Head, scores: np.ndarray, temperature: float) -> np.ndarray:
    """float32 [rows, len(head.labels)]: the head's columns of `scores` as probabilities, by
    what its kind says they hold, tempered by `temperature` (> 0) once."""
    if not temperature > 0:
        raise FailedPrecondition(f"temperature: expected > 0, got {temperature}")
    picked = np.asarray(scores, dtype=np.float64)[:, list(head.columns)]
    if head.kind == "logits":
        probabilities = _softmax(picked / temperature)
    elif head.kind == "binary_logit":
        # sigmoid(z / T) as a softmax over [0, z / T]: stable for any z.
        z = picked[:, 0] / temperature
        probabilities = _softmax(np.stack([np.zeros_like(z), z], axis=1))
    elif head.kind == "binary":
        p = np.clip(picked[:, 0], 0.0, 1.0)
        probabilities = temper(np.stack([1.0 - p, p], axis=1), temperature)
    elif head.kind == "probabilities":
        picked = np.clip(picked, 0.0, None)
        total = picked.sum(axis=1, keepdims=True)
        # A row with no mass on this head's columns says nothing: uniform, not NaN.
        uniform = np.full_like(picked, 1.0 / picked.shape[1])
        probabilities = temper(np.divide(picked, total, out=uniform, where=total > 0), temperature)
    else:  # Head refuses other kinds; this keeps a new kind from passing through unread.
        raise FailedPrecondition(f"head kind {head.kind!r}: no transform for it")
    return probabilities.astype(np.float32)


def _softmax(z: np.ndarray) -> np.ndarray:
    if z.shape[0] == 0:
        return z
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def all_heads(
    manifest: Manifest, outputs: dict[str, np.ndarray]
) -> dict[str, dict[str, np.ndarray]]:
    """Every head's {"label", "probabilities"}, by capability (empty without heads)."""
    return {capability: apply_head(manifest, capability, outputs) for capability in manifest.heads}


def check_capability(manifest: Manifest, capability: str | None) -> None:
    """Raise InvalidArgument before inference when the header names a head the model lacks."""
    if capability is not None and capability != ALL and manifest.heads:
        _head(manifest, capability)


def reply_outputs(
    manifest: Manifest, capability: str | None, outputs: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """What a NATS reply carries given the Chorus-Capability header (None: header absent).

    Without heads, or without the header, the model's own outputs; with a capability, that
    head's "label" and "probabilities"; with "*", every head's, as "<capability>/<name>".
    """
    if capability is None or not manifest.heads:
        return outputs
    if capability == ALL:
        return {
            f"{cap}/{name}": array
            for cap, head_outputs in all_heads(manifest, outputs).items()
            for name, array in head_outputs.items()
        }
    return apply_head(manifest, capability, outputs)


def primary_labels(manifest: Manifest) -> tuple[str, ...]:
    """The labels a heartbeat advertises: those of the head of the first capability that has
    one (classify/digits for the multitask model), else the manifest's own."""
    for capability in manifest.capabilities:
        if capability in manifest.heads:
            return manifest.heads[capability].labels
    return manifest.labels


def heartbeat_heads(manifest: Manifest) -> dict[str, dict[str, list[str]]]:
    """capability -> {"labels": [...]}, what the router needs to read each head's answer."""
    return {cap: {"labels": list(head.labels)} for cap, head in manifest.heads.items()}


def _head(manifest: Manifest, capability: str) -> Head:
    head = manifest.heads.get(capability)
    if head is None:
        raise InvalidArgument(
            f"capability {capability!r}: model {manifest.name!r} has no head for it "
            f"(it has: {', '.join(manifest.heads)}; or {ALL!r} for all of them)"
        )
    return head


def _scores(manifest: Manifest, outputs: dict[str, np.ndarray]) -> np.ndarray:
    scores = outputs.get(manifest.scores_output)
    if scores is None:
        raise FailedPrecondition(
            f"model {manifest.name!r}: no {manifest.scores_output!r} output to cut heads from "
            f"(got {sorted(outputs)})"
        )
    scores = np.asarray(scores, dtype=np.float32)
    if scores.ndim != 2:
        raise FailedPrecondition(
            f"model {manifest.name!r}: {manifest.scores_output!r} must be [rows, columns] to "
            f"cut heads from, got shape {list(scores.shape)}"
        )
    return scores
