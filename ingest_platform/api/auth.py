"""Passwords (argon2, pwdlib) and bearer tokens (HS256 JWT, PyJWT); the login rate limit is
``login_limit``.

Tokens carry the user name (``sub``), ``iat``, ``exp`` and a random ``jti``; they are short-lived
(``token_minutes``) and not stored. Permissions are read from the users table on every write, so a
removed user or a revoked table stops working at once, token or not.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import jwt
from pwdlib import PasswordHash

from ingest_platform.errors import IngestError

ALGORITHM = "HS256"
_hasher = PasswordHash.recommended()  # argon2id
# Verified against when the user does not exist, so that an unknown name costs the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


class TokenError(IngestError):
    """A bearer token that is missing, expired, forged or malformed (the message says which)."""


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, hash_: str | None) -> bool:
    try:
        if hash_ is None:  # the same work as a real check: no timing tells a user exists
            _hasher.verify(password, _DUMMY_HASH)
            return False
        return _hasher.verify(password, hash_)
    except Exception:  # an unreadable stored hash or password is a failed login, not a 500
        return False


def make_token(user: str, secret: str, minutes: float) -> str:
    now = datetime.now(UTC)
    claims = {
        "sub": user,
        "iat": now,
        "exp": now + timedelta(minutes=minutes),
        "jti": secrets.token_hex(8),
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def user_of(token: str, secret: str) -> str:
    """The user name a valid token names; TokenError (never quoting the token) otherwise."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["sub", "exp", "iat"]}
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("the token has expired: get a new one from POST /token") from None
    except jwt.InvalidSignatureError:
        raise TokenError("the token's signature is not valid: get one from POST /token") from None
    except jwt.InvalidTokenError:
        raise TokenError("the token is not a valid bearer token: get one from POST /token") from (
            None
        )
    user = claims.get("sub")
    if not isinstance(user, str) or not user:
        raise TokenError("the token names no user: get one from POST /token")
    return user
