"""Pipelines: spec validation, levels, and the executor on fake stages with known answers."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from chorus.core.errors import ChorusError, InvalidArgument, NotFound, Unavailable
from chorus.router.pipeline import (
    Pipeline,
    PipelineResult,
    Stage,
    load_pipeline,
    load_pipelines,
    run_pipeline,
)
from tests.support import REPO

EXAMPLE = REPO / "pipelines" / "digits-describe.yaml"

DIAMOND = """
name: diamond
inputs: [x]
stages:
  - name: d
    capability: cap/d
    inputs: {left: b.y, right: c.y}
  - name: a
    capability: cap/a
    inputs: {input: x}
  - name: b
    capability: cap/b
    inputs: {input: a.y}
  - name: c
    capability: cap/c
    inputs: {input: a.y}
outputs: {result: d.y, middle: b.y}
"""


def spec(**overrides: Any) -> dict[str, Any]:
    """A valid two-stage chain (a -> b), with top-level keys replaced."""
    d: dict[str, Any] = {
        "name": "x",
        "inputs": ["image"],
        "stages": [
            {"name": "a", "capability": "cap/a", "inputs": {"input": "image"}},
            {"name": "b", "capability": "cap/b", "inputs": {"input": "a.probabilities"}},
        ],
        "outputs": {"out": "b.label"},
    }
    d.update(overrides)
    return d


def names(levels: list[list[Stage]]) -> list[list[str]]:
    return [[s.name for s in level] for level in levels]


def invalid(d: Any) -> str:
    with pytest.raises(InvalidArgument) as info:
        Pipeline.from_dict(d)
    return info.value.message


# -- the spec --------------------------------------------------------------------------------


def test_example_loads_with_all_stages_independent() -> None:
    p = load_pipeline(EXAMPLE)
    assert p.name == "digits-describe"
    assert p.inputs == ("image", "caption")
    assert names(p.levels()) == [["digit", "caption_check", "combined"]]
    assert {s.name: s.capability for s in p.stages} == {
        "digit": "classify/digits",
        "caption_check": "classify/digits-text",
        "combined": "classify/digits+caption",
    }
    assert dict(p.stage("digit").inputs) == {"input": "image"}
    assert dict(p.stage("caption_check").inputs) == {"caption": "caption"}
    assert dict(p.stage("combined").inputs) == {"input": "image", "caption": "caption"}
    assert dict(p.outputs) == {
        "digit": "digit.label",
        "text_digit": "caption_check.label",
        "combined": "combined.label",
    }
    # the same file named as a string, and through the directory loader
    assert load_pipeline(str(EXAMPLE)) == p
    assert load_pipelines(EXAMPLE.parent)["digits-describe"] == p


def test_optional_settings_pass_through() -> None:
    d = spec()
    d["stages"][0] |= {
        "fusion_policy": "majority_vote",
        "conflict": {"name": "quorum", "quorum": 2},
    }
    a = Pipeline.from_dict(d).stage("a")
    assert a.fusion_policy == "majority_vote"
    assert dict(a.conflict or {}) == {"name": "quorum", "quorum": 2}
    assert Pipeline.from_dict(spec()).stage("a").fusion_policy is None
    assert Pipeline.from_dict(spec()).stage("a").conflict is None


def test_diamond_levels_and_spec_order_within_a_level() -> None:
    p = load_pipeline(DIAMOND)
    assert names(p.levels()) == [["a"], ["b", "c"], ["d"]]
    assert p.stage("d").depends_on == {"b", "c"}
    assert p.stage("a").depends_on == frozenset()


def test_longest_path_decides_the_level() -> None:
    # e takes from a (level 0) and from c (level 2): it waits for c
    d = {
        "name": "deep",
        "inputs": ["x"],
        "stages": [
            {"name": "a", "capability": "k", "inputs": {"i": "x"}},
            {"name": "e", "capability": "k", "inputs": {"i": "a.y", "j": "c.y"}},
            {"name": "b", "capability": "k", "inputs": {"i": "a.y"}},
            {"name": "c", "capability": "k", "inputs": {"i": "b.y"}},
            {"name": "f", "capability": "k", "inputs": {"i": "x"}},
        ],
        "outputs": {"o": "e.y"},
    }
    assert names(Pipeline.from_dict(d).levels()) == [["a", "f"], ["b"], ["c"], ["e"]]


def test_cycle_is_reported() -> None:
    d = spec(
        stages=[
            {"name": "a", "capability": "k", "inputs": {"input": "image"}},
            {"name": "b", "capability": "k", "inputs": {"i": "a.y", "j": "d.y"}},
            {"name": "c", "capability": "k", "inputs": {"i": "b.y"}},
            {"name": "d", "capability": "k", "inputs": {"i": "c.y"}},
        ]
    )
    assert invalid(d).startswith("pipeline 'x': stages: cycle b -> d -> c -> b")


def test_self_loop_is_a_cycle() -> None:
    d = spec(stages=[{"name": "a", "capability": "k", "inputs": {"i": "image", "j": "a.y"}}])
    d["outputs"] = {"o": "a.y"}
    assert invalid(d).startswith("pipeline 'x': stages: cycle a -> a")


def test_stage_before_its_cycle_is_not_named_in_it() -> None:
    d = spec(
        stages=[
            {"name": "a", "capability": "k", "inputs": {"i": "image", "j": "b.y"}},
            {"name": "b", "capability": "k", "inputs": {"i": "c.y"}},
            {"name": "c", "capability": "k", "inputs": {"i": "b.y"}},
        ],
        outputs={"o": "a.y"},
    )
    assert "cycle b -> c -> b" in invalid(d)


def test_unknown_stage() -> None:
    d = spec()
    d["stages"][1]["inputs"] = {"input": "dgit.probabilities"}
    assert invalid(d) == (
        "pipeline 'x': stages[1].inputs.input: unknown stage 'dgit' (stages: a, b)"
    )


def test_unknown_task_input() -> None:
    d = spec()
    d["stages"][0]["inputs"] = {"input": "image", "extra": "imgae"}
    msg = invalid(d)
    assert msg.startswith("pipeline 'x': stages[0].inputs.extra: unknown task input 'imgae'")
    assert "['image']" in msg


def test_declared_input_no_stage_takes() -> None:
    assert invalid(spec(inputs=["image", "caption"])).startswith(
        "pipeline 'x': inputs: ['caption'] taken by no stage"
    )


def test_duplicate_stage() -> None:
    d = spec()
    d["stages"].append({"name": "a", "capability": "k", "inputs": {"i": "image"}})
    assert invalid(d) == "pipeline 'x': stages[2].name: duplicate stage 'a' (also stages[0])"


def test_duplicate_task_input() -> None:
    assert invalid(spec(inputs=["image", "image"])) == (
        "pipeline 'x': inputs[1]: duplicate task input 'image'"
    )


def test_output_of_unknown_stage_or_not_a_stage_output() -> None:
    assert invalid(spec(outputs={"out": "z.label"})) == (
        "pipeline 'x': outputs.out: unknown stage 'z' (stages: a, b)"
    )
    assert invalid(spec(outputs={"out": "image"})) == (
        "pipeline 'x': outputs.out: expected '<stage>.<output>', got 'image'"
    )
    assert "no output name" in invalid(spec(outputs={"out": "b."}))


@pytest.mark.parametrize(
    ("where", "key", "expected"),
    [
        ("top", "stagse", "pipeline 'x': unknown key 'stagse'"),
        ("stage", "capabilty", "pipeline 'x': stages[1]: unknown key 'capabilty'"),
        ("conflict", "quorom", "pipeline 'x': stages[1].conflict: unknown key 'quorom'"),
    ],
)
def test_unknown_key(where: str, key: str, expected: str) -> None:
    d = spec()
    if where == "top":
        d[key] = 1
    elif where == "stage":
        d["stages"][1][key] = "k"
    else:
        d["stages"][1]["conflict"] = {"name": "quorum", key: 2}
    assert invalid(d).startswith(expected)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"name": "a.b"}, "pipeline spec: name: expected a name of letters"),
        ({"inputs": []}, "pipeline 'x': inputs: expected a non-empty list"),
        ({"inputs": "image"}, "pipeline 'x': inputs: expected a non-empty list"),
        ({"inputs": ["image", 3]}, "pipeline 'x': inputs[1]: expected a name"),
        ({"stages": []}, "pipeline 'x': stages: expected a non-empty list of stages"),
        ({"stages": ["a"]}, "pipeline 'x': stages[0]: expected a mapping"),
        ({"outputs": {}}, "pipeline 'x': outputs: expected a non-empty mapping"),
        ({"outputs": {"o": 3}}, "pipeline 'x': outputs.o: expected a stage output as a string"),
    ],
)
def test_wrong_types(change: dict[str, Any], expected: str) -> None:
    assert invalid(spec(**change)).startswith(expected)


@pytest.mark.parametrize(
    ("stage", "expected"),
    [
        ({"capability": "k", "inputs": {"i": "image"}}, "stages[1].name: missing"),
        ({"name": "z", "inputs": {"i": "image"}}, "stages[1].capability: missing"),
        ({"name": "z", "capability": "k"}, "stages[1].inputs: missing"),
        ({"name": "z", "capability": "", "inputs": {"i": "image"}}, "stages[1].capability: exp"),
        ({"name": "z", "capability": "k", "inputs": {}}, "stages[1].inputs: expected a non-empty"),
        (
            {"name": "z", "capability": "k", "inputs": {"i": "image"}, "fusion_policy": 1},
            "stages[1].fusion_policy: expected a strategy name",
        ),
        (
            {"name": "z", "capability": "k", "inputs": {"i": "image"}, "conflict": "quorum"},
            "stages[1].conflict: expected a mapping",
        ),
        (
            {"name": "z", "capability": "k", "inputs": {"i": "image"}, "conflict": {"quorum": 2}},
            "stages[1].conflict.name: missing",
        ),
        (
            {
                "name": "z",
                "capability": "k",
                "inputs": {"i": "image"},
                "conflict": {"name": "quorum", "quorum": -1},
            },
            "stages[1].conflict.quorum: expected a non-negative integer, got int -1",
        ),
    ],
)
def test_bad_stage(stage: dict[str, Any], expected: str) -> None:
    d = spec()
    d["stages"][1] = stage
    assert invalid(d).startswith(f"pipeline 'x': {expected}")


def test_missing_top_level_keys() -> None:
    assert invalid({"inputs": ["x"]}) == "pipeline spec: name: missing"
    assert invalid({"name": "x", "inputs": ["x"]}) == "pipeline 'x': stages: missing"
    assert invalid(["name"]).startswith("pipeline spec: expected a mapping, got list")


def test_bad_yaml() -> None:
    with pytest.raises(InvalidArgument) as info:
        load_pipeline("name: x\nstages: [a, b\n")
    assert info.value.message.startswith("pipeline spec: not valid YAML: ")
    assert "line 3" in info.value.message
    with pytest.raises(InvalidArgument, match="pipeline spec: expected a mapping, got str"):
        load_pipeline("just words")


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(DIAMOND.replace("a.y}", "q.y}", 1))
    with pytest.raises(InvalidArgument) as info:
        load_pipeline(bad)
    assert info.value.message == (
        f"{bad}: pipeline 'diamond': stages[2].inputs.input: unknown stage 'q' (stages: d, a, b, c)"
    )
    with pytest.raises(NotFound, match="not found"):
        load_pipeline(tmp_path / "absent.yaml")


def test_load_pipelines(tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text(DIAMOND)
    (tmp_path / "two.yaml").write_text(EXAMPLE.read_text())
    (tmp_path / "notes.txt").write_text("not a pipeline")
    assert sorted(load_pipelines(tmp_path)) == ["diamond", "digits-describe"]
    (tmp_path / "three.yaml").write_text(DIAMOND)
    with pytest.raises(InvalidArgument, match=r"pipeline 'diamond': name: also the name"):
        load_pipelines(tmp_path)
    with pytest.raises(NotFound):
        load_pipelines(tmp_path / "nowhere")


def test_direct_construction_is_checked_too() -> None:
    a = Stage("a", "k", {"i": "x"})
    with pytest.raises(InvalidArgument, match="unknown stage 'b'"):
        Pipeline("p", ("x",), (a,), {"o": "b.y"})
    p = Pipeline("p", ("x",), (a,), {"o": "a.y"})
    assert hash(p) == hash(Pipeline("p", ("x",), (a,), {"o": "a.y"}))
    assert {a, Stage("a", "k", {"i": "x"})} == {a}
    with pytest.raises(NotFound, match="stage 'z': no such stage"):
        p.stage("z")


# -- the executor ----------------------------------------------------------------------------


ADD = {"a": 1.0, "b": 10.0, "c": 100.0, "d": 1000.0}


class Recorder:
    """A fake RunStage: each stage sleeps, then answers y = sum of its inputs + ADD[stage]."""

    def __init__(self, delay: float = 0.05) -> None:
        self.delay = delay
        self.start: dict[str, float] = {}
        self.finish: dict[str, float] = {}
        self.seen: dict[str, dict[str, np.ndarray]] = {}

    async def __call__(self, stage: Stage, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.start[stage.name] = time.monotonic()
        self.seen[stage.name] = inputs
        await asyncio.sleep(self.delay)
        self.finish[stage.name] = time.monotonic()
        total = sum(inputs.values(), np.zeros(2))
        return {"y": total + ADD[stage.name], "unused": np.array([stage.name])}


async def test_diamond_runs_b_and_c_together_and_d_after_both() -> None:
    p = load_pipeline(DIAMOND)
    rec = Recorder(delay=0.1)
    x = np.array([1.0, 2.0])
    result = await run_pipeline(p, {"x": x}, rec)

    assert isinstance(result, PipelineResult)
    # b and c overlap: each starts before the other finishes
    assert rec.start["b"] < rec.finish["c"] and rec.start["c"] < rec.finish["b"]
    assert rec.start["b"] >= rec.finish["a"] and rec.start["c"] >= rec.finish["a"]
    assert rec.start["d"] >= max(rec.finish["b"], rec.finish["c"])

    # outputs flow by name: a = x+1, b = a+10, c = a+100, d = b+c+1000
    a = x + 1
    np.testing.assert_array_equal(rec.seen["b"]["input"], a)
    assert set(rec.seen["d"]) == {"left", "right"}
    np.testing.assert_array_equal(rec.seen["d"]["left"], a + 10)
    np.testing.assert_array_equal(rec.seen["d"]["right"], a + 100)
    np.testing.assert_array_equal(result.outputs["result"], (a + 10) + (a + 100) + 1000)
    np.testing.assert_array_equal(result.outputs["middle"], a + 10)
    assert set(result.outputs) == {"result", "middle"}

    assert result.order == ("a", "b", "c", "d")
    assert list(result.stages) == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(result.stages["c"]["y"], a + 100)
    assert list(result.timings_ms) == ["a", "b", "c", "d"]
    assert all(ms >= 0.1 * 1000 * 0.9 for ms in result.timings_ms.values())


async def test_example_stages_all_start_at_once() -> None:
    p = load_pipeline(EXAMPLE)
    starts: list[str] = []
    gate = asyncio.Event()

    async def run_stage(stage: Stage, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        starts.append(stage.name)
        if len(starts) == 3:
            gate.set()
        await asyncio.wait_for(gate.wait(), 5)  # would time out if they ran one by one
        return {"label": np.array([len(inputs)], dtype=np.int64)}

    image = np.zeros((1, 64), dtype=np.float32)
    caption = np.array([b"seven"], dtype=object)
    result = await run_pipeline(p, {"image": image, "caption": caption}, run_stage)
    assert sorted(starts) == ["caption_check", "combined", "digit"]
    assert {k: v.tolist() for k, v in result.outputs.items()} == {
        "digit": [1],
        "text_digit": [1],
        "combined": [2],
    }


async def test_failing_stage_is_named_and_siblings_cancelled() -> None:
    p = load_pipeline(DIAMOND)
    cancelled: list[str] = []

    async def run_stage(stage: Stage, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if stage.name == "b":
            raise Unavailable("capability 'cap/b': no member answered")
        if stage.name == "c":
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                cancelled.append("c")
                raise
        return {"y": np.zeros(2)}

    with pytest.raises(Unavailable) as info:
        await run_pipeline(p, {"x": np.zeros(2)}, run_stage)
    assert info.value.message == "stage 'b': capability 'cap/b': no member answered"
    assert isinstance(info.value.__cause__, Unavailable)
    assert info.value.__cause__.message == "capability 'cap/b': no member answered"
    assert cancelled == ["c"]


async def test_other_exceptions_get_a_note() -> None:
    p = load_pipeline(DIAMOND)

    async def run_stage(stage: Stage, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if stage.name == "a":
            raise RuntimeError("boom")
        return {}

    with pytest.raises(RuntimeError, match="boom") as info:
        await run_pipeline(p, {"x": np.zeros(2)}, run_stage)
    assert info.value.__notes__ == ["in stage 'a' of pipeline 'diamond'"]


async def test_plain_chorus_error_keeps_its_class() -> None:
    p = load_pipeline(DIAMOND)

    async def run_stage(stage: Stage, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise ChorusError("internal")

    with pytest.raises(ChorusError) as info:
        await run_pipeline(p, {"x": np.zeros(2)}, run_stage)
    assert type(info.value) is ChorusError
    assert info.value.message == "stage 'a': internal"


async def test_missing_stage_output() -> None:
    p = load_pipeline(DIAMOND)

    async def run_stage(stage: Stage, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"z": np.zeros(2)}

    with pytest.raises(InvalidArgument) as info:
        await run_pipeline(p, {"x": np.zeros(2)}, run_stage)
    assert info.value.message == (
        "pipeline 'diamond': stages[2].inputs.input: stage 'a' has no output 'y' (it gave ['z'])"
    )


async def test_task_inputs_checked() -> None:
    p = load_pipeline(EXAMPLE)
    rec = Recorder()
    with pytest.raises(InvalidArgument, match=r"missing \['caption'\]"):
        await run_pipeline(p, {"image": np.zeros(1)}, rec)
    with pytest.raises(InvalidArgument, match=r"\['extra'\] taken by no stage"):
        await run_pipeline(
            p, {"image": np.zeros(1), "caption": np.zeros(1), "extra": np.zeros(1)}, rec
        )
    assert rec.start == {}
