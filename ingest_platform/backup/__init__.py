"""Backups to Parquet or Avro files that restore exactly (pure Python, no Dagster).

==============  ==========================================================================
module          job
==============  ==========================================================================
``types``       the type table: PostgreSQL type -> wire columns -> Arrow/Parquet/Avro type,
                and back to COPY text
``files``       part files: Parquet and Avro writers fed record batches, and readers
``manifest``    the manifest written last (format version, checksums), checks of a backup
``write``       ``backup()``: one exported snapshot, tables in parallel, manifest last
``restore``     ``restore()``: checks, schema (pg_dump archive), COPY, keys, sequences, proof
``verify``      the comparison engine's fingerprints recorded at backup, compared at restore
==============  ==========================================================================
"""

from ingest_platform.backup.manifest import BackupError
from ingest_platform.backup.restore import restore
from ingest_platform.backup.write import backup

__all__ = ["BackupError", "backup", "restore"]
