"""Signing and verifying envelopes: ``prime.wire`` + ``prime.crypto.merkle`` + a scheme.

A *scheme* signs and verifies digests for an identity (replica or client id).
Two exist: ``Ed25519Scheme`` (the real one, PyNaCl) and ``KeyedHashScheme``
(the simulator's cheap stand-in: BLAKE2b keyed with a per-identity secret).
``Signer`` is bound to ONE identity, so code holding a signer (a Byzantine
wrapper in the simulator, say) can never produce another identity's signature.

``Verifier`` checks an envelope and, recursively, every envelope embedded in it
(rows of a pre-prepare, Prepares in a PC_SET, ...). It caches verified Merkle
roots, so the siblings of one batch cost only hashing (docs/protocol.md section 4.2, the
Python performance note).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from prime import msgs, wire
from prime.crypto import merkle
from prime.msgs import Message, Nested, Optional, TupleOf
from prime.wire import Envelope


class Scheme(Protocol):
    def sign(self, identity: int, digest: bytes) -> bytes: ...

    def verify(self, identity: int, digest: bytes, signature: bytes) -> bool: ...


class KeyedHashScheme:
    """Simulator signatures: BLAKE2b-512 keyed with a secret per identity.

    Secrets derive from a seed, so runs replay byte for byte. Only a ``Signer``
    for an identity uses that identity's secret."""

    def __init__(self, seed: int) -> None:
        self._seed = seed.to_bytes(16, "big", signed=False)
        self._secrets: dict[int, bytes] = {}

    def _secret(self, identity: int) -> bytes:
        s = self._secrets.get(identity)
        if s is None:
            s = hashlib.blake2b(identity.to_bytes(8, "big"), key=self._seed, digest_size=32).digest()
            self._secrets[identity] = s
        return s

    def sign(self, identity: int, digest: bytes) -> bytes:
        return hashlib.blake2b(digest, key=self._secret(identity), digest_size=64).digest()

    def verify(self, identity: int, digest: bytes, signature: bytes) -> bool:
        return self.sign(identity, digest) == signature


class Ed25519Scheme:
    """Real signatures: Ed25519 over the Merkle root (or the leaf digest)."""

    def __init__(self, signing_keys: Mapping[int, Any], verify_keys: Mapping[int, Any]) -> None:
        self._signing = dict(signing_keys)
        self._verify = dict(verify_keys)

    def sign(self, identity: int, digest: bytes) -> bytes:
        key = self._signing.get(identity)
        assert key is not None, f"no signing key for {identity}"
        sig: bytes = key.sign(digest)
        return sig

    def verify(self, identity: int, digest: bytes, signature: bytes) -> bool:
        key = self._verify.get(identity)
        return key is not None and bool(key.verify(digest, signature))


class Signer:
    """Signs bodies as ``identity`` only: one Merkle batch, or each on its own."""

    def __init__(self, scheme: Scheme, identity: int) -> None:
        self.scheme = scheme
        self.identity = identity
        self.signatures = 0  # scheme signatures made (one per Merkle batch or direct message)

    def sign_one(self, msg: Message, body: bytes | None = None) -> Envelope:
        body = wire.encode_body(msg) if body is None else body
        root = merkle.leaf_digest(wire.leaf_bytes(self.identity, body))
        self.signatures += 1
        sig = self.scheme.sign(self.identity, root)
        return wire.make_envelope(sender=self.identity, body=body, msg=msg, sig=sig)

    def sign_batch(
        self, messages: Sequence[Message], bodies: Sequence[bytes], *, direct: bool
    ) -> tuple[Envelope, ...]:
        assert len(messages) == len(bodies) and messages
        if direct or len(bodies) == 1:
            return tuple(self.sign_one(m, b) for m, b in zip(messages, bodies))
        me = self.identity
        root, paths, mt_num = merkle.build_batch([wire.leaf_bytes(me, b) for b in bodies])
        self.signatures += 1
        sig = self.scheme.sign(me, root)
        return tuple(
            wire.make_envelope(
                sender=me, body=b, msg=m, sig=sig, mt_num=mt_num, mt_index=i, path=path
            )
            for i, (m, b, path) in enumerate(zip(messages, bodies, paths), start=1)
        )


def _nested_fields(cls: type) -> tuple[tuple[str, int], ...]:
    """(field, mode) for fields holding envelopes: 1 single, 2 optional, 3 tuple."""
    out = []
    for name, spec in cls.SPECS:  # type: ignore[attr-defined]
        if isinstance(spec, Nested):
            out.append((name, 1))
        elif isinstance(spec, Optional) and isinstance(spec.inner, Nested):
            out.append((name, 2))
        elif isinstance(spec, TupleOf) and isinstance(spec.item, (Nested, Optional)):
            out.append((name, 3))
    return tuple(out)


_NESTED = {tag: _nested_fields(cls) for tag, cls in msgs.MESSAGES.items()}


class Verifier:
    """Verifies envelopes (and everything embedded) against a scheme."""

    def __init__(
        self, scheme: Scheme, *, threshold_public: Any = None, cache_size_max: int = 65536
    ) -> None:
        self.scheme = scheme
        self.threshold_public = threshold_public  # verifies VC_PROOF and REPLAY (2.9)
        self._roots: dict[tuple[int, bytes, bytes], bool] = {}
        self._envelopes: dict[bytes, bool] = {}  # raw -> verdict (retransmissions, floods)
        self._cache_size_max = cache_size_max
        self.verifications = 0  # signature checks actually performed (cache misses)

    def seen(self, env: Envelope) -> bool:
        """Whether these exact bytes were verified before (a retransmission or a replay)."""
        return env.raw in self._envelopes

    def verify(self, env: Envelope) -> bool:
        """True if ``env`` and everything embedded in it carry valid signatures."""
        verdict = self._envelopes.get(env.raw)
        if verdict is None:
            verdict = self._verify_uncached(env)
            if len(self._envelopes) >= self._cache_size_max:
                self._envelopes.clear()
            self._envelopes[env.raw] = verdict
        return verdict

    def _verify_uncached(self, env: Envelope) -> bool:
        root = merkle.root_from_path(env.leaf_bytes, env.mt_index, env.mt_num, env.path)
        if root is None:
            return False
        key = (env.sender, root, env.sig)
        ok = self._roots.get(key)
        if ok is None:
            self.verifications += 1
            ok = self.scheme.verify(env.sender, root, env.sig)
            if len(self._roots) >= self._cache_size_max:
                self._roots.clear()
            self._roots[key] = ok
        if not ok:
            return False
        tag = env.msg.TAG
        if tag == msgs.T_VC_PROOF or tag == msgs.T_REPLAY:
            if not self._verify_threshold(env.msg):
                return False
        return self._verify_nested(env.msg)

    def _verify_threshold(self, msg: Any) -> bool:
        """The combined threshold signature on H(view || list || startSeq); without a
        threshold key nothing such verifies."""
        if self.threshold_public is None:
            return False
        from prime.core.viewchange import statement
        from prime.crypto import threshold

        return threshold.verify(
            self.threshold_public, statement(msg.view, msg.members, msg.start_seq, msg.union_digest), msg.signature
        )

    def _verify_nested(self, msg: Message) -> bool:
        for name, mode in _NESTED[msg.TAG]:
            value = getattr(msg, name)
            if mode == 1:
                if not self.verify(value):
                    return False
            elif mode == 2:
                if value is not None and not self.verify(value):
                    return False
            else:
                for item in value:
                    if item is not None and not self.verify(item):
                        return False
        return True
