"""Locks on a real 3-process cluster: mutual exclusion, fencing tokens, fair hand-over that
wakes only the next waiter, lease expiry of the holder and of a waiter, cancellation."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Iterator

import grpc
import pytest

from confer.v1 import coord_pb2, kv_pb2
from testing import ProcessCluster

from .coord_helpers import Background, Client, rpc_error, wait_for

WOKE = re.compile(r"lock (\S+): waiter (\S+) woke up")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    # Debug logs: the waiters' wake-ups are logged, and counted below.
    with ProcessCluster(3, tmp_path_factory.mktemp("locks"), tick_ms=50,
                        extra_args=["--log-level", "debug"]) as c:
        c.leader()
        yield c


def lock(addr: str, name: str, lease: int, timeout: float = 20) -> coord_pb2.LockResponse:
    with Client(addr) as cl:
        return cl.lock.Lock(coord_pb2.LockRequest(name=name, lease=lease), timeout=timeout)


def unlock(cl: Client, key: str) -> None:
    cl.lock.Unlock(coord_pb2.UnlockRequest(key=key), timeout=10)


def revoke(cl: Client, *leases: int) -> None:
    for lease in leases:
        cl.lease.Revoke(coord_pb2.LeaseRevokeRequest(id=lease), timeout=10)


def guarded_put(cl: Client, lock_key: str, token: int, path: str, value: bytes) -> bool:
    """The fencing pattern: write only while the lock key is still the one created at
    ``token`` (its create revision). Returns whether the write happened."""
    txn = kv_pb2.TxnRequest(
        compare=[kv_pb2.Compare(path=lock_key, target=kv_pb2.Compare.CREATE,
                                result=kv_pb2.Compare.EQUAL, create_revision=token)],
        success=[kv_pb2.RequestOp(put=kv_pb2.PutRequest(path=path, value=value))])
    return cl.kv.Txn(txn, timeout=10).succeeded


def wakeups(c: ProcessCluster) -> Counter[str]:
    """Waiter key -> how many times it woke up, over every member's log."""
    woke: Counter[str] = Counter()
    for n in c.nodes.values():
        woke.update(m.group(2) for m in WOKE.finditer(n.log_text()))
    return woke


def test_three_contenders_are_mutually_exclusive_with_increasing_fencing_tokens(
        cluster: ProcessCluster) -> None:
    name, rounds = "/locks/mutex", 4
    guard = threading.Lock()
    holder: list[int] = []
    acquired: list[tuple[int, int]] = []  # (fencing token, contender), in acquisition order
    overlaps: list[str] = []

    def contender(me: int, addr: str) -> None:
        with Client(addr) as cl:
            lease = cl.grant(ttl=30)
            for _ in range(rounds):
                got = cl.lock.Lock(coord_pb2.LockRequest(name=name, lease=lease), timeout=20)
                with guard:
                    if holder:
                        overlaps.append(f"{me} entered while {holder} held the lock")
                    holder.append(me)
                    acquired.append((got.fencing_token, me))
                # A read-modify-write that loses updates unless the lock excludes.
                current = cl.get("/locks-data/counter")
                time.sleep(0.02)
                value = b"%d" % (int(current.value) + 1 if current else 1)
                assert guarded_put(cl, got.key, got.fencing_token, "/locks-data/counter", value)
                with guard:
                    holder.remove(me)
                unlock(cl, got.key)
            revoke(cl, lease)

    threads = [threading.Thread(target=contender, args=(i, addr), daemon=True)
               for i, addr in enumerate(cluster.endpoints)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=40)
    assert not any(t.is_alive() for t in threads)
    assert not overlaps
    assert sorted(me for _, me in acquired) == sorted(list(range(3)) * rounds)
    tokens = [token for token, _ in acquired]
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)  # strictly increasing
    with Client(cluster.endpoints[0]) as cl:
        assert cl.get("/locks-data/counter").value == b"%d" % (3 * rounds)  # type: ignore
        assert cl.paths(name) == []


def test_waiters_are_served_in_order_and_only_the_next_one_wakes(
        cluster: ProcessCluster) -> None:
    name = "/locks/queue"
    with Client(cluster.endpoints[0]) as cl:
        leases = [cl.grant(ttl=60) for _ in range(4)]
        first = cl.lock.Lock(coord_pb2.LockRequest(name=name, lease=leases[0]), timeout=10)
        waiters = []
        for i, lease in enumerate(leases[1:], start=1):
            addr = cluster.endpoints[i % 3]  # waiters on different members
            waiters.append(Background(lambda addr=addr, lease=lease: lock(addr, name, lease)))
            wait_for(lambda i=i: len(cl.paths(name)) == i + 1, 10, f"waiter {i} to queue")
        keys = cl.paths(name)
        time.sleep(0.3)
        assert not any(w.done() for w in waiters)
        before = wakeups(cluster)
        tokens = [first.fencing_token]
        holder_key = first.key
        for i, w in enumerate(waiters):
            unlock(cl, holder_key)
            got = w.value()
            assert got.key == keys[i + 1]  # in create-revision order
            tokens.append(got.fencing_token)
            time.sleep(0.3)
            assert not any(other.done() for other in waiters[i + 1:])
            woke = wakeups(cluster) - before
            # The one whose predecessor went woke up once; nobody behind it woke at all.
            assert woke[got.key] == 1, woke
            assert not any(woke[k] for k in keys[i + 2:]), woke
            holder_key = got.key
        unlock(cl, holder_key)
        assert tokens == sorted(tokens) and len(set(tokens)) == 4
        revoke(cl, *leases)


def test_the_next_waiter_gets_the_lock_when_the_holders_lease_expires(
        cluster: ProcessCluster) -> None:
    name = "/locks/expiry"
    with Client(cluster.endpoints[1]) as cl:
        waiting = cl.grant(ttl=60)
        before_grant = time.monotonic()
        crashed = cl.grant(ttl=1)  # a holder that stops renewing: as if it crashed
        held = cl.lock.Lock(coord_pb2.LockRequest(name=name, lease=crashed), timeout=10)
        waiter = Background(lambda: lock(cluster.endpoints[2], name, waiting))
        got = waiter.value(timeout=10)
        assert waiter.finished_at - before_grant >= 1.0  # not before the holder's TTL
        assert got.fencing_token > held.fencing_token
        assert cl.paths(name) == [got.key]
        unlock(cl, got.key)
        revoke(cl, waiting)


def test_a_waiter_whose_lease_expires_while_waiting_is_refused(
        cluster: ProcessCluster) -> None:
    name = "/locks/expired-waiter"
    with Client(cluster.endpoints[0]) as cl:
        holder, short, patient = cl.grant(ttl=60), cl.grant(ttl=1), cl.grant(ttl=60)
        held = cl.lock.Lock(coord_pb2.LockRequest(name=name, lease=holder), timeout=10)
        doomed = Background(lambda: lock(cluster.endpoints[1], name, short))
        wait_for(lambda: len(cl.paths(name)) == 2, 10, "the short-lived waiter to queue")
        behind = Background(lambda: lock(cluster.endpoints[2], name, patient))
        wait_for(lambda: len(cl.paths(name)) == 3, 10, "the patient waiter to queue")
        doomed.join(timeout=10)
        assert doomed.done() and doomed.error is not None
        assert doomed.error.code() == grpc.StatusCode.NOT_FOUND
        assert f"{short:#x}" in (doomed.error.details() or "")
        assert "not acquired" in (doomed.error.details() or "")
        time.sleep(0.3)
        assert not behind.done()  # still behind the holder
        unlock(cl, held.key)
        got = behind.value()
        assert got.fencing_token > held.fencing_token
        assert cl.paths(name) == [got.key]
        unlock(cl, got.key)
        revoke(cl, holder, patient)


def test_fencing_token_rejects_a_stale_holders_write(cluster: ProcessCluster) -> None:
    """The documented pattern: every write to the protected resource compares the lock key's
    create revision with the fencing token, in the same Txn."""
    name, resource = "/locks/fenced", "/fenced/resource"
    with Client(cluster.endpoints[0]) as a, Client(cluster.endpoints[1]) as b:
        lease_a, lease_b = a.grant(ttl=60), b.grant(ttl=60)
        got_a = a.lock.Lock(coord_pb2.LockRequest(name=name, lease=lease_a), timeout=10)
        assert guarded_put(a, got_a.key, got_a.fencing_token, resource, b"from A")
        # A pauses (GC, swap, partition) past its lease: the lease ends, B gets the lock.
        revoke(a, lease_a)
        got_b = b.lock.Lock(coord_pb2.LockRequest(name=name, lease=lease_b), timeout=10)
        assert got_b.fencing_token > got_a.fencing_token
        assert guarded_put(b, got_b.key, got_b.fencing_token, resource, b"from B")
        # A wakes up, still believing it holds the lock: its write is rejected.
        assert not guarded_put(a, got_a.key, got_a.fencing_token, resource, b"stale A")
        assert a.get(resource).value == b"from B"  # type: ignore[union-attr]
        unlock(b, got_b.key)
        revoke(b, lease_b)


def test_cancelled_waiter_withdraws_and_bad_requests_are_refused(
        cluster: ProcessCluster) -> None:
    name = "/locks/cancel"
    with Client(cluster.endpoints[2]) as cl:
        holder, quitter = cl.grant(ttl=60), cl.grant(ttl=60)
        held = cl.lock.Lock(coord_pb2.LockRequest(name=name, lease=holder), timeout=10)
        # Locking again with the holding lease returns the same key and token at once.
        again = cl.lock.Lock(coord_pb2.LockRequest(name=name, lease=holder), timeout=10)
        assert (again.key, again.fencing_token) == (held.key, held.fencing_token)
        err = rpc_error(lambda: cl.lock.Lock(coord_pb2.LockRequest(name=name, lease=quitter),
                                             timeout=1.0))
        assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        wait_for(lambda: cl.paths(name) == [held.key], 10, "the quitter's key to be deleted")
        for request, code in [
            (coord_pb2.LockRequest(name=name, lease=0), grpc.StatusCode.INVALID_ARGUMENT),
            (coord_pb2.LockRequest(name="locks/x", lease=holder),
             grpc.StatusCode.INVALID_ARGUMENT),
            (coord_pb2.LockRequest(name=name, lease=0x5EED), grpc.StatusCode.NOT_FOUND),
        ]:
            err = rpc_error(lambda r=request: cl.lock.Lock(r, timeout=10))
            assert err.code() == code, (request, err.details())
        # Unlocking a key you don't hold is refused and changes nothing.
        err = rpc_error(lambda: cl.lock.Unlock(
            coord_pb2.UnlockRequest(key=held.key, lease=quitter), timeout=10))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err.details()
        assert f"held by lease {holder:x}" in (err.details() or "")
        err = rpc_error(lambda: cl.lock.Unlock(
            coord_pb2.UnlockRequest(key=name + "/nobody"), timeout=10))
        assert err.code() == grpc.StatusCode.NOT_FOUND, err.details()
        assert cl.paths(name) == [held.key]
        cl.lock.Unlock(coord_pb2.UnlockRequest(key=held.key, lease=holder), timeout=10)
        assert cl.paths(name) == []
        revoke(cl, holder, quitter)
