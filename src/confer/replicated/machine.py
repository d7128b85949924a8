"""Declaring a replicated state machine: the base class, ``@command`` and ``@query``, and the
checks a call passes at the caller, before anything is proposed."""

from __future__ import annotations

import builtins
import copy
import inspect
import itertools
import random
import typing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import msgpack

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

SNAPSHOT_SLICE = 5000
"""Entries of a large dict or list field that the default :meth:`StateMachine.snapshot_chunks`
packs per chunk (a few milliseconds' work each)."""
_WHOLE, _DICT_SLICE, _LIST_SLICE = 0, 1, 2

SERIALISABLE = "None, bool, int (64-bit), float, str, bytes, and lists, tuples and dicts of them"
"""What a command's or query's arguments and result may hold (what msgpack encodes)."""


class CommandError(Exception):
    """A command or query raised: the exception's class name and message, as the member that
    ran it saw them (a command was applied as this error on every member, identically).

    When the name is a built-in exception's (``ValueError``, ``KeyError``...), the exception
    raised is also an instance of that class: ``except ValueError`` catches it.
    """

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.message = message

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}"


_error_classes: dict[str, type[CommandError]] = {}


def command_error(type_name: str, message: str) -> CommandError:
    """The exception to raise for an error result: a :class:`CommandError`, which is also
    the built-in exception of that name if there is one."""
    cls = _error_classes.get(type_name)
    if cls is None:
        cls = CommandError
        builtin = getattr(builtins, type_name, None)
        if (isinstance(builtin, type) and issubclass(builtin, Exception)
                and not issubclass(builtin, (OSError, UnicodeError))):  # their own __init__
            cls = type(type_name, (CommandError, builtin), {"__module__": __name__})
        _error_classes[type_name] = cls
    return cls(type_name, message)


class VersionTooNew(Exception):
    """An entry or a snapshot was written by a newer version of the state machine than the
    code this member runs: applying it could make this member diverge, so it stops."""


def command(fn: F) -> F:
    """Declare a method that changes the state: a call is proposed through Raft, applied on
    every member in log order, and returns the method's result once committed and applied on
    the caller's member. Called directly on an instance, it is a plain method."""
    fn.__confer_kind__ = "command"  # type: ignore[attr-defined]
    return fn


def query(fn: F | None = None, *, serializable: bool = False) -> Any:
    """Declare a method that only reads the state. A call is linearizable by default (it sees
    every command acknowledged before it: a ReadIndex round with the leader); with
    ``serializable=True`` (here, or by the caller for one call) it answers from the member's
    own state at once, possibly stale."""
    def mark(f: F) -> F:
        f.__confer_kind__ = "query"  # type: ignore[attr-defined]
        f.__confer_serializable__ = serializable  # type: ignore[attr-defined]
        return f

    return mark(fn) if fn is not None else mark


@dataclass(frozen=True, slots=True)
class Method:
    """One command or query of a state machine: how a call of it is checked and encoded."""

    machine: str
    name: str
    kind: str
    """``"command"`` or ``"query"``."""
    signature: inspect.Signature
    """Without ``self``."""
    hints: dict[str, type]
    """The parameters annotated with a plain class: their arguments must be instances."""
    serializable: bool = False

    @property
    def is_command(self) -> bool:
        return self.kind == "command"

    def encode_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        """msgpack of ``[args, kwargs]`` once they are checked against the signature, the
        annotations and what msgpack encodes. Raises TypeError naming the rule broken."""
        where = f"{self.machine}.{self.name}()"
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{where}: {e} (signature: {self.name}{self.signature})") from None
        for name, value in bound.arguments.items():
            want = self.hints.get(name)
            if want is not None and not _is_instance(value, want):
                raise TypeError(f"{where}: argument {name!r} must be {want.__name__}, not "
                                f"{type(value).__name__}")
        try:
            return pack([list(bound.args), bound.kwargs])
        except (TypeError, ValueError, OverflowError):
            for name, value in bound.arguments.items():
                try:
                    pack(value)
                except (TypeError, ValueError, OverflowError):
                    raise TypeError(
                        f"{where}: argument {name!r} ({type(value).__name__}) cannot be sent "
                        f"to the cluster: arguments must be {SERIALISABLE}") from None
            raise

    def decode_arguments(self, data: bytes) -> tuple[list[Any], dict[str, Any]]:
        """The arguments of a call as another process sent them, checked as at the caller
        (a client in any language may send them). Raises TypeError or ValueError."""
        try:
            decoded = unpack(data)
        except Exception as e:  # whatever malformed msgpack makes it raise
            raise ValueError(f"{self.machine}.{self.name}(): arguments that do not decode "
                             f"({type(e).__name__}: {e})") from None
        if (not isinstance(decoded, list) or len(decoded) != 2
                or not isinstance(decoded[0], list) or not isinstance(decoded[1], dict)):
            raise ValueError(f"{self.machine}.{self.name}(): arguments must be msgpack of "
                             "[positional list, keyword map]")
        args, kwargs = decoded
        if not all(isinstance(k, str) for k in kwargs):
            raise ValueError(f"{self.machine}.{self.name}(): keyword names must be strings")
        self.encode_arguments(tuple(args), kwargs)  # the same checks as at the caller
        return args, kwargs


def _is_instance(value: Any, want: type) -> bool:
    if want is float:  # PEP 484's numeric tower: an int is a float
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if want is tuple:
        return isinstance(value, (tuple, list))  # msgpack has one sequence type
    return isinstance(value, want)


def pack(value: Any) -> bytes:
    """msgpack, as every member and client encodes arguments, results and snapshots."""
    return msgpack.packb(value, use_bin_type=True)


def unpack(data: bytes) -> Any:
    # strict_map_key off: a state's dicts may be keyed by ints.
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


@dataclass(frozen=True, slots=True)
class _Factory:
    make: Callable[[], Any]


def field(default_factory: Callable[[], Any]) -> Any:
    """A field's default made afresh for each instance: ``jobs: list[str] =
    field(list)`` (a literal ``[]`` or ``{}`` default is deep-copied, which linters flag)."""
    return _Factory(default_factory)


class StateMachine:
    """Base of a replicated state machine. Subclass it::

        class Counter(StateMachine):
            value: int = 0                      # a field: in the default snapshot

            @command
            def incr(self, n: int = 1) -> int:  # applied on every member, in log order
                self.value += n
                return self.value

            @query
            def get(self) -> int:               # linearizable by default
                return self.value

    Fields are the class's annotated attributes with a default (each instance starts with a
    deep copy of it); the default :meth:`snapshot` is msgpack of them, so they must hold
    msgpack-serialisable values (override :meth:`snapshot` and :meth:`restore` for anything
    else). The class must be constructible with no arguments.

    Inside a command, use :attr:`now` and :attr:`random`, never the wall clock or the global
    ``random`` module: a command must compute the same thing on every member
    (docs/platform.md, "Determinism").
    """

    version: ClassVar[int] = 1
    """The version of the code: a member applies entries and snapshots written by this
    version or older ones, and stops at a newer one. Bump it when a command's behaviour
    changes (and branch on :attr:`entry_version` to replay older entries as they were)."""
    incremental_snapshot: ClassVar[bool] = True
    """Whether the default :meth:`snapshot_chunks` packs large dict and list fields a slice
    at a time (their values must then be replaced, never mutated in place: see there).
    False: every field is packed at once, between two entries."""
    write_version: ClassVar[int | None] = None
    """The version recorded in the entries this code proposes (None: :attr:`version`). Pin
    it to the old version during a rolling upgrade (docs/platform.md, "Upgrades")."""

    _methods: ClassVar[dict[str, Method]] = {}
    _fields: ClassVar[dict[str, Any]] = {}

    # Set by the replica around each command (confer.replicated.replica).
    _now_ns = 0
    _index = 0
    _term = 0
    _entry_version = 0
    _random: random.Random | None = None
    _snapshot_slice = SNAPSHOT_SLICE
    """Entries per chunk of the default :meth:`snapshot_chunks` (the simulator makes it
    small, so that small states are sliced too)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not isinstance(cls.version, int) or cls.version < 1:
            raise TypeError(f"{cls.__name__}.version must be a positive int")
        methods: dict[str, Method] = {}
        fields: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            for name, annotation in getattr(klass, "__annotations__", {}).items():
                if name.startswith("_") or "ClassVar" in str(annotation):
                    continue
                if name not in vars(klass):
                    raise TypeError(f"{cls.__name__}.{name}: a field needs a default value "
                                    f"(e.g. '{name}: int = 0')")
                fields[name] = vars(klass)[name]
            for name, attr in vars(klass).items():
                kind = getattr(attr, "__confer_kind__", None)
                if kind is not None:
                    methods[name] = _method(cls.__name__, name, kind, attr)
                elif name in methods:  # overridden by a plain method
                    del methods[name]
        cls._methods = methods
        cls._fields = fields

    def __init__(self) -> None:
        for name, default in self._fields.items():
            setattr(self, name, _fresh(default))

    # -- what a command may use ---------------------------------------------------------------
    @property
    def now(self) -> float:
        """Replicated time, in seconds since the epoch: the proposer's clock when the command
        was proposed, never less than any earlier command's. The same on every member."""
        return self._now_ns / 1e9

    @property
    def random(self) -> random.Random:
        """A random generator seeded from the command's log position: the same numbers on
        every member."""
        if self._random is None:
            self._random = random.Random((self._index << 64) | self._term)
        return self._random

    @property
    def index(self) -> int:
        """The log index of the command being applied (of the last one, in a query)."""
        return self._index

    @property
    def entry_version(self) -> int:
        """The :attr:`version` of the code that proposed the command being applied."""
        return self._entry_version

    # -- snapshots ----------------------------------------------------------------------------
    def snapshot_chunks(self) -> Iterator[bytes]:
        """The state as a sequence of byte chunks (what :meth:`restore_chunks` takes back),
        produced a chunk per turn of the member's event loop while commands go on being
        applied between chunks.

        The rule: the code up to the first ``yield`` runs between two entries and must
        capture the state (a copy, or an immutable view); the chunks must hold the state as
        captured there, whatever the commands applied after it change.

        The default: a class that overrides :meth:`snapshot` or :meth:`restore` gets one
        chunk, ``snapshot()``. Otherwise each field is packed at once, except a dict or list
        field of more than :data:`SNAPSHOT_SLICE` entries, which is copied (a shallow copy:
        a few milliseconds for 200,000 entries) and packed :data:`SNAPSHOT_SLICE` entries a
        chunk. Commands may add, remove and replace such a field's entries meanwhile, but
        must not mutate an entry's value in place (``self.jobs[k]["tries"] += 1``): replace
        it (``self.jobs[k] = {**job, "tries": n}``), or set
        :attr:`incremental_snapshot` to False.
        """
        if self._whole_state():
            yield self.snapshot()
            return
        parts: list[bytes] = []
        large: list[tuple[str, dict[Any, Any] | list[Any]]] = []
        for name in self._fields:
            value = getattr(self, name)
            if (self.incremental_snapshot and type(value) in (dict, list)
                    and len(value) > self._snapshot_slice):
                large.append((name, value.copy()))
            else:
                parts.append(pack([name, _WHOLE, value]))
        yield b"".join(parts)  # captured
        step = self._snapshot_slice
        for name, value in large:
            if isinstance(value, dict):
                items = iter(value.items())
                for _ in range(0, len(value), step):
                    yield pack([name, _DICT_SLICE, dict(itertools.islice(items, step))])
            else:
                for lo in range(0, len(value), step):
                    yield pack([name, _LIST_SLICE, value[lo:lo + step]])

    def restore_chunks(self, chunks: Iterable[bytes]) -> None:
        """Replace the state (of a fresh instance) with :meth:`snapshot_chunks`' chunks, in
        order. The default reads the default's chunks, or joins them for :meth:`restore`
        when the class overrides :meth:`snapshot` or :meth:`restore`."""
        if self._whole_state():
            self.restore(b"".join(chunks))
            return
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=0)
        started: set[str] = set()
        for chunk in chunks:
            unpacker.feed(chunk)
            for item in unpacker:
                if (not isinstance(item, list) or len(item) != 3
                        or item[0] not in self._fields):
                    raise ValueError(f"a {type(self).__name__} snapshot chunk must be "
                                     "[field, kind, value] of a declared field")
                name, kind, value = item
                if kind == _WHOLE:
                    setattr(self, name, value)
                    continue
                if name not in started:
                    started.add(name)
                    setattr(self, name, {} if kind == _DICT_SLICE else [])
                if kind == _DICT_SLICE:
                    getattr(self, name).update(value)
                elif kind == _LIST_SLICE:
                    getattr(self, name).extend(value)
                else:
                    raise ValueError(f"a {type(self).__name__} snapshot chunk of an unknown "
                                     f"kind {kind!r}")

    def snapshot(self) -> bytes:
        """The state as bytes, whole: by default, msgpack of the fields. Override with
        :meth:`restore` for state that msgpack cannot hold (or :meth:`snapshot_chunks` and
        :meth:`restore_chunks` for a large one)."""
        return pack({name: getattr(self, name) for name in self._fields})

    def restore(self, data: bytes) -> None:
        """Replace the state with :meth:`snapshot`'s bytes."""
        state = unpack(data)
        if not isinstance(state, dict):
            raise ValueError(f"a {type(self).__name__} snapshot must be a map of fields")
        for name, default in self._fields.items():
            setattr(self, name, state[name] if name in state else _fresh(default))

    @classmethod
    def _whole_state(cls) -> bool:
        """Whether the class snapshots itself whole (it overrides snapshot or restore)."""
        return (cls.snapshot is not StateMachine.snapshot
                or cls.restore is not StateMachine.restore)


def _fresh(default: Any) -> Any:
    return default.make() if isinstance(default, _Factory) else copy.deepcopy(default)


def methods_of(cls: type[StateMachine]) -> dict[str, Method]:
    """The commands and queries of a state machine class, by name."""
    if not (isinstance(cls, type) and issubclass(cls, StateMachine)):
        raise TypeError(f"{cls!r} is not a subclass of confer.replicated.StateMachine")
    return cls._methods


def _method(machine: str, name: str, kind: str, fn: Callable[..., Any]) -> Method:
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    if not params or params[0].kind not in (params[0].POSITIONAL_ONLY,
                                            params[0].POSITIONAL_OR_KEYWORD):
        raise TypeError(f"{machine}.{name}: a {kind} is a method (self first)")
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # an annotation that does not resolve: not checked
        hints = {}
    plain = {p.name: hints[p.name] for p in params[1:]
             if isinstance(hints.get(p.name), type) and hints[p.name] is not object}
    return Method(machine, name, kind, sig.replace(parameters=params[1:]), plain,
                  bool(getattr(fn, "__confer_serializable__", False)))


def stub(cls: type[StateMachine], name: str, call: Callable[..., T]) -> Callable[..., T]:
    """A caller's method for command or query ``name`` of ``cls``: the same signature and
    docstring as the state machine's (``call(name, *args, **kwargs)`` does the work)."""
    methods = methods_of(cls)
    if name not in methods:
        raise AttributeError(f"{cls.__name__} has no command or query {name!r}")

    def method(*args: Any, **kwargs: Any) -> T:
        return call(name, *args, **kwargs)

    method.__name__ = name
    method.__doc__ = getattr(cls, name).__doc__
    method.__signature__ = methods[name].signature  # type: ignore[attr-defined]  # inspect
    return method
