"""The mesh firewall: a node's inbound rules, enforced on what the tunnel delivers."""
