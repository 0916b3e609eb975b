"""Load dump versions into PostgreSQL: the seam between the dump reader and the database.

``dumps`` reads files and offers each table's data as one picklable ``CopySource``;
``postgres.versioned_tables`` begins, fills and attaches a version's table. ``dump_versions``
calls each side once: workers, COPY, and turning a rejected line into a FormatError.
"""
