"""Exception hierarchy.

Operator mistakes raise ``ConfigError`` / ``KeyFileError`` at start-up; crypto
failures raise ``CryptoError`` subclasses. Malformed *peer* input is never an
exception: it is dropped and counted (see ``prime.wire``).
"""


class PrimeError(Exception):
    """Base class of every error Prime raises on purpose."""


class ConfigError(PrimeError, ValueError):
    """A configuration file is wrong; the message names the file and the key."""


class KeyFileError(PrimeError):
    """A key file is missing, unreadable or corrupt."""


class StartupError(PrimeError):
    """The daemon cannot take what it needs to run (a port in use, say); the message
    says which and what to check."""


class CryptoError(PrimeError):
    """A cryptographic operation failed."""


class BadSignature(CryptoError):
    """A signature (or a threshold share) did not verify."""
