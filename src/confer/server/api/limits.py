"""The bounds every write passes, whichever API it came in through (etcd checks them in
``EtcdServer``, not per RPC): the size of the request as its log entry, of its keys and
values, the space quota with its NOSPACE alarm, and how many writes may wait for the log.

All of them are checked on the encoded command the write is about to propose, so a
transaction counts whole (60 values of 1 MiB are one 60 MB request, refused), and a check
costs a few comparisons on the hot path.
"""

from __future__ import annotations

import logging

from confer.kv import (
    Alarm,
    AlarmAction,
    AlarmType,
    Command,
    DeleteRange,
    InvalidArgument,
    KVStore,
    Put,
    Txn,
    encode_command,
)
from confer.kv.commands import needs_space
from confer.kv.writes import no_space
from confer.server.api.errors import RequestTooLarge, TooManyRequests
from confer.server.config import ServerConfig

log = logging.getLogger("confer.server")

MAX_PENDING_WRITES = 5_000
"""Writes one member may have waiting for the log at once (etcd refuses a request with
"too many requests" when 5,000 committed entries wait to be applied)."""
MAX_PENDING_WRITE_BYTES = 256 << 20
"""The bytes those writes may hold at once."""


class WriteLimits:
    """Admits or refuses a write before it is proposed (see the module docstring)."""

    def __init__(self, cfg: ServerConfig, kv: KVStore) -> None:
        self.max_request_bytes = cfg.max_request_bytes
        self.max_key_bytes = cfg.max_key_bytes
        self.max_value_bytes = cfg.max_value_bytes
        self.quota_bytes = cfg.quota_bytes
        """0: no quota."""
        self.kv = kv
        self.pending = 0
        self.pending_bytes = 0

    def check(self, command: Command, size: int) -> None:
        """Refuse a write whose encoded entry is ``size`` bytes if it breaks a size rule
        (:meth:`check_sizes`), if too many writes wait already (:class:`TooManyRequests`),
        or if it needs space while the NOSPACE alarm is active (:class:`NoSpace`;
        :meth:`over_quota` tells whether a write raises the alarm)."""
        self.check_sizes(command, size)
        if self.pending >= MAX_PENDING_WRITES or (
                self.pending_bytes + size > MAX_PENDING_WRITE_BYTES and self.pending):
            raise TooManyRequests(f"too many requests: {self.pending} writes "
                                  f"({self.pending_bytes} bytes) already wait for the log")
        if self.kv.nospace and needs_space(command):
            raise no_space()

    def over_quota(self, command: Command, size: int) -> bool:
        """Whether the write would take the store past its quota (etcd: its size plus
        the request's)."""
        return (self.quota_bytes > 0 and self.kv.size_bytes() + size > self.quota_bytes
                and needs_space(command))

    def nospace_alarm(self, node_id: int) -> bytes:
        """The encoded command that raises member ``node_id``'s NOSPACE alarm."""
        log.warning("store size %d bytes + a write exceeds the quota of %d bytes "
                    "(--quota-backend-bytes): raising the NOSPACE alarm",
                    self.kv.size_bytes(), self.quota_bytes)
        return encode_command(Alarm(AlarmAction.ACTIVATE, node_id, AlarmType.NOSPACE))

    def check_sizes(self, command: Command, size: int) -> None:
        """The size rules alone: the encoded entry (``size`` bytes) at most
        ``max_request_bytes`` (:class:`RequestTooLarge`), then :func:`check_key_sizes`."""
        if size > self.max_request_bytes:
            raise RequestTooLarge(f"request is too large: {size} bytes, at most "
                                  f"{self.max_request_bytes} (--max-request-bytes)")
        check_key_sizes(command, self.max_key_bytes, self.max_value_bytes)


def check_key_sizes(command: Command, max_key_bytes: int, max_value_bytes: int) -> None:
    """Every key a write puts or deletes at most ``max_key_bytes`` and every value it puts
    at most ``max_value_bytes`` (InvalidArgument naming the rule), nested txns included:
    the same rules for a client's write on either API and for a proposal a peer forwards."""
    if type(command) is Put:  # the hot path first
        _check_put(command, max_key_bytes, max_value_bytes)
    elif type(command) is DeleteRange:
        _check_key(command.key, max_key_bytes)
    elif type(command) is Txn:
        for op in (*command.success, *command.failure):
            if type(op) is Put or type(op) is DeleteRange or type(op) is Txn:
                check_key_sizes(op, max_key_bytes, max_value_bytes)


def _check_put(put: Put, max_key_bytes: int, max_value_bytes: int) -> None:
    _check_key(put.key, max_key_bytes)
    if len(put.value) > max_value_bytes:
        raise InvalidArgument(f"value is too large: {len(put.value)} bytes, at most "
                              f"{max_value_bytes} (--max-value-bytes)")


def _check_key(key: bytes, max_key_bytes: int) -> None:
    if len(key) > max_key_bytes:
        raise InvalidArgument(f"key is too large: {len(key)} bytes, at most {max_key_bytes} "
                              "(--max-key-bytes)")
