from chorus.pb import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Priority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIORITY_UNSPECIFIED: _ClassVar[Priority]
    PRIORITY_CRITICAL: _ClassVar[Priority]
    PRIORITY_NORMAL: _ClassVar[Priority]
    PRIORITY_BATCH: _ClassVar[Priority]

class TaskStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATUS_UNSPECIFIED: _ClassVar[TaskStatus]
    TASK_STATUS_PENDING: _ClassVar[TaskStatus]
    TASK_STATUS_RUNNING: _ClassVar[TaskStatus]
    TASK_STATUS_DONE: _ClassVar[TaskStatus]
    TASK_STATUS_FAILED: _ClassVar[TaskStatus]
PRIORITY_UNSPECIFIED: Priority
PRIORITY_CRITICAL: Priority
PRIORITY_NORMAL: Priority
PRIORITY_BATCH: Priority
TASK_STATUS_UNSPECIFIED: TaskStatus
TASK_STATUS_PENDING: TaskStatus
TASK_STATUS_RUNNING: TaskStatus
TASK_STATUS_DONE: TaskStatus
TASK_STATUS_FAILED: TaskStatus

class SubmitRequest(_message.Message):
    __slots__ = ("capability", "inputs", "priority", "deadline_ms", "fusion_policy", "task_id", "conflict", "pipeline", "cascade")
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    FUSION_POLICY_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    CONFLICT_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    CASCADE_FIELD_NUMBER: _ClassVar[int]
    capability: str
    inputs: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.Tensor]
    priority: Priority
    deadline_ms: int
    fusion_policy: str
    task_id: str
    conflict: ConflictPolicy
    pipeline: str
    cascade: Cascade
    def __init__(self, capability: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[_tensor_pb2.Tensor, _Mapping]]] = ..., priority: _Optional[_Union[Priority, str]] = ..., deadline_ms: _Optional[int] = ..., fusion_policy: _Optional[str] = ..., task_id: _Optional[str] = ..., conflict: _Optional[_Union[ConflictPolicy, _Mapping]] = ..., pipeline: _Optional[str] = ..., cascade: _Optional[_Union[Cascade, _Mapping]] = ...) -> None: ...

class Cascade(_message.Message):
    __slots__ = ("threshold", "steps")
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    threshold: float
    steps: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, threshold: _Optional[float] = ..., steps: _Optional[_Iterable[int]] = ...) -> None: ...

class SubmitAsyncRequest(_message.Message):
    __slots__ = ("task", "idempotency_key")
    TASK_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    task: SubmitRequest
    idempotency_key: str
    def __init__(self, task: _Optional[_Union[SubmitRequest, _Mapping]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class SubmitAsyncResponse(_message.Message):
    __slots__ = ("task_id", "duplicate")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    duplicate: bool
    def __init__(self, task_id: _Optional[str] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class GetResultRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class TaskResult(_message.Message):
    __slots__ = ("task_id", "status", "response", "error_code", "error_message", "attempts")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    status: TaskStatus
    response: SubmitResponse
    error_code: str
    error_message: str
    attempts: int
    def __init__(self, task_id: _Optional[str] = ..., status: _Optional[_Union[TaskStatus, str]] = ..., response: _Optional[_Union[SubmitResponse, _Mapping]] = ..., error_code: _Optional[str] = ..., error_message: _Optional[str] = ..., attempts: _Optional[int] = ...) -> None: ...

class ConflictPolicy(_message.Message):
    __slots__ = ("name", "quorum", "max_rounds", "concede_below", "arbiter", "coverage", "then")
    NAME_FIELD_NUMBER: _ClassVar[int]
    QUORUM_FIELD_NUMBER: _ClassVar[int]
    MAX_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    CONCEDE_BELOW_FIELD_NUMBER: _ClassVar[int]
    ARBITER_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    THEN_FIELD_NUMBER: _ClassVar[int]
    name: str
    quorum: int
    max_rounds: int
    concede_below: float
    arbiter: str
    coverage: float
    then: str
    def __init__(self, name: _Optional[str] = ..., quorum: _Optional[int] = ..., max_rounds: _Optional[int] = ..., concede_below: _Optional[float] = ..., arbiter: _Optional[str] = ..., coverage: _Optional[float] = ..., then: _Optional[str] = ...) -> None: ...

class MemberOutput(_message.Message):
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

class RowDecision(_message.Message):
    __slots__ = ("label", "confidence", "agreement", "votes", "rule", "status", "round", "margin", "entropy", "value", "spread", "member_values", "prediction_set", "lower", "upper")
    class VotesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class MemberValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    VOTES_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    ENTROPY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    SPREAD_FIELD_NUMBER: _ClassVar[int]
    MEMBER_VALUES_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_SET_FIELD_NUMBER: _ClassVar[int]
    LOWER_FIELD_NUMBER: _ClassVar[int]
    UPPER_FIELD_NUMBER: _ClassVar[int]
    label: int
    confidence: float
    agreement: float
    votes: _containers.ScalarMap[str, int]
    rule: str
    status: str
    round: int
    margin: float
    entropy: float
    value: _containers.RepeatedScalarFieldContainer[float]
    spread: float
    member_values: _containers.ScalarMap[str, float]
    prediction_set: _containers.RepeatedScalarFieldContainer[int]
    lower: _containers.RepeatedScalarFieldContainer[float]
    upper: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, label: _Optional[int] = ..., confidence: _Optional[float] = ..., agreement: _Optional[float] = ..., votes: _Optional[_Mapping[str, int]] = ..., rule: _Optional[str] = ..., status: _Optional[str] = ..., round: _Optional[int] = ..., margin: _Optional[float] = ..., entropy: _Optional[float] = ..., value: _Optional[_Iterable[float]] = ..., spread: _Optional[float] = ..., member_values: _Optional[_Mapping[str, float]] = ..., prediction_set: _Optional[_Iterable[int]] = ..., lower: _Optional[_Iterable[float]] = ..., upper: _Optional[_Iterable[float]] = ...) -> None: ...

class Explanation(_message.Message):
    __slots__ = ("policy", "members", "missing", "rows", "weights", "conflict_policy", "temperatures", "coverage", "calibration_rows")
    class MissingEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
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
    POLICY_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    CONFLICT_POLICY_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURES_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_ROWS_FIELD_NUMBER: _ClassVar[int]
    policy: str
    members: _containers.RepeatedScalarFieldContainer[str]
    missing: _containers.ScalarMap[str, str]
    rows: _containers.RepeatedCompositeFieldContainer[RowDecision]
    weights: _containers.ScalarMap[str, float]
    conflict_policy: str
    temperatures: _containers.ScalarMap[str, float]
    coverage: float
    calibration_rows: int
    def __init__(self, policy: _Optional[str] = ..., members: _Optional[_Iterable[str]] = ..., missing: _Optional[_Mapping[str, str]] = ..., rows: _Optional[_Iterable[_Union[RowDecision, _Mapping]]] = ..., weights: _Optional[_Mapping[str, float]] = ..., conflict_policy: _Optional[str] = ..., temperatures: _Optional[_Mapping[str, float]] = ..., coverage: _Optional[float] = ..., calibration_rows: _Optional[int] = ...) -> None: ...

class StreamedResult(_message.Message):
    __slots__ = ("task_id", "response", "error_code", "error_message")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    response: SubmitResponse
    error_code: str
    error_message: str
    def __init__(self, task_id: _Optional[str] = ..., response: _Optional[_Union[SubmitResponse, _Mapping]] = ..., error_code: _Optional[str] = ..., error_message: _Optional[str] = ...) -> None: ...

class SubmitResponse(_message.Message):
    __slots__ = ("task_id", "capability", "outputs", "labels", "members", "explanation", "stages", "cascade_depth")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    CASCADE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    capability: str
    outputs: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.Tensor]
    labels: _containers.RepeatedScalarFieldContainer[str]
    members: _containers.RepeatedCompositeFieldContainer[MemberOutput]
    explanation: Explanation
    stages: _containers.RepeatedCompositeFieldContainer[StageResult]
    cascade_depth: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, task_id: _Optional[str] = ..., capability: _Optional[str] = ..., outputs: _Optional[_Iterable[_Union[_tensor_pb2.Tensor, _Mapping]]] = ..., labels: _Optional[_Iterable[str]] = ..., members: _Optional[_Iterable[_Union[MemberOutput, _Mapping]]] = ..., explanation: _Optional[_Union[Explanation, _Mapping]] = ..., stages: _Optional[_Iterable[_Union[StageResult, _Mapping]]] = ..., cascade_depth: _Optional[_Iterable[int]] = ...) -> None: ...

class StageResult(_message.Message):
    __slots__ = ("name", "capability", "outputs", "members", "explanation", "latency_ms")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    name: str
    capability: str
    outputs: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.Tensor]
    members: _containers.RepeatedCompositeFieldContainer[MemberOutput]
    explanation: Explanation
    latency_ms: float
    def __init__(self, name: _Optional[str] = ..., capability: _Optional[str] = ..., outputs: _Optional[_Iterable[_Union[_tensor_pb2.Tensor, _Mapping]]] = ..., members: _Optional[_Iterable[_Union[MemberOutput, _Mapping]]] = ..., explanation: _Optional[_Union[Explanation, _Mapping]] = ..., latency_ms: _Optional[float] = ...) -> None: ...

class FeedbackRequest(_message.Message):
    __slots__ = ("task_id", "labels", "rows", "values")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    labels: _containers.RepeatedScalarFieldContainer[int]
    rows: _containers.RepeatedScalarFieldContainer[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, task_id: _Optional[str] = ..., labels: _Optional[_Iterable[int]] = ..., rows: _Optional[_Iterable[int]] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class ReviewRequest(_message.Message):
    __slots__ = ("task_id", "capability", "rows", "labels", "reviewer", "decisions")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    REVIEWER_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    capability: str
    rows: _containers.RepeatedScalarFieldContainer[int]
    labels: _containers.RepeatedScalarFieldContainer[int]
    reviewer: str
    decisions: _containers.RepeatedCompositeFieldContainer[RowDecision]
    def __init__(self, task_id: _Optional[str] = ..., capability: _Optional[str] = ..., rows: _Optional[_Iterable[int]] = ..., labels: _Optional[_Iterable[int]] = ..., reviewer: _Optional[str] = ..., decisions: _Optional[_Iterable[_Union[RowDecision, _Mapping]]] = ...) -> None: ...

class FeedbackResponse(_message.Message):
    __slots__ = ("capability", "weights")
    class WeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    capability: str
    weights: _containers.ScalarMap[str, float]
    def __init__(self, capability: _Optional[str] = ..., weights: _Optional[_Mapping[str, float]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("capability",)
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    capability: str
    def __init__(self, capability: _Optional[str] = ...) -> None: ...

class TensorSpec(_message.Message):
    __slots__ = ("name", "datatype", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATATYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    datatype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., datatype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "capabilities", "replicas", "inputs", "outputs", "devices", "replica_info")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    REPLICA_INFO_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    replicas: _containers.RepeatedScalarFieldContainer[str]
    inputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    outputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    devices: _containers.RepeatedScalarFieldContainer[str]
    replica_info: _containers.RepeatedCompositeFieldContainer[ReplicaInfo]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ..., replicas: _Optional[_Iterable[str]] = ..., inputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., devices: _Optional[_Iterable[str]] = ..., replica_info: _Optional[_Iterable[_Union[ReplicaInfo, _Mapping]]] = ...) -> None: ...

class ReplicaInfo(_message.Message):
    __slots__ = ("replica", "device", "in_flight", "queue", "ewma_ms", "capacity", "heartbeat_age_s")
    class QueueEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    EWMA_MS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_AGE_S_FIELD_NUMBER: _ClassVar[int]
    replica: str
    device: str
    in_flight: int
    queue: _containers.ScalarMap[str, int]
    ewma_ms: float
    capacity: int
    heartbeat_age_s: float
    def __init__(self, replica: _Optional[str] = ..., device: _Optional[str] = ..., in_flight: _Optional[int] = ..., queue: _Optional[_Mapping[str, int]] = ..., ewma_ms: _Optional[float] = ..., capacity: _Optional[int] = ..., heartbeat_age_s: _Optional[float] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "jetstream_replicas")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    JETSTREAM_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    jetstream_replicas: int
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., jetstream_replicas: _Optional[int] = ...) -> None: ...
