"""The BigQuery resource against the emulator: REST for DDL and queries, gRPC for the Storage
Write API."""

import datetime as dt
from decimal import Decimal

from google.cloud import bigquery
from google.cloud.bigquery_storage_v1 import types as write_types
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

ROWS = [
    {"id": 1, "name": "Zürich", "amount": "12.50", "created_micros": 1_700_000_000_123_456},
    {"id": 2, "name": None, "amount": "-0.01", "created_micros": 0},
]


def row_message_class():
    """A protobuf message built at run time, the way the mirror builds one from a table schema."""
    file_proto = descriptor_pb2.FileDescriptorProto(
        name="roundtrip.proto", package="roundtrip", syntax="proto2"
    )
    message = file_proto.message_type.add(name="Row")
    FieldProto = descriptor_pb2.FieldDescriptorProto
    for number, (name, kind) in enumerate(
        [
            ("id", FieldProto.TYPE_INT64),
            ("name", FieldProto.TYPE_STRING),
            ("amount", FieldProto.TYPE_STRING),
            ("created", FieldProto.TYPE_INT64),
        ],
        start=1,
    ):
        message.field.add(name=name, number=number, type=kind, label=FieldProto.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file_proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("roundtrip.Row"))


def test_storage_write_api_round_trip(bigquery_resource, bq_dataset):
    Row = row_message_class()
    with bigquery_resource.get_client() as client:
        table = client.create_table(
            bigquery.Table(
                f"{client.project}.{bq_dataset}.roundtrip",
                schema=[
                    bigquery.SchemaField("id", "INT64", mode="REQUIRED"),
                    bigquery.SchemaField("name", "STRING"),
                    bigquery.SchemaField("amount", "NUMERIC"),
                    bigquery.SchemaField("created", "TIMESTAMP"),
                ],
            )
        )
    parent = f"projects/{table.project}/datasets/{table.dataset_id}/tables/{table.table_id}"

    with bigquery_resource.get_write_client() as writer:
        stream = writer.create_write_stream(
            parent=parent,
            write_stream=write_types.WriteStream(type_=write_types.WriteStream.Type.PENDING),
        )
        descriptor = descriptor_pb2.DescriptorProto()
        Row.DESCRIPTOR.CopyToProto(descriptor)
        rows = write_types.ProtoRows()
        for row in ROWS:
            message = Row(id=row["id"], amount=row["amount"], created=row["created_micros"])
            if row["name"] is not None:
                message.name = row["name"]
            rows.serialized_rows.append(message.SerializeToString())
        request = write_types.AppendRowsRequest(
            write_stream=stream.name,
            offset=0,
            proto_rows=write_types.AppendRowsRequest.ProtoData(
                writer_schema=write_types.ProtoSchema(proto_descriptor=descriptor), rows=rows
            ),
        )
        responses = list(writer.append_rows(iter([request])))
        assert [r.append_result.offset for r in responses] == [0]
        assert writer.finalize_write_stream(name=stream.name).row_count == len(ROWS)
        commit = writer.batch_commit_write_streams(
            write_types.BatchCommitWriteStreamsRequest(parent=parent, write_streams=[stream.name])
        )
        assert not commit.stream_errors

    with bigquery_resource.get_client() as client:
        result = client.query(
            f"SELECT id, name, amount, created FROM `{bq_dataset}.roundtrip` ORDER BY id"
        ).result()
        got = [tuple(r.values()) for r in result]
    assert got == [
        (
            1,
            "Zürich",
            Decimal("12.50"),
            dt.datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=dt.UTC),
        ),
        (2, None, Decimal("-0.01"), dt.datetime(1970, 1, 1, tzinfo=dt.UTC)),
    ]
