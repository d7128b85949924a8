"""Key-value requests: ranges, the path tree, writes, transactions, compaction, hashes.

Both APIs call these with store commands (:mod:`confer.kv`) built from their protos. The
path-tree requests (a key with its subtree, a directory's children, a recursive delete) are
Confer's hierarchical view of the same keyspace.
"""

from __future__ import annotations

import asyncio

import crc32c

from confer.kv import (
    Alarm,
    AlarmAction,
    AlarmResult,
    AlarmType,
    Compact,
    CompactResult,
    DeleteRange,
    DeleteResult,
    KeyValue,
    Op,
    Put,
    PutResult,
    RangeOp,
    RangeResult,
    Txn,
    TxnResult,
)
from confer.kv.auth import txn_key_accesses
from confer.kv.paths import subtree_range
from confer.kv.snapshot import SnapshotAborted
from confer.server.api.context import Access, AccessKind, RequestContext
from confer.server.api.core import Core

READ, WRITE = AccessKind.READ, AccessKind.WRITE
SNAPSHOT_TRIES = 3
"""Slice-wise tries of :meth:`KVRequests.snapshot` before it snapshots at once."""
ALL_KEYS = (b"\0", b"\0")
"""etcd's "every key" range: from the smallest key to the end of the keyspace."""


def subtree(path: bytes) -> tuple[bytes, bytes]:
    """The key range strictly below ``path`` (the root ``/``: every path)."""
    return (b"/", b"0") if path == b"/" else subtree_range(path)


def tree_span(path: bytes) -> tuple[bytes, bytes]:
    """The key range of ``path`` and everything below it."""
    return (b"/", b"0") if path == b"/" else (path, subtree(path)[1])


def tree_accesses(kind: AccessKind, path: bytes) -> list[Access]:
    """The accesses of ``path`` and its subtree: the key, then the keys below it (so that
    permissions on ``/app`` and on the prefix ``/app/`` allow it, and nothing on
    ``/application``)."""
    below = Access(kind, *subtree(path))
    return [below] if path == b"/" else [Access(kind, path), below]


def tree_delete(path: bytes, prev_kv: bool = False) -> Txn:
    """A txn deleting ``path`` and everything below it: two deletes, the key then its
    subtree (the root has no key of its own)."""
    start, end = subtree(path)
    ops: list[Op] = [DeleteRange(start, end, prev_kv=prev_kv)]
    if path != b"/":
        ops.insert(0, DeleteRange(path, prev_kv=prev_kv))
    return Txn([], ops, [])


def tree_deleted(result: TxnResult) -> tuple[int, list[KeyValue], int]:
    """What a :func:`tree_delete` txn deleted: (count, previous kvs, revision)."""
    deletes = [r for r in result.responses if isinstance(r, DeleteResult)]
    return (sum(r.deleted for r in deletes), [kv for r in deletes for kv in r.prev_kvs],
            result.revision)


def kv_hash(kvs: list[KeyValue], compact_revision: int) -> int:
    """A CRC-32C of every key's version (key, revisions, version, value, lease) in key order,
    after the compact revision: equal on members that applied the same revisions."""
    h = crc32c.crc32c(compact_revision.to_bytes(8, "big"))
    for kv in kvs:
        for n in (len(kv.key), kv.create_revision, kv.mod_revision, kv.version, kv.lease,
                  len(kv.value)):
            h = crc32c.crc32c(n.to_bytes(8, "big", signed=True), h)
        h = crc32c.crc32c(kv.value, crc32c.crc32c(kv.key, h))
    return h


def txn_accesses(txn: Txn) -> list[Access]:
    """Every access a transaction may make, whichever branch runs: its compares and ranges
    read, its puts and deletes write (nested transactions included); a transaction naming
    no key still needs a user (etcd checks the user of every request)."""
    out = [Access(WRITE if write else READ, key, end)
           for write, key, end in txn_key_accesses(txn)]
    return out or [Access(READ)]


class KVRequests:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.store = core.kv

    # -- reads ----------------------------------------------------------------------------------
    async def range(self, ctx: RequestContext, op: RangeOp, serializable: bool = False
                    ) -> RangeResult:
        """etcd's Range: one key or a key range, with sorting and revision filters."""
        await self.core.read(ctx, Access(READ, op.key, op.range_end), serializable)
        return self.store.range(op.key, op.range_end, op.revision, op.limit, op.keys_only,
                                op.count_only, op.sort_order, op.sort_target,
                                op.min_mod_revision, op.max_mod_revision,
                                op.min_create_revision, op.max_create_revision)

    async def tree(self, ctx: RequestContext, path: bytes, *, recursive: bool = False,
                   revision: int = 0, limit: int = 0, start_after: bytes = b"",
                   keys_only: bool = False, count_only: bool = False,
                   serializable: bool = False) -> tuple[list[KeyValue], int, bool, int]:
        """The key ``path`` itself, then (``recursive``) its subtree in key order;
        ``start_after`` and ``limit`` paginate. Returns (kvs, count, more, revision)."""
        if recursive:
            first, *rest = tree_accesses(READ, path)
            for access in rest:
                self.core.check(ctx, access)
        else:
            first = Access(READ, path)
        await self.core.read(ctx, first, serializable)
        ranges: list[tuple[bytes, bytes]] = []
        if path != b"/":
            ranges.append((path, b""))
        if recursive:
            ranges.append(subtree(path))
        kvs: list[KeyValue] = []
        count = 0
        more = False
        rev = self.store.revision
        for key, end in ranges:
            if start_after:
                if not end:
                    if key <= start_after:
                        continue
                elif key <= start_after:
                    key = start_after + b"\0"
                    if key >= end:
                        continue
            remaining = 0 if not limit else max(limit - len(kvs), 0)
            res = self.store.range(key, end, revision=revision,
                                   limit=remaining or (1 if limit else 0),
                                   keys_only=keys_only, count_only=count_only)
            rev = res.revision
            count += res.count
            if limit and len(kvs) >= limit:
                more = more or res.count > 0
                continue
            kvs.extend(res.kvs)
            more = more or res.more
        return kvs, count, more, rev

    async def children(self, ctx: RequestContext, path: bytes, *, start_after: bytes = b"",
                       limit: int = 0, serializable: bool = False
                       ) -> tuple[list[bytes], bool]:
        """The names of ``path``'s direct children, in order; (names, more)."""
        await self.core.read(ctx, Access(READ, *subtree(path)), serializable)
        return self.store.children(path, start_after=start_after, limit=limit)

    async def hash(self, ctx: RequestContext, revision: int = 0) -> tuple[int, int, int]:
        """(hash, compact revision, revision) of every key as of ``revision`` (0: now)."""
        await self.core.read(ctx, Access(READ, *ALL_KEYS), serializable=True)
        rev = revision or self.store.revision
        res = self.store.range(*ALL_KEYS, revision=rev)
        compact = self.store.compact_revision
        return kv_hash(res.kvs, compact), compact, rev

    async def snapshot(self, ctx: RequestContext) -> tuple[bytes, bytes]:
        """This member's whole store at its current revision, in Confer's snapshot format,
        and its app's state at the same entry (empty: it runs no app).

        Serialised a slice per loop turn and joined in a worker thread, as the node's own
        snapshots are: a large store serialised at once stopped the member (no heartbeats:
        an election) for as long as it took. A compaction or a restore meanwhile overtakes
        a slice-wise snapshot; after a few such tries it is taken at once."""
        await self.core.admin(ctx)
        self.core.consensus.require_node()
        fsm = self.core.host.fsm
        for _ in range(SNAPSHOT_TRIES):
            try:
                for parts in fsm.backup_steps():
                    if parts is not None:
                        kv, app = parts
                        return (await asyncio.to_thread(b"".join, kv),
                                await asyncio.to_thread(b"".join, app))
                    await asyncio.sleep(0)
            except SnapshotAborted:
                continue
        return self.store.snapshot(), b"" if fsm.app is None else fsm.app.snapshot()

    # -- writes ---------------------------------------------------------------------------------
    async def put(self, ctx: RequestContext, put: Put) -> PutResult:
        result: PutResult = await self.core.write(ctx, put, Access(WRITE, put.key))
        return result

    async def delete(self, ctx: RequestContext, delete: DeleteRange) -> DeleteResult:
        result: DeleteResult = await self.core.write(
            ctx, delete, Access(WRITE, delete.key, delete.range_end))
        return result

    async def delete_tree(self, ctx: RequestContext, path: bytes, prev_kv: bool = False
                          ) -> tuple[int, list[KeyValue], int]:
        """Delete ``path`` and everything below it, atomically; (deleted, prev kvs,
        revision)."""
        result: TxnResult = await self.core.write(ctx, tree_delete(path, prev_kv),
                                                  *tree_accesses(WRITE, path))
        return tree_deleted(result)

    async def txn(self, ctx: RequestContext, txn: Txn) -> TxnResult:
        accesses = txn_accesses(txn) if self.core.guards else ()
        result: TxnResult = await self.core.write(ctx, txn, *accesses)
        return result

    # -- alarms ---------------------------------------------------------------------------------
    async def alarms(self, ctx: RequestContext) -> list[tuple[int, int]]:
        """The active alarms, ``(member id, alarm type)``, as this member applied them."""
        await self.core.admin(ctx)
        self.core.consensus.require_node()
        return self.store.alarms()

    async def alarm(self, ctx: RequestContext, action: AlarmAction, member_id: int,
                    alarm: AlarmType) -> list[tuple[int, int]]:
        """Raise or clear an alarm on every member; the alarms that changed."""
        await self.core.admin(ctx)
        result: AlarmResult = await self.core.write(ctx, Alarm(action, member_id, alarm),
                                                    Access(WRITE))
        return result.changed

    async def compact(self, ctx: RequestContext, revision: int) -> CompactResult:
        await self.core.admin(ctx)
        result: CompactResult = await self.core.write(ctx, Compact(revision), Access(WRITE))
        return result
