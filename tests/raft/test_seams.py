"""The declared seams around the core: the state-machine and storage protocols' defaults and
in-memory twins, and RawNode's status, the one way to read the core's state."""

from __future__ import annotations

import dataclasses

from confer.raft import NONE, ConfState, Entry, MemoryStorage, SnapshotMeta, StateRole
from confer.raft.fsm import ListStateMachine
from tests.raft.harness import Net


def test_default_snapshot_steps_is_one_step_of_the_state_when_called() -> None:
    fsm = ListStateMachine()
    fsm.apply(Entry(1, 1, b"a"))
    steps = fsm.snapshot_steps()
    fsm.apply(Entry(2, 1, b"b"))  # applied meanwhile: not in the snapshot
    parts = list(steps)
    assert len(parts) == 1 and parts[0] is not None
    restored = ListStateMachine()
    restored.restore(b"".join(parts[0]))
    assert restored.applied == [b"a"]


def test_memory_storage_records_a_snapshot_saved_ahead() -> None:
    st = MemoryStorage()
    st.append([Entry(i, 1, b"x") for i in range(1, 11)])
    conf = ConfState(voters=frozenset({1}))
    meta = SnapshotMeta(8, 1, conf)
    st.save_snapshot_file(meta, b"state at 8")  # nothing to write in memory
    assert st.snapshot().is_empty()
    snap = st.create_snapshot(8, conf, b"state at 8", saved=meta)
    assert snap.meta == meta and st.snapshot().data == b"state at 8"
    st.compact(5, sync=False)  # durable at the next sync: in memory, at once
    assert st.first_index() == 6 and st.last_index() == 10


def test_status_reads_the_core_on_leader_and_follower() -> None:
    net = Net(3)
    net.elect(1)
    net.node(1).propose(b"p")
    net.stabilize()
    lead, follower = net.node(1).status(), net.node(2).status()
    assert (lead.id, lead.role, lead.leader, lead.vote) == (1, StateRole.LEADER, 1, 1)
    assert lead.term == net.node(1).term == follower.term
    assert lead.commit == lead.last_index == lead.applied
    assert lead.first_index == 1 and lead.lead_transferee == NONE
    assert lead.progress == {1: lead.last_index, 2: lead.last_index, 3: lead.last_index}
    assert lead.conf_state.voters == {1, 2, 3}
    assert (follower.role, follower.leader, follower.progress) == (StateRole.FOLLOWER, 1, {})


def test_basic_status_is_status_without_membership_or_progress() -> None:
    net = Net(3)
    net.elect(1)
    node = net.node(1)
    node.transfer_leader(2)  # under way until node 2 has caught up and campaigned
    basic, full = node.basic_status(), node.status()
    assert basic.lead_transferee == 2
    for f in dataclasses.fields(basic):
        assert getattr(basic, f.name) == getattr(full, f.name), f.name
