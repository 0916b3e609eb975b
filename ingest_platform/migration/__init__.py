"""Moving a PostgreSQL database to another server, and importing historical CSV files.

Pure Python (no Dagster): the CLI (`ingest-platform migrate ...`, `import-csv`, `demo-hr`) and the
Dagster glue in ``defs/migration.py`` call these modules.

=================  ==========================================================================
module             job
=================  ==========================================================================
``pg_tools``       running the wheel's ``pg_dump``/``pg_restore`` (password only in the
                   environment), turning an archive into SQL the target accepts
``inventory``      the objects of the selected schemas as the catalog has them (for the diff),
                   and the prerequisites a target must meet (extensions, languages, roles)
``plan``           what ``schema`` would create, in dependency order, and the diff
``schema``         recreating the schema on the target in one transaction (or refusing)
``data``           copying every table under one exported snapshot, in parallel
``verify``         schema diff + row comparison (``consistency/compare.py``) per table
``csv_import``     CSV files -> staging -> set-based checks -> table (+ rejects)
``demo_hr``        the worked example: an HR source database and historical CSV files
=================  ==========================================================================
"""
