"""A UDP echo and a prober for tunnel tests that measure gaps: the prober sends one
datagram every 0.1 s through the tunnel and prints, as JSON, how many were answered and
the longest time without an answer (the figure issue 13's roaming targets are in)."""

ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print('ready', flush=True)
while True:
    data, source = s.recvfrom(2048)
    s.sendto(data, source)
"""

PROBE = """
import json, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.1)
target, seconds = (sys.argv[1], int(sys.argv[2])), float(sys.argv[3])
start = time.monotonic()
print('started', flush=True)
sent, answers = 0, []
while time.monotonic() - start < seconds:
    s.sendto(str(sent).encode(), target)
    sent += 1
    deadline = time.monotonic() + 0.1
    while (left := deadline - time.monotonic()) > 0:
        s.settimeout(left)
        try:
            s.recvfrom(64)
            answers.append(time.monotonic() - start)
        except TimeoutError:
            break
    time.sleep(max(0.0, deadline - time.monotonic()))
gaps = [b - a for a, b in zip([0.0, *answers], [*answers, time.monotonic() - start])]
print(json.dumps({"sent": sent, "answered": len(answers), "longest_gap_s": max(gaps)}))
"""
