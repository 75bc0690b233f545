"""The appliance under a real systemd: site.yml onto systemd hosts, then the unit at work.

Theory of operation: three lab hosts (an anchor and two peers) are containers booted with
systemd (whalescale/lab/systemd_host.py); a fourth, `control`, is a plain namespace host that
runs ansible-playbook over real SSH into them, as an operator's machine would. The role
detects systemd and takes its unit path: the release wheel into /opt/whalescale, the unit
into /etc/systemd/system, `systemctl enable --now`. Nothing is forced or redirected per
host: these are the role's defaults.

One deployment serves every test of this file (a module fixture: booting and deploying
costs most of the time), so the tests run in file order and each leaves the mesh working
for the next; the one that breaks a host's TUN device comes last.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.ansible import playbook
from tests.ansible.playbook import NODES, pings
from whalescale.lab import Lab
from whalescale.lab.netns import Host
from whalescale.lab.systemd_host import SystemdHost, boot

pytestmark = pytest.mark.lab

UNIT = "whalescale.service"
MESH = "/etc/whalescale/mesh.toml"
KEY = "/etc/whalescale/private.key"
STATE = "/var/lib/private/whalescale"  # where StateDirectory= puts it under DynamicUser=
CREDENTIAL = f"/run/credentials/{UNIT}/private.key"
WHALESCALE = "/usr/local/bin/whalescale"
POLKIT_RULE = "etc/polkit-1/rules.d/50-whalescale.rules"  # the role's, under the host's root
_EXPOSURE = re.compile(r"Overall exposure level for whalescale\.service: (\d+\.\d+) (\w+)")


# The routes and access keys on the hosts: the role renders them and sets the kernel.
ACCESS: dict[str, dict[str, object]] = {
    "peer1": {"whalescale_routes": ["10.77.0.0/24"], "whalescale_groups": ["routers"]},
    "anchor1": {"whalescale_firewall": [{"action": "deny", "from": ["routers"],
                                         "proto": "tcp", "ports": [9]}]},
}


@dataclass
class Deployment:
    lab: Lab
    hosts: dict[str, SystemdHost]
    control: Host
    inventory: Path
    first_run: tuple[str, dict[str, int]]


@pytest.fixture(scope="module")
def deployed(systemd_skip_reason: None, wheel: Path,
             wheelhouse: Path) -> Iterator[Deployment]:
    """Three systemd hosts and a control host; site.yml run once onto them."""
    with Lab() as lab:
        lab_hosts = lab.star([*NODES, "control"])
        client_key = lab.tempdir / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(client_key)],
                       check=True)
        pub = client_key.with_suffix(".pub").read_text()
        # The wheelhouse at its own path inside: pip there reads the inventory's --find-links.
        hosts = {name: boot(lab, lab_hosts[name], authorized_keys=pub, binds=[wheelhouse])
                 for name in NODES}
        control = lab_hosts["control"]
        addrs = {name: lab_hosts[name].addr() for name in NODES}
        all_vars = playbook.common_vars(lab, client_key, wheel, wheelhouse)
        inventory = playbook.write_inventory(lab, addrs, all_vars,
                                             lambda name: ACCESS.get(name, {}))
        try:
            first_run = playbook.run_playbook(control, inventory, NODES)
            yield Deployment(lab, hosts, control, inventory, first_run)
        finally:
            playbook.close_masters(lab, control, addrs.values())


def _status(host: SystemdHost, timeout_s: float = 10) -> dict:
    """`whalescale status --json`, waiting for an agent that has just started to answer."""
    deadline = time.monotonic() + timeout_s
    while (result := host.run(WHALESCALE, "status", "--json", "--state-dir",
                              "/var/lib/whalescale", check=False)).returncode != 0:
        assert time.monotonic() < deadline, result.stderr
        time.sleep(0.2)
    return json.loads(result.stdout)


def _process_ids(host: SystemdHost, pid: int) -> tuple[int, int]:
    """The real uid and gid of a process of the container (its own pid numbers)."""
    status = host.run("cat", f"/proc/{pid}/status").stdout
    uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
    gid = next(line.split()[1] for line in status.splitlines() if line.startswith("Gid:"))
    return int(uid), int(gid)


def _read_as(host: SystemdHost, uid: int, gid: int, path: str) -> subprocess.CompletedProcess:
    return host.run("setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                    "cat", path, check=False)


def test_site_playbook_deploys_to_systemd_hosts_and_is_idempotent(
    deployed: Deployment, wheel: Path, project_version: str,
) -> None:
    hosts = deployed.hosts
    output, recap = deployed.first_run
    assert all(changed > 0 for changed in recap.values()), output

    for name, host in hosts.items():
        # The release artifact, installed where the role's defaults put it.
        assert (host.root / "opt" / "whalescale" / wheel.name).read_bytes() == wheel.read_bytes()
        version = host.run(WHALESCALE, "--version").stdout
        assert version == f"whalescale {project_version}\n"
        # The unit: enabled, active, its agent the unprivileged system user the role made
        # (a dynamic user's sandbox, but a name the system bus knows).
        assert host.systemctl("is-enabled", UNIT) == "enabled"
        assert host.systemctl("is-active", UNIT) == "active"
        uid, _ = _process_ids(host, host.main_pid(UNIT))
        user = host.run("getent", "passwd", "whalescale").stdout.split(":")
        assert (uid, user[6].strip()) == (int(user[2]), "/usr/sbin/nologin"), (name, user)
        assert 0 < uid < 1000, f"{name}: the agent runs as uid {uid}, not a system user"
        # The lab gave each host a 0600 device, as a machine without udev has: the role's
        # tmpfiles.d line made it usable.
        assert host.run("stat", "-c", "%a", "/dev/net/tun").stdout.strip() == "666"
    table = hosts["anchor1"].run("nft", "list", "table", "inet", "whalescale").stdout
    assert f"udp dport {playbook.PORT} accept" in table
    # A subnet router forwards (set now and for the next boot); the others were left alone.
    for name, host in hosts.items():
        forwarding = host.run("sysctl", "-n", "net.ipv4.ip_forward").stdout.strip()
        assert forwarding == ("1" if name == "peer1" else "0"), name
    assert (hosts["peer1"].root / "etc/sysctl.d/60-whalescale-forwarding.conf").exists()
    # The anchor's rule, as its agent holds it.
    rules = _status(hosts["anchor1"])["firewall"]["rules"]
    assert [rule["rule"] for rule in rules] == ["deny from routers tcp port 9"]

    for src, src_host in hosts.items():
        for dst, addr in NODES.items():
            if dst != src:
                assert pings(src_host.host, addr), f"{src} -> {dst} ({addr}) through the tunnel"

    # Second run: nothing to change, and the agents were left alone.
    pids = {name: host.main_pid(UNIT) for name, host in hosts.items()}
    output, recap = playbook.run_playbook(deployed.control, deployed.inventory, NODES)
    assert recap == dict.fromkeys(NODES, 0), output
    assert {name: host.main_pid(UNIT) for name, host in hosts.items()} == pids


def test_names_resolve_through_systemd_resolved_which_the_role_lets_the_agent_register_with(
    deployed: Deployment,
) -> None:
    """The agent (an unprivileged system user) registered its tunnel address and ~lab for
    ws0 with the host's systemd-resolved, which asked polkit: the role's rule let it. A
    program on the host then resolves NAME.lab through resolved's stub like any other."""
    anchor = deployed.hosts["anchor1"]
    assert (anchor.root / POLKIT_RULE).is_file()
    journal = anchor.journal(UNIT)
    assert f"systemd-resolved asks {NODES['anchor1']}:53 for *.lab on ws0" in journal, journal
    link = anchor.run("resolvectl", "status", "ws0").stdout
    assert re.search(rf"DNS Servers: {re.escape(NODES['anchor1'])}\b", link), link
    assert re.search(r"DNS Domain: ~lab\b", link), link
    query = anchor.run("resolvectl", "query", "--legend=no", "-4", "peer1.lab", check=False)
    assert query.stdout.split() == ["peer1.lab:", NODES["peer1"], "--", "link:", "ws0"], query
    # The path every program takes on such a host: libc asks resolved's stub.
    resolv_conf = anchor.run("cat", "/etc/resolv.conf").stdout
    try:
        anchor.run("sh", "-c", "echo nameserver 127.0.0.53 > /etc/resolv.conf")
        found = anchor.run("getent", "ahostsv4", "peer2.lab", check=False)
        assert {line.split()[0] for line in found.stdout.splitlines()} == {NODES["peer2"]}, found
    finally:
        anchor.run("sh", "-c", "cat > /etc/resolv.conf", input=resolv_conf)


def test_systemctl_reload_applies_a_changed_mesh_and_keeps_sessions(
    deployed: Deployment,
) -> None:
    anchor = deployed.hosts["anchor1"]
    assert pings(anchor.host, NODES["peer1"])
    pid, before = anchor.main_pid(UNIT), _status(anchor)
    original = anchor.run("cat", MESH).stdout
    changed = re.sub(r"(?m)^keepalive_s = \d+$", "keepalive_s = 20", original)
    assert changed != original
    try:
        anchor.run("sh", "-c", f"cat > {MESH}", input=changed)
        anchor.systemctl("reload", UNIT)
        assert "reload applied" in anchor.journal(UNIT)
        after = _status(anchor)
        # Same process, no new handshake: every session survived the reload.
        assert anchor.main_pid(UNIT) == pid
        assert after["handshakes"] == before["handshakes"]
        sessions = {p["name"]: p["session"] for p in after["peers"]}
        assert sessions == {p["name"]: p["session"] for p in before["peers"]}
        assert all(sessions.values()), sessions
        assert pings(anchor.host, NODES["peer1"], timeout_s=2)
    finally:
        anchor.run("sh", "-c", f"cat > {MESH}", input=original)
        anchor.systemctl("reload", UNIT)


def test_a_bad_mesh_is_refused_and_the_journal_says_where(deployed: Deployment) -> None:
    peer = deployed.hosts["peer1"]
    pid = peer.main_pid(UNIT)
    original = peer.run("cat", MESH).stdout
    try:
        peer.run("sh", "-c", f"cat > {MESH}", input=original + "\n[mesh\n")
        reload = peer.run("systemctl", "reload", UNIT, check=False)
        assert reload.returncode != 0
        errors = peer.journal(UNIT, "-p", "err")
        assert "reload refused" in errors
        assert re.search(rf"{re.escape(MESH)}:\d+:\d+: ", errors), errors
        # The running mesh stays, in the same process.
        assert peer.systemctl("is-active", UNIT) == "active"
        assert peer.main_pid(UNIT) == pid
    finally:
        peer.run("sh", "-c", f"cat > {MESH}", input=original)
    assert pings(peer.host, NODES["anchor1"])


_CACHE_SCRIPT = """\
import json, sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
tables = [row[0] for row in db.execute("select name from sqlite_master where type = 'table'")]
print(json.dumps({"integrity": db.execute("pragma integrity_check").fetchone()[0],
                  "rows": {t: db.execute(f'select count(*) from "{t}"').fetchone()[0]
                           for t in tables}}))
"""


def _cache(host: SystemdHost) -> dict:
    """The agent's last-known-good cache, read beside it: its integrity, rows per table."""
    out = host.run("python3", "-c", _CACHE_SCRIPT, f"{STATE}/lkg.sqlite3").stdout
    return json.loads(out)


def _kept(before: dict, after: dict) -> bool:
    """Whether every table of the cache `before` is in `after`, with as many rows or more."""
    return all(after["rows"].get(table, -1) >= n for table, n in before["rows"].items())


def test_kill_9_of_the_agent_is_followed_by_a_restart_with_the_cache_intact(
    deployed: Deployment,
) -> None:
    peer = deployed.hosts["peer1"]
    pid = peer.main_pid(UNIT)
    restarts = int(peer.unit_property(UNIT, "NRestarts"))
    before = _cache(peer)
    assert before["integrity"] == "ok" and before["rows"], before
    since = peer.run("date", "+%Y-%m-%d %H:%M:%S").stdout.strip()

    peer.run("kill", "-9", str(pid))
    new_pid = peer.wait_active(UNIT, not_pid=pid)

    assert int(peer.unit_property(UNIT, "NRestarts")) == restarts + 1
    # The cache was neither moved aside as corrupt nor found unusable, and kept its rows.
    after = _cache(peer)
    assert after["integrity"] == "ok" and _kept(before, after), (before, after)
    assert "corrupt" not in peer.run("ls", STATE).stdout
    assert "unusable" not in peer.journal(UNIT, "--since", since)
    assert pings(peer.host, NODES["anchor1"])
    assert peer.main_pid(UNIT) == new_pid


def test_the_state_directory_and_key_survive_a_restart(
    deployed: Deployment,
) -> None:
    peer = deployed.hosts["peer2"]
    fingerprint = _status(peer)["fingerprint"]
    cache = _cache(peer)
    assert peer.run("readlink", "/var/lib/whalescale").stdout.strip() == "private/whalescale"

    peer.systemctl("restart", UNIT)
    pid = peer.wait_active(UNIT)

    uid, _ = _process_ids(peer, pid)
    # The state directory belongs to the service's user, and kept its files.
    owner, mode = peer.run("stat", "-c", "%u %a", STATE).stdout.split()
    assert (int(owner), mode) == (uid, "700")
    assert _kept(cache, _cache(peer))
    assert _status(peer)["fingerprint"] == fingerprint
    assert pings(peer.host, NODES["anchor1"])


def test_the_credential_is_readable_by_the_service_and_by_no_other_user(
    deployed: Deployment,
) -> None:
    peer = deployed.hosts["peer1"]
    uid, gid = _process_ids(peer, peer.main_pid(UNIT))
    key = peer.run("cat", KEY).stdout
    as_service = _read_as(peer, uid, gid, CREDENTIAL)
    assert as_service.returncode == 0 and as_service.stdout == key, as_service.stderr
    # Nobody else: not another user, nor the service's user with the key file itself.
    as_nobody = _read_as(peer, 65534, 65534, CREDENTIAL)
    assert as_nobody.returncode != 0 and "Permission denied" in as_nobody.stderr
    assert _read_as(peer, uid, gid, KEY).returncode != 0
    assert peer.run("stat", "-c", "%a", KEY).stdout.strip() == "600"


def test_systemd_analyze_security_rates_the_unit_ok(deployed: Deployment) -> None:
    anchor = deployed.hosts["anchor1"]
    report = anchor.run("systemd-analyze", "security", "--no-pager", UNIT, check=False).stdout
    match = _EXPOSURE.search(report)
    assert match, report
    exposure, verdict = float(match[1]), match[2]
    print(f"systemd-analyze security {UNIT}: {exposure} {verdict}")
    # DESIGN.md records the score: a higher one means a directive was lost.
    assert verdict in ("SAFE", "OK") and exposure <= 2.0, report


def test_a_tun_device_the_service_cannot_open_is_one_journal_line_saying_why(
    deployed: Deployment,
) -> None:
    peer = deployed.hosts["peer2"]
    since = peer.run("date", "+%Y-%m-%d %H:%M:%S").stdout.strip()
    # The device as a machine without udev has it, then an agent start.
    peer.run("chmod", "0600", "/dev/net/tun")
    peer.systemctl("restart", UNIT)
    deadline = time.monotonic() + 20
    while "/dev/net/tun" not in (errors := peer.journal(UNIT, "-p", "err", "--since", since)):
        assert time.monotonic() < deadline, peer.journal(UNIT, "--since", since)
        time.sleep(0.2)
    line = next(line for line in errors.splitlines() if "/dev/net/tun" in line)
    assert "cannot start" in line and "permission denied" in line, line
    assert "chmod 0666 /dev/net/tun" in line and "z /dev/net/tun 0666" in line, line

    # What the role installed puts it right; systemd's restart policy does the rest.
    peer.run("systemd-tmpfiles", "--create", "/etc/tmpfiles.d/whalescale-tun.conf")
    peer.wait_active(UNIT)
    assert pings(peer.host, NODES["anchor1"])
