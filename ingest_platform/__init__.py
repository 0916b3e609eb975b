"""ingest_platform: versioned dumps and CDC into PostgreSQL, mirrored to BigQuery, checked for consistency.

Importing this package does not load Dagster; the definitions live in `ingest_platform.definitions`.
"""
