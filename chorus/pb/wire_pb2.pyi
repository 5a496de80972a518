from chorus.pb import task_pb2 as _task_pb2
from chorus.pb import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InferCall(_message.Message):
    __slots__ = ("inputs", "augment")
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    AUGMENT_FIELD_NUMBER: _ClassVar[int]
    inputs: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.Tensor]
    augment: bool
    def __init__(self, inputs: _Optional[_Iterable[_Union[_tensor_pb2.Tensor, _Mapping]]] = ..., augment: _Optional[bool] = ...) -> None: ...

class InferReply(_message.Message):
    __slots__ = ("model", "version", "replica", "outputs", "compute_ms", "input_sha256", "fused")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_MS_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHA256_FIELD_NUMBER: _ClassVar[int]
    FUSED_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    replica: str
    outputs: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.Tensor]
    compute_ms: float
    input_sha256: str
    fused: FuseReply
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., replica: _Optional[str] = ..., outputs: _Optional[_Iterable[_Union[_tensor_pb2.Tensor, _Mapping]]] = ..., compute_ms: _Optional[float] = ..., input_sha256: _Optional[str] = ..., fused: _Optional[_Union[FuseReply, _Mapping]] = ...) -> None: ...

class MemberScores(_message.Message):
    __slots__ = ("model", "version", "probabilities", "weight", "scores_output", "priority", "output_kind", "temperature")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    SCORES_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_KIND_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    probabilities: _tensor_pb2.Tensor
    weight: float
    scores_output: str
    priority: int
    output_kind: str
    temperature: float
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., probabilities: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., weight: _Optional[float] = ..., scores_output: _Optional[str] = ..., priority: _Optional[int] = ..., output_kind: _Optional[str] = ..., temperature: _Optional[float] = ...) -> None: ...

class FuseCall(_message.Message):
    __slots__ = ("policy", "labels", "members", "capability", "task_id", "inputs", "conflict", "expected", "bodies", "min_members", "wait_ms", "max_attempts", "attempt_timeout_ms", "hedge", "inputs_in_bodies")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    CONFLICT_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    BODIES_FIELD_NUMBER: _ClassVar[int]
    MIN_MEMBERS_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    HEDGE_FIELD_NUMBER: _ClassVar[int]
    INPUTS_IN_BODIES_FIELD_NUMBER: _ClassVar[int]
    policy: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    members: _containers.RepeatedCompositeFieldContainer[MemberScores]
    capability: str
    task_id: str
    inputs: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.Tensor]
    conflict: _task_pb2.ConflictPolicy
    expected: _containers.RepeatedCompositeFieldContainer[Expected]
    bodies: _containers.RepeatedScalarFieldContainer[bytes]
    min_members: int
    wait_ms: int
    max_attempts: int
    attempt_timeout_ms: int
    hedge: bool
    inputs_in_bodies: bool
    def __init__(self, policy: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., members: _Optional[_Iterable[_Union[MemberScores, _Mapping]]] = ..., capability: _Optional[str] = ..., task_id: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[_tensor_pb2.Tensor, _Mapping]]] = ..., conflict: _Optional[_Union[_task_pb2.ConflictPolicy, _Mapping]] = ..., expected: _Optional[_Iterable[_Union[Expected, _Mapping]]] = ..., bodies: _Optional[_Iterable[bytes]] = ..., min_members: _Optional[int] = ..., wait_ms: _Optional[int] = ..., max_attempts: _Optional[int] = ..., attempt_timeout_ms: _Optional[int] = ..., hedge: _Optional[bool] = ..., inputs_in_bodies: _Optional[bool] = ...) -> None: ...

class Expected(_message.Message):
    __slots__ = ("model", "replica", "call", "body", "input_sha256", "scores_output", "output_kind", "temperature")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    CALL_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHA256_FIELD_NUMBER: _ClassVar[int]
    SCORES_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_KIND_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    model: str
    replica: str
    call: str
    body: int
    input_sha256: str
    scores_output: str
    output_kind: str
    temperature: float
    def __init__(self, model: _Optional[str] = ..., replica: _Optional[str] = ..., call: _Optional[str] = ..., body: _Optional[int] = ..., input_sha256: _Optional[str] = ..., scores_output: _Optional[str] = ..., output_kind: _Optional[str] = ..., temperature: _Optional[float] = ...) -> None: ...

class MemberAnswer(_message.Message):
    __slots__ = ("model", "version", "replica", "outputs", "latency_ms")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    replica: str
    outputs: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.Tensor]
    latency_ms: float
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., replica: _Optional[str] = ..., outputs: _Optional[_Iterable[_Union[_tensor_pb2.Tensor, _Mapping]]] = ..., latency_ms: _Optional[float] = ...) -> None: ...

class Attempt(_message.Message):
    __slots__ = ("model", "replica", "latency_ms", "code", "call")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    CALL_FIELD_NUMBER: _ClassVar[int]
    model: str
    replica: str
    latency_ms: float
    code: str
    call: str
    def __init__(self, model: _Optional[str] = ..., replica: _Optional[str] = ..., latency_ms: _Optional[float] = ..., code: _Optional[str] = ..., call: _Optional[str] = ...) -> None: ...

class FuseReply(_message.Message):
    __slots__ = ("policy", "probabilities", "rows", "weights", "conflict_policy", "temperatures", "coverage", "calibration_rows", "answers", "attempts", "missing")
    class WeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class TemperaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class MissingEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: MemberError
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[MemberError, _Mapping]] = ...) -> None: ...
    POLICY_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    CONFLICT_POLICY_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURES_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_ROWS_FIELD_NUMBER: _ClassVar[int]
    ANSWERS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    policy: str
    probabilities: _tensor_pb2.Tensor
    rows: _containers.RepeatedCompositeFieldContainer[_task_pb2.RowDecision]
    weights: _containers.ScalarMap[str, float]
    conflict_policy: str
    temperatures: _containers.ScalarMap[str, float]
    coverage: float
    calibration_rows: int
    answers: _containers.RepeatedCompositeFieldContainer[MemberAnswer]
    attempts: _containers.RepeatedCompositeFieldContainer[Attempt]
    missing: _containers.MessageMap[str, MemberError]
    def __init__(self, policy: _Optional[str] = ..., probabilities: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., rows: _Optional[_Iterable[_Union[_task_pb2.RowDecision, _Mapping]]] = ..., weights: _Optional[_Mapping[str, float]] = ..., conflict_policy: _Optional[str] = ..., temperatures: _Optional[_Mapping[str, float]] = ..., coverage: _Optional[float] = ..., calibration_rows: _Optional[int] = ..., answers: _Optional[_Iterable[_Union[MemberAnswer, _Mapping]]] = ..., attempts: _Optional[_Iterable[_Union[Attempt, _Mapping]]] = ..., missing: _Optional[_Mapping[str, MemberError]] = ...) -> None: ...

class MemberError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ReviewCase(_message.Message):
    __slots__ = ("task_id", "capability", "labels", "inputs", "members", "rows", "review_rows")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    REVIEW_ROWS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    capability: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    inputs: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.Tensor]
    members: _containers.RepeatedCompositeFieldContainer[MemberScores]
    rows: _containers.RepeatedCompositeFieldContainer[_task_pb2.RowDecision]
    review_rows: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, task_id: _Optional[str] = ..., capability: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., inputs: _Optional[_Iterable[_Union[_tensor_pb2.Tensor, _Mapping]]] = ..., members: _Optional[_Iterable[_Union[MemberScores, _Mapping]]] = ..., rows: _Optional[_Iterable[_Union[_task_pb2.RowDecision, _Mapping]]] = ..., review_rows: _Optional[_Iterable[int]] = ...) -> None: ...
