"""How the agent's log lines look: for a terminal, for journald, or for a log shipper.

- text: "time LEVEL logger: message", for a person at a terminal.
- journald: "<N>logger: message". journald stamps each line itself (a second
  timestamp is noise) and reads a leading "<N>" as the syslog priority
  (sd-daemon(3), SyslogLevelPrefix= on by default), so `journalctl -p err` finds
  an error. Chosen by itself when stderr is the journal.
- json: one object a line (time, level, logger, message), for Vector, Fluent Bit
  and the like.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys
from typing import TextIO

# sd-daemon(3): SD_CRIT, SD_ERR, SD_WARNING, SD_INFO, SD_DEBUG
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4),
               (logging.INFO, 6))
_DEBUG = 7


def syslog_priority(levelno: int) -> int:
    """A logging level's syslog priority; levels between take the next milder one."""
    return next((priority for level, priority in _PRIORITIES if levelno >= level), _DEBUG)


class JournalFormatter(logging.Formatter):
    """No timestamp; every line of a record (a traceback's too) carries its priority,
    since journald takes each line as an entry of its own."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


class JsonFormatter(logging.Formatter):
    """One JSON object a line: a message's newlines are escaped inside its string."""

    def format(self, record: logging.LogRecord) -> str:
        time = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        entry = {"time": time.isoformat(timespec="milliseconds"),
                 "level": record.levelname, "logger": record.name,
                 "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _is_journal(stream: TextIO) -> bool:
    """systemd.exec(5): JOURNAL_STREAM is "device:inode" of the journal stream; a child
    inherits the variable with other output, so the stream itself must match."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        stat = os.fstat(stream.fileno())
        return (stat.st_dev, stat.st_ino) == (int(device), int(inode))
    except (ValueError, OSError):  # unset or garbled, or a stream with no descriptor
        return False


def formatter(log_format: str, stream: TextIO) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    if _is_journal(stream):
        return JournalFormatter()
    return logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")


def configure(log_format: str = "text", verbose: bool = False,
              stream: TextIO | None = None) -> None:
    """Route all logging to `stream` (stderr) in `log_format`, replacing what was set."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(log_format, handler.stream))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler],
                        force=True)
