"""Data-driven interaction tests of the Raft core (in the style of etcd-raft's ``rafttest``).

A transcript in ``tests/raft/testdata/*.txt`` is a sequence of commands, each followed by
``----`` and the output it must produce: every Ready a node hands over and every message it
receives, as text. :class:`InteractionEnv` runs the real core (:class:`RawNode` over
:class:`MemoryStorage`, each node with its own seeded ``random.Random``), so the output is
deterministic. ``testdata/README.md`` describes the format and the commands.

Re-run or regenerate the transcripts::

    python -m tests.raft.interaction              # check every transcript, print diffs
    python -m tests.raft.interaction --rewrite    # replace the outputs, keep commands/comments
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import random
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from confer.raft import (
    NONE,
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    EntryType,
    MemoryStorage,
    Message,
    MessageType,
    ProposalDropped,
    RawNode,
    Ready,
    Snapshot,
    SnapshotMeta,
    StateRole,
    bootstrap,
)
from confer.raft.progress import Progress, ProgressState

TESTDATA = Path(__file__).parent / "testdata"
SEPARATOR = "----"
MAX_STABILIZE_ROUNDS = 1000

MT = MessageType


class ScriptError(Exception):
    """The transcript itself is wrong (unknown command, bad argument): a test bug."""


# ------------------------------------------------------------------------------------------------
# The file format
# ------------------------------------------------------------------------------------------------
@dataclass
class Case:
    """One command of a transcript and the output written under it."""

    command: str
    line: int
    expected: list[str]


def parse(text: str, name: str = "<transcript>") -> list[str | Case]:
    """Split a transcript into verbatim lines (comments, blank lines) and cases.

    A case is a command line, then ``----``, then output lines up to a blank line.
    """
    lines = text.split("\n")
    chunks: list[str | Case] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.startswith("#"):
            chunks.append(line)
            i += 1
            continue
        if i + 1 >= len(lines) or lines[i + 1] != SEPARATOR:
            raise ScriptError(f"{name}:{i + 1}: expected {SEPARATOR!r} after command {line!r}")
        j = i + 2
        while j < len(lines) and lines[j].strip():
            j += 1
        chunks.append(Case(line, i + 1, lines[i + 2 : j]))
        i = j
    return chunks


def render(chunks: list[str | Case], outputs: list[list[str]]) -> str:
    """The transcript with each case's output replaced by ``outputs`` (in order)."""
    out: list[str] = []
    results = iter(outputs)
    for chunk in chunks:
        if isinstance(chunk, str):
            out.append(chunk)
        else:
            out += [chunk.command, SEPARATOR, *next(results)]
    return "\n".join(out)


def run_transcript(text: str, name: str = "<transcript>") -> str:
    """Run every command of a transcript in a fresh environment; return it with new outputs."""
    chunks = parse(text, name)
    env = InteractionEnv()
    outputs: list[list[str]] = []
    for chunk in chunks:
        if isinstance(chunk, Case):
            try:
                outputs.append(env.handle(chunk.command))
            except ScriptError as e:
                raise ScriptError(f"{name}:{chunk.line}: {e}") from e
    return render(chunks, outputs)


def diff(expected: str, actual: str, name: str) -> str:
    return "".join(difflib.unified_diff(
        expected.splitlines(keepends=True), actual.splitlines(keepends=True),
        f"{name} (expected)", f"{name} (actual)",
    ))


# ------------------------------------------------------------------------------------------------
# Formatting: how Raft values read in a transcript
# ------------------------------------------------------------------------------------------------
_ROLE = {
    StateRole.FOLLOWER: "StateFollower",
    StateRole.PRE_CANDIDATE: "StatePreCandidate",
    StateRole.CANDIDATE: "StateCandidate",
    StateRole.LEADER: "StateLeader",
}
_ROLE_EVENT = {
    StateRole.FOLLOWER: "follower",
    StateRole.PRE_CANDIDATE: "pre-candidate",
    StateRole.CANDIDATE: "candidate",
    StateRole.LEADER: "leader",
}
# etcd-raft's names: APP_RESP is MsgAppResp, PRE_VOTE is MsgPreVote, ...
_MSG_NAME = {t: "Msg" + "".join(w.capitalize() for w in t.name.split("_")) for t in MT}
_MSG_TYPE = {name: t for t, name in _MSG_NAME.items()}
_PROGRESS = {ProgressState.PROBE: "StateProbe", ProgressState.REPLICATE: "StateReplicate",
             ProgressState.SNAPSHOT: "StateSnapshot"}
_CC_LETTER = {ConfChangeType.ADD_VOTER: "v", ConfChangeType.ADD_LEARNER: "l",
              ConfChangeType.REMOVE: "r"}


def fmt_bytes(b: bytes) -> str:
    """Printable ASCII in quotes, anything else as hex."""
    if all(32 <= c < 127 and c not in (34, 92) for c in b):
        return f'"{b.decode()}"'
    return "0x" + b.hex()


def fmt_ids(ids: frozenset[int]) -> str:
    return "(" + ",".join(str(i) for i in sorted(ids)) + ")"


def fmt_conf(conf: ConfState) -> str:
    s = f"voters={fmt_ids(conf.voters)}"
    return s + (f" learners={fmt_ids(conf.learners)}" if conf.learners else "")


def fmt_conf_change(cc: ConfChange) -> str:
    s = f"{_CC_LETTER[cc.type]}{cc.node_id}"
    return s + (f" ctx:{fmt_bytes(cc.context)}" if cc.context else "")


def fmt_entry(e: Entry) -> str:
    if e.type == EntryType.CONF_CHANGE:
        return f"{e.term}/{e.index} EntryConfChange {fmt_conf_change(ConfChange.decode(e.data))}"
    return f"{e.term}/{e.index} EntryNormal {fmt_bytes(e.data)}"


def fmt_snapshot_meta(meta: SnapshotMeta) -> str:
    return f"Index:{meta.index} Term:{meta.term} {fmt_conf(meta.conf_state)}"


def _read_round(ctx: bytes) -> str:
    # Heartbeats carry the id of the read round they confirm (8 bytes, big-endian).
    return f" ReadRound:{int.from_bytes(ctx, 'big')}" if ctx else ""


def fmt_message(m: Message) -> str:
    """One line per message: sender->receiver, type, term, then what that type carries."""
    s = f"{m.frm}->{m.to} {_MSG_NAME[m.type]} Term:{m.term}"
    t = m.type
    if t == MT.APP:
        s += f" Log:{m.log_term}/{m.index} Commit:{m.commit}"
    elif t == MT.APP_RESP:
        if m.reject:
            s += f" Rejected Index:{m.index} Hint:{m.log_term}/{m.reject_hint}"
        else:
            s += f" Index:{m.index}"
    elif t in (MT.VOTE, MT.PRE_VOTE):
        s += f" Log:{m.log_term}/{m.index}"
    elif t in (MT.VOTE_RESP, MT.PRE_VOTE_RESP):
        if m.reject:
            s += " Rejected"
            if m.commit:
                s += f" Committed:{m.log_term}/{m.commit}"
    elif t == MT.HEARTBEAT:
        s += f" Commit:{m.commit}{_read_round(m.context)}"
    elif t == MT.HEARTBEAT_RESP:
        s += _read_round(m.context)
    elif t == MT.SNAP:
        assert m.snapshot is not None
        s += (f" Snapshot:[{fmt_snapshot_meta(m.snapshot)}] Offset:{m.snap_offset}"
              f" Data:{fmt_bytes(m.snap_data)} Done:{str(m.snap_done).lower()}")
    elif t == MT.SNAP_RESP:
        s += f" Snapshot:{m.index} Offset:{m.snap_offset}"
    elif t == MT.READ_INDEX_RESP:
        s += f" Index:{m.index}"
    if m.entries:
        s += " Entries:[" + ", ".join(fmt_entry(e) for e in m.entries) + "]"
    if m.context and t not in (MT.HEARTBEAT, MT.HEARTBEAT_RESP):
        s += f" Context:{fmt_bytes(m.context)}"
    return s


def fmt_ready(rd: Ready, note: Callable[[Message], str]) -> list[str]:
    """The Ready's contents; ``note`` adds the environment's remark on a message (dropped?)."""
    out = [f"Ready MustSync={str(rd.must_sync).lower()}:"]
    if rd.soft_state is not None:
        out.append(f"Lead:{rd.soft_state.leader} State:{_ROLE[rd.soft_state.role]}")
    if rd.hard_state is not None:
        hs = rd.hard_state
        vote = f" Vote:{hs.vote}" if hs.vote != NONE else ""
        out.append(f"HardState Term:{hs.term}{vote} Commit:{hs.commit}")
    if rd.snapshot is not None:
        out.append(f"Snapshot {fmt_snapshot_meta(rd.snapshot.meta)} "
                   f"Data:{fmt_bytes(rd.snapshot.data)}")
    for title, ents in (("Entries:", rd.entries), ("CommittedEntries:", rd.committed_entries)):
        if ents:
            out.append(title)
            out += [fmt_entry(e) for e in ents]
    if rd.messages:
        out.append("Messages:")
        out += [fmt_message(m) + note(m) for m in rd.messages]
    if rd.read_states:
        out.append("ReadStates:")
        out += [f"Index:{r.index} Context:{fmt_bytes(r.context)}" for r in rd.read_states]
    return out


def fmt_progress(node: int, pr: Progress) -> str:
    s = f"{node}: {_PROGRESS[pr.state]} match={pr.match} next={pr.next}"
    if pr.is_learner:
        s += " learner"
    if pr.state == ProgressState.SNAPSHOT:
        s += f" snapshot={pr.pending_snapshot} acked-bytes={pr.snap_offset}"
    if pr.is_paused():
        s += " paused"
    if pr.inflights.count():
        full = "[full]" if pr.inflights.full() else ""
        s += f" inflight={pr.inflights.count()}{full}"
    return s


# ------------------------------------------------------------------------------------------------
# Command arguments: ``cmd 1 2 key=value list=(1,2,3)``
# ------------------------------------------------------------------------------------------------
@dataclass
class Args:
    positional: list[str]
    options: dict[str, str]

    @classmethod
    def parse(cls, tokens: list[str]) -> Args:
        positional: list[str] = []
        options: dict[str, str] = {}
        for tok in tokens:
            if "=" in tok:
                key, _, value = tok.partition("=")
                options[key] = value
            else:
                positional.append(tok)
        return cls(positional, options)

    def ids(self) -> list[int]:
        try:
            return [int(p) for p in self.positional]
        except ValueError as e:
            raise ScriptError(f"expected node ids, got {self.positional}") from e

    def one_id(self) -> int:
        ids = self.ids()
        if len(ids) != 1:
            raise ScriptError(f"expected one node id, got {self.positional}")
        return ids[0]

    def two(self) -> tuple[int, str]:
        """A node id and one word: ``propose 1 foo``."""
        if len(self.positional) != 2 or not self.positional[0].isdigit():
            raise ScriptError(f"expected <id> <word>, got {self.positional}")
        return int(self.positional[0]), self.positional[1]

    def int_opt(self, key: str, default: int) -> int:
        return int(self.options.pop(key, default))

    def bool_opt(self, key: str, default: bool) -> bool:
        value = self.options.pop(key, str(default).lower())
        if value not in ("true", "false"):
            raise ScriptError(f"{key}= must be true or false, got {value!r}")
        return value == "true"

    def id_list(self, key: str) -> list[int]:
        value = self.options.pop(key, "()")
        if not (value.startswith("(") and value.endswith(")")):
            raise ScriptError(f"{key}= must be a list like (1,2,3), got {value!r}")
        return [int(v) for v in value[1:-1].split(",") if v]

    def done(self) -> None:
        """Reject options no handler used: a typo must not pass silently."""
        if self.options:
            raise ScriptError(f"unknown options {sorted(self.options)}")


def parse_conf_change(spec: str) -> ConfChange:
    """``v4`` adds voter 4 (or promotes learner 4), ``l4`` adds learner 4, ``r4`` removes 4."""
    kinds = {letter: t for t, letter in _CC_LETTER.items()}
    if len(spec) < 2 or spec[0] not in kinds or not spec[1:].isdigit():
        raise ScriptError(f"bad conf change {spec!r} (want v<id>, l<id> or r<id>)")
    return ConfChange(kinds[spec[0]], int(spec[1:]))


# ------------------------------------------------------------------------------------------------
# The environment
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Observed:
    """What the environment reports as an event line when it changes."""

    role: StateRole
    term: int
    conf: ConfState


def _observe(raw: RawNode) -> _Observed:
    st = raw.status()
    return _Observed(st.role, st.term, st.conf_state)


@dataclass
class Node:
    """One Raft node: the core, its storage, and a toy state machine (the applied payloads)."""

    id: int
    config: Config
    storage: MemoryStorage
    raw: RawNode
    seen: _Observed
    incarnation: int = 0
    state_machine: list[tuple[int, str]] = field(default_factory=list)  # (index, payload)
    applied: int = 0

    def observe(self) -> _Observed:
        return _observe(self.raw)

    def restore(self, snap: Snapshot) -> None:
        self.state_machine = [(snap.meta.index, p) for p in snap.data.decode().split()]
        self.applied = snap.meta.index


def _start_node(node_id: int, config: Config, storage: MemoryStorage, incarnation: int) -> Node:
    # One seeded generator per node and incarnation: randomized election timeouts are
    # deterministic, and differ between nodes as in a real cluster.
    rng = random.Random(1000 * incarnation + node_id)
    raw = RawNode(config, storage, rng)
    node = Node(node_id, config, storage, raw, _observe(raw), incarnation)
    node.restore(storage.snapshot())
    return node


class InteractionEnv:
    """Nodes, the messages in flight between them, and the transcript commands."""

    def __init__(self) -> None:
        self.nodes: dict[int, Node] = {}
        self.queue: list[Message] = []  # sent, not yet delivered, in the order they were sent
        self.cut: set[tuple[int, int]] = set()  # (from, to) links that drop everything
        self.quiet = False
        self._out: list[str] = []
        self._indent = 0
        self._handlers: dict[str, Callable[[Args], None]] = {
            "add-nodes": self._add_nodes,
            "campaign": self._campaign,
            "compact": self._compact,
            "deliver-msgs": self._deliver_msgs,
            "drop-msgs": self._drop_msgs,
            "heal": self._heal,
            "isolate": self._isolate,
            "log-level": self._log_level,
            "process-ready": self._process_ready,
            "propose": self._propose,
            "propose-conf-change": self._propose_conf_change,
            "raft-log": self._raft_log,
            "raft-state": self._raft_state,
            "read-index": self._read_index,
            "report-unreachable": self._report_unreachable,
            "restart": self._restart,
            "stabilize": self._stabilize,
            "status": self._status,
            "tick-election": self._tick_election,
            "tick-heartbeat": self._tick_heartbeat,
            "transfer-leadership": self._transfer_leadership,
        }

    # -- plumbing ---------------------------------------------------------------------------------
    def handle(self, command: str) -> list[str]:
        """Run one command line; return its output lines (``ok`` if it printed nothing)."""
        name, *tokens = command.split()
        handler = self._handlers.get(name)
        if handler is None:
            raise ScriptError(f"unknown command {name!r}")
        self._out = []
        args = Args.parse(tokens)
        handler(args)
        args.done()
        out = self._out
        if self.quiet and name != "log-level":
            out = [line for line in out if line.lstrip().startswith("error:")]  # errors show
        return out or ["ok"]

    def _print(self, line: str) -> None:
        self._out.append("  " * self._indent + line)

    @contextmanager
    def _indented(self) -> Iterator[None]:
        self._indent += 1
        try:
            yield
        finally:
            self._indent -= 1

    def _node(self, node_id: int) -> Node:
        node = self.nodes.get(node_id)
        if node is None:
            raise ScriptError(f"no node {node_id}")
        return node

    def _events(self, node: Node) -> None:
        """Print what changed in the node's role, term or membership since last looked."""
        now = node.observe()
        before, node.seen = node.seen, now
        if (now.role, now.term) != (before.role, before.term):
            self._print(f"* {node.id} became {_ROLE_EVENT[now.role]} at term {now.term}")
        if now.conf != before.conf:
            self._print(f"* {node.id} switched to configuration {fmt_conf(now.conf)}")

    def _linked(self, m: Message) -> bool:
        return (m.frm, m.to) not in self.cut and m.to in self.nodes

    def _drop_note(self, m: Message) -> str:
        if self._linked(m):
            return ""
        return " (dropped: partitioned)" if m.to in self.nodes else " (dropped: no such node)"

    def _describe(self, node: Node) -> str:
        st = node.raw.status()
        hs, _ = node.storage.initial_state()  # what is persisted
        return (f"{node.id}: Term:{hs.term} Vote:{hs.vote} Commit:{hs.commit} "
                f"Log:[{st.first_index},{st.last_index}] Applied:{st.applied} "
                f"{fmt_conf(st.conf_state)}")

    # -- nodes ------------------------------------------------------------------------------------
    def _add_nodes(self, args: Args) -> None:
        """add-nodes N [voters=(..)] [learners=(..)] [index=N] [prevote=] [checkquorum=]
        [election=] [heartbeat=] [inflight=] [max-msg-size=] [snapshot-chunk=]"""
        (count,) = args.ids()
        voters, learners = args.id_list("voters"), args.id_list("learners")
        index = args.int_opt("index", 0)
        d = Config(id=1)  # the core's defaults
        template = Config(
            id=1,
            pre_vote=args.bool_opt("prevote", d.pre_vote),
            check_quorum=args.bool_opt("checkquorum", d.check_quorum),
            election_tick=args.int_opt("election", d.election_tick),
            heartbeat_tick=args.int_opt("heartbeat", d.heartbeat_tick),
            max_inflight_msgs=args.int_opt("inflight", d.max_inflight_msgs),
            max_size_per_msg=args.int_opt("max-msg-size", d.max_size_per_msg),
            snapshot_chunk_size=args.int_opt("snapshot-chunk", d.snapshot_chunk_size),
        )
        if learners and not index:
            raise ScriptError("learners= needs index= (bootstrap() founds voters only)")
        first = len(self.nodes) + 1
        for node_id in range(first, first + count):
            storage = MemoryStorage()
            if index:
                # Start from a snapshot at `index` holding the membership, as a node restored
                # from a backup would; the log is empty.
                conf = ConfState(frozenset(voters), frozenset(learners))
                storage.apply_snapshot(Snapshot(SnapshotMeta(index, 1, conf)))
            elif voters:
                bootstrap(storage, voters)
            # else: an empty node, to be added by a membership change (the leader catches it up).
            node = _start_node(node_id, dataclasses.replace(template, id=node_id), storage, 0)
            self.nodes[node_id] = node
            self._print(self._describe(node))

    def _restart(self, args: Args) -> None:
        """restart <id>: the node crashes and comes back from its storage; what it had not
        persisted (unstable entries) and its volatile state (role, leader, progress) are gone."""
        old = self._node(args.one_id())
        node = _start_node(old.id, old.config, old.storage, old.incarnation + 1)
        self.nodes[old.id] = node
        self._print(self._describe(node))

    # -- local inputs -----------------------------------------------------------------------------
    def _campaign(self, args: Args) -> None:
        node = self._node(args.one_id())
        node.raw.campaign()
        self._events(node)

    def _tick(self, args: Args, ticks: Callable[[Config], int]) -> None:
        for node_id in args.ids():
            node = self._node(node_id)
            for _ in range(ticks(node.config)):
                node.raw.tick()
                self._events(node)

    def _tick_election(self, args: Args) -> None:
        self._tick(args, lambda c: c.election_tick)

    def _tick_heartbeat(self, args: Args) -> None:
        self._tick(args, lambda c: c.heartbeat_tick)

    def _propose(self, args: Args) -> None:
        node_id, data = args.two()
        node = self._node(node_id)
        try:
            node.raw.propose(data.encode())
        except ProposalDropped as e:
            self._print(f"error: {e}")
        self._events(node)

    def _propose_conf_change(self, args: Args) -> None:
        node_id, spec = args.two()
        node = self._node(node_id)
        try:
            node.raw.propose_conf_change(parse_conf_change(spec))
        except (ProposalDropped, ValueError) as e:
            self._print(f"error: {e}")
        self._events(node)

    def _read_index(self, args: Args) -> None:
        node_id, ctx = args.two()
        node = self._node(node_id)
        try:
            node.raw.read_index(ctx.encode())
        except ProposalDropped as e:
            self._print(f"error: {e}")

    def _transfer_leadership(self, args: Args) -> None:
        node = self._node(args.int_opt("from", 0))
        node.raw.transfer_leader(args.int_opt("to", 0))
        self._events(node)

    def _report_unreachable(self, args: Args) -> None:
        leader, peer = args.ids()
        self._node(leader).raw.report_unreachable(peer)

    def _compact(self, args: Args) -> None:
        """compact <id> <index>: snapshot the state machine at <index> (applied already) and
        drop the log up to and including it."""
        node_id, index = args.ids()
        node = self._node(node_id)
        if index > node.applied:
            raise ScriptError(f"cannot compact {node_id} at {index}: applied only {node.applied}")
        data = " ".join(p for i, p in node.state_machine if i <= index).encode()
        node.storage.create_snapshot(index, node.raw.conf_state_at(index), data)
        node.storage.compact(index)
        node.raw.compacted(index)

    # -- Ready and messages -----------------------------------------------------------------------
    def process_ready(self, node: Node) -> None:
        """One Ready cycle in the documented order: persist, send, apply, advance."""
        rd = node.raw.ready()
        for line in fmt_ready(rd, self._drop_note):
            self._print(line)
        st = node.storage
        if rd.snapshot is not None:
            st.apply_snapshot(rd.snapshot)
        st.append(rd.entries)
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
        st.sync()
        for m in rd.messages:
            if self._linked(m):
                self.queue.append(m)
        if rd.snapshot is not None:
            node.restore(rd.snapshot)
        for e in rd.committed_entries:
            if e.type == EntryType.NORMAL and e.data:
                node.state_machine.append((e.index, e.data.decode()))
            node.applied = e.index
        node.raw.advance(rd)
        self._events(node)

    def _process_ready(self, args: Args) -> None:
        """process-ready <id>...: one Ready cycle of each node (headed by its id if several)."""
        ids = args.ids()
        for node_id in ids:
            node = self._node(node_id)
            if len(ids) > 1:
                self._print(f"> {node_id} handling Ready")
            self._indent += len(ids) > 1
            if node.raw.has_ready():
                self.process_ready(node)
            else:
                self._print("no Ready")
            self._indent -= len(ids) > 1

    def _take(self, to: int, kind: MessageType | None) -> list[Message]:
        """Remove and return the queued messages for ``to`` (of one type, if given)."""
        taken = [m for m in self.queue if m.to == to and (kind is None or m.type == kind)]
        self.queue = [m for m in self.queue if not any(m is t for t in taken)]
        return taken

    def deliver(self, to: int, kind: MessageType | None = None) -> int:
        msgs = self._take(to, kind)
        for m in msgs:
            self._print(fmt_message(m) + self._drop_note(m))
            if not self._linked(m):
                continue
            node = self.nodes[to]
            node.raw.step(m)
            self._events(node)
        return len(msgs)

    def _msg_type(self, args: Args) -> MessageType | None:
        name = args.options.pop("type", None)
        if name is None:
            return None
        if name not in _MSG_TYPE:
            raise ScriptError(f"unknown message type {name!r}")
        return _MSG_TYPE[name]

    def _deliver_msgs(self, args: Args) -> None:
        """deliver-msgs <id>... [type=MsgApp]: deliver queued messages addressed to <id>."""
        kind = self._msg_type(args)
        for node_id in args.ids():
            if self.deliver(node_id, kind) == 0:
                self._print(f"no messages for {node_id}")

    def _drop_msgs(self, args: Args) -> None:
        """drop-msgs <id>... [type=MsgApp]: lose queued messages addressed to <id>."""
        kind = self._msg_type(args)
        for node_id in args.ids():
            for m in self._take(node_id, kind):
                self._print(f"dropped: {fmt_message(m)}")

    def _stabilize(self, args: Args) -> None:
        """stabilize [<id>...]: handle Readys and deliver messages among these nodes (all by
        default) until none has anything left to do."""
        ids = args.ids() or sorted(self.nodes)
        for _ in range(MAX_STABILIZE_ROUNDS):
            busy = False
            for node_id in ids:
                node = self._node(node_id)
                if node.raw.has_ready():
                    busy = True
                    self._print(f"> {node_id} handling Ready")
                    with self._indented():
                        self.process_ready(node)
            for node_id in ids:
                if any(m.to == node_id for m in self.queue):
                    busy = True
                    self._print(f"> {node_id} receiving messages")
                    with self._indented():
                        self.deliver(node_id)
            if not busy:
                return
        raise ScriptError(f"stabilize did not settle in {MAX_STABILIZE_ROUNDS} rounds")

    # -- the network ------------------------------------------------------------------------------
    def _isolate(self, args: Args) -> None:
        """isolate <id>: cut every link to and from <id> (messages in flight are lost too)."""
        node_id = args.one_id()
        for other in self.nodes:
            if other != node_id:
                self.cut |= {(node_id, other), (other, node_id)}

    def _heal(self, args: Args) -> None:
        self.cut.clear()

    # -- observation ------------------------------------------------------------------------------
    def _log_level(self, args: Args) -> None:
        """log-level none|info: none hides the output of the commands that follow."""
        (level,) = args.positional
        if level not in ("none", "info"):
            raise ScriptError(f"log level must be none or info, got {level!r}")
        self.quiet = level == "none"

    def _raft_state(self, args: Args) -> None:
        for node_id in sorted(self.nodes):
            st = self.nodes[node_id].raw.status()
            conf = st.conf_state
            kind = ("Voter" if node_id in conf.voters
                    else "Learner" if node_id in conf.learners else "Non-Member")
            self._print(f"{node_id}: {_ROLE[st.role]} ({kind}) Term:{st.term} Lead:{st.leader}")

    def _raft_log(self, args: Args) -> None:
        """raft-log <id>: the entries in the node's storage (what it persisted)."""
        st = self._node(args.one_id()).storage
        first, last = st.first_index(), st.last_index()
        if last < first:
            self._print(f"log is empty: first index={first}, last index={last}")
            return
        for e in st.entries(first, last + 1):
            self._print(fmt_entry(e))

    def _status(self, args: Args) -> None:
        """status <id>: the node's state, its state machine, and (on a leader) its view of
        each follower's progress."""
        node = self._node(args.one_id())
        self._print(self._describe(node))
        data = " ".join(p for _, p in node.state_machine)
        self._print(f"state machine: applied={node.applied} data=[{data}]")
        st = node.raw.status()
        if st.role == StateRole.LEADER:
            prs = node.raw.raft.prs  # progress detail beyond status(): state, inflight, pause
            for peer in sorted(prs):
                self._print(fmt_progress(peer, prs[peer]))


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------
def transcripts() -> list[Path]:
    return sorted(TESTDATA.glob("*.txt"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rewrite", action="store_true",
                        help="replace each transcript's outputs with what the core does now")
    parser.add_argument("files", nargs="*", type=Path, help="transcripts (default: all)")
    opts = parser.parse_args(argv)
    failed = 0
    for path in opts.files or transcripts():
        text = path.read_text()
        actual = run_transcript(text, str(path))
        if actual == text:
            continue
        if opts.rewrite:
            path.write_text(actual)
            print(f"rewrote {path}")
        else:
            failed += 1
            sys.stdout.write(diff(text, actual, str(path)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
