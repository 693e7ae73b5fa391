"""Prime: Byzantine fault-tolerant state machine replication under attack.

A Python implementation of Prime (Amir, Coan, Kirsch, Lane, "Byzantine
Replication Under Attack", DSN 2008), v3 replication model: N = 3f + 2k + 1.
"""

__version__ = "0.1.0"
