"""The enumerated choices of ``ingest()``: where to resume (``HighWatermark``) and how to write
(``Mode``)."""

from __future__ import annotations

import enum


class HighWatermark(enum.Enum):
    """Where ``batches`` starts, when not given as a plain value.

    ``LATEST``: the watermark stored by the last successful batch (None if there is none yet).
    ``EARLIEST``: None, i.e. from the beginning, whatever is stored.
    """

    LATEST = "latest"
    EARLIEST = "earliest"


class Mode(enum.Enum):
    """How the rows of each batch reach the tables, and when other clients see them.

    ``UPSERT_COMMITTING_EACH_BATCH``: each batch commits on its own (with its watermark); rows
    upsert on the primary key when the table has one (last row of a key wins), else append.

    ``DELETE_ALL_ROWS_THEN_UPSERT_COMMITTING_EACH_BATCH``: the first batch's transaction also
    deletes every existing row of every table in the metadata; then as above. Readers see the first
    batch alone once it commits, then each further batch as it commits.

    ``DELETE_ALL_ROWS_THEN_UPSERT_COMMITTING_AFTER_FINAL_BATCH``: delete, then every batch, in one
    transaction that commits after the final batch: other clients see the old rows until then, then
    all the new ones; never a mixture and never an empty table. A failing batch rolls back all.
    """

    UPSERT_COMMITTING_EACH_BATCH = "upsert_committing_each_batch"
    DELETE_ALL_ROWS_THEN_UPSERT_COMMITTING_EACH_BATCH = (
        "delete_all_rows_then_upsert_committing_each_batch"
    )
    DELETE_ALL_ROWS_THEN_UPSERT_COMMITTING_AFTER_FINAL_BATCH = (
        "delete_all_rows_then_upsert_committing_after_final_batch"
    )

    @property
    def deletes_all_rows(self) -> bool:
        return self is not Mode.UPSERT_COMMITTING_EACH_BATCH

    @property
    def commits_each_batch(self) -> bool:
        return self is not Mode.DELETE_ALL_ROWS_THEN_UPSERT_COMMITTING_AFTER_FINAL_BATCH
