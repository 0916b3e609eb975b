"""Plain Dagster commands without the launcher's environment stop in one line that says what to run.

Decision (also in the README, "Run it"): the platform does not start services from inside
Dagster's processes (a code server, each run worker and the daemon import the definitions; none
of them could own an embedded server's lifetime). Without INGEST_PG_DSN, a Dagster command that
serves or runs assets (`dagster dev`, `dagster asset materialize`, `dagster job ...`, `dg dev`,
`dg launch`, the code server they start) exits while loading the definitions with one line
naming `ingest-platform dev` and `ingest-platform services`. Anything else that
imports the definitions (tests, `dg check defs`, `dg list defs`, Python code) is left alone.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

MISSING = (
    "ingest-platform: INGEST_PG_DSN is not set, so the platform has no PostgreSQL here: run "
    "`ingest-platform dev` instead (services and Dagster), or run `ingest-platform services` in "
    "another terminal and export the lines it prints in this one."
)

# (program, first argument): the Dagster commands that serve or run assets.
_SERVES_OR_RUNS = {
    ("dagster", "dev"),
    ("dagster", "asset"),
    ("dagster", "job"),
    ("dagster", "api"),  # the code server of `dagster dev` / `dg dev`
    ("dagster", "code-server"),
    ("dg", "dev"),
    ("dg", "launch"),
}


def require_platform_environment(argv: list[str] = sys.argv, environ=os.environ) -> None:
    """Exit with MISSING when a Dagster command would serve or run assets without PostgreSQL."""
    if environ.get("INGEST_PG_DSN"):
        return
    if _command(argv) in _SERVES_OR_RUNS:
        print(MISSING, file=sys.stderr, flush=True)
        raise SystemExit(1)


def _command(argv: list[str]) -> tuple[str, str | None]:
    program = Path(argv[0]) if argv else Path()
    # `python -m dagster ...` has argv[0] .../dagster/__main__.py
    name = program.parent.name if program.name == "__main__.py" else program.name
    return name.removesuffix(".exe"), argv[1] if len(argv) > 1 else None
