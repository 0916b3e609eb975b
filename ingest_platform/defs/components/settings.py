"""Bridge from a component's YAML attributes to the glue that still reads settings from the
environment at run time (schema and dataset prefixes, dialect, COPY processes).

The run worker and the code server both load the components before anything runs, so a value
exported here is the one the assets read. It goes once the builders take these values as
parameters (issue 11, item 2).
"""

import os

from pydantic import Field

DEFAULT_OWNERS = ["team:data-platform"]


def owners_field(what: str):
    return Field(
        default_factory=lambda: list(DEFAULT_OWNERS),
        description=f"Owners of {what} (`team:<name>` or an e-mail address), shown in the UI.",
    )


def tags_field(what: str):
    return Field(
        default_factory=dict,
        description=f"Tags on {what}, added to (or replacing) the platform's own `ingest/...`.",
    )


def export(name: str, value: str | int | None) -> None:
    """Set `name` to the attribute's value (unset when None), as the builders read it."""
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = str(value)
