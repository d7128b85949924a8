"""Init (finding 16): a node waiting for Init (`--wait-init`) takes it only from its own host
(loopback), or, when started with `--init-token`, only with that token. A refused Init
changes nothing."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest

from confer.server.api import RequestContext
from confer.server.api.errors import PermissionDenied
from confer.server.api.init_access import is_local_peer
from confer.server.app import ConferServer
from confer.server.config import ServerConfig
from confer.server.members import Member
from confer.v1 import confer_pb2, confer_pb2_grpc


@pytest.mark.parametrize(("peer", "local"), [
    ("ipv4:127.0.0.1:40000", True), ("ipv4:127.8.9.10:1", True), ("ipv6:[::1]:40000", True),
    ("ipv6:[::ffff:127.0.0.1]:5", True), ("ipv6:%5B::1%5D:5", True),
    ("unix:/run/confer.sock", True),
    ("ipv4:10.0.0.7:40000", False), ("ipv6:[2001:db8::1]:40000", False),
    ("ipv6:[::ffff:10.0.0.7]:5", False), ("", False), ("ipv4:nonsense", False),
])
def test_which_callers_are_on_this_host(peer: str, local: bool) -> None:
    assert is_local_peer(peer) is local


def _waiting(data_dir: Path, token: str = "") -> ConferServer:
    return ConferServer(ServerConfig(data_dir=data_dir, node_id=1, wait_init=True,
                                     init_token=token, listen_client="127.0.0.1:0",
                                     listen_peer="127.0.0.1:0", tick_ms=20))


def _initialised(srv: ConferServer) -> bool:
    assert srv.storage is not None
    return srv.storage.last_index() > 0


async def _wait_leader(srv: ConferServer) -> None:
    deadline = time.monotonic() + 20
    while not srv.consensus.is_leader():
        assert time.monotonic() < deadline, "no leader in 20 s"
        await asyncio.sleep(0.02)


async def _from_another_host(data_dir: Path) -> None:
    srv = _waiting(data_dir)
    await srv.start()
    try:
        founders = [Member(1, "node-1", f"127.0.0.1:{srv.peer_port}", "")]
        remote = RequestContext.with_timeout("confer", "Init", 10, peer="ipv4:10.0.0.7:40000")
        with pytest.raises(PermissionDenied, match="only from this node's host"):
            await srv.api.cluster.initialize(remote, founders)
        assert not _initialised(srv)
        local = RequestContext.with_timeout("confer", "Init", 10, peer="ipv4:127.0.0.1:4000")
        await srv.api.cluster.initialize(local, founders)
        await _wait_leader(srv)
    finally:
        await srv.stop()


def test_without_a_token_init_is_taken_only_from_this_host(tmp_path: Path) -> None:
    asyncio.run(_from_another_host(tmp_path / "node"))


async def _with_a_token(data_dir: Path) -> None:
    srv = _waiting(data_dir, token="s3cret")
    await srv.start()
    try:
        nodes = [confer_pb2.Node(node_id=1, addr=f"127.0.0.1:{srv.peer_port}")]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.client_port}") as ch:
            stub = confer_pb2_grpc.ConferServiceStub(ch)
            for wrong in ("", "s3cre", "s3cret!"):  # loopback is not enough either
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.Init(confer_pb2.InitRequest(nodes=nodes, token=wrong),
                                    timeout=10)
                assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
                assert "--init-token" in (refused.value.details() or "")
                assert not _initialised(srv)
            await stub.Init(confer_pb2.InitRequest(nodes=nodes, token="s3cret"), timeout=10)
        await _wait_leader(srv)
    finally:
        await srv.stop()


def test_with_a_token_init_needs_that_token(tmp_path: Path) -> None:
    asyncio.run(_with_a_token(tmp_path / "node"))
