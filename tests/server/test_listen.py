"""A member refuses to start on an address another process already serves (grpcio would
otherwise share the port through SO_REUSEPORT and split its connections between them)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from confer.server.app import ConferServer
from confer.server.config import ServerConfig


async def _second_on_the_same_port(tmp_path: Path) -> str:
    first = ConferServer(ServerConfig(data_dir=tmp_path / "a", listen_client="127.0.0.1:0",
                                      listen_peer="127.0.0.1:0"))
    await first.start()
    try:
        taken = f"127.0.0.1:{first.client_port}"
        second = ConferServer(ServerConfig(data_dir=tmp_path / "b", listen_client=taken,
                                           listen_peer="127.0.0.1:0"))
        with pytest.raises(SystemExit) as refused:
            await second.start()
        return str(refused.value)
    finally:
        await first.stop()


def test_a_second_member_on_a_taken_port_exits_with_one_line(tmp_path: Path) -> None:
    message = asyncio.run(_second_on_the_same_port(tmp_path))
    assert message.startswith("cannot listen for clients on 127.0.0.1:")
    assert "in use" in message and "\n" not in message
