"""One `ingest-platform dev` / `services` per project at a time.

Two launchers on one project would open the same embedded data directories (DuckDB allows one
writer); the second one refuses with the first one's pid instead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import fasteners

from ingest_platform.errors import ConfigError


class ProjectLock:
    def __init__(self, state: Path):
        state.mkdir(parents=True, exist_ok=True)
        self._lock = fasteners.InterProcessLock(str(state / "launcher.lock"))
        self._info = state / "launcher.json"

    def acquire(self, command: str) -> None:
        if not self._lock.acquire(blocking=False):
            holder = self.holder()
            ui = f", UI {holder['ui']}" if holder.get("ui") else ""
            raise ConfigError(
                "ingest-platform is already running for this project "
                f"(pid {holder.get('pid', '?')}, `{holder.get('command', '?')}`{ui}). "
                "Use that one, or stop it (Ctrl-C in its terminal) before starting another."
            )
        self._info.write_text(json.dumps({"pid": os.getpid(), "command": command}))

    def update(self, **info) -> None:
        self._info.write_text(json.dumps({**self.holder(), **info}))

    def holder(self) -> dict:
        try:
            return json.loads(self._info.read_text())
        except (OSError, ValueError):
            return {}

    def release(self) -> None:
        self._info.unlink(missing_ok=True)
        self._lock.release()
