"""Resume tokens: random, shown once, stored only as a hash.

A token is 256 random bits, so a plain sha256 is enough to store it (no salt, no slow
hash: nobody can guess a 256-bit preimage, and a slow hash would defeat the point, a
reconnect storm that costs no scrypt). The hash is what the store keys the token by.
"""

from __future__ import annotations

import hashlib
import re
import secrets

__all__ = ["TOKEN_BYTES", "looks_like_token", "new_token", "token_hash"]

#: Random bytes in a token (hex: twice as many characters); the contract asks >= 16.
TOKEN_BYTES = 32
_SHAPE = re.compile(r"[0-9a-fA-F]{32,128}")


def new_token() -> str:
    return secrets.token_hex(TOKEN_BYTES)


def token_hash(token: str) -> str:
    """What the store keeps of a token (hex sha256 of its lower-case text)."""
    return hashlib.sha256(token.lower().encode()).hexdigest()


def looks_like_token(text: str) -> bool:
    """Whether `text` has a token's shape (hex, 32 to 128 characters); doors use it to tell
    `alice <token>` from a nickname with a space in it."""
    return _SHAPE.fullmatch(text) is not None
