"""DurableStorage under the real driver loop: a one-node cluster that restarts."""

from __future__ import annotations

from pathlib import Path

from confer.raft import Config, RawNode, StateRole, bootstrap
from confer.raft.types import Entry, EntryType
from confer.storage import DurableStorage, NoSyncDisk


def drive(node: RawNode, st: DurableStorage, applied: list[Entry]) -> None:
    """The driver loop of confer.raft.rawnode: persist, sync, (send), apply, advance."""
    while node.has_ready():
        rd = node.ready()
        if rd.snapshot is not None:
            st.apply_snapshot(rd.snapshot)
        st.append(rd.entries)
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
        if rd.must_sync:
            st.sync()
        applied.extend(rd.committed_entries)
        node.advance(rd)


def test_single_node_cluster_survives_restarts(tmp_path: Path) -> None:
    root = tmp_path / "node1"
    st = DurableStorage.open(root, segment_size=512, disk=NoSyncDisk())
    bootstrap(st, [1])
    node, applied = RawNode(Config(id=1), st), []
    node.campaign()
    drive(node, st, applied)
    assert node.status().role == StateRole.LEADER
    for i in range(30):
        node.propose(f"cmd{i}".encode())
        drive(node, st, applied)
    commit = node.status().commit
    # Snapshot what was applied, keep a few entries, as the server does.
    index = applied[-1].index
    st.create_snapshot(index, node.conf_state_at(index), b"fsm")
    st.compact(index - 5)
    node.compacted(index)
    st.close()

    st = DurableStorage.open(root, segment_size=512, disk=NoSyncDisk())
    node = RawNode(Config(id=1), st)
    assert node.status().commit == commit
    assert st.initial_state()[0].commit == commit
    assert st.first_index() == index - 4
    cmds = [e.data for e in st.entries(st.first_index(), st.last_index() + 1)
            if e.type == EntryType.NORMAL and e.data]
    assert cmds[-1] == b"cmd29"
    node.campaign()
    drive(node, st, [])
    node.propose(b"after restart")
    drive(node, st, [])
    assert st.entries(st.last_index(), st.last_index() + 1)[0].data == b"after restart"
    st.close()
