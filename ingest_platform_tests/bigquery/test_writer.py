"""The pending-stream writer when things go wrong on the way: requests the emulator took but whose
answers never came back are sent again with the same offsets and land once; requests answered
with a transient error are sent again, and when the retries run out nothing is committed."""

from __future__ import annotations

import socket
import threading

import psycopg
import pyarrow as pa
import pytest

from ingest_platform.bigquery.arrow_rows import ArrowBatchEncoder
from ingest_platform.bigquery.clients import EmulatorEndpoints, emulator_write_client
from ingest_platform.bigquery.mirror import dump_source, ensure_mirror_table, write_source
from ingest_platform.bigquery.writer import PendingStreamWriter, RetryPolicy
from ingest_platform.errors import ServiceUnavailableError
from ingest_platform_tests.bigquery.helpers import make_dump_table, target


class AnswerDroppingProxy:
    """A TCP proxy in front of the emulator's gRPC port. After `drop_answers_after(n)`, once n
    more bytes went to the emulator, the emulator's answers are swallowed for `hold` seconds and
    then every connection is cut: what reached the emulator was appended, unanswered."""

    def __init__(self, upstream: str):
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.server = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.server.getsockname()[1]}"
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.sent = 0  # bytes to the emulator
        self.cut_at: int | None = None
        self.dropping = False
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def drop_answers_after(self, size: int, hold: float = 1.0) -> None:
        with self.lock:
            self.cut_at, self.hold = self.sent + size, hold

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            emulator = socket.create_connection(self.upstream)
            with self.lock:
                self.sockets += [client, emulator]
            threading.Thread(target=self._pump, args=(client, emulator, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(emulator, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, to_emulator: bool) -> None:
        try:
            while data := source.recv(65536):
                with self.lock:
                    if to_emulator:
                        self.sent += len(data)
                        if self.cut_at is not None and self.sent >= self.cut_at:
                            self.cut_at, self.dropping = None, True
                            threading.Timer(self.hold, self._cut).start()
                    elif self.dropping:
                        continue  # the answer is lost
                sink.sendall(data)
        except OSError:
            pass

    def _cut(self) -> None:
        with self.lock:
            for sock in self.sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            self.sockets, self.dropping = [], False
            self.cuts += 1

    def close(self) -> None:
        self.server.close()
        self._cut()


def test_lost_answers_are_resent_with_their_offsets_and_land_once(
    pg_dsn, bq_emulator, bigquery_resource, bq_dataset
):
    with psycopg.connect(pg_dsn) as conn:
        make_dump_table(
            conn,
            "app",
            "lost",
            [("id", "integer"), ("pad", "text")],
            {"1": [(i, "x" * 200) for i in range(4000)]},
            ["id"],
        )
        mirror = target(bq_dataset, "lost")
        proxy = AnswerDroppingProxy(bq_emulator.grpc)
        try:
            write_client = emulator_write_client(EmulatorEndpoints(bq_emulator.rest, proxy.address))
            with bigquery_resource.get_client() as client:
                source = dump_source(conn, "app", "lost", "1")
                ensure_mirror_table(client, mirror, source.columns)
                encoder = ArrowBatchEncoder(source)

                def lose_answers_once(requests: int) -> None:
                    if requests == 2:  # a few requests in, with others on their way
                        proxy.drop_answers_after(120_000)

                with PendingStreamWriter(
                    write_client,
                    mirror.path,
                    encoder.schema,
                    max_request_bytes=40_000,  # ~180 rows a request, ~23 requests
                    parallel_streams=2,
                    in_flight=3,
                    retry=RetryPolicy(attempts=5, first_delay=0.2),
                    on_request=lose_answers_once,
                ) as writer:
                    write_source(conn, source, writer, encoder, chunk_rows=500)
                    writer.commit()
                counts = list(
                    client.query(
                        f"SELECT COUNT(*), COUNT(DISTINCT id), MIN(id), MAX(id) FROM {mirror.ref}"
                    ).result()
                )[0].values()
        finally:
            proxy.close()
    assert proxy.cuts >= 2  # the planned cut, and the one of close()
    assert writer.stats.resent >= 1  # some requests went twice ...
    assert counts == (4000, 4000, 0, 3999)  # ... and every row landed once
    assert writer.stats.rows == 4000


def test_an_answer_with_a_transient_error_resends_and_gives_up_with_nothing_committed(
    bigquery_resource, bq_dataset, caplog
):
    """The emulator answers RESOURCE_EXHAUSTED (as BigQuery does when it throttles) to a request
    over 10 MiB; the request after it on that connection is answered OUT_OF_RANGE. Both go again
    on a new connection, the retries run out, and the table stays empty."""
    from google.cloud import bigquery

    mirror = target(bq_dataset, "big")
    with (
        bigquery_resource.get_client() as client,
        bigquery_resource.get_write_client() as write_client,
    ):
        client.create_table(bigquery.Table(mirror.table_id, [bigquery.SchemaField("s", "STRING")]))
        schema = pa.schema([pa.field("s", pa.string())])
        big = pa.record_batch([pa.array(["x" * (21 * 2**19)])], schema=schema)  # 10.5 MiB
        small = pa.record_batch([pa.array(["y"])], schema=schema)
        with PendingStreamWriter(
            write_client,
            mirror.path,
            schema,
            max_request_bytes=11 * 2**20,  # above the emulator's 10 MiB
            parallel_streams=1,
            in_flight=2,
            retry=RetryPolicy(attempts=3, first_delay=0.1),
        ) as writer:
            writer.append_batch(big)
            writer.append_batch(small)
            with (
                caplog.at_level("INFO", logger="ingest_platform.bigquery.writer"),
                pytest.raises(ServiceUnavailableError) as caught,
            ):
                writer.commit()
        assert list(client.query(f"SELECT COUNT(*) FROM {mirror.ref}").result())[0][0] == 0
    assert f"AppendRows to {mirror.path} failed 3 times (ResourceExhausted" in str(caught.value)
    assert "Nothing of this run was committed" in str(caught.value)
    assert writer.stats.resent == 4 and writer.stats.requests == 0  # 2 requests, 2 more tries
    assert caplog.text.count("sending 2 requests again") == 2
