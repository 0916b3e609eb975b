"""The README's type table says what the kinds table does."""

from __future__ import annotations

import re
from pathlib import Path

from ingest_platform.bigquery.arrow_rows import ARROW_TYPES
from ingest_platform.bigquery.kinds import KIND_OF_PG_TYPE, KINDS, proto_type_name
from ingest_platform.bigquery.types import map_column
from ingest_platform.postgres.catalog import parsed_type

README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_type_rows() -> list[tuple[str, str, str, str]]:
    text = README.read_text()
    section = text[text.index("### Types") :]
    section = section[: section.index("\n\n", section.index("| PostgreSQL"))]
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("| ")]
    return [tuple(cell.strip() for cell in row) for row in rows[1:]]  # type: ignore[misc]


def _first_word(cell: str) -> str:
    found = re.match(r"\w+", cell)
    return found.group(0) if found else ""


def _arrow_type(cell: str) -> str:
    return re.sub(r"\s*\((string on the emulator|UTC)\)$", "", cell)


def test_readme_type_table_matches_the_kinds_table():
    rows = _readme_type_rows()
    documented = {
        (_first_word(bq), _first_word(proto), _arrow_type(arrow)) for _, bq, proto, arrow in rows
    }
    for kind in KINDS.values():
        entry = (kind.bq_type, proto_type_name(kind.proto_type), kind.arrow_type)
        assert entry in documented, kind.name
        assert kind.arrow_type in ARROW_TYPES, kind.name
    triples = {(k.bq_type, proto_type_name(k.proto_type), k.arrow_type) for k in KINDS.values()}
    for pg_types, bq, proto, arrow in rows:
        if bq.startswith(("error", "REPEATED")):
            continue
        assert (_first_word(bq), _first_word(proto), _arrow_type(arrow)) in triples, pg_types
        for item in re.split(r"[,;] ", pg_types):
            name = re.sub(r"\s*\(.*", "", item).strip()
            if parsed_type(name).name in KIND_OF_PG_TYPE or (
                bq == "STRING" and re.fullmatch(r"\w+", name) and name != "others"
            ):
                assert map_column("t", "c", name).bq_type == _first_word(bq), (name, bq)
