from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Empty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ConfigPath(_message.Message):
    __slots__ = ("path",)
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    def __init__(self, path: _Optional[str] = ...) -> None: ...

class ConfigValue(_message.Message):
    __slots__ = ("value",)
    VALUE_FIELD_NUMBER: _ClassVar[int]
    value: bytes
    def __init__(self, value: _Optional[bytes] = ...) -> None: ...

class ConfigList(_message.Message):
    __slots__ = ("paths",)
    PATHS_FIELD_NUMBER: _ClassVar[int]
    paths: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, paths: _Optional[_Iterable[str]] = ...) -> None: ...

class SetConfigRequest(_message.Message):
    __slots__ = ("path", "value")
    PATH_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    path: ConfigPath
    value: ConfigValue
    def __init__(self, path: _Optional[_Union[ConfigPath, _Mapping]] = ..., value: _Optional[_Union[ConfigValue, _Mapping]] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("node_id", "addr")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDR_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    addr: str
    def __init__(self, node_id: _Optional[int] = ..., addr: _Optional[str] = ...) -> None: ...

class InitRequest(_message.Message):
    __slots__ = ("nodes", "token")
    NODES_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    token: str
    def __init__(self, nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ..., token: _Optional[str] = ...) -> None: ...

class AddLearnerRequest(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: Node
    def __init__(self, node: _Optional[_Union[Node, _Mapping]] = ...) -> None: ...

class ChangeMembershipRequest(_message.Message):
    __slots__ = ("members", "retain")
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    RETAIN_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedScalarFieldContainer[int]
    retain: bool
    def __init__(self, members: _Optional[_Iterable[int]] = ..., retain: _Optional[bool] = ...) -> None: ...

class ClientWriteResponse(_message.Message):
    __slots__ = ("membership",)
    MEMBERSHIP_FIELD_NUMBER: _ClassVar[int]
    membership: Membership
    def __init__(self, membership: _Optional[_Union[Membership, _Mapping]] = ...) -> None: ...

class Membership(_message.Message):
    __slots__ = ("configs", "nodes")
    class NodesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: Node
        def __init__(self, key: _Optional[int] = ..., value: _Optional[_Union[Node, _Mapping]] = ...) -> None: ...
    CONFIGS_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    configs: _containers.RepeatedCompositeFieldContainer[NodeIdSet]
    nodes: _containers.MessageMap[int, Node]
    def __init__(self, configs: _Optional[_Iterable[_Union[NodeIdSet, _Mapping]]] = ..., nodes: _Optional[_Mapping[int, Node]] = ...) -> None: ...

class NodeIdSet(_message.Message):
    __slots__ = ("node_ids",)
    class NodeIdsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: Empty
        def __init__(self, key: _Optional[int] = ..., value: _Optional[_Union[Empty, _Mapping]] = ...) -> None: ...
    NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    node_ids: _containers.MessageMap[int, Empty]
    def __init__(self, node_ids: _Optional[_Mapping[int, Empty]] = ...) -> None: ...

class ConfigUpdate(_message.Message):
    __slots__ = ("updated_value", "removed", "path", "revision")
    UPDATED_VALUE_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    updated_value: bytes
    removed: Empty
    path: str
    revision: int
    def __init__(self, updated_value: _Optional[bytes] = ..., removed: _Optional[_Union[Empty, _Mapping]] = ..., path: _Optional[str] = ..., revision: _Optional[int] = ...) -> None: ...

class ClusterUpdate(_message.Message):
    __slots__ = ("leader_changed", "member_added", "member_removed", "member_promoted", "learner_added")
    LEADER_CHANGED_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ADDED_FIELD_NUMBER: _ClassVar[int]
    MEMBER_REMOVED_FIELD_NUMBER: _ClassVar[int]
    MEMBER_PROMOTED_FIELD_NUMBER: _ClassVar[int]
    LEARNER_ADDED_FIELD_NUMBER: _ClassVar[int]
    leader_changed: Node
    member_added: Node
    member_removed: int
    member_promoted: int
    learner_added: Node
    def __init__(self, leader_changed: _Optional[_Union[Node, _Mapping]] = ..., member_added: _Optional[_Union[Node, _Mapping]] = ..., member_removed: _Optional[int] = ..., member_promoted: _Optional[int] = ..., learner_added: _Optional[_Union[Node, _Mapping]] = ...) -> None: ...
