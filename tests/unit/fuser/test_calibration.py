"""Temperature scaling: the fit finds a known temperature, calibration error falls, the top
class never moves, and the fuser applies each member's temperature and names it."""

from __future__ import annotations

import numpy as np

from chorus.core.calibration import (
    brier,
    expected_calibration_error,
    fit_temperature,
    nll,
    temper,
)
from chorus.core.codec import to_tensor
from chorus.core.context import CallContext, Priority
from chorus.fuser import kinds
from chorus.fuser.fusion import Tools, fuse
from chorus.pb import wire_pb2

CTX = CallContext.start("t-1", Priority.NORMAL, 5.0)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _overconfident(rows: int, true_t: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A member reporting softmax(z) while the truth is drawn from softmax(z / true_t)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 3.0, size=(rows, 4))
    truth = _softmax(z / true_t)
    labels = np.array([rng.choice(4, p=p) for p in truth])
    return _softmax(z), labels


def test_the_fit_recovers_a_known_temperature_and_halves_the_error() -> None:
    probs, labels = _overconfident(6000, true_t=2.0)
    t = fit_temperature(probs, labels)
    assert 1.8 < t < 2.2
    fixed = temper(probs, t)
    assert expected_calibration_error(fixed, labels) < expected_calibration_error(probs, labels) / 2
    assert nll(fixed, labels) < nll(probs, labels)
    assert brier(fixed, labels) < brier(probs, labels)
    np.testing.assert_array_equal(fixed.argmax(axis=1), probs.argmax(axis=1))


def test_measures_on_known_cases() -> None:
    onehot = np.eye(3)[[0, 1, 2, 0]]
    labels = np.array([0, 1, 2, 0])
    assert brier(onehot, labels) == 0.0 and expected_calibration_error(onehot, labels) == 0.0
    uniform = np.full((4, 2), 0.5)
    assert np.isclose(expected_calibration_error(uniform, np.array([0, 1, 0, 0])), 0.25)
    np.testing.assert_array_equal(temper(onehot, 1.0), onehot)
    np.testing.assert_allclose(temper(np.array([[0.8, 0.2]]), 2.0), [[2 / 3, 1 / 3]])


def test_every_classifier_kind_takes_a_temperature() -> None:
    p = np.array([[0.9, 0.1], [0.3, 0.7]])
    np.testing.assert_allclose(kinds.as_scores(p, "probabilities", 2.0, field="f"), temper(p, 2.0))
    binary = kinds.as_scores(np.array([0.1, 0.7]), "binary", 2.0, field="f")
    np.testing.assert_allclose(binary, temper(p, 2.0))
    logits = np.log(p)
    np.testing.assert_allclose(kinds.as_scores(logits, "logits", 2.0, field="f"), temper(p, 2.0))


async def test_the_fuser_applies_and_names_each_members_temperature() -> None:
    bold = np.array([[0.9, 0.1], [0.4, 0.6]], dtype=np.float32)
    calm = np.array([[0.3, 0.7], [0.45, 0.55]], dtype=np.float32)
    call = wire_pb2.FuseCall(capability="toy", task_id="t-1", labels=["a", "b"])
    call.members.add(model="bold", temperature=4.0, probabilities=to_tensor("p", bold))
    call.members.add(model="calm", probabilities=to_tensor("p", calm))
    reply, _ = await fuse(call, CTX, Tools())
    fused = np.frombuffer(reply.probabilities.raw, dtype=np.float32).reshape(2, 2)
    np.testing.assert_allclose(fused, (temper(bold, 4.0) + calm) / 2, rtol=1e-5)
    assert reply.rows[0].label == 1  # softened, the bold member no longer outvotes the calm one
    assert dict(reply.temperatures) == {"bold": 4.0}
