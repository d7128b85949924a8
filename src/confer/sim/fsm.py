"""The application each simulated node runs: it records the commands it applies.

The state is the ordered list of ``(index, command)`` pairs plus a running digest over them, so
two nodes at the same applied index must hold the same digest. The state can be snapshotted to
bytes and restored; restoring recomputes the digest from the commands, so a snapshot that was
corrupted or mis-assembled from its chunks is detected.
"""

from __future__ import annotations

import hashlib

from confer.raft import Entry, EntryType

EMPTY_DIGEST = bytes(16)


def chain(digest: bytes, index: int, command: bytes) -> bytes:
    """The digest after applying ``command`` at ``index`` on top of ``digest``."""
    return hashlib.blake2b(digest + index.to_bytes(8, "big") + command, digest_size=16).digest()


class SnapshotCorrupt(Exception):
    """A snapshot's contents do not match its own header."""


class CommandLog:
    """The replicated state machine: applies NORMAL entries with a payload, in index order."""

    __slots__ = ("_lines", "commands", "digest", "index")

    def __init__(self) -> None:
        self.index = 0
        self.digest = EMPTY_DIGEST
        self.commands: list[tuple[int, bytes]] = []
        self._lines: list[bytes] = []  # the commands, encoded for snapshots

    def apply(self, e: Entry) -> None:
        self.index = e.index
        if e.type == EntryType.NORMAL and e.data:
            self.commands.append((e.index, e.data))
            self._lines.append(b"%d %s" % (e.index, e.data))
            self.digest = chain(self.digest, e.index, e.data)

    def snapshot_data(self) -> bytes:
        """``index digest`` on the first line, then one ``index command`` line per command."""
        head = b"%d %s" % (self.index, self.digest.hex().encode())
        return b"\n".join([head, *self._lines])

    @classmethod
    def from_snapshot(cls, data: bytes) -> CommandLog:
        """Rebuild the state from :meth:`snapshot_data` output; raises SnapshotCorrupt."""
        sm = cls()
        if not data:
            return sm
        try:
            head, *rest = data.split(b"\n")
            index, digest_hex = head.split(b" ")
            for line in rest:
                i, cmd = line.split(b" ", 1)
                sm.commands.append((int(i), cmd))
                sm._lines.append(line)
                sm.digest = chain(sm.digest, int(i), cmd)
            sm.index = int(index)
        except ValueError as exc:
            raise SnapshotCorrupt(f"unparseable snapshot ({len(data)} bytes): {exc}") from None
        if sm.digest.hex().encode() != digest_hex:
            raise SnapshotCorrupt(
                f"snapshot at {sm.index}: digest of its {len(sm.commands)} commands does not "
                "match its header"
            )
        return sm
