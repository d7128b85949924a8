"""Running a member of an app's cluster: embedded in the user's process (:class:`Member` for
asyncio, :class:`ThreadedMember` for threaded code), or as ``confer serve --app`` (
:func:`load_app`). Either way it is a whole Confer member: the same log, snapshots, peer
transport, membership and services as ``confer serve``, with the app beside its KV store."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import importlib.util
import inspect
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Generic, TypeVar

from confer.client import errors
from confer.kv import InvalidArgument
from confer.raft.errors import ProposalDropped
from confer.raft.types import StateRole
from confer.replicated.machine import StateMachine, methods_of, stub
from confer.replicated.service import AppRuntime
from confer.server.api import RequestContext
from confer.server.config import ConfigError, ServerConfig, load_config
from confer.server.consensus import NoLeader
from confer.server.node import NodeStopped
from confer.server.node import OutcomeUnknown as NodeOutcomeUnknown

M = TypeVar("M", bound=StateMachine)
T = TypeVar("T")

SETTINGS = frozenset(f.name for f in dataclasses.fields(ServerConfig)) - {"app", "extra"}
"""What a member embedded in a process may set: confer serve's settings (the class is given)."""
DEFAULT_TIMEOUT = 10.0
"""Seconds a call of an embedded member waits (for a leader, for its entry to apply)."""


class CannotStart(RuntimeError):
    """A member could not start: its data dir is in use or damaged, a port is taken, its
    state cannot be recovered... (the message says which)."""


class Member(Generic[M]):
    """One member of ``cls``'s cluster in this process, on asyncio.

    ``settings`` are those of ``confer serve``, by their flags' names with underscores
    (``data_dir``, ``listen_client``, ``listen_peer``, ``initial_cluster``, ``join``,
    ``node_id``, ``tick_ms``, ``cert_file``...; docs/operations.md); the environment's
    ``CONFER_*`` variables are not read. Call the app's commands and queries as methods of
    the member (``await member.incr(5)``), or with :meth:`call`::

        member = Member(Counter, data_dir="data1", node_id=1, initial_cluster="1=...,2=...")
        await member.start()
        await member.incr(5)
    """

    def __init__(self, cls: type[M], **settings: Any) -> None:
        from confer.server.app import ConferServer  # the server, only for a member

        methods_of(cls)  # a StateMachine subclass, or TypeError now
        unknown = sorted(set(settings) - SETTINGS)
        if unknown:
            raise TypeError(f"Member(): unknown setting {unknown[0]!r}: the settings are "
                            f"confer serve's ({', '.join(sorted(SETTINGS))})")
        self.cls = cls
        self.runtime: AppRuntime[M] = AppRuntime(cls)
        try:
            cfg = load_config(None, settings, environ={})
        except ConfigError as e:
            raise ValueError(str(e)) from None
        self.server = ConferServer(cfg, app=self.runtime)

    async def start(self) -> None:
        """Open the data dir, serve clients and peers, and start Raft. Raises
        :class:`CannotStart` (one line: why, as ``confer serve`` says it) when it cannot."""
        try:
            await self.server.start()
        except BaseException as e:
            await self.server.stop(grace=0)
            if isinstance(e, SystemExit):  # the server's one line, not the process's exit
                raise CannotStart(str(e.code)) from None
            raise

    async def stop(self) -> None:
        await self.server.stop()

    async def __aenter__(self) -> Member[M]:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- calls -------------------------------------------------------------------------------
    async def call(self, method: str, /, *args: Any, timeout: float = DEFAULT_TIMEOUT,
                   serializable: bool | None = None, **kwargs: Any) -> Any:
        """Call command or query ``method``: a command's result once committed and applied
        on this member; a query's (linearizable unless ``serializable``). An error the
        method raised is raised as :class:`~confer.replicated.CommandError`; bad arguments
        as TypeError, before anything is proposed; and the cluster's failures as the
        client's errors (``confer.client.OutcomeUnknown``, ``Unavailable``...)."""
        spec = self.runtime.replica.methods.get(method)
        if spec is None:
            raise AttributeError(f"{self.cls.__name__} has no command or query {method!r}")
        arguments = spec.encode_arguments(args, kwargs)
        # Calls from the embedding process are trusted (no authentication, as a member's own).
        ctx = RequestContext.with_timeout("internal", f"{self.cls.__name__}.{method}", timeout)
        try:
            if spec.is_command:
                result = await self.runtime.command(ctx, method, arguments)
            else:
                result = await self.runtime.query(ctx, method, arguments, serializable)
        except Exception as e:
            mapped = _client_error(e, spec.is_command)
            if mapped is e:
                raise
            raise mapped from e
        return result.unwrap()

    def __getattr__(self, name: str) -> Callable[..., Coroutine[Any, Any, Any]]:
        if name.startswith("_") or name in ("cls", "runtime", "server"):
            raise AttributeError(name)  # not set yet: no stub
        return stub(self.cls, name, self.call)

    # -- the member ----------------------------------------------------------------------------
    @property
    def state(self) -> M:
        """This member's instance of the state machine, as applied so far (read it, never
        change it: only commands may)."""
        return self.runtime.replica.machine

    @property
    def node_id(self) -> int:
        return self.server.node_id

    @property
    def leader_id(self) -> int:
        """The leader this member knows of (0: none)."""
        node = self.server.node
        return node.leader if node is not None else 0

    @property
    def is_leader(self) -> bool:
        node = self.server.node
        return node is not None and node.role == StateRole.LEADER

    @property
    def client_address(self) -> str:
        """Where clients (:class:`~confer.replicated.AppClient`, ``confer status``,
        ``confer member ...``) reach this member."""
        return f"{self.server.cfg.listen_client.rpartition(':')[0]}:{self.server.client_port}"

    @property
    def stopped(self) -> asyncio.Event:
        """Set once the member has stopped (asked to, removed, or failed: see
        :attr:`failure`)."""
        return self.server.stopped

    @property
    def failure(self) -> str | None:
        """Why the member stopped on its own (one line), if it did."""
        return self.server.fatal


def _client_error(exc: Exception, command: bool) -> Exception:
    """What the client would raise for the member's ``exc``: an embedded caller catches the
    same errors as a remote one (confer.client's)."""
    if isinstance(exc, InvalidArgument):
        return errors.InvalidArgument(str(exc))
    if isinstance(exc, NodeOutcomeUnknown) or (command and isinstance(exc, TimeoutError)):
        return errors.OutcomeUnknown(f"the command may or may not have been applied: {exc}")
    if isinstance(exc, TimeoutError):
        return errors.DeadlineExceeded("the query was not answered in time")
    if isinstance(exc, (NoLeader, ProposalDropped, NodeStopped)):  # nothing was applied
        return errors.Unavailable(f"{type(exc).__name__}: {exc}")
    return exc


class ThreadedMember(Generic[M]):
    """A :class:`Member` on its own event loop in a background thread, for threaded code:
    the same settings; every call blocks until it is answered."""

    def __init__(self, cls: type[M], **settings: Any) -> None:
        self._settings = settings
        self.cls = cls
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name=f"confer-{cls.__name__}", daemon=True)
        self._thread.start()
        self.member: Member[M] = self._run(self._make())

    async def _make(self) -> Member[M]:
        return Member(self.cls, **self._settings)  # its locks and events belong to the loop

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result()

    def start(self) -> None:
        self._run(self.member.start())

    def stop(self) -> None:
        """Stop the member and its thread."""
        if self._loop.is_closed():
            return
        try:
            self._run(self.member.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def __enter__(self) -> ThreadedMember[M]:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """As :meth:`Member.call`, blocking."""
        return self._run(self.member.call(method, *args, **kwargs))

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_") or name in ("member", "cls"):
            raise AttributeError(name)
        return stub(self.cls, name, self.call)

    @property
    def state(self) -> M:
        return self.member.state

    @property
    def leader_id(self) -> int:
        return self.member.leader_id

    @property
    def is_leader(self) -> bool:
        return self.member.is_leader

    @property
    def client_address(self) -> str:
        return self.member.client_address

    def wait_for_leader(self, timeout: float = 10.0) -> int:
        """The leader's id, once this member knows one; TimeoutError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not self.member.leader_id:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no leader within {timeout} s")
            time.sleep(0.02)
        return self.member.leader_id


def load_app(spec: str) -> type[StateMachine]:
    """The state machine class that ``spec`` names: ``module:Class`` (the current directory
    is searched too) or ``path/to/file.py:Class``. Raises ValueError with one line."""
    target, _, name = spec.rpartition(":")
    if not target or not name:
        raise ValueError(f"--app {spec!r}: expected module:Class or path/to/file.py:Class")
    try:
        if target.endswith(".py"):
            path = Path(target)
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            if module_spec is None or module_spec.loader is None or not path.is_file():
                raise ValueError(f"no such file {target}")
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[path.stem] = module  # its classes' __module__ must resolve
            module_spec.loader.exec_module(module)
        else:
            if "" not in sys.path and str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))
            module = importlib.import_module(target)
    except ValueError as e:
        raise ValueError(f"--app {spec!r}: {e}") from None
    except Exception as e:  # ImportError, or whatever the module raised
        raise ValueError(f"--app {spec!r}: cannot import {target}: {type(e).__name__}: {e}"
                         ) from None
    cls = getattr(module, name, None)
    if not (inspect.isclass(cls) and issubclass(cls, StateMachine)):
        raise ValueError(f"--app {spec!r}: {target} has no subclass of "
                         f"confer.replicated.StateMachine named {name!r}")
    return cls
