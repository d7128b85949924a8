from confer.v1 import kv_pb2 as _kv_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AppCall(_message.Message):
    __slots__ = ("app", "method", "arguments", "serializable")
    APP_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    SERIALIZABLE_FIELD_NUMBER: _ClassVar[int]
    app: str
    method: str
    arguments: bytes
    serializable: bool
    def __init__(self, app: _Optional[str] = ..., method: _Optional[str] = ..., arguments: _Optional[bytes] = ..., serializable: _Optional[bool] = ...) -> None: ...

class AppResult(_message.Message):
    __slots__ = ("header", "value", "error_type", "error_message")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    header: _kv_pb2.ResponseHeader
    value: bytes
    error_type: str
    error_message: str
    def __init__(self, header: _Optional[_Union[_kv_pb2.ResponseHeader, _Mapping]] = ..., value: _Optional[bytes] = ..., error_type: _Optional[str] = ..., error_message: _Optional[str] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("header", "app", "version", "commands", "queries")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    APP_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    COMMANDS_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    header: _kv_pb2.ResponseHeader
    app: str
    version: int
    commands: _containers.RepeatedScalarFieldContainer[str]
    queries: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, header: _Optional[_Union[_kv_pb2.ResponseHeader, _Mapping]] = ..., app: _Optional[str] = ..., version: _Optional[int] = ..., commands: _Optional[_Iterable[str]] = ..., queries: _Optional[_Iterable[str]] = ...) -> None: ...
