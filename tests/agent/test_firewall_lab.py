"""The mesh firewall between real agents: bob's rules deny alice's TCP to one port and
everything of hers but one other port and ICMP; what they drop is counted in his status,
and his own connection to alice gets its answers (stateful)."""

from __future__ import annotations

import sys

import pytest

from whalescale.lab.mesh import LabMesh
from whalescale.lab.netns import Host

pytestmark = pytest.mark.lab

DENIED, ALLOWED = 7001, 7002
# A TCP server on each port given: every connection gets "hi" and is closed.
SERVER = """
import socket, sys, threading
def serve(port):
    s = socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True)
    while True:
        c, _ = s.accept()
        c.sendall(b"hi")
        c.close()
for port in sys.argv[1:]:
    threading.Thread(target=serve, args=(int(port),), daemon=True).start()
print("listening", flush=True)
threading.Event().wait()
"""
CLIENT = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2.0) as c:
        print(c.recv(2).decode())
except OSError as e:
    print(f"failed: {e!r}")
"""


def connect(host: Host, address: str, port: int) -> str:
    """What a TCP client on `host` gets from address:port: "hi", or why it failed."""
    return host.run(sys.executable, "-c", CLIENT, address, str(port)).stdout.strip()


def test_a_denied_port_is_dropped_and_counted_while_the_allowed_one_works(lab):
    hosts = lab.star(["alice", "bob"])
    mesh = LabMesh(lab)
    alice, bob = mesh.add_node(hosts["alice"]), mesh.add_node(hosts["bob"])
    bob.toml_lines = [
        "firewall = [",
        f'  {{ action = "deny", from = "alice", proto = "tcp", ports = [{DENIED}] }},',
        f'  {{ action = "allow", from = "alice", proto = "tcp", ports = [{ALLOWED}] }},',
        '  { action = "allow", from = "alice", proto = "icmp" },',
        '  { action = "deny", from = "alice" },',
        "]"]
    mesh.start_all()
    for node in (alice, bob):
        server = node.host.spawn(sys.executable, "-c", SERVER, str(DENIED), str(ALLOWED))
        assert server.wait_for_log("listening", 10)

    # alice: ping (rule 2) and the allowed port (rule 1) work, over IPv4 and IPv6
    assert alice.host.ping(bob.tunnel_addr, count=3, timeout=2.0)
    assert connect(alice.host, bob.tunnel_addr, ALLOWED) == "hi"
    assert connect(alice.host, bob.tunnel_addr6, ALLOWED) == "hi"
    # the denied port: her SYNs never reach bob's TCP, so no answer, not even a reset
    assert "timed out" in connect(alice.host, bob.tunnel_addr, DENIED)
    assert "timed out" in connect(alice.host, bob.tunnel_addr6, DENIED)

    firewall = mesh.status("bob")["firewall"]
    rules = firewall["rules"]
    assert rules[0]["rule"] == f"deny from alice tcp port {DENIED}"
    assert rules[0]["drops"] >= 2  # a SYN at least from each family
    assert rules[1]["drops"] == rules[2]["drops"] == 0
    assert bob.proc.wait_for_log(
        rf"firewall: dropped tcp from alice \({alice.tunnel_addr}\) to port {DENIED} by rule 0", 5)

    # bob's own connection to alice's port: her answers come to his ephemeral port, which
    # rule 3 denies; they pass as replies to a flow bob opened
    assert connect(bob.host, alice.tunnel_addr, DENIED) == "hi"
    assert mesh.status("bob")["firewall"]["rules"][3]["drops"] == 0
    # alice's own UDP to bob, no reply to anything of his, falls to rule 3
    alice.host.run(sys.executable, "-c", "import socket; socket.socket(socket.AF_INET, "
                   f"socket.SOCK_DGRAM).sendto(b'x', ('{bob.tunnel_addr}', 9))")
    assert bob.proc.wait_for_log(r"firewall: dropped udp from alice .* to port 9 by rule 3", 5)
