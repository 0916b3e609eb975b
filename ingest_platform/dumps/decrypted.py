"""Private directories for decrypted dumps: the plaintext never outlives the process that made it.

A ``.zip.gpg`` cannot be streamed: a ZIP's directory is at its end, and the load workers open the
archive by path. So it is decrypted to a file, in a directory of its own (mode 0700) under the
*decrypt root*: ``INGEST_DECRYPT_DIR``, default ``<system temp>/ingest_platform_decrypted-<uid>``
(created 0700; refused when it is a symlink or another user's). The directory's name records its
owner, the process that decrypted: ``ingest_dump_<pid>_<start time>_<host>_<random>`` (the host:
a decrypt directory on shared storage may serve several machines, whose pids say nothing here).

The owner removes the directory when the dump is closed, and on every error. A process killed
outright (SIGKILL, out of memory) cannot: so every decryption, and every start of
``ingest-platform dev``/``services``/``ingest``, first removes the directories whose owner no
longer runs (same pid and start time: a reused pid is another process).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import tempfile
from pathlib import Path

import psutil

from ingest_platform.errors import ConfigError

DECRYPT_DIR_ENV = "INGEST_DECRYPT_DIR"
_PREFIX = "ingest_dump_"
_OWNED = re.compile(rf"^{_PREFIX}(\d+)_(\d+)_([A-Za-z0-9-]+)_")


def new_decrypt_dir(environ=os.environ) -> Path:
    """A new private directory for one decrypted dump, owned by this process. The caller removes
    it (``shutil.rmtree``) in a ``finally``."""
    root = decrypt_root(environ, create=True)
    _remove_stale(root)
    me = psutil.Process()
    owner = f"{me.pid}_{int(me.create_time())}_{_host()}"
    return Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{owner}_", dir=root))


def remove_stale_decrypted(environ=os.environ) -> list[Path]:
    """Remove the decrypted dumps of processes that no longer run; the directories removed."""
    try:
        root = decrypt_root(environ, create=False)
    except ConfigError:  # not ours, so nothing of ours is in it (a decryption says so)
        return []
    return _remove_stale(root) if root.is_dir() else []


def decrypt_root(environ=os.environ, create: bool = True) -> Path:
    configured = environ.get(DECRYPT_DIR_ENV)
    if configured:  # the user's choice; each dump's own directory is 0700 anyway
        root = Path(configured)
        if create:
            root.mkdir(parents=True, exist_ok=True)
        return root
    # A fixed name in a shared temp directory: make sure nobody else prepared it for us.
    uid = os.getuid() if hasattr(os, "getuid") else None
    name = "ingest_platform_decrypted" if uid is None else f"ingest_platform_decrypted-{uid}"
    root = Path(tempfile.gettempdir()) / name  # (Windows' temp directory is the user's own)
    if create:
        root.mkdir(mode=0o700, exist_ok=True)
    elif not root.exists():
        return root
    info = root.lstat()
    if not stat.S_ISDIR(info.st_mode) or (uid is not None and info.st_uid != uid):
        raise ConfigError(
            f"{root} is not a directory of this user's, so decrypted dumps cannot go there: "
            f"remove it, or set {DECRYPT_DIR_ENV} to a private directory."
        )
    if info.st_mode & 0o077:
        root.chmod(0o700)
    return root


def _remove_stale(root: Path) -> list[Path]:
    removed = []
    for directory in root.iterdir():
        owner = _OWNED.match(directory.name)
        if owner and owner[3] == _host() and not _runs(int(owner[1]), int(owner[2])):
            shutil.rmtree(directory, ignore_errors=True)
            if not directory.exists():
                removed.append(directory)
    return removed


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "localhost"


def _runs(pid: int, started: int) -> bool:
    try:
        process = psutil.Process(pid)
        return abs(process.create_time() - started) < 2 and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # cannot tell: leave it
        return True
