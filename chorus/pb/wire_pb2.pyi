from chorus.pb import task_pb2 as _task_pb2
from chorus.pb import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InferCall(_message.Message):
    __slots__ = ("inputs",)
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    inputs: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.Tensor]
    def __init__(self, inputs: _Optional[_Iterable[_Union[_tensor_pb2.Tensor, _Mapping]]] = ...) -> None: ...

class InferReply(_message.Message):
    __slots__ = ("model", "version", "replica", "outputs", "compute_ms")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_MS_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    replica: str
    outputs: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.Tensor]
    compute_ms: float
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., replica: _Optional[str] = ..., outputs: _Optional[_Iterable[_Union[_tensor_pb2.Tensor, _Mapping]]] = ..., compute_ms: _Optional[float] = ...) -> None: ...

class MemberScores(_message.Message):
    __slots__ = ("model", "version", "probabilities", "weight")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    probabilities: _tensor_pb2.Tensor
    weight: float
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., probabilities: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., weight: _Optional[float] = ...) -> None: ...

class FuseCall(_message.Message):
    __slots__ = ("policy", "labels", "members")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    policy: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    members: _containers.RepeatedCompositeFieldContainer[MemberScores]
    def __init__(self, policy: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., members: _Optional[_Iterable[_Union[MemberScores, _Mapping]]] = ...) -> None: ...

class FuseReply(_message.Message):
    __slots__ = ("policy", "probabilities", "rows")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    policy: str
    probabilities: _tensor_pb2.Tensor
    rows: _containers.RepeatedCompositeFieldContainer[_task_pb2.RowDecision]
    def __init__(self, policy: _Optional[str] = ..., probabilities: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., rows: _Optional[_Iterable[_Union[_task_pb2.RowDecision, _Mapping]]] = ...) -> None: ...
