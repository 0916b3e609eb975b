"""Read versioned application dumps and turn each table's data file into COPY text chunks.

Pure Python: no Dagster, no PostgreSQL connection.  The loader feeds the chunks to
``COPY <table> FROM STDIN`` (text format, the defaults: tab delimiter, ``\\N`` NULL).

Public API
----------
``open_dump(path, dialect=None, app=None, version=None) -> Dump``
    ``Dump.app``, ``.version``, ``.dialect``, ``.archive_path`` (plain ZIP, for workers),
    ``.tables: dict[str, TableEntry]`` (``schema``, ``data_member`` or None, ``file_format``),
    ``.iter_copy_chunks(table)``, ``.count_rows(table)``, ``.close()`` (removes a decrypted copy).
``iter_copy_chunks(dump_path, member, file_format, columns, chunk_bytes=1 MiB)``
    yields ``bytes``, each ending on a record boundary.  ``count_rows(...)`` -> int.
``Dump.copy_source(table) -> CopySource``: what the loader (``ingest_platform.loading``) gets.
``load_dialect(name_or_path) -> Dialect``; ``Dialect.map_type(source_type) -> str``.

Dump archive
------------
A ZIP (or a ZIP encrypted with GnuPG, ``*.zip.gpg``) holding, per table, a schema and a data
file.  Schemas: ``<table>.json`` (any dialect), or ``*.sql`` read according to the dialect's
``schema_language`` -- ``tsql``: one install script with CREATE TYPE / CREATE TABLE /
ALTER TABLE .. PRIMARY KEY / BULK INSERT (whose FIELDTERMINATOR, ROWTERMINATOR, CODEPAGE,
DATAFILETYPE, FIRSTROW, MAXERRORS override the file format per table, and whose FROM names the
data file);
``mysql``: CREATE TABLE statements, one ``<table>.sql`` each (mysqldump --tab) or all in one
file (mysqldump --no-data); other statements are skipped (``mysql_schema``).  Data files: members
whose extension is in the dialect's ``data_extensions``, paired to a table by the BULK INSERT file
name, else by file stem == table name (exact, then case-insensitive).

- A data file without a schema is a ``SchemaError`` (nothing can say what its columns are); so
  is a table that two data files could be (name one in the manifest's ``data``).
- A schema without a data file is a table with no rows in this version (``data_member`` None).
- Member names that are absolute or contain ``..`` are refused (``DumpError`` naming them); so are
  two members of one name, corrupt or truncated ZIPs and ZIPs without a table schema.
- Names of tables and columns are kept exactly (quotes, spaces and all); PostgreSQL's limits
  (1,600 columns less ``_version``, 63-byte column names) and the platform's names (column
  ``_version``, table ``_ingest_versions``) are checked in ``TableSchema.validate``.
- ``open_dump`` reads the first 64 KiB of each data file: a start that cannot be the declared
  encoding (``utf-16`` without a BOM, UTF-16 declared as UTF-8, only NUL bytes) is a
  ``DumpError`` naming the file and the encoding to declare (``text_stream.encoding_problem``).
- Every error is an ``IngestError`` of one line that names the dump and table or member.

Manifest (optional): ``manifest.json`` at the root of the ZIP::

    {"app": "crm", "version": "2025.2", "dialect": "mssql",
     "tables": {"Address": {"field_terminator": "+|", "encoding": "utf-16-le",
                            "data": "x/Address.dat"}}}

``app``, ``version`` and ``dialect`` are non-empty strings (a version without control characters
or ``...``). ``dialect`` is a name (``mssql``, or one in ``INGEST_DIALECT_DIR``) or a ``.toml``
member of the dump itself, never a path on the host. ``tables.<name>`` names a table the dump has
a schema for and holds file-format keys (below) and optionally ``data`` (a member of the dump).
A top-level ``max_errors`` is the dump-wide reject budget of tables that set none themselves.
Precedence: open_dump() arguments > manifest > file name; file format: manifest > JSON schema
``format`` > BULK INSERT > (``max_errors`` only: the manifest's top-level one) > dialect config.

File-name version rule (no manifest): ``<app>_<version>.zip[.gpg]``, split at the LAST underscore;
the version must start with a digit or ``v`` + digit: ``crm_eu_2025.zip`` -> app ``crm_eu``,
version ``2025``; ``shop_1.2.3.zip`` -> ``1.2.3``; ``shop_v2.zip.gpg`` -> ``v2``.

GPG (``*.zip.gpg``): decrypted with python-gnupg (needs the ``gpg`` binary; the passphrase goes
to it on a pipe, never in its arguments) into a private directory that the reader removes when it
is done, and that is removed at the next start when the reader was killed (``dumps/decrypted.py``).
Environment variables:

- ``INGEST_GPG_HOME``: GnuPG home directory holding the recipient's private key (default: gpg's).
- ``INGEST_GPG_PASSPHRASE``: the key's passphrase, if it has one.
- ``INGEST_GPG_BINARY``: path to ``gpg`` (default: ``gpg`` on PATH).
- ``INGEST_DECRYPT_DIR``: parent directory for decrypted copies (default:
  ``<system temp>/ingest_platform_decrypted-<uid>``).
A wrong key or passphrase is a ``DumpError``.

Platform JSON schema (``<table>.json``)
---------------------------------------
::

    {"name": "Address",                      # optional; default: the file stem
     "source_schema": "Person",              # optional, informational
     "columns": [
        {"name": "AddressID", "type": "int", "nullable": false},
        {"name": "City", "type": "nvarchar(30)"},                 # nullable defaults to true
        {"name": "Code", "type": "varchar(10)", "pg_type": "text"},  # pg_type overrides the map
        {"name": "AccountNumber", "type": "computed", "pg_type": "text", "computed": true}],
     "primary_key": ["AddressID"],
     "format": {"field_terminator": "+|", "row_terminator": "&|\\n"}}   # optional overrides

``type`` is the source type in the dialect's spelling; it is mapped through the dialect's
``[types]`` unless ``pg_type`` is given.  Columns are listed in data-file field order.

Dialect configs (``ingest_platform/dialects/<name>.toml``; ``load_dialect("mssql")`` or a path)
-----------------------------------------------------------------------------------------------
By name, a dialect is looked up in ``INGEST_DIALECT_DIR`` first, then in the shipped folder.
Top level: ``name``, ``description``, ``schema_language`` (``tsql`` | ``mysql`` | ``json``),
``data_extensions`` (list).  ``[format]``:

- ``field_terminator``, ``row_terminator``: any length (e.g. ``"+|"``, ``"&|\\n"``).
- ``row_terminator_crlf_sniff``: a ``\\n`` in the row terminator may be CRLF; the first record
  decides (bcp; BULK INSERT sets it for typed terminators, not for hex ones like ``0x0a``).
- ``null``: field text meaning NULL (``""`` for bcp, ``"\\\\N"`` for MySQL).
- ``empty_string``: field text meaning '' (``"\\u0000"`` for bcp, ``""`` for MySQL).
- ``escape``: ``""`` or ``"\\\\"`` (MySQL escapes ``\\\\ \\t \\n \\r \\0 \\Z \\b``, backslash + raw
  TAB/LF/CR, any other ``\\x`` = ``x``).  ``quote``: ``""`` or ``'"'`` (CSV, read with ``csv``).
- ``encoding``: Python codec name; a BOM in the file wins (UTF-8, UTF-16 LE/BE, UTF-32).
- ``header_rows``: records to skip (a whole number >= 0).  ``binary``: ``hex`` (bcp: bare hex)
  or ``raw`` (MySQL bytes).
- ``zero_dates``: ``null`` turns dates with a zero year, month or day ('0000-00-00 00:00:00') into
  NULL (PostgreSQL has no such dates; those columns become nullable) or ``keep``.
- ``column_charsets``: ``true`` decodes each text column in its own character set
  (``Column.encoding``, from the DDL), as MySQL's SELECT INTO OUTFILE writes them (``charsets``).
- ``max_errors``: the reject budget, records that may fail to load (quarantined) before the table
  fails; 0 (default) = strict. See ``ingest_platform/loading/reject_budget.py``.
- ``binary = "hex"`` reads binary as SQL Server's CONVERT does: an even number of hex digits, with
  or without ``0x`` (``copy_text.sql_server_hex``); anything else is a bad value.

``[types]``: source type -> PostgreSQL type, keys lower case, looked up as ``name(params)``
(``"nvarchar(max)"``), ``name modifiers`` (``"int unsigned"``), then ``name``.  A string value
may use ``{params}``; a table value ``{template = "numeric({params})", bare = "numeric(18,0)"}``
picks ``template`` when the source has parameters.  T-SQL alias types (``CREATE TYPE [Name]
FROM nvarchar(50)``) resolve to their base type first.  Notable choices: SQL Server computed
columns are exported by bcp and kept as ``text``; hierarchyid/geography/geometry keep SQL
Server's native bytes as ``bytea``; MySQL ``tinyint(1)`` -> ``smallint`` (not boolean: other
values occur), ``int unsigned`` -> ``bigint``, ``bigint unsigned`` -> ``numeric(20,0)``,
enum/set -> ``text``, BIT -> its number (raw bytes in the file, see ``mysql_bits``); the README's
"MySQL and MariaDB dumps" has the whole MySQL table.

Reading data files (see ``reader``, ``text_stream``, ``copy_text``)
------------------------------------------------------------------
bcp files are parsed as bcp does: n-1 field terminators, then the row terminator, so a row
terminator inside a non-last field is data; a field terminator inside the last field is reported
as a field-count error.  Errors are ``FormatError(file=member, line=record number, column=name)``;
"line" is the 1-based record number counted by row terminators (header rows included).
A record longer than ``text_stream.MAX_RECORD`` (256 MiB) is a ``FormatError``: a file with no
row terminator (gigabytes of NUL bytes) fails within a second instead of being held whole.
The byte path (``byte_blocks``) cuts and converts blocks without decoding them when the file is
UTF-8/ASCII (a UTF-8 BOM is stripped) with tab/LF terminators and no quoting: ``bytes.replace``
and two regexes, proven equal to the per-row path's bytes per block (TABs == (fields-1) x LFs, NULs
only as whole fields, only MySQL escapes it can map; non-ASCII blocks are checked to be valid
UTF-8 so the per-row path can name a bad byte's record and column).  Other files, and blocks it
refuses, are decoded (invalid bytes become lone surrogates) and take the ``str`` fast path, which
converts whole blocks with ``str.replace`` when it can prove the result equals the
per-row path's (tab/LF terminators, no bytea columns, no zero dates, no escapes it cannot map);
block totals of field terminators are checked, so a file whose errors cancel out across records
passes through and is rejected by PostgreSQL's COPY itself.
"""

from ingest_platform.dumps.archive import Dump, TableEntry, open_dump, parse_dump_file_name
from ingest_platform.dumps.dialect import Dialect, FileFormat, load_dialect
from ingest_platform.dumps.reader import count_rows, iter_copy_chunks
from ingest_platform.dumps.schema import Column, TableSchema, read_json_schema

__all__ = [
    "Column",
    "Dialect",
    "Dump",
    "FileFormat",
    "TableEntry",
    "TableSchema",
    "count_rows",
    "iter_copy_chunks",
    "load_dialect",
    "open_dump",
    "parse_dump_file_name",
    "read_json_schema",
]
