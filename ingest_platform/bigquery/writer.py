"""Exactly-once appends through the Storage Write API: application-created PENDING streams with
offsets, finalized and committed together by one ``BatchCommitWriteStreams`` per run.

- Rows arrive as serialized protobuf rows (``append``, packed into requests) or as Arrow record
  batches (``append_batch``, one request each, split when too big); every request stays below
  ``max_request_bytes`` (default 9 MB, under BigQuery's 10 MB).
- Up to ``parallel_streams`` pending streams are written at the same time, requests handed to
  them in turn, each stream on one long-lived ``AppendRows`` connection with up to ``in_flight``
  requests sent and not yet answered: encoding the next request overlaps sending and the
  service's work on the last ones. A stream takes at most ``rows_per_stream`` rows; a full one is
  replaced by a new one. All of them are committed atomically together.
- Each request carries its stream's offset, fixed when the request is made. When a connection
  fails (UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, ABORTED, RESOURCE_EXHAUSTED, or no answer
  within the read timeout) or an answer carries one of these errors, a new connection is opened
  after a logged backoff and the unanswered requests are sent again in order with their offsets;
  ``ALREADY_EXISTS`` for an offset means an earlier attempt landed, so nothing is written twice.
  The retry policy, timeouts and the give-up error are calls.py's (``INGEST_BQ_TIMEOUT``), for the
  unary calls (create, finalize, commit) too.
- Nothing is visible in the table until ``commit``: a run that fails before it leaves the table
  as it was (uncommitted pending streams expire on the server).

Credentials never pass through here: the caller hands in a ready ``BigQueryWriteClient``.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from google.api_core import exceptions as api_exceptions
from google.cloud.bigquery_storage_v1 import types as write_types
from google.protobuf import descriptor_pb2

from ingest_platform.bigquery.calls import (
    GRPC_TRANSIENT,
    STORAGE_WRITE,
    Retrying,
    RetryPolicy,
    call,
    grpc_endpoint,
    grpc_retryable,
    is_timeout,
)
from ingest_platform.errors import IngestError
from ingest_platform.progress import PROGRESS_SECONDS, Progress

LOGGER = logging.getLogger(__name__)
_T = TypeVar("_T")

MAX_REQUEST_BYTES = 9 * 1024 * 1024
ROWS_PER_STREAM = 5_000_000
# Pending streams written at the same time, one connection each. The emulator serves each open
# AppendRows connection with one thread of a pool of min(32, cores + 4): keep this below that.
PARALLEL_STREAMS = 4
IN_FLIGHT = 2  # requests sent on a connection and not yet answered
_REQUEST_OVERHEAD = 2048  # stream name, offset, framing (plus the writer schema's size)
_PER_ROW_OVERHEAD = 6  # length prefix + tag of each serialized row
ALREADY_EXISTS = 6  # google.rpc.Code
# The client library's own retries (up to 20 minutes) are switched off: calls.py's policy retries,
# logs each retry and gives up after INGEST_BQ_TIMEOUT seconds of failures.
TRANSIENT = GRPC_TRANSIENT
# The same in an AppendRows answer (say, throttled): that request and the ones after it on the
# connection were not taken, so they are sent again on a new connection.
TRANSIENT_ANSWERS = TRANSIENT[:-1]
NOTHING_COMMITTED = "Nothing of this run was committed. "


class WriteError(IngestError):
    """The Storage Write API refused rows or a commit; nothing of the run is committed."""


DEFAULT_RETRY = RetryPolicy()


def _short(error: Exception) -> str:
    return str(error).splitlines()[0][:300] if str(error) else ""


@dataclass
class WriteStats:
    rows: int = 0
    bytes: int = 0
    requests: int = 0
    streams: int = 0
    resent: int = 0  # requests sent again on a new connection after one failed


@dataclass
class _Request:
    offset: int
    rows: int
    size: int
    payload: Any  # list of serialized protobuf rows, or one Arrow IPC record batch


class _Connection:
    """One AppendRows call (a bidirectional gRPC stream) on one write stream. The service answers
    a connection's requests in the order they were sent."""

    def __init__(self, client, stream_name: str):
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._answers: queue.SimpleQueue = queue.SimpleQueue()
        self.sent = 0
        # The transport's callable itself: the library's wrapper would wait for a first answer.
        self._call = client.transport.append_rows(
            iter(self._requests.get, None),
            metadata=(("x-goog-request-params", f"write_stream={stream_name}"),),
        )
        self._reader = threading.Thread(target=self._read, name="ingest-append-rows", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for answer in self._call:
                self._answers.put(answer)
            self._answers.put(api_exceptions.ServiceUnavailable("the connection was closed"))
        except grpc.RpcError as error:
            self._answers.put(api_exceptions.from_grpc_error(error))
        except Exception as error:  # an answer that cannot be read: try a new connection
            self._answers.put(api_exceptions.Unknown(f"{type(error).__name__}: {error}"))

    def send(self, request: write_types.AppendRowsRequest) -> None:
        self._requests.put(request)
        self.sent += 1

    def answer(self, timeout: float) -> write_types.AppendRowsResponse:
        try:
            answer = self._answers.get(timeout=timeout)
        except queue.Empty:
            raise api_exceptions.DeadlineExceeded(f"no answer within {timeout:.0f} s") from None
        if isinstance(answer, Exception):
            raise answer
        return answer

    def close(self) -> None:
        self._requests.put(None)  # the end of the requests
        self._call.cancel()
        self._reader.join(timeout=10)


@dataclass
class _Stream:
    name: str
    offset: int = 0  # rows handed to the stream: the next request's offset
    waiting: deque[_Request] = field(default_factory=deque)  # sent, not answered yet
    connection: _Connection | None = None
    retrying: Retrying | None = None  # failed connections since the last answer


class PendingStreamWriter:
    """Append rows to a table through pending streams; ``commit`` makes them visible.

    `schema` is the rows' writer schema: a protobuf ``DescriptorProto`` (rows go to ``append``
    serialized) or a ``pyarrow.Schema`` (record batches go to ``append_batch``). Use it as a
    context manager, or call ``close`` when a run stops early: it ends the open connections."""

    def __init__(
        self,
        write_client,
        table_path: str,
        schema,
        *,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        rows_per_stream: int = ROWS_PER_STREAM,
        parallel_streams: int = PARALLEL_STREAMS,
        in_flight: int = IN_FLIGHT,
        retry: RetryPolicy = DEFAULT_RETRY,
        on_request: Callable[[int], None] | None = None,
        expected_rows: int | None = None,
        progress_seconds: float = PROGRESS_SECONDS,
    ):
        self.client = write_client
        self.table_path = table_path  # projects/P/datasets/D/tables/T
        self.proto = isinstance(schema, descriptor_pb2.DescriptorProto)
        self.schema = schema
        self._schema_bytes = (
            schema.SerializeToString() if self.proto else schema.serialize().to_pybytes()
        )
        self.max_request_bytes = max_request_bytes
        self.rows_per_stream = rows_per_stream
        self.parallel_streams = parallel_streams
        self.in_flight = in_flight
        self.retry = retry.resolved()  # the environment is read once per writer
        self.endpoint = grpc_endpoint(write_client)
        self.on_request = on_request  # called after each acknowledged request (tests, progress)
        self.stats = WriteStats()
        # Rows, rows/s, and percent of `expected_rows` (rows counted at the source) when known.
        self.progress = Progress(
            f"{table_path.rsplit('/', 1)[-1]} mirror", LOGGER, expected_rows, progress_seconds
        )
        self.streams: list[_Stream] = []  # every stream of the run, in order of creation
        self._slots: list[_Stream | None] = [None] * parallel_streams  # the streams written now
        self._turn = 0  # the slot the next request goes to
        self._overhead = _REQUEST_OVERHEAD + len(self._schema_bytes)
        self._rows: list[bytes] = []  # protobuf rows of the next request
        self._size = self._overhead

    def __enter__(self) -> PendingStreamWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- appending

    def append(self, serialized_row: bytes) -> None:
        """One serialized protobuf row; rows are packed into requests."""
        if not self.proto:
            raise TypeError("this writer takes Arrow record batches (append_batch)")
        size = len(serialized_row) + _PER_ROW_OVERHEAD
        if size + self._overhead > self.max_request_bytes:
            raise self._too_big(len(serialized_row))
        if self._rows and (
            self._size + size > self.max_request_bytes or len(self._rows) >= self._room()
        ):
            self.flush()
        self._rows.append(serialized_row)
        self._size += size

    def append_batch(self, batch) -> None:
        """One Arrow record batch: one request, or several when it is too big for one."""
        if self.proto:
            raise TypeError("this writer takes serialized protobuf rows (append)")
        if batch.num_rows > self.rows_per_stream:
            self.append_batch(batch.slice(0, self.rows_per_stream))
            self.append_batch(batch.slice(self.rows_per_stream))
            return
        data = batch.serialize()
        if data.size + self._overhead > self.max_request_bytes:
            if batch.num_rows == 1:
                raise self._too_big(data.size)
            half = batch.num_rows // 2
            self.append_batch(batch.slice(0, half))
            self.append_batch(batch.slice(half))
            return
        if batch.num_rows:
            self._submit(data.to_pybytes(), batch.num_rows, data.size)

    def flush(self) -> None:
        """Send the protobuf rows packed so far (the answer comes later)."""
        if self._rows:
            rows, self._rows = self._rows, []
            self._submit(rows, len(rows), self._size - self._overhead)
            self._size = self._overhead

    def _too_big(self, size: int) -> WriteError:
        return WriteError(
            f"One row of {self.table_path} is {size} bytes, more than a Storage Write request "
            f"may carry ({self.max_request_bytes} bytes)."
        )

    def _room(self) -> int:
        """Rows the stream of the next request can still take."""
        stream = self._slots[self._turn % self.parallel_streams]
        free = self.rows_per_stream - stream.offset if stream else 0
        return free or self.rows_per_stream

    def _submit(self, payload, rows: int, size: int) -> None:
        slot = self._turn % self.parallel_streams
        self._turn += 1
        stream = self._slots[slot]
        if stream is None or stream.offset + rows > self.rows_per_stream:
            if stream is not None:  # full: its connection ends before the next one opens
                self._finish(stream)
            stream = self._slots[slot] = self._new_stream()
        while len(stream.waiting) >= self.in_flight:
            self._receive(stream)
        request = _Request(stream.offset, rows, size, payload)
        stream.offset += rows
        stream.waiting.append(request)
        self._send(stream, request)

    def _send(self, stream: _Stream, request: _Request) -> None:
        if stream.connection is None:
            stream.connection = _Connection(self.client, stream.name)
        # The writer schema goes with the first request of each connection.
        stream.connection.send(self._request(stream.name, request, stream.connection.sent == 0))

    def _request(self, stream: str, request: _Request, with_schema: bool):
        if self.proto:
            data = write_types.AppendRowsRequest.ProtoData(
                rows=write_types.ProtoRows(serialized_rows=request.payload)
            )
            if with_schema:
                data.writer_schema = write_types.ProtoSchema(proto_descriptor=self.schema)
            return write_types.AppendRowsRequest(
                write_stream=stream, offset=request.offset, proto_rows=data
            )
        arrow = write_types.AppendRowsRequest.ArrowData(
            rows=write_types.ArrowRecordBatch(serialized_record_batch=request.payload)
        )
        if with_schema:
            arrow.writer_schema = write_types.ArrowSchema(serialized_schema=self._schema_bytes)
        return write_types.AppendRowsRequest(
            write_stream=stream, offset=request.offset, arrow_rows=arrow
        )

    # -- answers

    def _receive(self, stream: _Stream) -> None:
        """Wait for the answer to the stream's oldest request; on a failed connection, send the
        unanswered requests again on a new one."""
        assert stream.connection is not None
        request = stream.waiting[0]
        waited = time.monotonic()
        try:
            answer = stream.connection.answer(self.retry.answer_timeout)
        except TRANSIENT as error:
            self._reconnect(stream, error, since=waited if is_timeout(error) else None)
            return
        except api_exceptions.GoogleAPICallError as error:
            raise self._refused(request, _short(error)) from None
        if answer.error.code and answer.error.code != ALREADY_EXISTS:
            failed = api_exceptions.from_grpc_status(answer.error.code, answer.error.message)
            if isinstance(failed, TRANSIENT_ANSWERS):
                self._reconnect(stream, failed)
                return
            raise self._refused(request, answer.error.message)
        if answer.row_errors:
            problems = "; ".join(f"row {e.index}: {e.message}" for e in list(answer.row_errors)[:5])
            raise self._refused(request, problems)
        result = write_types.AppendRowsResponse.pb(answer).append_result
        if (
            not answer.error.code
            and result.HasField("offset")
            and result.offset.value != (request.offset)
        ):  # the answers are not those of the requests sent: stop before anything is committed
            raise self._refused(request, f"the answer is for offset {result.offset.value}")
        # ALREADY_EXISTS: an earlier attempt of this very offset landed.
        stream.waiting.popleft()
        stream.retrying = None
        self.stats.rows += request.rows
        self.stats.bytes += request.size
        self.stats.requests += 1
        self.progress.advance(request.rows)
        if self.on_request:
            self.on_request(self.stats.requests)

    def _refused(self, request: _Request, problem: str) -> WriteError:
        first = not self.proto and self.stats.requests == 0  # Arrow refused from the start
        hint = (
            " If this project's Storage Write API takes no Arrow rows, set "
            "INGEST_BQ_ROW_FORMAT=proto."
            if first
            else ""
        )
        return WriteError(
            f"BigQuery refused rows {request.offset}.. of {self.table_path}: {problem}. Nothing "
            f"of this run was committed.{hint}"
        )

    def _reconnect(self, stream: _Stream, error: Exception, since: float | None = None) -> None:
        """Log, wait, and send the unanswered requests again on a new connection; or give up."""
        if stream.retrying is None:
            stream.retrying = Retrying(
                self.retry,
                STORAGE_WRITE,
                self.endpoint,
                f"AppendRows to {self.table_path}",
                consequence=NOTHING_COMMITTED,
                logger=LOGGER,
            )
        assert stream.connection is not None
        stream.connection.close()  # ended before the wait: a dead server holds nothing open
        stream.connection = None
        stream.retrying.failed(error, f"sending {len(stream.waiting)} requests again", since)
        for request in stream.waiting:  # same offsets: what landed answers ALREADY_EXISTS
            self._send(stream, request)
            self.stats.resent += 1

    def _finish(self, stream: _Stream) -> None:
        """Wait for the stream's answers and end its connection."""
        while stream.waiting:
            self._receive(stream)
        if stream.connection:
            stream.connection.close()
            stream.connection = None

    def close(self) -> None:
        """End every open connection (what was not committed stays invisible)."""
        for stream in self.streams:
            if stream.connection:
                stream.connection.close()
                stream.connection = None

    def _call(self, what: str, attempt: Callable[[float], _T]) -> _T:
        """A unary gRPC call: each try bounded by the answer timeout (connect included), retried
        by the policy, never by the library."""
        return call(
            attempt,
            self.retry,
            STORAGE_WRITE,
            self.endpoint,
            what,
            grpc_retryable,
            timeout=self.retry.answer_timeout,
            consequence=NOTHING_COMMITTED,
            logger=LOGGER,
        )

    def _finalize(self, name: str, timeout: float):
        return self.client.finalize_write_stream(name=name, retry=None, timeout=timeout)

    def _new_stream(self) -> _Stream:
        created = self._call(
            f"CreateWriteStream on {self.table_path}",
            lambda timeout: self.client.create_write_stream(
                parent=self.table_path,
                write_stream=write_types.WriteStream(type_=write_types.WriteStream.Type.PENDING),
                retry=None,
                timeout=timeout,
            ),
        )
        stream = _Stream(created.name)
        self.streams.append(stream)
        self.stats.streams += 1
        return stream

    # -- committing

    def commit(self, before_commit: Callable[[], None] | None = None) -> None:
        """Send what is left, wait for every answer, finalize every stream, run `before_commit`
        (e.g. delete the rows being replaced), then commit all streams in one
        BatchCommitWriteStreams."""
        self.flush()
        for stream in self.streams:
            self._finish(stream)
        for stream in self.streams:
            response = self._call(
                f"FinalizeWriteStream of {stream.name}",
                functools.partial(self._finalize, stream.name),
            )
            if response.row_count != stream.offset:
                raise WriteError(
                    f"Stream {stream.name} holds {response.row_count} rows, {stream.offset} were "
                    "sent. Nothing of this run was committed; run it again."
                )
        if before_commit:
            before_commit()
        if not self.streams:
            return
        request = write_types.BatchCommitWriteStreamsRequest(
            parent=self.table_path, write_streams=[s.name for s in self.streams]
        )
        response = self._call(
            f"BatchCommitWriteStreams on {self.table_path}",
            lambda timeout: self.client.batch_commit_write_streams(
                request, retry=None, timeout=timeout
            ),
        )
        if response.stream_errors:
            problems = "; ".join(e.error_message for e in response.stream_errors)
            raise WriteError(f"BatchCommitWriteStreams on {self.table_path} failed: {problems}")
