"""Bearer tokens: 256 random bits, stored as SHA-256.

A fast hash is enough here (unlike passwords) because the secret is random, not chosen by a
person, and every API request has to look its token up.
"""

import hashlib
import secrets

TOKEN_PREFIX = "sl_"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def display_prefix(token: str) -> str:
    """The first characters, enough for a person to tell their tokens apart."""
    return token[: len(TOKEN_PREFIX) + 6]
