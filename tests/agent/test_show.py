"""`whalescale status` and `netcheck` for people: plain lines in a pipe, tables on a terminal,
and the agent's text printed as it is either way."""

from __future__ import annotations

import io

from tests.agent.status_sample import IPV6_ENDPOINT, LONG_NAME, MULTIPATH, SHORT_IPV6, sample_status
from whalescale.agent.show import (
    netcheck_blocks,
    path_blocks,
    plain_lines,
    print_rich,
    status_blocks,
    terminal_console,
)


def rows_naming(lines: list[str], text: str) -> list[str]:
    return [line for line in lines if text in line]


def test_plain_status_has_one_whole_line_per_peer_and_path():
    lines = plain_lines(status_blocks(sample_status()))
    (long_row,) = rows_naming(lines, "ipv6")
    assert long_row.split()[:3] == [LONG_NAME, "whalescale", IPV6_ENDPOINT]
    assert len(long_row) > 80 and "…" not in "\n".join(lines)
    (never,) = rows_naming(lines, "delta")
    assert never.split()[3] == "-"  # no path kind for a peer never reached
    (path_row,) = rows_naming(lines, "healthy")
    assert f"[fd00::2]:51820 -> {SHORT_IPV6}" in path_row
    assert "anchors: 1 of 2 reachable (only one anchor reachable)" in lines
    assert "drops: replay 2" in lines


def test_an_anchor_speaks_of_the_other_anchors():
    status = sample_status() | {"anchor": True}
    status["anchors"] = {"health": "only one anchor reachable", "reachable": [], "total": 0}
    assert "other anchors: 0 of 0 reachable (only one anchor reachable)" in plain_lines(
        status_blocks(status))


def test_plain_netcheck_keeps_ipv6_addresses_and_endpoints_whole():
    lines = plain_lines(netcheck_blocks(sample_status()))
    assert "addresses: 10.0.0.5/24, 2001:db8:ffff:1234::5/64" in lines
    assert f"published endpoints: {IPV6_ENDPOINT}, 198.51.100.7:51820" in lines
    assert f"  {LONG_NAME}: punch punching, relay -" in lines


def on_terminal(width: int) -> str:
    console = terminal_console(record=True, width=width, file=io.StringIO())
    print_rich(status_blocks(sample_status()) + netcheck_blocks(sample_status()), console)
    return console.export_text()


def test_a_terminal_gets_tables_with_endpoints_never_read_as_markup():
    text = on_terminal(width=200)
    assert IPV6_ENDPOINT in text and SHORT_IPV6 in text and "🔢" not in text
    assert f"[fd00::2]:51820 -> {SHORT_IPV6}" in text
    assert "…" not in on_terminal(width=60)  # a narrow terminal folds a cell, never cuts it


def test_a_backup_path_says_so_beside_its_state():
    backup = MULTIPATH["paths"][0] | {"id": 1, "remote": "10.0.1.2:51820", "backup": True}
    mp = MULTIPATH | {"paths": [MULTIPATH["paths"][0], backup]}
    rows = [line for line in plain_lines(path_blocks("bravo", mp)) if "healthy" in line]
    assert "healthy (backup)" in rows[1] and "backup" not in rows[0]
    assert "20.0 Mbit/s" in rows[0] and "12.5 ms" in rows[0]


def test_the_firewall_shows_its_rules_in_order_with_their_drops():
    lines = plain_lines(status_blocks(sample_status()))
    start = lines.index("firewall: 2 rules, 3 flows of ours tracked (their replies pass)")
    assert [line.split() for line in lines[start + 1:start + 5]] == [
        ["#", "rule", "(first", "match", "decides)", "dropped"],
        ["0", "allow", "from", "laptops", "tcp", "port", "22", "0"],
        ["1", "deny", "from", "kids", "any", "7"],
        ["-", "default:", "allow", "0"]]


def test_a_firewall_that_drops_nothing_is_not_shown():
    status = sample_status()
    status["firewall"] = status["firewall"] | {"active": False, "rules": []}
    assert not rows_naming(plain_lines(status_blocks(status)), "firewall")


def test_status_says_which_exit_node_we_use_and_whether_we_offer_one():
    status = sample_status()
    assert not any(line.startswith("exit node") for line in plain_lines(status_blocks(status)))
    status["exit"] = {"via": "vps", "kill_switch": True, "offer": True, "table": 30579,
                      "dns": ["10.9.0.53"]}
    lines = [line for line in plain_lines(status_blocks(status)) if line.startswith("exit")]
    assert lines == ["exit node: vps (default route, DNS to 10.9.0.53; on a crash: kill switch)",
                     "exit node: offered to the mesh (forwarding and masquerading)"]


def test_status_shows_our_routes_forwarding_and_who_carries_each_route():
    from tests.node.test_subnets import node  # a real node's status, not a copy of its shape

    home = node("home")
    home.set_forwarding(False, True, 0.0)
    lines = plain_lines(status_blocks(sample_status() | {"routes": home.status(0.0)["routes"]}))
    assert "our routes: 192.168.1.0/24, fd00:1::/64; forwarding ipv4 OFF, ipv6 on" in lines
    (row,) = rows_naming(lines, "192.168.1.0/24  ")
    assert row.split()[:4] == ["192.168.1.0/24", "home", "home", "backup"]
    assert row.split()[4:] == ["not", "routed:", "ours:", "we", "forward", "for", "it"]
    laptop = node("laptop")
    lines = plain_lines(status_blocks(sample_status() | {"routes": laptop.status(0.0)["routes"]}))
    assert not rows_naming(lines, "our routes")
    (row,) = rows_naming(lines, "192.168.1.0/24")
    assert row.split() == ["192.168.1.0/24", "home", "home", "(up)", "backup", "routed"]
