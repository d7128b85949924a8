"""Clients that run a workload against the cluster and record every operation.

Each client is an asyncio task with its own gRPC channel to one member (it moves to the next
member when a call fails), so clients behave like separate programs. Key-value operations use
the etcd v3 API; locks use Confer's native Lease and Lock services, whose fencing token is the
lock key's create revision. Every call has a deadline and every loop ends at a time limit.

Outcomes: an answer is ``ok``; an answer that says the operation did nothing (a CAS whose
compare failed, a fenced write whose guard failed) is ``fail``; any error is ``info`` for
writes (the write may still take effect, so the client continues as a new process) and
``fail`` for reads, which have no effect either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import grpc

from chaos.history import FAIL, INFO, INVOKE, OK, HistoryWriter
from confer.etcdpb.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from confer.v1 import coord_pb2, coord_pb2_grpc

DATA_PREFIX = "/chaos/data/"
LOCK_PREFIX = "/chaos/locks/"
Endpoints = Callable[[], list[str]]


def prefix_end(prefix: bytes) -> bytes:
    """etcd's range_end for "every key starting with prefix"."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


class Recorder:
    """Numbers processes and writes invoke/completion events with run-relative times."""

    def __init__(self, writer: HistoryWriter, t0: int) -> None:
        self.writer = writer
        self.t0 = t0
        self._next_process = 0
        self.completed = 0

    def now(self) -> int:
        return time.monotonic_ns() - self.t0

    def new_process(self) -> int:
        self._next_process += 1
        return self._next_process - 1

    def invoke(self, process: int, f: str, key: str | None, value: Any) -> None:
        self.writer.write({"type": INVOKE, "process": process, "f": f, "key": key,
                           "value": value, "time": self.now()})

    def complete(self, process: int, kind: str, *, f: str, key: str | None, value: Any = None,
                 rev: int | None = None, error: str | None = None) -> None:
        event: dict[str, Any] = {"type": kind, "process": process, "f": f, "key": key,
                                 "value": value, "time": self.now()}
        if rev is not None:
            event["rev"] = rev
        if error is not None:
            event["error"] = error
        self.writer.write(event)
        self.completed += 1


def describe(e: BaseException) -> str:
    if isinstance(e, grpc.aio.AioRpcError):
        return f"{e.code().name}: {e.details()}"
    return f"{type(e).__name__}: {e}"


def never_sent(e: BaseException) -> bool:
    """True when gRPC could not connect at all, so the request never left this process."""
    return (isinstance(e, grpc.aio.AioRpcError) and e.code() == grpc.StatusCode.UNAVAILABLE
            and "failed to connect to all addresses" in (e.details() or ""))


class Client:
    """One simulated program: a channel to one member, failing over to the next on errors."""

    def __init__(self, rec: Recorder, endpoints: Endpoints, index: int, rng: random.Random,
                 timeout: float) -> None:
        self.rec = rec
        self.endpoints = endpoints
        self.index = index
        self.rng = rng
        self.timeout = timeout
        self.process = rec.new_process()
        self._turn = index
        self.channel: grpc.aio.Channel | None = None
        self.kv: rpc_pb2_grpc.KVStub
        self.connect()

    def connect(self) -> None:
        eps = self.endpoints()
        addr = eps[self._turn % len(eps)]
        self._turn += 1
        self.channel = grpc.aio.insecure_channel(addr)
        self.kv = rpc_pb2_grpc.KVStub(self.channel)
        self.on_connect(self.channel)

    def on_connect(self, channel: grpc.aio.Channel) -> None:
        """Make the stubs a workload needs beyond KV."""

    async def failover(self) -> None:
        """Move to the next member after a short pause (no hot loop against a dead one)."""
        if self.channel is not None:
            await self.channel.close()
        await asyncio.sleep(0.05)
        self.connect()

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()

    async def run(self, deadline: float) -> None:
        """Run operations until ``deadline`` (time.monotonic)."""
        try:
            while time.monotonic() < deadline:
                await self.step()
        finally:
            await self.close()

    async def step(self) -> None:
        raise NotImplementedError

    async def write_op(self, f: str, key: str, value: Any, call: Callable[[], Any],
                       outcome: Callable[[Any], tuple[str, Any, int | None]]) -> Any:
        """Record one operation that may change state; ``outcome`` maps the answer to
        (ok|fail, result, revision)."""
        self.rec.invoke(self.process, f, key, value)
        try:
            resp = await call()
        except Exception as e:
            if never_sent(e):
                self.rec.complete(self.process, FAIL, f=f, key=key, error=describe(e))
            else:  # the write may or may not have happened, now or later
                self.rec.complete(self.process, INFO, f=f, key=key, error=describe(e))
                self.process = self.rec.new_process()
            await self.failover()
            return None
        kind, result, rev = outcome(resp)
        self.rec.complete(self.process, kind, f=f, key=key, value=result, rev=rev)
        return resp

    async def read_op(self, f: str, key: str, call: Callable[[], Any],
                      outcome: Callable[[Any], tuple[Any, int | None]],
                      value: Any = None) -> Any:
        self.rec.invoke(self.process, f, key, value)
        try:
            resp = await call()
        except Exception as e:  # a failed read changed nothing
            self.rec.complete(self.process, FAIL, f=f, key=key, error=describe(e))
            await self.failover()
            return None
        result, rev = outcome(resp)
        self.rec.complete(self.process, OK, f=f, key=key, value=result, rev=rev)
        return resp

    def unique(self, tag: str = "") -> str:
        """A value no other operation of the run writes."""
        return f"c{self.index}p{self.process}-{self.rng.randrange(1 << 40):x}{tag}"


def _range_value(resp: rpc_pb2.RangeResponse) -> tuple[str | None, int]:
    if not resp.kvs:
        return None, 0
    return resp.kvs[0].value.decode(), resp.kvs[0].mod_revision


class RegisterClient(Client):
    """Single-key registers: read, write, compare-and-set by value and by mod_revision."""

    def __init__(self, *args: Any, keys: list[str], stale_reads: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keys = keys
        self.serializable = stale_reads
        """Read locally (etcd's serializable reads): not linearizable, so under partitions
        the checker must find stale reads. Used to show the suite catches them."""
        self.readers: dict[str, tuple[grpc.aio.Channel, rpc_pb2_grpc.KVStub]] = {}
        """With stale reads: a channel to each member reads were sent to."""
        self.seen: dict[str, tuple[str | None, int]] = {}
        """Last (value, mod_revision) this client read per key: what its CAS expects."""

    def reader(self) -> rpc_pb2_grpc.KVStub:
        """Where the next read goes: this client's member; with stale reads, any member at
        random, as a client that spreads serializable reads over every endpoint. (Reading
        only its own member, a client left a cut-off member at its first write, which
        timed out there, so a run saw 0 to 6 stale reads of some 2,000 and the checker
        sometimes had none to catch.)"""
        if not self.serializable:
            return self.kv
        addr = self.rng.choice(self.endpoints())
        if addr not in self.readers:
            channel = grpc.aio.insecure_channel(addr)
            self.readers[addr] = channel, rpc_pb2_grpc.KVStub(channel)
        return self.readers[addr][1]

    async def close(self) -> None:
        for channel, _ in self.readers.values():
            await channel.close()
        await super().close()

    async def step(self) -> None:
        key = self.rng.choice(self.keys)
        k = key.encode()
        r = self.rng.random()
        t = self.timeout
        if r < 0.4 or key not in self.seen:
            kv = self.reader()
            resp = await self.read_op("read", key, lambda: kv.Range(
                rpc_pb2.RangeRequest(key=k, serializable=self.serializable), timeout=t),
                _range_value)
            if resp is not None:
                self.seen[key] = _range_value(resp)
            return
        new = self.unique()
        put = rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=k, value=new.encode()))
        if r < 0.7:
            await self.write_op("write", key, new, lambda: self.kv.Put(
                rpc_pb2.PutRequest(key=k, value=new.encode()), timeout=t),
                lambda resp: (OK, None, resp.header.revision))
            return
        expected, mod = self.seen[key]
        arg: list[object]
        if r < 0.85:
            if expected is None:
                cmp = rpc_pb2.Compare(key=k, target=rpc_pb2.Compare.CREATE,
                                      result=rpc_pb2.Compare.EQUAL, create_revision=0)
            else:
                cmp = rpc_pb2.Compare(key=k, target=rpc_pb2.Compare.VALUE,
                                      result=rpc_pb2.Compare.EQUAL, value=expected.encode())
            f, arg = "cas", [expected, new]
        else:
            cmp = rpc_pb2.Compare(key=k, target=rpc_pb2.Compare.MOD,
                                  result=rpc_pb2.Compare.EQUAL, mod_revision=mod)
            f, arg = "cas-rev", [mod, new]
        req = rpc_pb2.TxnRequest(compare=[cmp], success=[put])
        await self.write_op(f, key, arg, lambda: self.kv.Txn(req, timeout=t), _swapped)


def _swapped(resp: rpc_pb2.TxnResponse) -> tuple[str, Any, int | None]:
    return (OK, None, resp.header.revision) if resp.succeeded else (FAIL, None, None)


class TxnClient(Client):
    """Multi-key transactions over small groups of keys: atomic reads and writes together."""

    def __init__(self, *args: Any, groups: dict[str, list[str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.groups = groups

    async def step(self) -> None:
        group = self.rng.choice(sorted(self.groups))
        micro: list[list[Any]] = []
        for key in self.groups[group]:
            if self.rng.random() < 0.5:
                micro.append(["r", key, None])
            else:
                micro.append(["w", key, self.unique(key[-2:])])
        ops = [rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=k.encode()))
               if kind == "r" else
               rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=k.encode(),
                                                                value=v.encode()))
               for kind, k, v in micro]
        writes = any(kind == "w" for kind, _, _ in micro)

        def outcome(resp: rpc_pb2.TxnResponse) -> tuple[str, Any, int | None]:
            done = []
            for (kind, k, v), r in zip(micro, resp.responses, strict=True):
                if kind == "r":
                    v = _range_value(r.response_range)[0]
                done.append([kind, k, v])
            return OK, done, resp.header.revision if writes else None

        req = rpc_pb2.TxnRequest(success=ops)
        call = lambda: self.kv.Txn(req, timeout=self.timeout)  # noqa: E731
        if writes:
            await self.write_op("txn", group, micro, call, outcome)
        else:
            await self.read_op("txn", group, call, lambda resp: outcome(resp)[1:], micro)


class LockClient(Client):
    """Acquire a lock, write a resource guarded by the fencing token, release; repeat.

    The guard is a transaction: write only if the lock key still exists with
    create_revision == token. Holding the lease alive is this client's job; after any doubt
    (a failed Lock or keep-alive) it revokes the lease and takes a new one, so that a lock it
    may have been granted late cannot block the others for long.
    """

    def __init__(self, *args: Any, lock: str, resource: str, ttl: int = 2,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lock = lock
        self.resource = resource
        self.ttl = ttl
        self._keepalive: asyncio.Task[None] | None = None

    def on_connect(self, channel: grpc.aio.Channel) -> None:
        self.leases = coord_pb2_grpc.LeaseStub(channel)
        self.locks = coord_pb2_grpc.LockStub(channel)
        self.lease = 0  # a new channel takes a new lease (the old one expires on its own)

    async def _keep_alive(self, lease: int) -> None:
        """Renew on one stream every ttl/4; when in doubt, give the lease up."""
        call = self.leases.KeepAlive()
        try:
            while self.lease == lease:
                await call.write(coord_pb2.LeaseKeepAliveRequest(id=lease))
                r = await asyncio.wait_for(call.read(), self.timeout)
                if r is grpc.aio.EOF or r.ttl <= 0:
                    break
                await asyncio.sleep(self.ttl / 4)
        except Exception:  # any failure leaves the lease in doubt
            pass
        finally:
            call.cancel()
        if self.lease == lease:
            self.lease = 0

    async def _grant(self) -> bool:
        try:
            resp = await self.leases.Grant(coord_pb2.LeaseGrantRequest(ttl=self.ttl),
                                           timeout=self.timeout)
        except Exception:
            await self.failover()
            return False
        self.lease = resp.id
        self._keepalive = asyncio.create_task(self._keep_alive(resp.id))
        return True

    async def _drop_lease(self) -> None:
        lease, self.lease = self.lease, 0
        if lease:
            with contextlib.suppress(Exception):
                await self.leases.Revoke(coord_pb2.LeaseRevokeRequest(id=lease),
                                         timeout=self.timeout)

    async def close(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
        await self._drop_lease()
        await super().close()

    async def step(self) -> None:
        if not self.lease and not await self._grant():
            await asyncio.sleep(0.1)
            return
        resp = await self.write_op(
            "lock", self.lock, None,
            lambda: self.locks.Lock(coord_pb2.LockRequest(name=self.lock, lease=self.lease),
                                    timeout=self.timeout * 3),
            lambda r: (OK, {"token": r.fencing_token, "lock_key": r.key}, r.header.revision))
        if resp is None:
            await self._drop_lease()
            return
        token, lock_key = resp.fencing_token, resp.key
        for _ in range(self.rng.randint(1, 2)):
            value = self.unique()
            guard = rpc_pb2.Compare(key=lock_key.encode(), target=rpc_pb2.Compare.CREATE,
                                    result=rpc_pb2.Compare.EQUAL, create_revision=token)
            put = rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(
                key=self.resource.encode(), value=f"{token}:{value}".encode()))
            req = rpc_pb2.TxnRequest(compare=[guard], success=[put])
            done = await self.write_op("fenced-write", self.resource, [token, value],
                                       partial(self.kv.Txn, req, timeout=self.timeout),
                                       _swapped)
            if done is None or not done.succeeded:
                await self._drop_lease()
                return
            await asyncio.sleep(self.rng.uniform(0, 0.05))
        lease = self.lease
        await self.write_op(
            "unlock", self.lock, token,
            lambda: self.locks.Unlock(coord_pb2.UnlockRequest(key=lock_key, lease=lease),
                                      timeout=self.timeout),
            lambda r: (OK, None, r.header.revision))


def watch_events(resp: rpc_pb2.WatchResponse) -> list[dict[str, Any]]:
    """A watch response's events as history records."""
    return [{"rev": ev.kv.mod_revision, "type": "delete" if ev.type == ev.DELETE else "put",
             "key": ev.kv.key.decode(),
             "value": None if ev.type == ev.DELETE else ev.kv.value.decode()}
            for ev in resp.events]


class Watcher:
    """Watches the data prefix and records every response; resumes after errors.

    After an error it reconnects (to the next member) at the revision after the last event it
    received, so the records show whether resuming loses or repeats events.
    """

    def __init__(self, writer: HistoryWriter, t0: int, endpoints: Endpoints, watcher_id: int,
                 start_rev: int, prefix: str = DATA_PREFIX) -> None:
        self.writer = writer
        self.t0 = t0
        self.endpoints = endpoints
        self.id = watcher_id
        self.next_rev = start_rev
        self.prefix = prefix
        self.last_rev = 0
        self._turn = watcher_id
        self.rng = random.Random(watcher_id)

    def _record(self, kind: str, **fields: Any) -> None:
        self.writer.write({"watcher": self.id, "type": kind,
                           "time": time.monotonic_ns() - self.t0, **fields})

    async def run(self, stop: asyncio.Event, until_rev: Callable[[], int | None]) -> None:
        """Watch until ``stop`` is set and the last event reaches ``until_rev()``.

        The ``end`` record is written even when the caller gives up and cancels the task.
        """
        try:
            while True:
                target = until_rev()
                if stop.is_set() and target is not None and self.last_rev >= target:
                    break
                eps = self.endpoints()
                addr = eps[self._turn % len(eps)]
                self._turn += 1
                try:
                    async with grpc.aio.insecure_channel(addr) as channel:
                        await self._stream(channel, stop, until_rev)
                except Exception as e:  # record it, then resume from where it stopped
                    self._record("error", error=describe(e))
                    await asyncio.sleep(0.2)
        finally:
            self._record("end", last_rev=self.last_rev)

    async def _stream(self, channel: grpc.aio.Channel, stop: asyncio.Event,
                      until_rev: Callable[[], int | None]) -> None:
        key = self.prefix.encode()
        create = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
            key=key, range_end=prefix_end(key), start_revision=self.next_rev))
        call = rpc_pb2_grpc.WatchStub(channel).Watch()
        # Resume on purpose now and then, so resumption is tested even in a quiet run.
        hang_up = time.monotonic() + self.rng.uniform(2.0, 6.0)
        reading: asyncio.Future[Any] | None = None
        try:
            await call.write(create)
            self._record("start", start_rev=self.next_rev, prefix=self.prefix)
            while True:
                target = until_rev()
                if stop.is_set() and target is not None and self.last_rev >= target:
                    return
                if time.monotonic() > hang_up and not stop.is_set():
                    self._record("error", error="hung up on purpose, to resume elsewhere")
                    return
                # Wait for the next response without cancelling the read (which would cancel
                # the call), so that stop/until_rev are looked at every second.
                reading = reading or asyncio.ensure_future(call.read())
                await asyncio.wait({reading}, timeout=1.0)
                if not reading.done():
                    continue
                resp, reading = reading.result(), None
                if resp is grpc.aio.EOF:
                    raise ConnectionError("watch stream ended")
                if resp.canceled:
                    raise RuntimeError(f"watch canceled: {resp.cancel_reason} "
                                       f"(compact_revision {resp.compact_revision})")
                if resp.events:
                    events = watch_events(resp)
                    self._record("batch", events=events)
                    self.last_rev = events[-1]["rev"]
                    self.next_rev = self.last_rev + 1
        finally:
            call.cancel()
            if reading is not None:
                reading.cancel()
                await asyncio.gather(reading, return_exceptions=True)


async def read_reference(endpoint: str, prefix: str, final_rev: int,
                         timeout: float) -> list[dict[str, Any]]:
    """Every event under ``prefix`` from revision 1 to ``final_rev``, from one fresh watch."""
    key = prefix.encode()
    events: list[dict[str, Any]] = []
    async with grpc.aio.insecure_channel(endpoint) as channel:
        call = rpc_pb2_grpc.WatchStub(channel).Watch()
        try:
            await call.write(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
                key=key, range_end=prefix_end(key), start_revision=1)))
            deadline = time.monotonic() + timeout
            while not events or events[-1]["rev"] < final_rev:
                reading = asyncio.ensure_future(call.read())
                await asyncio.wait({reading}, timeout=max(0.0, deadline - time.monotonic()))
                if not reading.done():
                    reading.cancel()
                    raise TimeoutError(f"reference watch reached only revision "
                                       f"{events[-1]['rev'] if events else 0} of {final_rev}")
                resp = reading.result()
                if resp is grpc.aio.EOF or resp.canceled:
                    raise ConnectionError("reference watch ended early")
                events.extend(watch_events(resp))
        finally:
            call.cancel()
    return events
