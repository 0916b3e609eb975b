"""Exactly-once appends through the Storage Write API: application-created PENDING streams with
offsets, finalized and committed together by one ``BatchCommitWriteStreams`` per run.

- Rows are packed into requests below ``max_request_bytes`` (default 9 MB, under BigQuery's 10 MB).
- Each request carries the stream's next offset. A request retried after a transient gRPC error
  (UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, ABORTED, RESOURCE_EXHAUSTED) is sent again with the
  same offset; ``ALREADY_EXISTS`` for that offset means the earlier attempt landed, so nothing is
  written twice.
- Nothing is visible in the table until ``commit``: a run that fails before it leaves the table
  as it was (uncommitted pending streams expire on the server).
- A stream takes at most ``rows_per_stream`` rows; further rows go to a new stream, and all of
  them are committed atomically together.

Credentials never pass through here: the caller hands in a ready ``BigQueryWriteClient``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from google.api_core import exceptions as api_exceptions
from google.cloud.bigquery_storage_v1 import types as write_types
from google.protobuf import descriptor_pb2

from ingest_platform.errors import IngestError, ServiceUnavailableError
from ingest_platform.progress import PROGRESS_SECONDS, Progress

LOGGER = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 9 * 1024 * 1024
ROWS_PER_STREAM = 5_000_000
_REQUEST_OVERHEAD = 2048  # stream name, offset, framing (plus the descriptor's size)
_PER_ROW_OVERHEAD = 6  # length prefix + tag of each serialized row
ALREADY_EXISTS = 6  # google.rpc.Code
CALL_TIMEOUT = 120.0  # seconds per gRPC call
# The client library's own retries (up to 20 minutes) are switched off: call_with_retry retries.
_ONCE = {"retry": None, "timeout": CALL_TIMEOUT}

TRANSIENT = (
    api_exceptions.ServiceUnavailable,
    api_exceptions.DeadlineExceeded,
    api_exceptions.InternalServerError,
    api_exceptions.Aborted,
    api_exceptions.ResourceExhausted,
    api_exceptions.Unknown,
)


class WriteError(IngestError):
    """The Storage Write API refused rows or a commit; nothing of the run is committed."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    first_delay: float = 0.5
    max_delay: float = 8.0

    def delays(self):
        delay = self.first_delay
        for _ in range(self.attempts - 1):
            yield delay
            delay = min(delay * 2, self.max_delay)


DEFAULT_RETRY = RetryPolicy()


def call_with_retry(function: Callable, retry: RetryPolicy, what: str):
    """`function()`, retried on transient gRPC errors with exponential backoff."""
    delays = retry.delays()
    while True:
        try:
            return function()
        except TRANSIENT as error:
            delay = next(delays, None)
            if delay is None:
                raise ServiceUnavailableError(
                    f"BigQuery Storage Write API: {what} failed {retry.attempts} times "
                    f"({type(error).__name__}: {_short(error)}). Nothing of this run was "
                    f"committed; run it again."
                ) from None
            time.sleep(delay)


def _short(error: Exception) -> str:
    return str(error).splitlines()[0][:300] if str(error) else ""


@dataclass
class WriteStats:
    rows: int = 0
    bytes: int = 0
    requests: int = 0
    streams: int = 0


@dataclass
class _Stream:
    name: str
    offset: int = 0


class PendingStreamWriter:
    """Append serialized rows to a table through pending streams; ``commit`` makes them visible."""

    def __init__(
        self,
        write_client,
        table_path: str,
        descriptor: descriptor_pb2.DescriptorProto,
        *,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        rows_per_stream: int = ROWS_PER_STREAM,
        retry: RetryPolicy = DEFAULT_RETRY,
        on_request: Callable[[int], None] | None = None,
        expected_rows: int | None = None,
        progress_seconds: float = PROGRESS_SECONDS,
    ):
        self.client = write_client
        self.table_path = table_path  # projects/P/datasets/D/tables/T
        self.descriptor = descriptor
        self.max_request_bytes = max_request_bytes
        self.rows_per_stream = rows_per_stream
        self.retry = retry
        self.on_request = on_request  # called after each acknowledged request (tests, progress)
        self.stats = WriteStats()
        # Rows, rows/s, and percent of `expected_rows` (rows counted at the source) when known.
        self.progress = Progress(
            f"{table_path.rsplit('/', 1)[-1]} mirror", LOGGER, expected_rows, progress_seconds
        )
        self.streams: list[_Stream] = []
        self._overhead = _REQUEST_OVERHEAD + len(descriptor.SerializeToString())
        self._rows: list[bytes] = []
        self._size = self._overhead
        self._committed = False

    # -- appending

    def append(self, serialized_row: bytes) -> None:
        size = len(serialized_row) + _PER_ROW_OVERHEAD
        if size + self._overhead > self.max_request_bytes:
            raise WriteError(
                f"One row of {self.table_path} is {len(serialized_row)} bytes, more than a "
                f"Storage Write request may carry ({self.max_request_bytes} bytes)."
            )
        if self._rows and (
            self._size + size > self.max_request_bytes
            or self._current_offset() + len(self._rows) >= self.rows_per_stream
        ):
            self.flush()
        self._rows.append(serialized_row)
        self._size += size

    def _current_offset(self) -> int:
        return self.streams[-1].offset if self.streams else 0

    def flush(self) -> None:
        if not self._rows:
            return
        if not self.streams or self.streams[-1].offset + len(self._rows) > self.rows_per_stream:
            self._new_stream()
        stream = self.streams[-1]
        request = write_types.AppendRowsRequest(
            write_stream=stream.name,
            offset=stream.offset,
            proto_rows=write_types.AppendRowsRequest.ProtoData(
                writer_schema=write_types.ProtoSchema(proto_descriptor=self.descriptor),
                rows=write_types.ProtoRows(serialized_rows=self._rows),
            ),
        )
        call_with_retry(lambda: self._send(request, stream), self.retry, "AppendRows")
        stream.offset += len(self._rows)
        self.stats.rows += len(self._rows)
        self.stats.bytes += self._size - self._overhead
        self.stats.requests += 1
        self.progress.advance(len(self._rows))
        self._rows, self._size = [], self._overhead
        if self.on_request:
            self.on_request(self.stats.requests)

    def _send(self, request, stream: _Stream) -> None:
        # One request per AppendRows call: a retry resends exactly this request with its offset.
        metadata = (("x-goog-request-params", f"write_stream={stream.name}"),)
        for response in self.client.append_rows(iter([request]), metadata=metadata, **_ONCE):
            if response.error and response.error.code:
                if response.error.code == ALREADY_EXISTS:
                    return  # an earlier attempt of this very offset landed
                raise WriteError(
                    f"BigQuery refused rows {stream.offset}.. of {self.table_path}: "
                    f"{response.error.message}. Nothing of this run was committed."
                )
            if response.row_errors:
                problems = "; ".join(
                    f"row {e.index}: {e.message}" for e in list(response.row_errors)[:5]
                )
                raise WriteError(
                    f"BigQuery refused rows of {self.table_path}: {problems}. "
                    "Nothing of this run was committed."
                )

    def _new_stream(self) -> None:
        stream = call_with_retry(
            lambda: self.client.create_write_stream(
                parent=self.table_path,
                write_stream=write_types.WriteStream(type_=write_types.WriteStream.Type.PENDING),
                **_ONCE,
            ),
            self.retry,
            "CreateWriteStream",
        )
        self.streams.append(_Stream(stream.name))
        self.stats.streams += 1

    # -- committing

    def commit(self, before_commit: Callable[[], None] | None = None) -> None:
        """Flush, finalize every stream, run `before_commit` (e.g. delete the rows being replaced),
        then commit all streams in one BatchCommitWriteStreams."""
        self.flush()
        for stream in self.streams:
            response = call_with_retry(
                lambda name=stream.name: self.client.finalize_write_stream(name=name, **_ONCE),
                self.retry,
                "FinalizeWriteStream",
            )
            if response.row_count != stream.offset:
                raise WriteError(
                    f"Stream {stream.name} holds {response.row_count} rows, {stream.offset} were "
                    f"sent. "
                    "Nothing of this run was committed; run it again."
                )
        if before_commit:
            before_commit()
        if not self.streams:
            self._committed = True
            return
        request = write_types.BatchCommitWriteStreamsRequest(
            parent=self.table_path, write_streams=[s.name for s in self.streams]
        )
        response = call_with_retry(
            lambda: self.client.batch_commit_write_streams(request, **_ONCE),
            self.retry,
            "BatchCommitWriteStreams",
        )
        if response.stream_errors:
            problems = "; ".join(e.error_message for e in response.stream_errors)
            raise WriteError(f"BatchCommitWriteStreams on {self.table_path} failed: {problems}")
        self._committed = True
