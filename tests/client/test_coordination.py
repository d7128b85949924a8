"""Leases kept alive, locks, elections and service discovery, with both clients.

First the shared plans against scripted I/O and a fake clock (renewal timing, failover, loss
at the deadline, a lock whose outcome is unknown), then both clients against a real 3-node
cluster (module-scoped, tick 50 ms: the minimum lease TTL is 1 s). Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import confer
import confer.aio
from confer import Compare, Op
from confer.client import plans
from confer.client.coord import Lease, Lock
from confer.client.errors import DeadlineExceeded, FailedPrecondition, LeaseLost, Lost
from confer.client.models import KeyValue, ServiceEvent, ServiceEventType
from confer.client.plans import LeaseKeeper, Open, Recv, Send, Spawn, Stop, Unary
from confer.client.policy import Failure, Renewal
from confer.client.transport import Runner
from confer.v1 import coord_pb2
from testing.procs import ProcessCluster

from .conftest import wait_for
from .fakes import FakeIO, FakeStream, header

BROKEN = Failure("UNAVAILABLE", "Stream removed (Socket closed)")


# -- the keep-alive plan, scripted --------------------------------------------------------------
class KeepAliveIO(FakeIO):
    """A scripted KeepAlive service: ``answer(endpoint, n)`` gives the response (or Failure,
    or None: no answer) to the n-th renewal overall. Records (time, endpoint) of each send."""

    def __init__(self, answer: Callable[[str, int], Any], **options: Any) -> None:
        super().__init__(**options)
        self.answer = answer
        self.sent: list[tuple[float, str]] = []

    def _open(self, a: Open) -> FakeStream:
        stream = FakeStream(a.endpoint, a.request, [])
        self.opened.append(stream)
        return stream

    def _send(self, a: Send) -> None:
        stream: FakeStream = a.stream  # type: ignore[assignment]
        self.sent.append((self.clock.now, stream.endpoint))
        stream.messages.append(self.answer(stream.endpoint, len(self.sent)))

    def _recv(self, a: Recv) -> Any:
        stream: FakeStream = a.stream  # type: ignore[assignment]
        answer = stream.messages.pop(0) if stream.messages else None
        if answer is None:  # silence: the answer timeout passes
            assert a.timeout is not None
            self.clock.now += a.timeout
            return Failure("UNAVAILABLE", f"no message for {a.timeout:g}s")
        self.clock.now += 0.01
        return answer


def renewed(ttl: int = 3) -> coord_pb2.LeaseKeepAliveResponse:
    return coord_pb2.LeaseKeepAliveResponse(header=header(2, 2), id=5, ttl=ttl)


def run_keeper(io: KeepAliveIO, ttl: float = 3.0, max_sends: int = 50) -> tuple[
        LeaseKeeper, list[Any]]:
    """Run the keep-alive of lease 5 (granted now) until it emits, or ``max_sends``."""
    keeper = LeaseKeeper(5, Renewal(ttl, io.clock.now))
    answer = io.answer

    def bounded(endpoint: str, n: int) -> Any:
        if n >= max_sends:
            keeper.cancel()
        return answer(endpoint, n)

    io.answer = bounded
    return keeper, list(io.iterate(plans.keep_alive(io.core, keeper)))


def test_renewals_go_out_every_third_of_the_ttl_from_the_last_acknowledged_send() -> None:
    io = KeepAliveIO(lambda endpoint, n: renewed())
    start = io.clock.now
    keeper, emitted = run_keeper(io, max_sends=6)
    assert emitted == [] and keeper.lost is None
    times = [t - start for t, _ in io.sent]
    assert times == pytest.approx([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])  # from sends, not answers
    assert len(io.opened) == 1  # one stream for all of them
    assert keeper.renewal.deadline == pytest.approx(io.sent[-2][0] + 3)


def test_a_failed_stream_moves_to_the_next_endpoint_and_the_lease_survives() -> None:
    def answer(endpoint: str, n: int) -> Any:
        return BROKEN if endpoint == "b:2" else renewed()

    io = KeepAliveIO(answer)  # renewals go to the leader (b:2, from the member list)
    io.core.router.learn_members([(1, "a:1"), (2, "b:2"), (3, "c:3")], 2, io.clock.now)
    keeper, emitted = run_keeper(io, max_sends=5)
    assert emitted == [] and keeper.lost is None
    first, second = [e for _, e in io.sent][:2]
    assert first == "b:2" and second != "b:2"
    assert keeper.renewal.renewals == 3


def test_ttl_zero_means_revoked_or_expired_at_once() -> None:
    io = KeepAliveIO(lambda endpoint, n: renewed(ttl=0 if n == 3 else 3))
    keeper, emitted = run_keeper(io)
    assert len(io.sent) == 3
    assert emitted == [keeper.lost] and "revoked or expired" in str(keeper.lost)


def test_a_lease_no_endpoint_renews_is_lost_by_its_deadline_counted_from_the_last_ack() -> None:
    io = KeepAliveIO(lambda endpoint, n: renewed() if n == 1 else None, min_attempt_timeout=0.5)
    keeper, emitted = run_keeper(io)
    assert emitted == [keeper.lost] and isinstance(keeper.lost, LeaseLost)
    deadline = io.sent[0][0] + 3  # the one acknowledged renewal, sent at 1.0
    assert keeper.renewal.deadline == pytest.approx(deadline)
    assert deadline - 1.0 <= io.clock.now <= deadline + 0.01  # never late, barely early
    assert "no renewal acknowledged within its TTL of 3s" in str(keeper.lost)
    assert len({e for _, e in io.sent[1:]}) >= 2  # it tried other members (TTL/3 each)


# -- a lock whose Lock call fails, scripted -----------------------------------------------------
class HandleIO(FakeIO):
    """FakeIO for handles: nothing runs in the background."""

    def _spawn(self, a: Spawn) -> Runner:
        return Runner(a.feed, None)

    def _stop(self, a: Stop) -> None:
        a.runner.feed.cancel()


class FakeClient:
    """What a handle needs of a client."""

    def __init__(self, io: FakeIO) -> None:
        self._core = io.core
        self._io = io
        self._feeds: weakref.WeakSet[Any] = weakref.WeakSet()

    def _new_lease(self, ttl: int) -> Lease:
        return Lease(self, ttl)  # type: ignore[arg-type]


def lock_io(lock_answer: Callable[[Unary], Any]) -> HandleIO:
    def respond(a: Unary) -> Any:
        if a.rpc.name == "Grant":
            return coord_pb2.LeaseGrantResponse(header=header(1, 1), id=5, ttl=10)
        if a.rpc.name == "Revoke":
            return coord_pb2.LeaseRevokeResponse(header=header(1, 1))
        if a.rpc.name == "MemberList":
            raise AssertionError("single endpoint")
        return lock_answer(a)

    return HandleIO(respond, endpoints=("a:1",))


@pytest.mark.parametrize("answer, error", [
    (Failure("DEADLINE_EXCEEDED", "Deadline Exceeded"), DeadlineExceeded),
    (BROKEN, DeadlineExceeded),  # retried with the same lease until the time is up
    (Failure("NOT_FOUND", "lease 5 expired or was revoked while waiting"), LeaseLost),
])
def test_a_lock_not_acquired_revokes_its_lease_so_no_key_is_left_behind(
        answer: Failure, error: type[Exception]) -> None:
    io = lock_io(lambda a: answer)
    lock = Lock(FakeClient(io), "/locks/x", 10, None, 2.0)  # type: ignore[arg-type]
    with pytest.raises(error):
        lock.acquire()
    names = [c.rpc.name for c in io.calls]
    assert names[0] == "Grant" and names[-1] == "Revoke" and "Lock" in names
    assert io.calls[-1].request.id == 5
    assert not lock.held and lock.key == "" and lock.lease.closed and not lock.lost


def test_an_interrupted_lock_call_revokes_its_lease_then_lets_the_interrupt_through() -> None:
    def interrupt(a: Unary) -> Any:
        raise KeyboardInterrupt

    io = lock_io(interrupt)
    lock = Lock(FakeClient(io), "/locks/x", 10, None, None)  # type: ignore[arg-type]
    with pytest.raises(KeyboardInterrupt):
        lock.acquire()
    assert [c.rpc.name for c in io.calls] == ["Grant", "Lock", "Revoke"]
    assert io.calls[1].timeout == float("inf")  # no deadline: it waits for its turn


def test_a_lock_retries_a_broken_connection_with_the_same_lease() -> None:
    answers = [BROKEN, coord_pb2.LockResponse(header=header(1, 1, revision=9),
                                              key="/locks/x/5", fencing_token=9)]
    io = lock_io(lambda a: answers.pop(0))
    lock = Lock(FakeClient(io), "/locks/x", 10, None, 5.0)  # type: ignore[arg-type]
    assert lock.acquire() is lock
    locks = [c for c in io.calls if c.rpc.name == "Lock"]
    assert [c.request.lease for c in locks] == [5, 5]
    assert (lock.key, lock.fencing_token, lock.held) == ("/locks/x/5", 9, True)
    assert repr(lock.guard) == "<create('/locks/x/5') == 9>"


# -- both clients on a real cluster ------------------------------------------------------------
def test_lease_keepalive_keeps_keys_beyond_the_ttl_and_loss_fires_on_revoke(
        cluster: ProcessCluster) -> None:
    with confer.Client(cluster.endpoints, timeout=5) as c, \
            confer.Client(cluster.endpoints, timeout=5) as other:
        with c.lease(2) as lease:
            assert lease.started and lease.ttl == 2 and lease.owned
            c.put("/co/lease/a", b"x", lease=lease.id)
            time.sleep(2.5)  # beyond the TTL
            assert c.get("/co/lease/a") is not None
            assert lease.renewals >= 3 and not lease.lost and 0 < lease.remaining <= 2
            info = c.lease_time_to_live(lease.id, keys=True)
            assert info is not None and info.keys == ("/co/lease/a",) and info.granted_ttl == 2
            assert lease.id in {s.id for s in c.lease_list()}
            seen: list[Lost] = []
            lease.on_lost(seen.append)
            assert other.lease_revoke(lease.id).deleted == 1
            assert lease.wait_lost(5) and lease.lost
            assert isinstance(lease.error, LeaseLost) and lease.error.lease_id == lease.id
            wait_for(lambda: seen == [lease.error], 2, "the callback")
        assert c.get("/co/lease/a") is None and c.lease_time_to_live(lease.id) is None
        with c.lease(1) as short:
            c.put("/co/lease/b", b"y", lease=short.id)
        assert c.get("/co/lease/b") is None  # leaving the block revoked it
        assert not short.lost and short.closed


def test_asyncio_lease_keepalive_and_keep_alive_of_an_existing_lease(
        cluster: ProcessCluster) -> None:
    async def main() -> None:
        async with confer.aio.Client(cluster.endpoints, timeout=5) as c:
            granted = await c.lease_grant(2)
            await c.put("/co/alease/a", b"x", lease=granted.id)
            async with c.lease_keep_alive(granted.id) as kept:
                assert not kept.owned and kept.ttl == 2
                await asyncio.sleep(2.5)
                assert await c.get("/co/alease/a") is not None and kept.renewals >= 3
            assert not kept.lost  # stopped, not revoked: the lease expires by itself
            assert (await c.lease_time_to_live(granted.id)) is not None
            lease = await c.lease(2)
            lost = asyncio.Event()

            async def on_lost(error: Lost) -> None:
                lost.set()

            lease.on_lost(on_lost)
            await c.lease_revoke(lease.id)
            assert await lease.wait_lost(5)
            await asyncio.wait_for(lost.wait(), 2)
            await lease.close()
            with pytest.raises(confer.NotFound):
                await c.lease_keep_alive(123456)

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_lease_survives_a_leader_kill(fresh_cluster: ProcessCluster) -> None:
    c = fresh_cluster
    with confer.Client(c.endpoints, timeout=5) as client, client.lease(3) as lease:
        client.put("/co/failover", b"x", lease=lease.id)
        wait_for(lambda: lease.renewals >= 2, 5, "renewals")
        leader = c.leader()
        c.nodes[leader].kill()
        killed = time.monotonic()
        before = lease.renewals
        time.sleep(max(0.0, killed + 3.5 - time.monotonic()))  # more than the TTL
        assert not lease.lost and lease.renewals > before
        assert client.get("/co/failover") is not None


def critical_section(inside: list[int], tokens: list[int], token: int) -> None:
    """Fail if another holder is inside; record the token."""
    inside.append(token)
    assert len(inside) == 1, f"two holders at once: {inside}"
    tokens.append(token)
    time.sleep(0.02)
    inside.remove(token)


def test_lock_mutual_exclusion_with_increasing_fencing_tokens_threads(
        cluster: ProcessCluster) -> None:
    inside: list[int] = []
    tokens: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with confer.Client(cluster.endpoints, timeout=5) as c:
                for _ in range(3):
                    with c.lock("/co/mutex", ttl=2, timeout=20) as lock:
                        critical_section(inside, tokens, lock.fencing_token)
                        ok = c.txn().if_(lock.guard).then(Op.put("/co/mutex-data", "w")).commit()
                        assert ok.succeeded and not lock.lost
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(40)
    assert not any(t.is_alive() for t in threads) and errors == []
    assert len(tokens) == 12 and tokens == sorted(set(tokens))


def test_lock_mutual_exclusion_with_increasing_fencing_tokens_tasks(
        cluster: ProcessCluster) -> None:
    inside: list[int] = []
    tokens: list[int] = []

    async def worker(c: confer.aio.Client) -> None:
        for _ in range(2):
            async with c.lock("/co/amutex", ttl=2, timeout=20) as lock:
                inside.append(lock.fencing_token)
                assert len(inside) == 1, f"two holders at once: {inside}"
                tokens.append(lock.fencing_token)
                await asyncio.sleep(0.02)
                inside.remove(lock.fencing_token)

    async def main() -> None:
        async with confer.aio.Client(cluster.endpoints, timeout=5) as c:
            await asyncio.gather(*(worker(c) for _ in range(4)))
            lock = await c.lock("/co/amutex", ttl=2)  # awaiting a Lock acquires it
            assert lock.held and lock.fencing_token > tokens[-1]
            await lock.release()
            assert not lock.held and (await c.list("/co/amutex")).kvs == ()

    asyncio.run(asyncio.wait_for(main(), 40))
    assert len(tokens) == 8 and tokens == sorted(set(tokens))


def test_the_fencing_guard_rejects_a_stale_holders_write(cluster: ProcessCluster) -> None:
    with confer.Client(cluster.endpoints, timeout=5) as a_client, \
            confer.Client(cluster.endpoints, timeout=5) as b_client:
        a = a_client.lock("/co/fence", ttl=2).acquire()
        guarded = a_client.txn().if_(Compare.create_revision(a.key) == a.fencing_token)
        assert guarded.then(Op.put("/co/fenced", "a1")).commit().succeeded
        # A stalls (a GC pause, a partition...) and its lease ends behind its back:
        a_client.lease_revoke(a.lease.id)
        with b_client.lock("/co/fence", ttl=2, timeout=10) as b:
            assert b.fencing_token > a.fencing_token
            stale = a_client.txn().if_(a.guard).then(Op.put("/co/fenced", "a2")).commit()
            assert not stale.succeeded  # the stale holder's write is rejected
            assert b_client.txn().if_(b.guard).then(Op.put("/co/fenced", "b1")).commit(
                ).succeeded
            assert a.wait_lost(5) and isinstance(a.error, Lost)
            with pytest.raises(DeadlineExceeded, match=r"not acquired within 0\.5s"):
                a_client.lock("/co/fence", ttl=1, timeout=0.5).acquire()
            assert [kv.path for kv in b_client.list("/co/fence").kvs] == [b.key]  # no leftover
        a.release()
        kv = b_client.get("/co/fenced")
        assert kv is not None and kv.value == b"b1"


def test_a_deleted_lock_key_is_reported_lost(cluster: ProcessCluster) -> None:
    with confer.Client(cluster.endpoints, timeout=5) as c, c.lock("/co/deleted") as lock:
        c.delete(lock.key)
        assert lock.wait_lost(5)
        assert type(lock.error) is Lost and "was deleted" in str(lock.error)
        assert not lock.lease.lost


def test_election_campaign_observe_proclaim_resign_with_two_campaigners(
        cluster: ProcessCluster) -> None:
    observed: list[KeyValue] = []
    with confer.Client(cluster.endpoints, timeout=5) as c1, \
            confer.Client(cluster.endpoints, timeout=5) as c2:
        watch = c2.election("/co/elect").observe(callback=observed.append)
        e1 = c1.election("/co/elect", ttl=2)
        e2 = c2.election("/co/elect", ttl=2)
        assert e1.campaign("one") is e1 and e1.is_leader
        second: list[Any] = []
        t = threading.Thread(target=lambda: second.append(e2.campaign("two", timeout=15)))
        t.start()
        try:
            time.sleep(0.3)
            assert t.is_alive() and not e2.is_leader  # waiting its turn
            leader = e2.leader()
            assert leader is not None and leader.value == b"one"
            assert leader.create_revision == e1.rev
            e1.proclaim("one, again")
            wait_for(lambda: [kv.value for kv in observed] == [b"one", b"one, again"], 5,
                     "the proclamation")
            first_rev = e1.rev
            e1.resign()
            t.join(15)
            assert second == [e2] and e2.is_leader and e2.rev > first_rev
        finally:
            t.join(15)
        wait_for(lambda: [kv.value for kv in observed][-1:] == [b"two"], 5, "the new leader")
        assert len(observed) == 3
        with pytest.raises(FailedPrecondition):
            e1.proclaim("not leading")
        ok = c2.txn().if_(e2.guard).then(Op.put("/co/elected-by", "two")).commit()
        assert ok.succeeded
        with e2:
            pass  # leaving the block resigns (and revokes its lease)
        assert c1.election("/co/elect").leader() is None
        watch.cancel()


def test_asyncio_election(cluster: ProcessCluster) -> None:
    async def main() -> None:
        async with confer.aio.Client(cluster.endpoints, timeout=5) as a, \
                confer.aio.Client(cluster.endpoints, timeout=5) as b:
            async with a.election("/co/aelect", ttl=2) as ea, b.election("/co/aelect",
                                                                          ttl=2) as eb:
                observe = ea.observe()
                await ea.campaign(b"a")
                waiting = asyncio.ensure_future(eb.campaign(b"b"))
                first = await asyncio.wait_for(anext(observe), 5)
                assert first.value == b"a" and not waiting.done()
                await ea.proclaim("a2")
                assert (await asyncio.wait_for(anext(observe), 5)).value == b"a2"
                await ea.resign()
                await asyncio.wait_for(waiting, 10)
                assert eb.is_leader and not ea.is_leader
                assert (await asyncio.wait_for(anext(observe), 5)).value == b"b"
                await observe.close()
            assert await a.election("/co/aelect").leader() is None

    asyncio.run(asyncio.wait_for(main(), 30))


REGISTER_AND_WAIT = """
import sys, time, confer
client = confer.Client(sys.argv[1].split(","), timeout=5)
client.register("co-svc", "doomed", "10.0.0.9:9", {"pid": sys.argv[2]}, ttl=2)
print("registered", flush=True)
time.sleep(60)
"""


def next_within(watch: Iterator[ServiceEvent], seconds: float) -> ServiceEvent:
    """The next event, or fail after ``seconds`` (the watch is cancelled then)."""
    timer = threading.Timer(seconds, watch.cancel)  # type: ignore[attr-defined]
    timer.start()
    try:
        return next(watch)
    except StopIteration:
        raise AssertionError(f"no service event within {seconds}s") from None
    finally:
        timer.cancel()


def test_service_register_discover_watch_and_a_killed_instance_leaves_within_its_ttl(
        cluster: ProcessCluster) -> None:
    with confer.Client(cluster.endpoints, timeout=5) as c, c.watch_service("co-svc") as ws:
        with c.register("co-svc", "a", "10.0.0.1:80", {"zone": "eu"}, ttl=2) as reg:
            registered = time.monotonic()
            joined = next_within(ws, 5)
            assert (joined.type, joined.instance) == (ServiceEventType.JOIN, reg.instance)
            assert c.discover("co-svc") == [confer.Instance("a", "10.0.0.1:80", {"zone": "eu"},
                                                            reg.instance.revision)]
            proc = subprocess.Popen([sys.executable, "-c", REGISTER_AND_WAIT,
                                     ",".join(cluster.endpoints), "x"],
                                    stdout=subprocess.PIPE, text=True)
            try:
                assert proc.stdout is not None and proc.stdout.readline() == "registered\n"
                event = next_within(ws, 5)
                assert (event.type, event.instance.id) == (ServiceEventType.JOIN, "doomed")
                assert {i.id for i in c.discover("co-svc")} == {"a", "doomed"}
                killed = time.monotonic()
                os.kill(proc.pid, signal.SIGKILL)
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(10)
                proc.stdout.close()  # type: ignore[union-attr]
            event = next_within(ws, 6)
            assert (event.type, event.instance.id) == (ServiceEventType.LEAVE, "doomed")
            assert time.monotonic() - killed < 2.0 + 2.5  # its TTL, plus expiry and commit
            time.sleep(max(0.0, registered + 2.5 - time.monotonic()))
            assert [i.id for i in c.discover("co-svc")] == ["a"] and not reg.lost  # kept alive
        left = next_within(ws, 5)  # closing deregisters at once
        assert (left.type, left.instance.id) == (ServiceEventType.LEAVE, "a")
        assert c.discover("co-svc") == []


def test_asyncio_service_discovery(cluster: ProcessCluster) -> None:
    async def main() -> None:
        async with confer.aio.Client(cluster.endpoints, timeout=5) as c:
            first = await c.register("co-asvc", "x", "h:1", ttl=2)
            async with c.watch_service("co-asvc") as ws:
                assert (await asyncio.wait_for(anext(ws), 5)).instance.id == "x"
                async with c.register("co-asvc", "y", "h:2", {"v": 1}, ttl=2):
                    event = await asyncio.wait_for(anext(ws), 5)
                    assert (event.type, event.instance.metadata) == (ServiceEventType.JOIN,
                                                                     {"v": 1})
                    assert [i.id for i in await c.discover("co-asvc")] == ["x", "y"]
                assert (await asyncio.wait_for(anext(ws), 5)).type is ServiceEventType.LEAVE
            await first.close()
            assert await c.discover("co-asvc") == []

    asyncio.run(asyncio.wait_for(main(), 30))


def test_handles_refuse_the_other_clients_protocol(cluster: ProcessCluster) -> None:
    with confer.Client(cluster.endpoints, timeout=5) as c:
        lock = c.lock("/co/proto")

        async def misuse() -> None:
            async with lock:
                pass

        with pytest.raises(TypeError, match="use 'with'"):
            asyncio.run(misuse())
        with pytest.raises(confer.InvalidArgument):
            c.register("bad/name", "x", "h:1")
