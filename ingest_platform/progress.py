"""Progress of a long step (a table load, a mirror) in its logger, at most every few seconds.

Time-based, not per row: callers report whole chunks or requests, and one clock read per report
decides whether a line is due. The `ingest_platform` loggers reach a run's log in the UI through
dagster.yaml's managed python loggers.
"""

from __future__ import annotations

import logging
import time

PROGRESS_SECONDS = 5.0


class Progress:
    """`what: 1,200,000 rows, 240,000 rows/s, 45%` every `interval` seconds.

    Percent is `fraction` when the caller knows it (bytes of the data file read / total), else
    rows / `total_rows` when that is known, else left out.
    """

    def __init__(
        self,
        what: str,
        logger: logging.Logger | logging.LoggerAdapter,
        total_rows: int | None = None,
        interval: float = PROGRESS_SECONDS,
    ):
        self.what = what
        self.logger = logger
        self.total_rows = total_rows
        self.interval = interval
        self.rows = 0
        self._started = self._last = time.monotonic()

    def advance(self, rows: int, fraction: float | None = None) -> None:
        self.rows += rows
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        rate = self.rows / max(now - self._started, 1e-9)
        if fraction is None and self.total_rows:
            fraction = self.rows / self.total_rows
        if not self.rows and fraction is not None:  # rows are counted elsewhere (load workers)
            self.logger.info(f"{self.what}: {min(fraction, 1.0):.0%} read")
            return
        percent = f", {min(fraction, 1.0):.0%}" if fraction is not None else ""
        self.logger.info(f"{self.what}: {self.rows:,} rows, {rate:,.0f} rows/s{percent}")
