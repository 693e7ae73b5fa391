"""Identifier types. NewTypes cost nothing at run time and keep ids apart in mypy."""

from typing import NewType

ServerId = NewType("ServerId", int)  # replica id, 1..N
ClientId = NewType("ClientId", int)  # client id, > N
View = NewType("View", int)  # view number, starts at 1
Seq = NewType("Seq", int)  # a sequence number (ordinal or PO seq)

# A PO id component: (incarnation, seq), compared lexicographically.
PoSeq = tuple[int, int]
PO_ZERO: PoSeq = (0, 0)
