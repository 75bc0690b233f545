"""The firewall as the node wires it (node/node.py): rules loaded by a reload judge what
the tunnel delivers; what the node sends makes its replies pass; `status` counts."""

from __future__ import annotations

from tests.firewall.packets import ACK, SYN, ip4, tcp
from tests.nat.sim import Internet


class MeshWithRules(Internet):
    """The sim's mesh file, with lines added to the last [[node]] table."""

    last_node_lines = ""

    def mesh_text(self) -> str:
        return super().mesh_text() + self.last_node_lines


def test_rules_from_a_reload_drop_and_count_and_replies_to_our_flows_pass():
    net = MeshWithRules()
    net.add("anchor-1", "198.51.100.1", anchor=True)
    a, b = net.add("a", "198.51.100.2"), net.add("b", "198.51.100.3")
    net.start()
    net.run(3.0)
    assert a.node is not None and b.node is not None

    def a_sends(packet: bytes) -> bool:
        """Whether `packet` from a reaches b's TUN."""
        b.delivered.clear()
        a.node.send_packets([packet], net.now)
        net.pump()
        return b.delivered == [packet]

    web = ip4(a.tunnel, b.tunnel, tcp(40000, 80))
    assert a_sends(web)  # no rules yet
    net.last_node_lines = ('firewall = [{ action = "allow", from = "a", proto = "tcp", '
                           'ports = [22] }, { action = "deny", from = "a" }]\n')
    sessions = b.engine.handshake_outcomes["completed"]
    net.reload("b")
    assert a_sends(ip4(a.tunnel, b.tunnel, tcp(40001, 22)))
    assert not a_sends(web)
    # b opens a connection to a: a's answer passes, though rule 1 denies all else from a
    b.node.send_packets([ip4(b.tunnel, a.tunnel, tcp(41000, 5000))], net.now)
    net.pump()
    assert a_sends(ip4(a.tunnel, b.tunnel, tcp(5000, 41000, SYN | ACK)))
    assert not a_sends(ip4(a.tunnel, b.tunnel, tcp(5000, 41001, SYN | ACK)))
    firewall = b.node.status(net.now)["firewall"]
    assert [(r["rule"], r["drops"]) for r in firewall["rules"]] == [
        ("allow from a tcp port 22", 0), ("deny from a any", 2)]
    assert firewall["flows"] == 1
    assert "firewall: dropped tcp from a (100.96.0.2) to port 80 by rule 1 (deny from a any)" \
        in b.log
    assert b.engine.handshake_outcomes["completed"] == sessions  # the session stayed
