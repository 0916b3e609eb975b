"""Bulk ingest: load rows, Arrow data or CSV files into PostgreSQL tables defined with SQLAlchemy.

    from ingest_platform import ingest, HighWatermark, Mode

    ingest(conn, metadata, batches, high_watermark=HighWatermark.LATEST,
           ingest_mode=Mode.UPSERT_COMMITTING_EACH_BATCH)

Modules, one job each: ``modes`` (HighWatermark, Mode), ``watermarks`` (the stored watermark),
``table_defs`` (declared vs live table), ``migration`` (create/migrate, views, grants),
``copy_rows`` (binary COPY with row checks), ``numeric_binary`` (Decimals to binary numeric, a
chunk at a time), ``bulk_sources`` (whole inputs: Arrow data, CSV files, dump tables),
``arrow_copy`` (Arrow record batches to binary COPY), ``upsert`` (staging, de-dup,
INSERT .. ON CONFLICT, delete all), ``api`` (``ingest``). Lock blockers are terminated after a
delay by ``ingest_platform.postgres.locks``, which the dump and CDC pipelines share. No Dagster
here; ``ingest_platform.defs.bulk_ingest`` makes assets of it.
"""

from ingest_platform.bulk_ingest.api import IngestResult, ingest
from ingest_platform.bulk_ingest.bulk_sources import CsvFile
from ingest_platform.bulk_ingest.modes import HighWatermark, Mode

__all__ = ["CsvFile", "HighWatermark", "IngestResult", "Mode", "ingest"]
