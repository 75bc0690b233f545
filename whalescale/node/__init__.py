"""One whalescale node, sans-I/O: the session engine, the mesh controller and NAT
traversal wired together once (node.py); the trio shell (agent/) only does I/O."""
