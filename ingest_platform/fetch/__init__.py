"""Direct fetch from application databases (PostgreSQL, MySQL/MariaDB) into the versioned
parent/child tables dumps load into: sources as config (``config``), readers (``sources``),
snapshot and incremental pulls with checks (``pull``). Never imports dagster."""
