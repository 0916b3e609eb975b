"""How long a BigQuery call may wait and fail: the one retry and timeout policy of every REST
request (``google.cloud.bigquery.Client``) and every Storage Write API gRPC call.

The client libraries' defaults wait without a word: the REST client retries a refused connection
for 600 s and then raises a raw ``RetryError``, and has no read timeout at all. Here:

- each try connects within ``CONNECT_TIMEOUT`` (10 s, at most the deadline) and waits at most
  the read timeout for its answer (``INGEST_BQ_READ_TIMEOUT``, default 120 s: BigQuery long-polls
  for at most ~10 s, the emulator runs a query inside its request);
- a failure that may pass (refused or dropped connection, no answer in time, 429/5xx, gRPC
  UNAVAILABLE, ...) is retried with exponential backoff, each retry logged with its reason, its
  wait and when the call gives up;
- when failures have lasted ``INGEST_BQ_TIMEOUT`` seconds (default 60) the call gives up with
  one ``ServiceUnavailableError`` line naming the endpoint and what to do.

``bound_rest_client`` puts the policy under every request of a ``bigquery.Client``: it wraps the
client's one HTTP entry point, ``_connection.api_request``, so calls made inside the library
(job polling, row pages, ``query_and_wait``) are bound too. The library's own retry still wraps
it, but our give-up error is not retryable for it, so it passes straight through. The Storage
Write writer (``writer.py``) calls ``call`` with ``retry=None`` on its unary calls and keeps a
``Retrying`` per stream for its AppendRows connections.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from google.api_core import exceptions as api_exceptions

from ingest_platform.errors import ConfigError, ServiceUnavailableError

LOGGER = logging.getLogger(__name__)

TIMEOUT_ENV = "INGEST_BQ_TIMEOUT"
READ_TIMEOUT_ENV = "INGEST_BQ_READ_TIMEOUT"
DEFAULT_DEADLINE = 60.0
DEFAULT_READ_TIMEOUT = 120.0
CONNECT_TIMEOUT = 10.0
REST = "REST API"
STORAGE_WRITE = "Storage Write API"

T = TypeVar("T")


def _seconds(name: str, default: float, environ) -> float:
    value = environ.get(name)
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigError(f"{name} is {value!r}; set it to a number of seconds above 0.")
    return seconds


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff `first_delay` doubling up to `max_delay`; give up once failures have lasted
    `deadline` seconds or after `attempts` tries. None: from the environment when a call starts
    (`deadline`: INGEST_BQ_TIMEOUT, `read_timeout`: INGEST_BQ_READ_TIMEOUT), or no cap on tries."""

    attempts: int | None = None
    first_delay: float = 0.5
    max_delay: float = 8.0
    deadline: float | None = None
    read_timeout: float | None = None

    def resolved(self, environ=os.environ) -> RetryPolicy:
        return replace(
            self,
            deadline=self.deadline or _seconds(TIMEOUT_ENV, DEFAULT_DEADLINE, environ),
            read_timeout=self.read_timeout
            or _seconds(READ_TIMEOUT_ENV, DEFAULT_READ_TIMEOUT, environ),
        )

    def delay(self, failures: int) -> float:
        """The wait after the `failures`-th failure in a row."""
        return min(self.first_delay * 2 ** (failures - 1), self.max_delay)

    @property
    def connect_timeout(self) -> float:
        return min(CONNECT_TIMEOUT, self.deadline or DEFAULT_DEADLINE)

    @property
    def answer_timeout(self) -> float:
        return self.read_timeout or DEFAULT_READ_TIMEOUT


class Retrying:
    """One run of failures of a call (or of a stream's connections): `failed(error)` logs and
    sleeps before the next try, or raises the give-up error."""

    def __init__(
        self,
        policy: RetryPolicy,
        api: str,
        endpoint: str,
        what: str,
        *,
        then: str = "",  # what the retry does, for the log: "sending 3 requests again"
        consequence: str = "",  # what the give-up means, for the error
        logger: logging.Logger = LOGGER,
    ):
        self.policy = policy.resolved()
        self.api, self.endpoint, self.what = api, endpoint, what
        self.then, self.consequence, self.logger = then, consequence, logger
        self.started: float | None = None  # when the failures began
        self.failures = 0

    def failed(
        self, error: BaseException, then: str | None = None, since: float | None = None
    ) -> None:
        """`since`: when the try that failed began, if its silence was the failure (a timeout)."""
        self.failures += 1
        now = time.monotonic()
        if self.started is None:
            self.started = since if since is not None else now
        assert self.policy.deadline is not None
        remaining = self.started + self.policy.deadline - now
        attempts = self.policy.attempts
        if (attempts is not None and self.failures >= attempts) or remaining <= 0.05:
            raise self.gave_up(error, now) from None
        delay = min(self.policy.delay(self.failures), remaining)
        giving_up = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=remaining)
        then = self.then if then is None else then
        of = f" of {attempts - 1}" if attempts is not None else ""
        self.logger.warning(
            f"BigQuery {self.api} at {self.endpoint} {_state(error)} ({self.what}: "
            f"{reason(error)}); retry {self.failures}{of} in {delay:.1f} s"
            f"{f' ({then})' if then else ''}, giving up at {giving_up:%H:%M:%S} UTC."
        )
        time.sleep(delay)

    def gave_up(self, error: BaseException, now: float) -> ServiceUnavailableError:
        if self.policy.attempts is not None and self.failures >= self.policy.attempts:
            how = f"failed {self.failures} times"
        else:
            how = f"kept failing for {now - (self.started or now):.0f} s"
        return ServiceUnavailableError(
            f"BigQuery {self.api} at {self.endpoint}: {self.what} {how} ({reason(error)}). "
            + (self.consequence or "")
            + f"Check that BigQuery answers at {self.endpoint} (or raise {TIMEOUT_ENV}), then run "
            "again."
        )


def call(
    attempt: Callable[[Any], T],
    policy: RetryPolicy,
    api: str,
    endpoint: str,
    what: str,
    retryable: Callable[[BaseException], bool],
    *,
    timeout: Any = None,
    consequence: str = "",
    logger: logging.Logger = LOGGER,
) -> T:
    """`attempt(timeout)` until it succeeds, fails for good, or the policy gives up. `timeout` is
    what each try gets; None: ``(connect, read)`` seconds of the policy."""
    retrying = Retrying(policy, api, endpoint, what, consequence=consequence, logger=logger)
    if timeout is None:
        timeout = (retrying.policy.connect_timeout, retrying.policy.answer_timeout)
    while True:
        began = time.monotonic()
        try:
            return attempt(timeout)
        except Exception as error:
            if not retryable(error):
                raise
            retrying.failed(error, since=began if is_timeout(error) else None)


def is_timeout(error: BaseException) -> bool:
    """A try that failed by waiting: its wait counts toward the deadline."""
    import requests

    return isinstance(error, requests.exceptions.Timeout | api_exceptions.DeadlineExceeded)


# ----------------------------------------------------------------------------- REST


_RETRYABLE_REASONS = frozenset({"rateLimitExceeded", "backendError", "internalError", "badGateway"})
_RETRYABLE_HTTP = (
    api_exceptions.TooManyRequests,
    api_exceptions.InternalServerError,
    api_exceptions.BadGateway,
    api_exceptions.ServiceUnavailable,
    api_exceptions.GatewayTimeout,
)


def _transport_errors() -> tuple[type[BaseException], ...]:
    import requests
    from google.auth import exceptions as auth_exceptions

    return (
        ConnectionError,
        requests.exceptions.ConnectionError,  # refused, reset, DNS; also ConnectTimeout
        requests.exceptions.Timeout,
        requests.exceptions.ChunkedEncodingError,
        auth_exceptions.TransportError,
    )


def rest_retryable(error: BaseException) -> bool:
    """What google-cloud-bigquery retries, minus TLS errors (a setup problem, not an outage)."""
    import requests

    if isinstance(error, requests.exceptions.SSLError):
        return False
    if isinstance(error, _transport_errors()):
        return True
    errors = getattr(error, "errors", None)
    if errors and isinstance(errors[0], dict) and "reason" in errors[0]:
        return errors[0]["reason"] in _RETRYABLE_REASONS
    return isinstance(error, _RETRYABLE_HTTP)


def rest_endpoint(client) -> str:
    """The API URL a ``bigquery.Client`` talks to (http://127.0.0.1:9050 for the emulator)."""
    connection = getattr(client, "_connection", None)
    return getattr(connection, "API_BASE_URL", None) or "https://bigquery.googleapis.com"


def bound_rest_client(client, policy: RetryPolicy | None = None):
    """`client` with every HTTP request under the policy (see the module's docstring); idempotent.
    A caller's own per-request timeout is kept for the read and capped for the connect."""
    connection = client._connection
    if getattr(connection, "_ingest_bounded", False):
        return client
    unbounded = connection.api_request
    endpoint = rest_endpoint(client)
    policy = policy or RetryPolicy()

    def api_request(method, path, *args, timeout=None, **kwargs):
        if isinstance(timeout, int | float):
            resolved = policy.resolved()
            timeout = (min(resolved.connect_timeout, timeout), timeout)
        return call(
            lambda each: unbounded(method, path, *args, timeout=each, **kwargs),
            policy,
            REST,
            endpoint,
            f"{method} {path}",
            rest_retryable,
            timeout=timeout,
        )

    connection.api_request = api_request
    connection._ingest_bounded = True
    return client


# ----------------------------------------------------------------------------- gRPC

GRPC_TRANSIENT = (
    api_exceptions.ServiceUnavailable,
    api_exceptions.DeadlineExceeded,
    api_exceptions.InternalServerError,
    api_exceptions.Aborted,
    api_exceptions.ResourceExhausted,
    api_exceptions.Unknown,
)


def grpc_retryable(error: BaseException) -> bool:
    return isinstance(error, GRPC_TRANSIENT)


def grpc_endpoint(write_client) -> str:
    """host:port of a ``BigQueryWriteClient`` (127.0.0.1:9060 for the emulator)."""
    transport = getattr(write_client, "transport", None)
    return getattr(transport, "host", None) or "bigquerystorage.googleapis.com:443"


# ----------------------------------------------------------------------------- messages


def _state(error: BaseException) -> str:
    unreachable = _transport_errors() + (
        api_exceptions.ServiceUnavailable,
        api_exceptions.DeadlineExceeded,
    )
    return "unreachable" if isinstance(error, unreachable) else "failed"


_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\"()\]]+)")


def reason(error: BaseException) -> str:
    """A short, one-line reason: 'connection refused', 'no answer within 120 s', or the error's
    type and first line."""
    import requests

    if isinstance(error, requests.exceptions.ConnectTimeout):
        return "no connection in time"
    if isinstance(error, requests.exceptions.ReadTimeout):
        return "no answer in time"
    text = str(error)
    if isinstance(error, requests.exceptions.ConnectionError | ConnectionError):
        found = _ERRNO.search(text)
        if found:
            return found.group(1).strip().lower()
        if "RemoteDisconnected" in text or "Connection aborted" in text:
            return "the connection was closed"
    first = " ".join(text.split())[:300]
    return f"{type(error).__name__}: {first}" if first else type(error).__name__
