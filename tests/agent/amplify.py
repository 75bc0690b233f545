"""A stranger on a node's LAN, run inside its lab namespace: `python -m tests.agent.amplify`.

It sends the node every pre-handshake message (tests/nat/pre_handshake.py) from one
socket and prints, as JSON, each row with the sizes of the datagrams that came back.
Usage: amplify TARGET_PUBKEY TARGET_HOST PORT LOCAL_HOST MEMBER_KEYFILE OTHER_PUBKEY OTHER_PUBKEY
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

from tests.nat import pre_handshake
from whalescale.identity import decode_key, read_key_file, x25519_public_from_ed25519

LISTEN_S = 0.5  # what comes back within this long after a message is its answer


def main() -> None:
    target_pub, target_host, port, local_host, member_key, *others = sys.argv[1:8]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((local_host, 0))
    target = (target_host, int(port))
    table = pre_handshake.messages(
        x25519_public_from_ed25519(decode_key(target_pub)), target, sock.getsockname(),
        read_key_file(Path(member_key)), (decode_key(others[0]), decode_key(others[1])),
        wall_s=time.time())
    rows = []
    for what, datagram, expected in table:
        sock.sendto(datagram, target)
        answers = []
        deadline = time.monotonic() + LISTEN_S
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data, source = sock.recvfrom(65536)
            except TimeoutError:
                break
            if source == target:
                answers.append(len(data))
        rows.append([what, len(datagram), expected, answers])
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
