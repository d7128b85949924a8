from confer.v1 import confer_pb2 as _confer_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class RaftBatch(_message.Message):
    __slots__ = ("cluster_id", "to", "messages", "from_addr")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    FROM_ADDR_FIELD_NUMBER: _ClassVar[int]
    cluster_id: int
    to: int
    messages: bytes
    from_addr: str
    def __init__(self, cluster_id: _Optional[int] = ..., to: _Optional[int] = ..., messages: _Optional[bytes] = ..., from_addr: _Optional[str] = ..., **kwargs) -> None: ...
