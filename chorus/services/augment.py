"""Test-time augmentation: the variants of an input a member looks at when asked again.

A member knows what its input means, so the augmentation is named in its manifest
(`augment`), not chosen by the caller. A conceding member's second opinion is the mean of its
scores over these variants.
"""

from __future__ import annotations

import numpy as np

from chorus.core.errors import FailedPrecondition
from chorus.services.runtime import OnnxModel, Prediction


def variants(spec: str, x: np.ndarray) -> list[np.ndarray]:
    """The input itself first, then its augmentations, each shaped like `x`."""
    kind, _, arg = spec.partition(":")
    if kind == "shift2d":
        height, width = (int(v) for v in arg.split("x"))
        return [x, *_shifts(x, height, width)]
    raise FailedPrecondition(f"augment: this model declares no test-time augmentation ({spec!r})")


def _shifts(x: np.ndarray, height: int, width: int) -> list[np.ndarray]:
    images = x.reshape(-1, height, width)
    out = []
    for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        shifted = np.zeros_like(images)
        src_y = slice(max(0, -dy), height - max(0, dy))
        dst_y = slice(max(0, dy), height - max(0, -dy))
        src_x = slice(max(0, -dx), width - max(0, dx))
        dst_x = slice(max(0, dx), width - max(0, -dx))
        shifted[:, dst_y, dst_x] = images[:, src_y, src_x]
        out.append(shifted.reshape(x.shape))
    return out


async def infer_augmented(model: OnnxModel, inputs: dict[str, np.ndarray]) -> Prediction:
    """One ONNX call over every variant; scores averaged, labels re-derived from them."""
    manifest = model.manifest
    if not manifest.augment or len(inputs) != 1:
        raise FailedPrecondition(
            f"augment: model {manifest.name!r} has no test-time augmentation for these inputs"
        )
    ((name, x),) = inputs.items()
    views = variants(manifest.augment, x)
    prediction = await model.infer({name: np.concatenate(views)})
    rows, k = x.shape[0], len(views)
    scores = prediction.outputs[manifest.scores_output]
    mean = scores.reshape(k, rows, *scores.shape[1:]).mean(axis=0).astype(scores.dtype)
    outputs: dict[str, np.ndarray] = {}
    for spec in manifest.outputs:
        if spec.name == manifest.scores_output:
            outputs[spec.name] = mean
        elif spec.datatype == "INT64" and len(spec.shape) == 1:
            outputs[spec.name] = np.argmax(mean, axis=1).astype(np.int64)
        else:
            outputs[spec.name] = prediction.outputs[spec.name][:rows]
    return Prediction(outputs, prediction.compute_ms)
