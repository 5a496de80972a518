"""The manifest schema: completed from the ONNX graph, every bad manifest refused in one line
naming the file and the key; `chorus models add` writes manifests nobody types."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import onnx
import pytest
from onnx import helper

from chorus.core.spec import TensorSpec
from chorus.services import repository
from chorus.services.add_model import AddError, AddRequest, add
from chorus.services.manifest import ManifestError
from chorus.services.manifest_keys import KEYS, schema_table
from tests.support import REPO
from tests.support.onnx_graphs import linear

README = REPO / "README.md"


def _version(root: Path, raw: dict[str, Any], name: str = "m") -> Path:
    folder = root / name / "1"
    folder.mkdir(parents=True)
    linear(folder / "model.onnx")
    (folder / "manifest.json").write_text(json.dumps(raw))
    return folder


GOOD = {"capabilities": ["classify/x"], "labels": ["a", "b", "c"]}


def test_inputs_and_outputs_come_from_the_graph(tmp_path: Path) -> None:
    _version(tmp_path, GOOD)
    m = repository.load(tmp_path, "m").manifest
    assert m.name == "m" and m.version == "1" and m.scores_output == "scores"
    assert m.inputs == (TensorSpec("x", "FP32", (-1, 4)),)
    assert {s.name: s.shape for s in m.outputs} == {"scores": (-1, 3), "label": (-1,)}


@pytest.mark.parametrize(
    ("raw", "key", "says"),
    [
        ({"labels": ["a", "b", "c"]}, "capabilities", "missing"),
        ({"capabilities": ["classify/x"]}, "labels", "missing"),
        ({**GOOD, "capabilities": "classify/x"}, "capabilities", "expected list of strings"),
        ({**GOOD, "replicas": "two"}, "replicas", 'got "two"'),
        ({**GOOD, "temprature": 2}, "temprature", "did you mean 'temperature'"),
        ({**GOOD, "name": "other"}, "name", "differs from its folder 'm'"),
        ({**GOOD, "output_kind": "odds"}, "output_kind", "expected string"),
        ({**GOOD, "output_kind": "regression"}, "output_kind", "classification capability"),
        ({**GOOD, "labels": ["a", "b"]}, "labels", "2 labels for the 3 columns"),
        ({**GOOD, "scores_output": "label"}, "scores_output", "INT64"),
        ({**GOOD, "inputs": [{"name": "x", "datatype": "INT64", "shape": [-1, 4]}]},
         "inputs", "manifest says datatype INT64, the graph says FP32"),
        ({**GOOD, "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4, 1]}]},
         "inputs", "rank 3"),
        ({**GOOD, "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}]},
         "inputs", "manifest says shape [-1, 64], the graph says [-1, 4]"),
        ({**GOOD, "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [-1, 4]}]},
         "inputs", "'pixels' is not in the graph"),
        ({"capabilities": ["regress/x"], "output_kind": "regression", "temperature": 2.0},
         "temperature", "a regression has none"),
    ],
)  # fmt: skip
def test_bad_manifests_are_refused_naming_file_and_key(
    tmp_path: Path, raw: dict[str, Any], key: str, says: str
) -> None:
    folder = _version(tmp_path, raw)
    with pytest.raises(ManifestError) as err:
        repository.load(tmp_path, "m")
    message = str(err.value)
    assert message.startswith(f"{folder / 'manifest.json'}: {key}: "), message
    assert says in message and "\n" not in message


def test_a_capability_takes_one_kind(tmp_path: Path) -> None:
    _version(tmp_path, GOOD, "a")
    folder = _version(tmp_path, {**GOOD, "output_kind": "regression",
                                 "capabilities": ["x"]}, "b")  # fmt: skip
    (folder / "manifest.json").write_text(json.dumps({"capabilities": ["classify/x"],
                                                      "output_kind": "regression"}))  # fmt: skip
    with pytest.raises(ManifestError, match=r"b/1/manifest.json: output_kind: .*classification"):
        repository.check(tmp_path)


def test_add_reads_the_graph_and_checks_the_kind(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    raw = linear(tmp_path / "raw.onnx", softmax=False)
    with pytest.raises(AddError, match="pass --kind logits"):
        add(AddRequest(raw, repo, "raw", ("classify/x",), ("a", "b", "c")))
    mv = add(AddRequest(raw, repo, "raw", ("classify/x",), ("a", "b", "c"), "logits",
                        temperature=2.0))  # fmt: skip
    again = repository.load(repo, "raw").manifest
    assert again == mv.manifest and again.output_kind == "logits" and again.temperature == 2.0
    assert again.inputs == (TensorSpec("x", "FP32", (-1, 4)),)
    with pytest.raises(AddError, match="already in"):
        add(AddRequest(raw, repo, "raw", ("classify/x",), ("a", "b", "c"), "logits", "1"))
    assert add(AddRequest(raw, repo, "raw", ("classify/x",), ("a", "b", "c"),
                          "logits")).manifest.version == "2"  # fmt: skip


def test_add_asks_which_output_when_two_could_be_the_scores(tmp_path: Path) -> None:
    path = linear(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    model.graph.node.append(helper.make_node("Identity", ["z"], ["logits"]))
    model.graph.output.append(
        helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", 3])
    )
    path.write_bytes(model.SerializeToString())
    with pytest.raises(AddError, match=r"\['scores', 'logits'\] could each be the scores"):
        add(AddRequest(path, tmp_path / "repo", "m", ("classify/x",)))
    mv = add(AddRequest(path, tmp_path / "repo", "m", ("classify/x",), scores_output="logits",
                        output_kind="logits"))  # fmt: skip
    assert mv.manifest.scores_output == "logits" and mv.manifest.labels == ("0", "1", "2")


def test_readme_documents_every_key() -> None:
    """The README's schema table is the one `KEYS` makes."""
    text = README.read_text()
    assert schema_table() in text
    documented = re.findall(r"^\| `(\w+)` \|", text, flags=re.M)
    assert [k.name for k in KEYS] == [k for k in documented if k in {k.name for k in KEYS}]
