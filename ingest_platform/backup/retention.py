"""Which backups of a database to keep: the newest N daily ones and the newest of each of the last
M ISO weeks. Backups live in ``<root>/<YYYY-MM-DD>`` (the day they are for); a directory without
a manifest is an interrupted backup and is deleted once a newer complete one exists.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

from ingest_platform.backup.manifest import MANIFEST


def backups(root: Path) -> list[tuple[dt.date, Path]]:
    """Complete backups under `root`, oldest first."""
    found = []
    for path in root.iterdir() if root.is_dir() else []:
        try:
            day = dt.date.fromisoformat(path.name)
        except ValueError:
            continue
        if (path / MANIFEST).exists():
            found.append((day, path))
    return sorted(found)


def to_keep(days: list[dt.date], keep_daily: int, keep_weekly: int) -> set[dt.date]:
    newest_first = sorted(days, reverse=True)
    keep = set(newest_first[: max(keep_daily, 0)])
    weeks: dict[tuple[int, int], dt.date] = {}
    for day in newest_first:
        weeks.setdefault(day.isocalendar()[:2], day)  # the newest backup of its week
    keep |= set(sorted(weeks.values(), reverse=True)[: max(keep_weekly, 0)])
    return keep


def apply_retention(root: Path, keep_daily: int, keep_weekly: int) -> list[Path]:
    """Delete the backups not kept and interrupted ones older than the newest complete one;
    returns what was deleted."""
    complete = backups(root)
    keep = to_keep([d for d, _ in complete], keep_daily, keep_weekly)
    deleted = [p for d, p in complete if d not in keep]
    newest = complete[-1][0] if complete else None
    for path in root.iterdir() if root.is_dir() else []:
        try:
            day = dt.date.fromisoformat(path.name)
        except ValueError:
            continue
        if newest and day < newest and not (path / MANIFEST).exists():
            deleted.append(path)
    for path in deleted:
        shutil.rmtree(path)
    return sorted(deleted)
