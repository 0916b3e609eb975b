"""ingest_platform: versioned dumps and CDC into PostgreSQL, mirrored to BigQuery, checked for
consistency.

Importing this package does not load Dagster; the definitions live in `ingest_platform.definitions`.
``from ingest_platform import ingest, HighWatermark, Mode, CsvFile`` loads the bulk-ingest API
(``ingest_platform.bulk_ingest``) on first use, not before.
"""

_LAZY = {"ingest", "HighWatermark", "Mode", "IngestResult", "CsvFile"}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        from ingest_platform import bulk_ingest

        return getattr(bulk_ingest, name)
    raise AttributeError(f"module 'ingest_platform' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _LAZY)
