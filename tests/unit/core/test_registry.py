from chorus.core.heartbeat import Heartbeat
from chorus.core.registry import Registry
from chorus.core.spec import TensorSpec


def hb(
    model: str, replica: str, capability: str = "classify/digits", interval: float = 1.0
) -> Heartbeat:
    return Heartbeat(
        model=model,
        version="1",
        replica=replica,
        capabilities=(capability,),
        inputs=(TensorSpec("input", "FP32", (-1, 64)),),
        outputs=(),
        labels=("0", "1"),
        scores_output="probabilities",
        device="cpu",
        interval_s=interval,
    )


def test_replicas_expire_after_missed_beats() -> None:
    reg = Registry(expiry_beats=3.0)
    reg.observe(hb("a", "a-1"), now=100.0)
    reg.observe(hb("a", "a-2"), now=102.5)
    assert sorted(h.replica for h in reg.live(now=102.9)) == ["a-1", "a-2"]
    assert [h.replica for h in reg.live(now=103.1)] == ["a-2"]
    assert reg.live(now=106.0) == []


def test_models_for_groups_replicas_by_model_and_filters_capability() -> None:
    reg = Registry()
    reg.observe(hb("b", "b-1"), 0.0)
    reg.observe(hb("a", "a-1"), 0.0)
    reg.observe(hb("a", "a-2"), 0.0)
    reg.observe(hb("t", "t-1", capability="classify/text"), 0.0)
    found = reg.models_for("classify/digits", 0.5)
    assert list(found) == ["a", "b"]
    assert sorted(h.replica for h in found["a"]) == ["a-1", "a-2"]
    assert reg.capabilities(0.5) == ["classify/digits", "classify/text"]


def test_heartbeat_json_round_trip() -> None:
    beat = hb("a", "a-1")
    assert Heartbeat.from_json(beat.to_json()) == beat
