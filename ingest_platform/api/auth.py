"""Passwords (argon2, pwdlib), bearer tokens (HS256 JWT, PyJWT) and the login rate limit.

Tokens carry the user name (``sub``), ``iat``, ``exp`` and a random ``jti``; they are short-lived
(``token_minutes``) and not stored. Permissions are read from the users table on every write, so a
removed user or a revoked table stops working at once, token or not.

Failed logins are counted in memory per (user name, client address) over a sliding window: after
``login_failures`` failures the next attempts get 429 until the window has passed, without a
password check (no argon2 work for an attacker's requests). In memory means per process: several
API processes each count on their own, and a restart forgets (chosen for no extra service; a
shared limiter would live in PostgreSQL or a proxy).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
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


class LoginLimiter:
    """Failed logins per key within a sliding window (thread-safe: endpoints run in threads)."""

    def __init__(self, failures: int, window_seconds: float):
        self.failures = failures
        self.window = window_seconds
        self._seen: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, key: tuple[str, str]) -> float:
        """Seconds until `key` may try again; 0 if it may now."""
        with self._lock:
            times = self._recent(key)
            if len(times) < self.failures:
                return 0
            return max(0.0, times[0] + self.window - time.monotonic())

    def failed(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._recent(key).append(time.monotonic())

    def succeeded(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._seen.pop(key, None)

    def _recent(self, key: tuple[str, str]) -> deque[float]:
        times = self._seen.setdefault(key, deque())
        cutoff = time.monotonic() - self.window
        while times and times[0] < cutoff:
            times.popleft()
        if len(self._seen) > 100_000:  # bounded memory under a spray of names
            for stale in [k for k, v in self._seen.items() if not v and k != key]:
                del self._seen[stale]
        return times
