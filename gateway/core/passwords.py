"""Salted, memory-hard password hashes (scrypt), compared in constant time.

Hashing takes tens of milliseconds of CPU on purpose; callers run it in a thread so the
event loop keeps serving everyone else. The cost is stored in the hash, so raising
`--scrypt-log-n` later does not lock anybody out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

__all__ = ["hash_password", "verify_password"]

_R, _P = 8, 1


def _scrypt(password: str, salt: bytes, log_n: int) -> bytes:
    n = 1 << log_n
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=_R, p=_P, maxmem=256 * _R * n + (1 << 20), dklen=32
    )


def hash_password(password: str, log_n: int = 14) -> str:
    salt = os.urandom(16)
    digest = _scrypt(password, salt, log_n)
    b64 = base64.b64encode
    return f"scrypt${log_n}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, log_n, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = _scrypt(password, base64.b64decode(salt), int(log_n))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)
