"""The agent's log lines (agent/logs.py): a syslog priority and no timestamp under journald,
one JSON object a line for shippers, the usual text for a person."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from whalescale.agent.logs import JournalFormatter, JsonFormatter, syslog_priority


def record(level: int, message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("bad line 3")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord("whalescale.agent", level, __file__, 1, message, args, exc_info)


@pytest.mark.parametrize(("level", "priority"), [
    (logging.CRITICAL, 2),  # SD_CRIT
    (logging.ERROR, 3),  # SD_ERR: what `journalctl -p err` shows
    (logging.WARNING, 4),  # SD_WARNING
    (logging.INFO, 6),  # SD_INFO
    (logging.DEBUG, 7),  # SD_DEBUG
    (logging.INFO + 5, 6),  # a level between takes the milder neighbour
    (logging.NOTSET, 7),
])
def test_syslog_priority_of_each_level(level, priority):
    assert syslog_priority(level) == priority


def test_journal_lines_carry_the_priority_on_every_line_and_no_timestamp():
    text = JournalFormatter().format(
        record(logging.ERROR, "reload refused, the running mesh stays as it was:\n%s",
               "mesh.toml:3:1: nodes[0].name: missing"))
    lines = text.splitlines()
    assert lines == ["<3>whalescale.agent: reload refused, the running mesh stays as it was:",
                     "<3>mesh.toml:3:1: nodes[0].name: missing"]


def test_a_traceback_stays_at_the_records_priority_under_journald():
    lines = JournalFormatter().format(record(logging.ERROR, "failed", exc=True)).splitlines()
    assert len(lines) > 2 and all(line.startswith("<3>") for line in lines)
    assert lines[-1] == "<3>ValueError: bad line 3"


def test_json_lines_parse_with_time_level_logger_and_message():
    text = JsonFormatter().format(record(logging.WARNING, "anchors: %s\nsecond", "only one"))
    assert "\n" not in text  # one object a line, even for a message of two
    entry = json.loads(text)
    assert entry["level"] == "WARNING" and entry["logger"] == "whalescale.agent"
    assert entry["message"] == "anchors: only one\nsecond"
    assert entry["time"].endswith("+00:00") and "T" in entry["time"]


def test_json_carries_a_traceback_as_a_field():
    entry = json.loads(JsonFormatter().format(record(logging.ERROR, "failed", exc=True)))
    assert entry["exception"].endswith("ValueError: bad line 3")


# The agent's own set-up, in a process of its own, with stderr a file: systemd names the
# journal stream by device and inode, and logs.configure checks stderr is that stream.
_SETUP = """
import logging, sys
from whalescale.agent import logs
logs.configure(sys.argv[1])
logging.getLogger("whalescale.agent").info("node %s up", "alpha")
logging.getLogger("whalescale.agent").error("reload refused")
"""


def run_setup(tmp_path: Path, log_format: str, journal: str | None) -> list[str]:
    err = tmp_path / "stderr"
    with err.open("w") as stream:
        stat = os.fstat(stream.fileno())
        env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
        if journal == "this":
            env["JOURNAL_STREAM"] = f"{stat.st_dev}:{stat.st_ino}"
        elif journal is not None:
            env["JOURNAL_STREAM"] = journal
        subprocess.run([sys.executable, "-c", _SETUP, log_format], stderr=stream, env=env,
                       check=True, timeout=30)
    return err.read_text().splitlines()


def test_under_journald_the_agent_logs_priorities_and_no_timestamp(tmp_path):
    lines = run_setup(tmp_path, "text", journal="this")
    assert lines == ["<6>whalescale.agent: node alpha up", "<3>whalescale.agent: reload refused"]


def test_a_child_that_inherited_journal_stream_but_writes_elsewhere_keeps_timestamps(tmp_path):
    # systemd.exec(5): the variable passes to children whose stderr may be a file or a pipe
    lines = run_setup(tmp_path, "text", journal="1:2")
    assert len(lines) == 2 and not lines[0].startswith("<")
    assert lines[0].split()[2:] == ["INFO", "whalescale.agent:", "node", "alpha", "up"]


def test_json_is_what_was_asked_for_even_under_journald(tmp_path):
    lines = run_setup(tmp_path, "json", journal="this")
    entries = [json.loads(line) for line in lines]
    assert [(e["level"], e["message"]) for e in entries] == [
        ("INFO", "node alpha up"), ("ERROR", "reload refused")]
