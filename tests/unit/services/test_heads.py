"""A multi-task model's heads honour what their columns hold: logits through a softmax after
the temperature, probabilities renormalised, binary columns as [1 - p, p]; the manifest names
the kinds for that (the old "softmax" still read, with a warning), and the router hands a
head's answer to the fuser as probabilities that nothing tempers again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.special import expit

from chorus.core.calibration import temper
from chorus.core.errors import FailedPrecondition
from chorus.core.heartbeat import Heartbeat, ScoresSource
from chorus.core.spec import TensorSpec
from chorus.fuser.kinds import as_scores
from chorus.services import repository
from chorus.services.heads import apply_head, head_probabilities
from chorus.services.manifest import HEAD_KINDS, Head, Manifest, ManifestError
from chorus.services.manifest_keys import KEYS
from tests.support.onnx_graphs import linear

# Three heads side by side in one logits output: colour (3 columns), size (2), a flag (1).
LOGITS = np.array(
    [
        [-1.0, -2.0, -3.0, 0.5, -0.5, 2.0],
        [4.0, 4.0, 4.0, 10.0, -10.0, -3.0],
        [0.0, 7.5, -2.25, 0.0, 0.0, 0.0],
        [800.0, -800.0, 0.0, 1e3, -1e3, -1e3],  # far past exp's range: no overflow, no NaN
    ],
    dtype=np.float32,
)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def _manifest(
    heads: dict[str, Head], *, kind: str = "logits", temperature: float = 1.0
) -> Manifest:
    return Manifest(
        name="net",
        version="1",
        capabilities=tuple(heads),
        inputs=(TensorSpec("x", "FP32", (-1, 4)),),
        outputs=(TensorSpec("logits", "FP32", (-1, 6)),),
        labels=(),
        scores_output="logits",
        heads=heads,
        output_kind=kind,
        temperature=temperature,
    )


HEADS = {
    "colour": Head((0, 1, 2), ("red", "green", "blue"), "logits"),
    "size": Head((3, 4), ("small", "large"), "logits"),
    "flag": Head((5,), ("no", "yes"), "binary_logit"),
}


# ---------------------------------------------------------------- the transform


def test_a_logits_head_takes_a_softmax_over_its_own_columns() -> None:
    m = _manifest(HEADS)
    colour = apply_head(m, "colour", {"logits": LOGITS})
    p = colour["probabilities"]
    assert p.dtype == np.float32 and p.shape == (4, 3)
    np.testing.assert_allclose(p, _softmax(LOGITS[:, :3].astype(np.float64)), atol=1e-7)
    # The example: [-1, -2, -3] is a confident red, not a uniform answer.
    np.testing.assert_allclose(p[0], [0.66524096, 0.24472847, 0.09003057], atol=1e-7)
    np.testing.assert_allclose(p[1], [1 / 3] * 3, atol=1e-7)  # equal logits: uniform
    np.testing.assert_array_equal(colour["label"], [0, 0, 1, 0])
    size = apply_head(m, "size", {"logits": LOGITS})["probabilities"]
    np.testing.assert_allclose(size, _softmax(LOGITS[:, 3:5].astype(np.float64)), atol=1e-7)
    assert np.isfinite(size).all() and size[3].tolist() == [1.0, 0.0]


def test_a_binary_logit_head_is_a_sigmoid() -> None:
    out = apply_head(_manifest(HEADS), "flag", {"logits": LOGITS})
    p = out["probabilities"]
    sigmoid = expit(LOGITS[:, 5].astype(np.float64))
    np.testing.assert_allclose(p[:, 1], sigmoid, atol=1e-7)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-7)
    np.testing.assert_array_equal(out["label"], [1, 0, 0, 0])  # 0.0 ties to "no"


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_the_temperature_divides_logits_before_the_softmax(temperature: float) -> None:
    m = _manifest(HEADS, temperature=temperature)
    z = LOGITS.astype(np.float64) / temperature
    colour = apply_head(m, "colour", {"logits": LOGITS})
    np.testing.assert_allclose(colour["probabilities"], _softmax(z[:, :3]), atol=1e-7)
    np.testing.assert_array_equal(
        colour["label"], apply_head(_manifest(HEADS), "colour", {"logits": LOGITS})["label"]
    )
    flag = apply_head(m, "flag", {"logits": LOGITS})["probabilities"]
    np.testing.assert_allclose(flag[:, 1], expit(z[:, 5]), atol=1e-7)


def test_probability_heads_renormalise_then_temper() -> None:
    scores = np.array([[0.2, 0.6, 0.1, 0.9], [0.0, 0.0, 0.0, 0.25]], dtype=np.float32)
    head = Head((0, 1, 2), ("a", "b", "c"), "probabilities")
    p = head_probabilities(head, scores, 1.0)
    np.testing.assert_allclose(p[0], [2 / 9, 6 / 9, 1 / 9], atol=1e-7)
    np.testing.assert_allclose(p[1], [1 / 3] * 3, atol=1e-7)  # no mass: uniform
    hot = head_probabilities(head, scores, 0.5)  # p ** 2, renormalised
    np.testing.assert_allclose(hot[0], np.array([4, 36, 1]) / 41, atol=1e-6)
    binary = head_probabilities(Head((3,), ("no", "yes"), "binary"), scores, 2.0)
    np.testing.assert_allclose(binary, temper(np.array([[0.1, 0.9], [0.75, 0.25]]), 2.0), 1e-6)


def test_every_kind_agrees_with_the_fusers_reading_of_a_single_task_model() -> None:
    """A head answers what the fuser would have made of the same columns as a whole model's
    scores (chorus.fuser.kinds), so a model's meaning does not change when it gains heads."""
    rng = np.random.default_rng(1)
    z = rng.normal(scale=3.0, size=(16, 3)).astype(np.float32)
    p = _softmax(z.astype(np.float64)).astype(np.float32)
    for temperature in (1.0, 0.7, 3.0):
        for kind, columns, scores, as_kind, raw in (
            ("logits", (0, 1, 2), z, "logits", z),
            ("probabilities", (0, 1, 2), p, "probabilities", p),
            ("binary", (0,), p, "binary", p[:, :1]),
        ):
            head = Head(columns, tuple("abc"[: max(2, len(columns))]), kind)  # type: ignore[arg-type]
            np.testing.assert_allclose(
                head_probabilities(head, scores, temperature),
                as_scores(raw, as_kind, temperature, field="m"),
                atol=1e-6,
            )


def test_zero_rows_and_a_bad_temperature() -> None:
    empty = np.zeros((0, 6), dtype=np.float32)
    for cap, width in (("colour", 3), ("flag", 2)):
        out = apply_head(_manifest(HEADS), cap, {"logits": empty})
        assert out["probabilities"].shape == (0, width) and out["label"].shape == (0,)
    with pytest.raises(FailedPrecondition, match=r"temperature: expected > 0, got 0.0"):
        head_probabilities(HEADS["colour"], LOGITS, 0.0)


@pytest.mark.parametrize(
    ("kind", "says"),
    [("softmax", "'softmax' is the old name"), ("sigmoid", "expected one of"), ("", "got ''")],
)
def test_a_head_of_an_unknown_kind_is_refused(kind: Any, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        Head((0, 1), ("a", "b"), kind)


# ---------------------------------------------------------------- the manifest


def _net(root: Path, heads: Any, **raw: Any) -> Path:
    """A six-column linear network (raw logits, no softmax) with `heads` in its manifest."""
    folder = root / "net" / "1"
    folder.mkdir(parents=True)
    linear(folder / "model.onnx", softmax=False, classes=6)
    body = {"capabilities": list(heads) if isinstance(heads, dict) else ["classify/x"],
            "labels": ["c0", "c1", "c2", "c3", "c4", "c5"], "scores_output": "scores",
            "output_kind": "logits", "heads": heads, **raw}  # fmt: skip
    (folder / "manifest.json").write_text(json.dumps(body))
    return folder / "manifest.json"


def _head(columns: list[int], labels: list[str], **kw: Any) -> dict[str, Any]:
    return {"columns": columns, "labels": labels, **kw}


def test_a_heads_kind_left_out_follows_the_output_kind(tmp_path: Path) -> None:
    heads = {"classify/colour": _head([0, 1, 2], ["r", "g", "b"]),
             "classify/flag": _head([5], ["no", "yes"], kind="binary_logit")}  # fmt: skip
    _net(tmp_path / "logits", heads)
    m = repository.load(tmp_path / "logits", "net").manifest
    assert m.heads["classify/colour"] == Head((0, 1, 2), ("r", "g", "b"), "logits")
    assert m.heads["classify/flag"].kind == "binary_logit"
    _net(tmp_path / "probs", heads, output_kind="probabilities")
    probs = repository.load(tmp_path / "probs", "net").manifest
    assert probs.heads["classify/colour"].kind == "probabilities"
    # What is written reads back the same, the kind now spelled out.
    written = json.loads(m.to_json())
    assert written["heads"]["classify/colour"]["kind"] == "logits"
    assert Manifest.from_dict(written) == m


@pytest.mark.parametrize("output_kind", ["logits", "probabilities"])
def test_the_old_softmax_kind_reads_as_the_output_kind_with_a_warning(
    tmp_path: Path, output_kind: str
) -> None:
    read_as = output_kind
    source = _net(tmp_path, {"classify/colour": _head([0, 1, 2], ["r", "g", "b"], kind="softmax")},
                  output_kind=output_kind)  # fmt: skip
    with pytest.warns(FutureWarning) as caught:
        m = repository.load(tmp_path, "net").manifest
    message = str(caught[0].message)
    assert message.startswith(f"{source}: heads.classify/colour.kind: 'softmax' is deprecated")
    assert f"write {read_as!r}" in message
    assert m.heads["classify/colour"].kind == read_as
    # A complete manifest from before the rename (to_json's form) reads the same way.
    old = json.loads(m.to_json())
    old["heads"]["classify/colour"]["kind"] = "softmax"
    assert Manifest.from_dict(old).heads["classify/colour"].kind == read_as


@pytest.mark.parametrize(
    ("heads", "key", "says"),
    [
        ({"classify/x": _head([0, 1], ["a", "b"], kind="sigmoid")}, "heads.classify/x.kind",
         "expected one of ['probabilities', 'logits', 'binary', 'binary_logit'], got \"sigmoid\""),
        ({"classify/x": _head([5], ["no", "yes"], kind="binary")}, "heads.classify/x.kind",
         "a logit column is 'binary_logit'"),
        ({"classify/x": _head([4, 6], ["a", "b"])}, "heads.classify/x.columns",
         "[4, 6] reach past the 6 columns of 'scores'"),
        ({"classify/x": _head([], [])}, "heads.classify/x.columns", "got []"),
        ({"classify/x": _head([0, "1"], ["a", "b"])}, "heads.classify/x.columns", 'got [0, "1"]'),
        ({"classify/x": {"columns": [0, 1]}}, "heads.classify/x.labels", "got null"),
        ({"classify/x": _head([0, 1], ["a"])}, "heads.classify/x",
         "logits head: expected one label per column, got 2 column(s) and 1 label(s)"),
        ({"classify/x": _head([0, 1], ["a", "b"], temperature=2)}, "heads.classify/x",
         "unknown key(s) ['temperature']; a head takes ['columns', 'labels', 'kind']"),
        ({"classify/x": [0, 1]}, "heads.classify/x", "expected an object"),
    ],
)  # fmt: skip
def test_a_bad_head_is_refused_naming_it(tmp_path: Path, heads: Any, key: str, says: str) -> None:
    source = _net(tmp_path, heads)
    with pytest.raises(ManifestError) as refused:
        repository.load(tmp_path, "net")
    assert str(refused.value).startswith(f"{source}: {key}: ")
    assert says in str(refused.value)


def test_a_multi_task_model_needs_no_labels_of_its_own(tmp_path: Path) -> None:
    heads = {"classify/colour": _head([0, 1, 2], ["r", "g", "b"])}
    _net(tmp_path / "heads", heads, labels=[])
    m = repository.load(tmp_path / "heads", "net").manifest
    assert m.labels == () and m.heads["classify/colour"].labels == ("r", "g", "b")
    source = _net(tmp_path / "plain", {}, labels=[], capabilities=["classify/x"])
    with pytest.raises(ManifestError, match="labels: missing") as refused:
        repository.load(tmp_path / "plain", "net")
    assert str(refused.value).startswith(f"{source}: ")


def test_heads_and_capabilities_match(tmp_path: Path) -> None:
    colour = {"classify/colour": _head([0, 1, 2], ["r", "g", "b"])}
    source = _net(tmp_path / "a", colour, capabilities=["classify/colour", "classify/size"])
    with pytest.raises(ManifestError) as refused:
        repository.load(tmp_path / "a", "net")
    assert str(refused.value).startswith(f"{source}: heads: no head for ['classify/size']")
    source = _net(tmp_path / "b", colour, capabilities=["classify/size"])
    with pytest.raises(ManifestError) as refused:
        repository.load(tmp_path / "b", "net")
    assert str(refused.value).startswith(f"{source}: heads: no head for ['classify/size']")
    source = _net(tmp_path / "c", {**colour, "classify/size": _head([3, 4], ["s", "l"])},
                  capabilities=["classify/colour"])  # fmt: skip
    with pytest.raises(ManifestError) as refused:
        repository.load(tmp_path / "c", "net")
    assert str(refused.value) == (
        f"{source}: heads.classify/size: 'classify/size' is not among the capabilities "
        "['classify/colour']"
    )


def test_a_regression_has_no_heads(tmp_path: Path) -> None:
    source = _net(tmp_path, {"regress/x": _head([0], ["v"])}, output_kind="regression",
                  capabilities=["regress/x"], labels=[])  # fmt: skip
    with pytest.raises(ManifestError, match="a regression model has no heads") as refused:
        repository.load(tmp_path, "net")
    assert str(refused.value).startswith(f"{source}: heads: ")


def test_the_heads_key_documents_every_kind() -> None:
    meaning = next(k.meaning for k in KEYS if k.name == "heads")
    assert all(f"`{kind}`" in meaning for kind in HEAD_KINDS)


# ---------------------------------------------------------------- what the router hands the fuser


def test_a_heads_answer_reaches_the_fuser_as_untempered_probabilities() -> None:
    hb = Heartbeat(
        model="net", version="1", replica="net-1", capabilities=("colour", "size"),
        inputs=(), outputs=(), labels=("red", "green", "blue"), scores_output="logits",
        device="cpu", heads={"colour": {"labels": ["red", "green", "blue"]}},
        output_kind="logits", temperature=2.0,
    )  # fmt: skip
    assert hb.scores_for("colour") == ScoresSource("probabilities", "probabilities", 1.0)
    # Asked without a head (a capability it answers whole), its own scores as declared.
    assert hb.scores_for("size") == ScoresSource("logits", "logits", 2.0)
    # The fuser's reading of a head's answer is that answer: no second softmax.
    m = _manifest(HEADS, temperature=2.0)
    answer = apply_head(m, "colour", {"logits": LOGITS})["probabilities"]
    source = hb.scores_for("colour")
    fused_input = as_scores(answer, source.kind, source.temperature, field="net")
    np.testing.assert_allclose(fused_input, answer, atol=1e-7)
    np.testing.assert_allclose(
        fused_input, _softmax(LOGITS[:, :3].astype(np.float64) / 2.0), atol=1e-6
    )
