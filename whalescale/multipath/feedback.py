"""The multipath feedback (ACK) control message: per-path statistics, wire format.

The receiving end sends one every `FEEDBACK_INTERVAL_S` on every usable path
(it doubles as the heartbeat reply). It informs scheduling only: nothing here
triggers a retransmission (anti-patterns 1.7).

Counters are cumulative since the path was opened, so a lost feedback message
loses nothing and the sender takes deltas (paths.Path.on_report).

Layout (big-endian), 2 + 37 * n bytes:

    u8  type = 0x4d ('M')
    u8  n, number of path reports (1..MAX_PATHS)
    n * (
      u8  path_id
      u64 packets        received on the path
      u64 bytes          received on the path (inner packet bytes)
      u64 highest_seq+1  highest per-path seq received, plus one (0: none yet)
      u64 lost           per-path seqs below the highest that never came
      u32 echo_delay_us  how long highest_seq was held before this report
    )

RTT: the sender looks up when it sent (path_id, highest_seq) and takes
`now - sent - echo_delay` (QUIC's ack_delay), only from the report for the
path the feedback arrived on (the echo crosses that path both ways).
"""

from __future__ import annotations

import struct

import attrs

from .paths import PathId

FEEDBACK_TYPE = 0x4D
MAX_PATHS = 16
FEEDBACK_INTERVAL_S = 0.05  # implementation: 20 a second per path, ~1 kB/s per path
_HEADER = struct.Struct("!BB")
_REPORT = struct.Struct("!BQQQQI")
_U64 = 2**64 - 1
_U32 = 2**32 - 1


class MalformedFeedback(ValueError):
    """A feedback message that does not parse; the caller counts and drops it."""


@attrs.frozen(slots=True)
class PathReport:
    path_id: PathId
    packets: int
    bytes: int
    highest_seq: int  # -1: nothing received yet
    lost: int
    echo_delay_s: float


@attrs.frozen(slots=True)
class Feedback:
    reports: tuple[PathReport, ...]

    def report(self, path_id: PathId) -> PathReport | None:
        for r in self.reports:
            if r.path_id == path_id:
                return r
        return None


def encode(feedback: Feedback) -> bytes:
    if not 1 <= len(feedback.reports) <= MAX_PATHS:
        raise ValueError(f"feedback carries 1..{MAX_PATHS} reports, not {len(feedback.reports)}")
    parts = [_HEADER.pack(FEEDBACK_TYPE, len(feedback.reports))]
    for r in feedback.reports:
        delay_us = min(_U32, max(0, round(r.echo_delay_s * 1e6)))
        parts.append(_REPORT.pack(r.path_id, min(r.packets, _U64), min(r.bytes, _U64),
                                  min(r.highest_seq + 1, _U64), min(r.lost, _U64), delay_us))
    return b"".join(parts)


def decode(data: bytes) -> Feedback:
    if len(data) < _HEADER.size:
        raise MalformedFeedback(f"{len(data)} bytes is shorter than the header")
    kind, n = _HEADER.unpack_from(data)
    if kind != FEEDBACK_TYPE:
        raise MalformedFeedback(f"type {kind:#x} is not feedback")
    if not 1 <= n <= MAX_PATHS:
        raise MalformedFeedback(f"{n} reports, allowed 1..{MAX_PATHS}")
    if len(data) != _HEADER.size + n * _REPORT.size:
        raise MalformedFeedback(f"{len(data)} bytes for {n} reports")
    reports, seen = [], set()
    for i in range(n):
        pid, packets, nbytes, seq1, lost, delay_us = _REPORT.unpack_from(
            data, _HEADER.size + i * _REPORT.size)
        if pid in seen:
            raise MalformedFeedback(f"report {i}: path {pid} twice")
        if lost > seq1:
            raise MalformedFeedback(f"report {i}: {lost} lost of {seq1} sent")
        seen.add(pid)
        reports.append(PathReport(pid, packets, nbytes, seq1 - 1, lost, delay_us / 1e6))
    return Feedback(tuple(reports))
