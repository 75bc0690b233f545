"""WireGuard's protocol constants (whitepaper §6.1) and our implementation limits.

Specification values are WireGuard's and must not change, or a vanilla peer
would see us rekey or expire sessions at the wrong time.
"""

# Specification
REKEY_AFTER_MESSAGES = 2**60
REJECT_AFTER_MESSAGES = 2**64 - 2**13 - 1
REKEY_AFTER_S = 120.0
REJECT_AFTER_S = 180.0
REKEY_ATTEMPT_S = 90.0
REKEY_TIMEOUT_S = 5.0
KEEPALIVE_TIMEOUT_S = 10.0
MAX_HANDSHAKE_ATTEMPTS = int(REKEY_ATTEMPT_S / REKEY_TIMEOUT_S)  # 18 retries, then give up
REKEY_JITTER_MAX_S = 0.334
# The initiator re-handshakes on receive this long before the responder would reject.
REKEY_ON_RECEIVE_AFTER_S = REJECT_AFTER_S - KEEPALIVE_TIMEOUT_S - REKEY_TIMEOUT_S
ZERO_KEYS_AFTER_S = REJECT_AFTER_S * 3

# Implementation (as wireguard-go chose them)
MIN_INITIATION_INTERVAL_S = 1 / 50  # one initiation per peer per 20 ms is consumed
MAX_STAGED_PACKETS = 128

# Every initiation (one that starts a handshake, a retransmit, one with the cookie a
# responder under load sent us) goes out again as it is every INITIATION_COPY_EVERY_S
# until anything answers it, INITIATION_COPIES times at most; the retransmit, a new
# handshake, comes 1-60 s later as before. On a path of ordinary delay no answer by then
# means it was lost, and the loss that matters is in the queue of a responder under a
# flood: under a spoofed one the lab's passed about one datagram in six, before the
# responder could send us a cookie and after. Each copy is another draw, and the same
# handshake, so a late answer to an earlier one still completes it; the responder's
# TAI64N check drops the others after their Diffie-Hellman. Ten draws at one in six all
# miss about one time in six, the retransmit's ten again. Ten a second stay under the
# per-source limit of our responders (ratelimit.py) and of wireguard-go's.
INITIATION_COPY_EVERY_S = 0.1
INITIATION_COPIES = 9

# Recovery of whalescale peers (design.txt §3.8): retries back off 1 s -> 60 s and never
# stop; peers that are not anchors start RECOVERY_LATER_STEPS doublings later, so a node
# that lost everything reaches its anchors first (anti-patterns 3.1).
RECOVERY_FIRST_S = 1.0
RECOVERY_MAX_S = 60.0
RECOVERY_LATER_STEPS = 2

# A peer counts as reachable while we heard from it within three keepalive intervals
# (one lost keepalive raises no alarm), or of 25 s for a peer without keepalives.
REACHABLE_WITHIN_KEEPALIVES = 3
KEEPALIVE_ASSUMED_S = 25.0

# A whalescale peer that answers none of our data for this long is asked (a PING: a
# one-way flow is otherwise answered only every 10 s); no answer within half as long
# again and the node looks for a new path (nat/traversal.py) instead of waiting for the
# liveness window.
UNANSWERED_S = 0.7
# A whalescale peer whose data came steadily (STREAM_STEADY_PACKETS or more in a window of
# STREAM_WINDOW_S) and then not at all for a whole window is asked the same way. Behind a
# NAT that gave us a new public address (invisible to us) the peer's one-way flow is
# dropped at our gateway, we have nothing to answer, and nobody learns where we are
# until our next keepalive to an anchor (25 s at the default); the PING leaves from the
# new mapping. A slower trickle is not watched: its pauses say nothing.
STREAM_WINDOW_S = UNANSWERED_S / 2
STREAM_STEADY_PACKETS = 3
