"""Where a peer may be reached: the one owner of its candidate endpoints.

Each source writes its own part through its own command, and none can overwrite
another's (the node, node/node.py, is the one that calls them):

- `configured`: the mesh file's static endpoints (every peer; a reload sets them);
- `learned`: the mesh controller's list for a whalescale node (its gossip record,
  the static endpoints, the LKG cache, hints: mesh/controller.py); once set it
  takes the configured list's place;
- `relay`: the alias of a relay NAT traversal opened (wire/port.py);
- `lan`: where LAN discovery heard the peer.

Order, best first: the relay alias (it is up only while it works), the LAN
neighbour, then the learned (or configured) list. A relayed peer therefore
keeps its relay whatever the other sources say; only an authenticated packet
from a direct path (passive roaming, session/peer.py) or the relay closing
moves it.
"""

from __future__ import annotations

import attrs

Addr = tuple[str, int]


@attrs.define
class Candidates:
    configured: list[Addr] = attrs.Factory(list)
    learned: list[Addr] | None = None
    relay: Addr | None = None
    lan: Addr | None = None

    def ordered(self) -> list[Addr]:
        first = [a for a in (self.relay, self.lan) if a is not None]
        rest = self.learned if self.learned is not None else self.configured
        return list(dict.fromkeys(first + rest))
