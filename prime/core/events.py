"""The core's only inputs (docs/design.md section 2, "One core, two drivers").

Every input has been through the wire codec (shape) and a verifier (signature)
before it becomes an event: the core trusts signatures, never meaning.
"""

from __future__ import annotations

from dataclasses import dataclass

from prime.wire import Envelope


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passes. The core learns the time only from here."""

    now_us: int


@dataclass(frozen=True, slots=True)
class Inbound:
    """A verified envelope from the network (``via`` = the peer that sent it,
    which for a flooded or forwarded message is not its signer)."""

    via: int
    env: Envelope


@dataclass(frozen=True, slots=True)
class ClientUpdate:
    """A signed UPDATE from the local application (or a client through it)."""

    env: Envelope


@dataclass(frozen=True, slots=True)
class CryptoDone:
    """The result of a ``SignJob``: the signed envelopes, in job order."""

    job_id: int
    envelopes: tuple[Envelope, ...]


@dataclass(frozen=True, slots=True)
class ThresholdDone:
    """The result of a ``ThresholdJob``: share or signature bytes, or None on failure."""

    job_id: int
    result: bytes | None


Event = Tick | Inbound | ClientUpdate | CryptoDone | ThresholdDone
