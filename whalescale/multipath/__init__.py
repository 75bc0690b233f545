"""Multipath transport core, sans-I/O: one session over several paths at once.

paths.py     a Path: addresses, MTU, health state machine, RTT, loss, per-path seq
estimator.py bandwidth per path from ACKed bytes (1 s window), ramp-up, hysteresis
scheduler.py which path the next packet takes (weighted round-robin, lowest-RTT, BLEST)
sender.py    the sending side: paths + estimator + scheduler, feedback in, heartbeats out
reorder.py   the receiving side's reordering buffer keyed by the global counter
feedback.py  the periodic ACK control message with per-path statistics (wire format)
simulate.py  a discrete-event simulation of two endpoints over N emulated paths
"""
