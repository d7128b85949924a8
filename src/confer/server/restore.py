"""``confer snapshot restore``: the data dir of a member of a new cluster, made from a backup
file (as etcd's ``etcdutl snapshot restore``).

The member's log starts with a Raft snapshot that holds the backup's store (every key with
its history, at the backup's revision, and the leases), the app's state if the backup has one
(a member started on the data dir with ``--app`` restores it; one without stops, saying so),
and the new cluster's membership, as
a freshly bootstrapped cluster would have applied it. Every member of the new cluster is
restored from the same file with the same ``--initial-cluster``: their snapshots, and so
their states, are equal. Written through the storage layer (``DurableStorage``) and the
state machine's own snapshot, so the member starts as from any snapshot.

Nothing is left behind on failure: the data dir's contents are built under a temporary name
and moved into place only when complete and synced.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import msgpack

from confer.raft.fsm import SnapshotSteps
from confer.raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    HardState,
    Snapshot,
    SnapshotMeta,
)
from confer.server.config import ServerConfig
from confer.server.datadir import IDENTITY_FILE, RAFT_DIR, save_identity
from confer.server.fsm import ServerStateMachine
from confer.server.members import Member, cluster_id_for
from confer.server.snapshot_file import SnapshotFile, SnapshotFileError
from confer.storage import Disk, DurableStorage


class RestoreError(Exception):
    """The restore cannot be done; the message says why. Nothing was written."""


@dataclass(frozen=True, slots=True)
class Restored:
    """What a restore made."""

    node_id: int
    cluster_id: int
    members: list[Member]
    revision: int
    keys: int
    app: str = ""
    """The name of the app whose state the backup held ("": none)."""


def preflight(data_dir: Path, cfg: ServerConfig) -> tuple[int, list[Member]]:
    """Check what a restore can check before reading the file: ``data_dir`` is absent or
    empty, and ``cfg`` names this member and the new cluster's members as ``confer serve``
    would found it: ``--initial-cluster`` (this member picked by ``--id``, by ``--name`` or
    by its peer address), else a single member (``--id`` or 1, ``--name``, the peer
    address). Returns this member's id and the members. Raises :class:`RestoreError` or
    :class:`~confer.server.config.ConfigError`."""
    if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
        raise RestoreError(f"data dir {data_dir} already exists and is not empty: restore "
                           "into a new directory")
    founders = cfg.founders()
    if founders and not cfg.node_id:
        named = [i for i, name, _ in founders if name == cfg.name]
        if len(named) == 1:
            cfg.node_id = named[0]
    cfg.validate()  # resolves the id from the peer address if still unset
    if not founders:
        founders = [(cfg.node_id or 1, cfg.name, cfg.peer_url)]
    node_id = cfg.node_id or founders[0][0]
    return node_id, [Member(i, name, peer, "") for i, name, peer in founders]


def restore(snap: SnapshotFile, data_dir: Path, cfg: ServerConfig) -> Restored:
    """Make ``data_dir`` (absent or empty) the data dir of the member ``cfg`` names in a new
    cluster holding ``snap``'s store. Raises :class:`RestoreError`,
    :class:`~confer.server.snapshot_file.SnapshotFileError` or
    :class:`~confer.server.config.ConfigError`, having written nothing."""
    node_id, members = preflight(data_dir, cfg)
    store = snap.store()
    # The file's hash in the cluster id: a new cluster, never the one backed up (whose
    # surviving members must not be able to talk to it), the same on every member restored
    # from this file with these settings.
    cluster_id = cluster_id_for(f"{cfg.cluster_token}\nrestored from {snap.sha256}", members)
    app = _app_name(snap.app) if snap.app else ""
    fsm = ServerStateMachine(_CarriedApp(snap.app) if snap.app else None)
    fsm.kv = store
    conf = ConfState()
    # The membership entries a bootstrap writes (``rawnode.bootstrap``), applied: the
    # snapshot then stands for a log of exactly those entries.
    for index, m in enumerate(members, 1):
        cc = ConfChange(ConfChangeType.ADD_VOTER, m.id, m.context(cluster_id))
        conf = conf.apply(cc)
        fsm.apply_conf_change(index, cc, conf)
    store.applied_index = fsm.applied_index
    meta = SnapshotMeta(fsm.applied_index, 1, conf)
    _write(data_dir, Snapshot(meta, fsm.snapshot()),
           {"id": node_id, "name": next(m.name for m in members if m.id == node_id),
            "cluster_id": cluster_id})
    return Restored(node_id, cluster_id, members, store.revision, len(store), app)


def _app_name(data: bytes) -> str:
    """The app named by an app snapshot's header (``Replica.snapshot()``: ``[format, name,
    version, ...]``), read without decoding its state. Raises :class:`SnapshotFileError`."""
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=0)
    unpacker.feed(data)
    try:
        if unpacker.read_array_header() != 5:
            raise ValueError("not an array of 5")
        unpacker.skip()  # the format: the member that starts checks it
        name = unpacker.unpack()
    except Exception as e:  # whatever malformed msgpack makes it raise
        raise SnapshotFileError(f"the app state does not decode ({type(e).__name__}: {e})"
                                ) from None
    if not isinstance(name, str):
        raise SnapshotFileError("the app state does not name its app")
    return name


class _CarriedApp:
    """An app's state carried as it is from the backup into the new member's snapshot: the
    member started with ``--app`` restores it (checking the app's name and version)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def apply(self, entry: Entry) -> None:
        raise AssertionError("a restore applies no app entry")

    def snapshot(self) -> bytes:
        return self.data

    def snapshot_steps(self) -> SnapshotSteps:
        return iter(([self.data],))

    def restore(self, data: bytes) -> None:
        self.data = data


def _write(data_dir: Path, snapshot: Snapshot, ident: dict[str, object]) -> None:
    """Build the data dir's contents in a temporary dir, sync them, then move them into
    place: the temporary dir itself, renamed, for a new data dir; its entries, one by one
    (the identity file last), for an existing empty one, which may be a mount point that no
    rename can replace. On failure, whatever was made is removed."""
    in_place = data_dir.is_dir()  # and empty: checked
    where = data_dir if in_place else data_dir.absolute().parent
    try:
        where.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{data_dir.name}.restoring-", dir=where))
    except OSError as e:
        raise RestoreError(f"cannot create {data_dir}: {e.strerror or e}") from None
    moved: list[Path] = []
    try:
        with DurableStorage.open(tmp / RAFT_DIR) as storage:
            storage.apply_snapshot(snapshot)
            storage.set_hard_state(HardState(term=snapshot.meta.term,
                                             commit=snapshot.meta.index))
            storage.sync()
        save_identity(tmp, ident)
        if in_place:
            for name in (RAFT_DIR, IDENTITY_FILE):
                os.rename(tmp / name, data_dir / name)
                moved.append(data_dir / name)
            tmp.rmdir()
        else:
            os.rename(tmp, data_dir)  # fails if the data dir appeared meanwhile
        Disk().fsync_dir(str(where))
    except BaseException as e:
        for path in [tmp, *moved]:
            with contextlib.suppress(OSError):
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        if isinstance(e, OSError):
            raise RestoreError(f"cannot write {data_dir}: {e.strerror or e}") from None
        raise
