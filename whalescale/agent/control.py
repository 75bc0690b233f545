"""The local control socket: `<state-dir>/control.sock`, one JSON request a connection.

A request is one line `{"command": "..."}`; the answer is one line of JSON
with at least `ok`. The socket is created mode 0600 inside the 0700 state
directory: only root and the agent's own user may talk to it.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

log = logging.getLogger("whalescale.control")

SOCKET_NAME = "control.sock"
_MAX_REQUEST_BYTES = 64 * 1024
_CLIENT_TIMEOUT_S = 10.0

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class NoAgent(ConnectionError):
    """No agent answers on that state directory's control socket."""


def socket_path(state_dir: Path) -> Path:
    return state_dir / SOCKET_NAME


def claim(path: Path) -> None:
    """Remove a stale socket file; refuse if a live agent still answers on it."""
    try:
        request(path, {"command": "hello"})
    except NoAgent:
        path.unlink(missing_ok=True)
        return
    raise OSError(errno.EADDRINUSE, f"another agent is running with control socket {path}")


async def serve(path: Path, handler: Handler,
                *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        await sock.bind(str(path))
    finally:
        os.umask(old_umask)
    sock.listen(8)
    listener = trio.SocketListener(sock)
    try:
        task_status.started()
        await trio.serve_listeners(lambda stream: _answer(stream, handler), [listener])
    finally:
        path.unlink(missing_ok=True)


async def _answer(stream: trio.SocketStream, handler: Handler) -> None:
    async with stream:
        data = b""
        with trio.move_on_after(_CLIENT_TIMEOUT_S):
            while b"\n" not in data and len(data) < _MAX_REQUEST_BYTES:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    break
                data += chunk
        try:
            req = json.loads(data.split(b"\n", 1)[0])
            if not isinstance(req, dict):
                raise ValueError("request is not a JSON object")
            reply = await handler(req)
        except ValueError as exc:
            reply = {"ok": False, "error": f"bad request: {exc}"}
        except Exception as exc:  # a bug in one command must not take the agent down
            log.exception("control command %r failed", data[:200])
            reply = {"ok": False, "error": f"internal error: {exc}"}
        await stream.send_all(json.dumps(reply).encode() + b"\n")


def request(path: Path, req: dict[str, Any], timeout_s: float = _CLIENT_TIMEOUT_S
            ) -> dict[str, Any]:
    """Send one request to the agent and return its answer (blocking; for the CLI)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise NoAgent(f"no agent is running with control socket {path}") from exc
        except PermissionError as exc:  # connect(2) names no file: name the socket
            raise PermissionError(exc.errno, exc.strerror, str(path)) from exc
        data = b""
        try:
            sock.sendall(json.dumps(req).encode() + b"\n")
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except (BrokenPipeError, ConnectionResetError) as exc:
            # the agent's side, not our stdout's (exits.py): said as what it is
            raise NoAgent(f"the agent on {path} went away without answering") from exc
    if not data:
        raise NoAgent(f"the agent on {path} went away without answering")
    return json.loads(data)
