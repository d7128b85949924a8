"""What a member accepts from its peers, beyond well-formed messages (codec.py).

Proposals a follower forwards (Raft PROP messages) reach the leader's log without passing
through the leader's request layer, so they are checked here against the same rules the
request layer applies to a client's write: a forwarded entry must be a FORWARDED envelope
around a KV command that :func:`confer.kv.validate_command` accepts, with keys and values
within the configured limits, around an APP_COMMAND, or around the sending member's own
MEMBER_PUBLISH. Membership
changes are never forwarded (they have their own path, through the leader's request layer).
"""

from __future__ import annotations

from dataclasses import dataclass

from confer.envelope import EntryKind, MalformedEntry, kind_of, unwrap_forwarded
from confer.kv import validate_command
from confer.kv.commands import decode_command
from confer.kv.errors import KVError
from confer.raft.types import Entry, EntryType
from confer.server.api.limits import check_key_sizes
from confer.server.members import decode_publish

_FORWARDED = int(EntryKind.FORWARDED)
MAX_PUBLISH_FIELD = 1024
"""Longest name or client address a member may publish (characters)."""


@dataclass(frozen=True, slots=True)
class ProposalChecks:
    """The request layer's write limits, applied to proposals forwarded by a peer."""

    max_key_bytes: int
    max_value_bytes: int

    def refusal(self, entry: Entry, sender: int) -> str | None:
        """Why ``entry``, forwarded by member ``sender``, must be dropped; None if it may be
        appended."""
        if entry.type != EntryType.NORMAL:
            return "a forwarded proposal may not be a membership change"
        data = entry.data
        if not data or data[0] != _FORWARDED:
            return "a forwarded proposal must be a FORWARDED entry"
        try:
            _, inner = unwrap_forwarded(data)
            kind = kind_of(inner)
        except MalformedEntry as e:
            return str(e)
        if kind is EntryKind.KV_COMMAND or kind is EntryKind.KV_COMMAND_AS:
            return self._command_refusal(inner)
        if kind is EntryKind.MEMBER_PUBLISH:
            return _publish_refusal(inner, sender)
        if kind is EntryKind.APP_COMMAND:
            # A user state machine's command: every member's app decodes it at apply, and
            # answers a malformed one with the same error result (confer.replicated).
            return None
        return f"a forwarded proposal may not carry a {kind.name} entry"

    def _command_refusal(self, data: bytes) -> str | None:
        try:
            cmd = decode_command(data)
            validate_command(cmd)
            check_key_sizes(cmd, self.max_key_bytes, self.max_value_bytes)
        except KVError as e:  # BadCommand, InvalidArgument and its kin
            return str(e)
        return None


def _publish_refusal(data: bytes, sender: int) -> str | None:
    try:
        node_id, name, client_addr = decode_publish(data)
    except Exception as e:  # any undecodable body is just a bad publication
        return f"undecodable member publication: {type(e).__name__}: {e}"
    if node_id != sender:
        return f"member {sender} may only publish its own attributes, not member {node_id}'s"
    if len(name) > MAX_PUBLISH_FIELD or len(client_addr) > MAX_PUBLISH_FIELD:
        return "a published name or client address is too long"
    return None
