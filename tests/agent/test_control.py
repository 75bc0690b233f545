"""The control socket: one JSON line in, one out; garbage gets an error, never a crash."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import pytest
import trio

from whalescale.agent import control


async def answer(req: dict) -> dict:
    if req.get("command") == "boom":
        raise RuntimeError("a bug in a command")
    return {"ok": True, "echo": req}


def exchange(path: Path, raw: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        return sock.recv(65536)


@pytest.mark.parametrize("raw, expected", [
    (b'{"command": "hello"}\n', b'"ok": true'),
    (b"not json\n", b"bad request"),
    (b"[1, 2]\n", b"bad request"),
    (b"\xff\xfe\n", b"bad request"),
    (b"", b"bad request"),
    (b'{"command": "boom"}\n', b"internal error"),
])
def test_requests_and_garbage(tmp_path, raw, expected):
    path = tmp_path / control.SOCKET_NAME
    replies = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(control.serve, path, answer)
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            replies.append(await trio.to_thread.run_sync(exchange, path, raw))
            # the server is still up after whatever that was
            replies.append(await trio.to_thread.run_sync(exchange, path, b'{"command":"x"}\n'))
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert expected in replies[0]
    assert b'"ok": true' in replies[1]
    assert not path.exists()  # removed when the server stops


def test_no_agent_and_a_stale_socket(tmp_path):
    path = tmp_path / control.SOCKET_NAME
    with pytest.raises(control.NoAgent):
        control.request(path, {"command": "hello"})
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # a socket file nobody listens on, as a crash leaves it
    stale.close()
    control.claim(path)
    assert not path.exists()
