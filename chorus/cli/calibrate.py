"""`chorus models calibrate`: fit one member's temperature on held-out rows and store it in
that version's manifest, where its model service announces it and the fuser applies it.

The rows are run through the version's own ONNX file here, not through a mesh, so the fit
sees exactly the scores that member serves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from chorus.core.calibration import (
    brier,
    expected_calibration_error,
    fit_temperature,
    nll,
    temper,
)
from chorus.fuser.kinds import as_scores
from chorus.services import repository
from chorus.services.manifest import MANIFEST, ManifestError


@dataclass(frozen=True)
class Calibration:
    model: str
    version: str
    rows: int
    temperature: float
    before: dict[str, float]
    after: dict[str, float]
    manifest: Path


def measures(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {
        "nll": nll(probabilities, labels),
        "ece": expected_calibration_error(probabilities, labels),
        "brier": brier(probabilities, labels),
        "accuracy": float(np.mean(probabilities.argmax(axis=1) == labels)),
    }


def calibrate(
    root: Path,
    model: str,
    feeds: dict[str, np.ndarray],
    labels: np.ndarray,
    version: str | None = None,
    write: bool = True,
) -> Calibration:
    mv = repository.load(root, model, version)
    m = mv.manifest
    if m.output_kind == "regression":
        raise ManifestError(f"{mv.path / MANIFEST}: output_kind: a regression has no "
                            "probabilities to calibrate")  # fmt: skip
    session = ort.InferenceSession(str(mv.onnx_path), providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    missing = sorted(wanted - set(feeds))
    if missing:
        raise ValueError(f"--input: {model} takes {sorted(wanted)}; missing {missing}")
    (raw,) = session.run([m.scores_output], {k: v for k, v in feeds.items() if k in wanted})
    probs = as_scores(raw, m.output_kind, 1.0, field=f"{model}.{m.scores_output}")
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(labels) != len(probs):
        raise ValueError(f"--labels: {len(labels)} rows, but the inputs have {len(probs)}")
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(f"--labels: expected class indices in [0, {probs.shape[1] - 1}]")
    t = fit_temperature(probs, labels)
    result = Calibration(
        model, m.version, len(labels), t, measures(probs, labels),
        measures(temper(probs, t), labels), mv.path / MANIFEST,
    )  # fmt: skip
    if write:
        _store(mv.path, t)
    return result


def _store(folder: Path, temperature: float) -> None:
    """Only the temperature changes; the version is read back (checked against its graph)
    and the old manifest put back if that fails."""
    source = folder / MANIFEST
    before = source.read_text()
    raw = json.loads(before)
    raw["temperature"] = round(temperature, 6)
    tmp = source.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(raw, indent=2) + "\n")
    tmp.replace(source)
    try:
        repository.read_version(folder)
    except ManifestError:
        source.write_text(before)
        raise
