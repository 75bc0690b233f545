"""The kernel steers the port's datagrams to two sockets by the one definition of their
class (`wire.port.queue_of`): transport data to one, everything else to the other."""

import json
import sys

import pytest

from whalescale.agent.steering import UDP_HEADER, index_filter, run_program
from whalescale.lab import Lab
from whalescale.wire.port import Queue, queue_of


def test_the_kernel_program_and_the_userspace_definition_agree_on_every_first_byte():
    for payload in [b"", *(bytes((first, 0, 0, 0)) for first in range(256))]:
        assert run_program(payload) == queue_of(payload), payload
    assert queue_of(bytes((4, 0, 0, 0))) is Queue.DATA
    assert queue_of(bytes((4, 0, 0, 7))) is Queue.DATA  # relay-tagged data too
    assert queue_of(bytes((1, 0, 0, 0))) is Queue.CONTROL


def transport(index: int, channel: int = 0) -> bytes:
    return bytes((4,)) + channel.to_bytes(3, "big") + index.to_bytes(4, "little") + bytes(40)


def test_the_index_filter_keeps_our_tag_relayed_data_and_all_else():
    keep = index_filter(0xA7)
    udp = bytes(UDP_HEADER)
    assert run_program(udp + transport(0xA7123456), keep)
    assert not run_program(udp + transport(0xA8123456), keep)
    assert run_program(udp + transport(0xA8123456, channel=9), keep)  # an anchor relays it
    assert run_program(udp + transport(0xA8123456, channel=0x10000), keep)
    assert run_program(udp + bytes((1, 0, 0, 0)) + bytes(144), keep)  # an initiation
    assert not run_program(udp + bytes((4, 0, 0)), keep)  # too short to be anything


STEER = """
import json, socket
from whalescale.agent.steering import filter_indices, open_port
data, control = open_port("127.0.0.1", 51820, socket.AF_INET)
out = {"steered": control is not None}
sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sent = [bytes((t, 0, 0, 0)) + bytes(28) for t in (4, 1, 2, 3, 4, 0x57)] + [b""]
for payload in sent:
    sender.sendto(payload, ("127.0.0.1", 51820))
def drain(sock):
    sock.settimeout(0.5)
    got = []
    try:
        while True:
            got.append(sock.recv(100)[:1].hex())
    except TimeoutError:
        return got
def drain_full(sock):
    sock.settimeout(0.5)
    got = []
    try:
        while True:
            got.append(sock.recv(100).hex())
    except TimeoutError:
        return got
out["data"], out["control"] = drain(data), drain(control)
filter_indices(data, 0xA7)
for index, channel in ((0xA7000001, 0), (0xA8000001, 0), (0xA8000001, 5)):
    sender.sendto(bytes((4,)) + channel.to_bytes(3, "big") + index.to_bytes(4, "little")
                  + bytes(40), ("127.0.0.1", 51820))
out["filtered"] = [bytes(reversed(d[4:8])).hex() + "/" + d[1:4].hex()
                   for d in [bytes.fromhex(x) for x in drain_full(data)]]
print(json.dumps(out))
"""


@pytest.mark.lab
def test_transport_data_and_the_rest_arrive_on_their_own_sockets(lab: Lab):
    out = json.loads(lab.host("steer").run(sys.executable, "-c", STEER, timeout=30).stdout)
    assert out["steered"] is True
    assert out["data"] == ["04", "04"]
    assert out["control"] == ["01", "02", "03", "57", ""]
    # our tag, or relay-tagged: through; untagged with another tag: dropped in the kernel
    assert out["filtered"] == ["a7000001/000000", "a8000001/000005"]
