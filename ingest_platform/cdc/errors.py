"""The CDC pipeline's errors: members of the platform's IngestError family."""

from __future__ import annotations

from ingest_platform.errors import IngestError

MAX_IDS_IN_MESSAGE = 20


class ChangeLogError(IngestError):
    """Change-log rows the pipeline cannot apply (bad object_id, unknown content type or action),
    or a tracked source table it cannot read (missing, no primary key). Carries the change ids;
    nothing was merged and the watermark did not move."""

    def __init__(self, message: str, *, table: str, change_ids: list[int] | tuple[int, ...] = ()):
        self.table = table
        self.change_ids = tuple(change_ids)
        if change_ids:
            shown = ", ".join(str(i) for i in change_ids[:MAX_IDS_IN_MESSAGE])
            more = (
                f" and {len(change_ids) - MAX_IDS_IN_MESSAGE} more"
                if len(change_ids) > MAX_IDS_IN_MESSAGE
                else ""
            )
            message = f"{message} (change ids {shown}{more})"
        super().__init__(
            f"CDC table {table!r}: {message}. Nothing was merged and its watermark did not move."
        )
