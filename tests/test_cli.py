"""The command line as a user runs it: exit codes, files, messages."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from tests.agent.status_sample import IPV6_ENDPOINT, LONG_NAME, SHORT_IPV6, sample_status
from whalescale.agent import control
from whalescale.identity import Identity, b64, decode_key, fingerprint, read_key_file


def ws(*args: str | Path, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "whalescale", *map(str, args)],
                          capture_output=True, text=True, timeout=60, check=check)


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    paths = {name: tmp_path / f"{name}.key" for name in ("anchor", "laptop")}
    for path in paths.values():
        ws("keygen", path, check=True)
    return paths


def mesh_text(keys: dict[str, Path]) -> str:
    anchor = read_key_file(keys["anchor"])
    laptop = read_key_file(keys["laptop"])
    return f"""\
[mesh]
name = "home"

[[node]]
name = "anchor"
public_key = "{anchor.public_b64}"
address = "100.96.0.1"
endpoints = ["192.0.2.10:51820"]
anchor = true

[[node]]
name = "laptop"
public_key = "{laptop.public_b64}"
address = ["100.96.0.2", "fd7a::2"]
"""


def test_keygen_writes_0600_and_prints_public_key_and_fingerprint(tmp_path):
    path = tmp_path / "node.key"
    result = ws("keygen", path)
    assert result.returncode == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    ident = read_key_file(path)
    assert result.stdout.strip() == ident.public_b64
    assert fingerprint(ident.public) in result.stderr


def test_keygen_refuses_to_overwrite(tmp_path):
    path = tmp_path / "node.key"
    path.write_text("precious\n")
    result = ws("keygen", path)
    assert result.returncode == 1
    assert "refusing to overwrite" in result.stderr
    assert path.read_text() == "precious\n"


def test_pubkey_and_wireguard_form(keys):
    ident = read_key_file(keys["anchor"])
    assert ws("pubkey", keys["anchor"]).stdout.strip() == ident.public_b64
    wg = ws("pubkey", "--wireguard", keys["anchor"]).stdout.strip()
    assert decode_key(wg) == ident.x25519_public
    assert wg == b64(ident.x25519_public)


def test_fingerprint_of_key_and_key_file_agree(keys):
    public = ws("pubkey", keys["anchor"]).stdout.strip()
    by_key = ws("fingerprint", public).stdout.strip()
    assert by_key == ws("fingerprint", keys["anchor"]).stdout.strip()
    assert len(by_key.replace("-", "")) == 32
    bad = ws("fingerprint", "not-a-key")
    assert bad.returncode == 1 and "base64" in bad.stderr


def test_check_accepts_a_good_mesh(keys, tmp_path):
    mesh = tmp_path / "mesh.toml"
    mesh.write_text(mesh_text(keys))
    result = ws("check", mesh)
    assert result.returncode == 0, result.stderr
    assert "2 nodes (1 anchors)" in result.stdout


def test_check_warns_about_the_deprecated_relay_key_and_accepts_the_mesh(keys, tmp_path):
    mesh = tmp_path / "mesh.toml"
    mesh.write_text(mesh_text(keys).replace("anchor = true", "anchor = true\nrelay = true"))
    result = ws("check", mesh)
    assert result.returncode == 0, result.stderr
    assert "2 nodes (1 anchors)" in result.stdout
    (warning,) = result.stderr.splitlines()
    assert "WARNING" in warning
    assert f"{mesh}:10:1: node[0].relay: deprecated key 'relay' is ignored" in warning


def test_check_reports_every_problem_with_its_position(keys, tmp_path):
    mesh = tmp_path / "mesh.toml"
    text = mesh_text(keys).replace('address = "100.96.0.1"', 'address = "100.96.0.2"')
    text = text.replace("anchor = true", "anchor = true\ncolour = \"blue\"")
    mesh.write_text(text)
    result = ws("check", mesh)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert any(line.startswith(f"{mesh}:10:1: node[0].colour: unknown key") for line in lines)
    assert any(line.startswith(f"{mesh}:15:12: node[1].address") and "duplicate" in line
               for line in lines), lines


def test_hosts_prints_a_marked_block_of_every_tunnel_address(keys, tmp_path):
    mesh = tmp_path / "mesh.toml"
    phone = Identity.generate().public_b64
    mesh.write_text(mesh_text(keys) + f"""
[[wireguard]]
name = "phone"
public_key = "{phone}"
address = "100.96.0.9"
""")
    result = ws("hosts", mesh)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ("# BEGIN whalescale mesh home\n"
                             "100.96.0.1\tanchor.home anchor\n"
                             "100.96.0.2\tlaptop.home laptop\n"
                             "fd7a::2\tlaptop.home laptop\n"
                             "100.96.0.9\tphone.home phone\n"
                             "# END whalescale mesh home\n")
    # the markers let a script swap the block: here sed, as the README shows
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n" + result.stdout + "::1 localhost\n")
    text = mesh.read_text().replace('name = "home"', 'name = "home"\nsuffix = "home.arpa"')
    mesh.write_text(text)
    block = ws("hosts", mesh, check=True).stdout
    subprocess.run(["sed", "-i", "/^# BEGIN whalescale mesh home$/,/^# END whalescale mesh home$/d",
                    str(hosts)], check=True)
    hosts.write_text(hosts.read_text() + block)
    assert hosts.read_text().count("anchor.home") == 1
    assert "100.96.0.1\tanchor.home.arpa anchor\n" in hosts.read_text()


def test_hosts_of_a_bad_mesh_reports_where(keys, tmp_path):
    mesh = tmp_path / "mesh.toml"
    mesh.write_text(mesh_text(keys).replace('name = "home"', 'name = "home"\nsuffix = "a b"'))
    result = ws("hosts", mesh)
    assert result.returncode == 1 and result.stdout == ""
    assert f"{mesh}:3:10: mesh.suffix" in result.stderr


def test_up_without_an_entry_for_our_key_says_which_key(keys, tmp_path):
    mesh = tmp_path / "mesh.toml"
    mesh.write_text(mesh_text(keys))
    stranger = tmp_path / "stranger.key"
    ws("keygen", stranger, check=True)
    result = ws("up", mesh, "--key", stranger, "--state-dir", tmp_path / "state")
    assert result.returncode == 1
    assert read_key_file(stranger).public_b64 in result.stderr


def test_up_with_an_exit_node_that_offers_none_says_which_do(keys, tmp_path):
    mesh = tmp_path / "mesh.toml"
    mesh.write_text(mesh_text(keys).replace("anchor = true", "anchor = true\nexit = true"))
    for name in ("laptop", "nobody"):
        result = ws("up", mesh, "--key", keys["laptop"], "--exit-node", name,
                    "--state-dir", tmp_path / "state")
        assert result.returncode == 1
        assert result.stderr == (f"whalescale: --exit-node '{name}' is not another node with "
                                 "exit = true in the mesh file (those offering: anchor)\n")
    assert not (tmp_path / "state").exists()  # refused before anything was opened


def test_up_with_a_bad_mesh_prints_positions(keys, tmp_path):
    mesh = tmp_path / "mesh.toml"
    mesh.write_text(mesh_text(keys).replace("[mesh]", "[mesh\n"))
    result = ws("up", mesh, "--key", keys["anchor"])
    assert result.returncode == 1
    assert result.stderr.startswith(f"{mesh}:1:")


@pytest.mark.parametrize("command", [[], ["keygen"], ["pubkey"], ["fingerprint"], ["check"],
                                     ["init"], ["mesh", "add-node"], ["mesh", "remove-node"],
                                     ["mesh", "set"], ["up"], ["reload"], ["status"], ["ping"],
                                     ["netcheck"],
                                     ["lab", "demo"],
                                     ["bench", "tunnel"], ["bench", "start"]])
def test_every_command_has_help(command):
    result = ws(*command, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: whalescale")


def test_init_writes_a_mesh_that_checks_then_add_nodes(keys, tmp_path):
    mesh = tmp_path / "mesh.toml"
    made = ws("init", mesh, "--name", "family", "--node", "anchor", "--key", keys["anchor"],
              "--endpoint", "192.0.2.10:51820", "--anchor")
    assert made.returncode == 0 and "100.96.0.1" in made.stdout, made.stderr
    checked = ws("check", mesh)
    assert checked.returncode == 0, checked.stderr
    assert "mesh 'family': 1 nodes (1 anchors)" in checked.stdout
    again = ws("init", mesh, "--node", "other", "--key", keys["laptop"])
    assert again.returncode == 1 and "refusing to overwrite" in again.stderr  # never overwrites
    public = ws("pubkey", keys["laptop"]).stdout.strip()
    assert ws("mesh", "add-node", mesh, "--name", "laptop", "--public-key", public).returncode == 0
    refused = ws("mesh", "set", mesh, "mesh.port", "0")
    assert refused.returncode == 1 and "not changed" in refused.stderr
    assert "mesh.port" in refused.stderr
    checked = ws("check", mesh)
    assert checked.returncode == 0 and "2 nodes (1 anchors)" in checked.stdout


def test_init_with_a_bad_first_node_writes_nothing(keys, tmp_path):
    mesh = tmp_path / "mesh.toml"
    bad = ws("init", mesh, "--node", "Bad Name", "--key", keys["anchor"])
    assert bad.returncode == 1 and "not written" in bad.stderr
    assert f"{mesh}:" in bad.stderr and not mesh.exists()


# ----- status, netcheck and ping against a stand-in agent on the control socket -------------

def stand_in_agent(state_dir: Path, *commands: list[str],
                   run: Callable[..., subprocess.CompletedProcess] = ws,
                   ) -> list[subprocess.CompletedProcess]:
    """Run `whalescale COMMAND --state-dir STATE_DIR` (stdout a pipe) for each command against
    a control socket that answers as an agent would: the sample status, and pings of charlie
    by name or by its tunnel address. `run` runs the command line (as `ws` does)."""
    def ping(target: str) -> dict:
        if target in ("charlie", "100.96.0.3", "fd77:7773::3"):
            return {"ok": True, "peer": "charlie", "rtt_ms": 1.5, "endpoint": SHORT_IPV6,
                    "path": "lan"}
        return {"ok": False, "error": f"no peer has tunnel address {target} in the mesh"}

    async def answer(req: dict) -> dict:
        if req["command"] == "status":
            return {"ok": True, "status": sample_status()}
        return ping(req["peer"])

    results = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(control.serve, control.socket_path(state_dir), answer)
            for command in commands:
                results.append(await trio.to_thread.run_sync(
                    lambda c=command: run(*c, "--state-dir", state_dir)))
            nursery.cancel_scope.cancel()

    trio.run(main)
    return results


def test_status_in_a_pipe_is_whole_lines_and_json_has_the_documented_keys(tmp_path):
    plain, as_json, netcheck = stand_in_agent(
        tmp_path, ["status"], ["status", "--json"], ["netcheck", "--json"])
    (row,) = [line for line in plain.stdout.splitlines() if line.startswith(LONG_NAME)]
    assert IPV6_ENDPOINT in row and "─" not in plain.stdout  # no table borders in a pipe
    status = json.loads(as_json.stdout)
    assert {"node", "port", "anchor", "fingerprint", "interface", "anchors", "peers",
            "warnings", "published", "addresses", "nat", "drops"} <= status.keys()
    assert {"name", "kind", "anchor", "endpoint", "path", "session", "reachable",
            "last_handshake_s_ago", "rx_bytes", "tx_bytes"} <= status["peers"][0].keys()
    assert json.loads(netcheck.stdout).keys() == {"node", "port", "anchor", "addresses",
                                                   "published", "nat"}


def test_ping_by_tunnel_address_names_the_peer_and_json_counts_the_answers(tmp_path):
    by_address, as_json, nobody = stand_in_agent(
        tmp_path, ["ping", "100.96.0.3", "-c", "1"], ["ping", "fd77:7773::3", "-c", "2", "--json"],
        ["ping", "100.96.9.9", "-c", "1", "--json"])
    assert by_address.returncode == 0
    assert by_address.stdout == f"charlie: answered via {SHORT_IPV6} (lan) in 1.50 ms\n"
    result = json.loads(as_json.stdout)
    assert result | {"replies": None} == {"target": "fd77:7773::3", "peer": "charlie",
                                          "sent": 2, "answered": 2, "replies": None}
    assert result["replies"][0] == {"ok": True, "peer": "charlie", "rtt_ms": 1.5,
                                    "endpoint": SHORT_IPV6, "path": "lan"}
    assert nobody.returncode == 1 and json.loads(nobody.stdout)["answered"] == 0


# ----- OS errors: one line on stderr and an exit status, never a traceback (exits.py) ------

def one_line_error(result: subprocess.CompletedProcess, status: int) -> str:
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("whalescale: ")
    return line


def test_status_with_no_agent_running_says_so_in_one_line(tmp_path):
    for command in (["status"], ["netcheck"], ["reload"], ["ping", "charlie"]):
        line = one_line_error(ws(*command, "--state-dir", tmp_path), 2)
        assert "no agent is running" in line and str(tmp_path) in line


def ws_as_nobody(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """`ws` as the unprivileged user nobody (the environment, PYTHONPATH included, kept)."""
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           sys.executable, "-m", "whalescale", *map(str, args)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to become another user")
def test_status_by_a_user_who_cannot_open_the_control_socket_is_permission_denied(tmp_path):
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)  # as `up` makes it: root and the agent's user only
    tmp_path.chmod(0o755)
    (as_root,) = stand_in_agent(state_dir, ["status"])
    (as_nobody,) = stand_in_agent(state_dir, ["status"], run=ws_as_nobody)
    # the agent is there and answers root; nobody cannot reach its socket
    assert as_root.returncode == 0 and "Traceback" not in as_root.stderr
    line = one_line_error(as_nobody, 3)
    assert line == f"whalescale: {control.socket_path(state_dir)}: permission denied"


def test_check_into_a_pipe_closed_early_exits_141_without_a_word(keys, tmp_path):
    """`whalescale check mesh.toml | head -1`: more output than a pipe holds, so the
    reader is gone while we still write."""
    mesh = tmp_path / "mesh.toml"
    text = mesh_text(keys)
    for n in range(2000):  # one line of output each, 160 kB: more than the 64 kB pipe
        ident = Identity.from_seed(n.to_bytes(32, "big"))
        text += (f'\n[[node]]\nname = "n{n}"\npublic_key = "{ident.public_b64}"\n'
                 f'address = "100.97.{n // 250}.{n % 250 + 1}"\n')
    mesh.write_text(text)
    result = subprocess.run(
        ["bash", "-c", '"$0" -m whalescale check "$1" | head -1; exit "${PIPESTATUS[0]}"',
         sys.executable, mesh], capture_output=True, text=True, timeout=60)
    assert result.stdout.startswith(f"{mesh}: mesh 'home': 2002 nodes")
    assert len(result.stdout.splitlines()) == 1
    assert result.stderr == ""  # the reader chose to stop: not an error to report
    assert result.returncode == 141  # 128 + SIGPIPE, as for any tool a closed pipe stops
