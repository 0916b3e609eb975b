"""Encrypted dumps: decrypted with the key from INGEST_GPG_HOME into a private directory that is
removed on every exit path, and at the next start when its process was killed."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import zipfile

import psutil
import pytest

from ingest_platform.dumps import decrypted, open_dump
from ingest_platform.dumps.decrypted import new_decrypt_dir, remove_stale_decrypted
from ingest_platform.errors import ConfigError, DumpError
from ingest_platform_tests.conftest import PROJECT_DIR, encrypt, make_zip

SCHEMA = json.dumps({"columns": [{"name": "a", "type": "text"}, {"name": "b", "type": "int"}]})


@pytest.fixture
def keyed(tmp_path, monkeypatch, new_keyring):
    """A key in INGEST_GPG_HOME, decrypted copies under tmp_path/decrypted; the gpg handle."""
    gpg, fingerprint = new_keyring(tmp_path / "right", "right@example.com")
    monkeypatch.setenv("INGEST_GPG_HOME", str(tmp_path / "right"))
    monkeypatch.setenv("INGEST_GPG_PASSPHRASE", "secret")
    monkeypatch.setenv("INGEST_DECRYPT_DIR", str(tmp_path / "decrypted"))
    return gpg, fingerprint


def test_encrypted_dump_round_trip_and_wrong_key(tmp_path, monkeypatch, new_keyring, keyed):
    plain = make_zip(tmp_path / "crm_3.zip", {"t.json": SCHEMA, "t.dat": "x\t1\n"})
    encrypted = encrypt(*keyed, plain, tmp_path / "crm_3.zip.gpg")
    decrypted_root = tmp_path / "decrypted"
    with open_dump(encrypted, dialect="mssql") as dump:
        assert (dump.app, dump.version) == ("crm", "3")
        assert b"".join(dump.iter_copy_chunks("t")) == b"x\t1\n"
        copy = dump.archive_path
        assert copy.exists() and copy.parent.parent == decrypted_root
        assert stat.S_IMODE(copy.parent.stat().st_mode) == 0o700
    assert not copy.exists()
    assert list(decrypted_root.iterdir()) == []

    # A failed decryption leaves nothing behind: no plaintext, no empty directory.
    new_keyring(tmp_path / "wrong", "wrong@example.com")
    monkeypatch.setenv("INGEST_GPG_HOME", str(tmp_path / "wrong"))
    for _ in range(2):
        with pytest.raises(DumpError, match="decrypt"):
            open_dump(encrypted, dialect="mssql")
    monkeypatch.setenv("INGEST_GPG_BINARY", str(tmp_path / "no-such-gpg"))
    with pytest.raises(ConfigError, match="INGEST_GPG_BINARY"):
        open_dump(encrypted, dialect="mssql")
    assert list(decrypted_root.iterdir()) == []


def test_default_decrypt_root_is_private_and_refused_when_not_ours(tmp_path, monkeypatch, keyed):
    """Without INGEST_DECRYPT_DIR: a fixed 0700 directory under the system temp, whose dumps'
    directories name their process; a symlink in its place is refused before anything is
    decrypted."""
    monkeypatch.delenv("INGEST_DECRYPT_DIR")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    plain = make_zip(tmp_path / "crm_3.zip", {"t.json": SCHEMA, "t.dat": "x\t1\n"})
    encrypted = encrypt(*keyed, plain, tmp_path / "crm_3.zip.gpg")
    root = tmp_path / "tmp" / f"ingest_platform_decrypted-{os.getuid()}"
    with open_dump(encrypted, dialect="mssql") as dump:
        own = dump.archive_path.parent
        assert own.parent == root and own.name.startswith(f"ingest_dump_{os.getpid()}_")
        assert stat.S_IMODE(root.stat().st_mode) == stat.S_IMODE(own.stat().st_mode) == 0o700
    assert list(root.iterdir()) == []

    root.rmdir()
    (tmp_path / "elsewhere").mkdir()
    root.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="INGEST_DECRYPT_DIR"):
        open_dump(encrypted, dialect="mssql")
    assert list((tmp_path / "elsewhere").iterdir()) == []


# A reader that opens (decrypts) the dump named on its command line; it never gets past that here.
READER = "import sys; from ingest_platform.dumps import open_dump; open_dump(sys.argv[1], 'mssql')"


def test_reader_killed_mid_decryption_leaves_plaintext_that_the_next_start_removes(tmp_path, keyed):
    """kill -9 of a process while gpg writes the plaintext: nothing can clean up then, so the
    next decryption (in any process) removes the directory of the dead one."""
    payload = os.urandom(4 << 20)  # incompressible: gpg writes plaintext as it goes
    plain = make_zip(tmp_path / "crm_3.zip", {"t.json": SCHEMA, "t.dat": payload})
    ciphertext = encrypt(*keyed, plain, tmp_path / "crm_3.zip.gpg").read_bytes()
    # The dump arrives through a FIFO that delivers half of it and then stalls: the reader is
    # caught mid-decryption every time, not by luck of timing.
    fifo = tmp_path / "stalled" / "crm_3.zip.gpg"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    stall = threading.Event()

    def deliver_half() -> None:
        try:
            with open(fifo, "wb") as pipe:
                pipe.write(ciphertext[: len(ciphertext) // 2])
                pipe.flush()
                stall.wait(120)
        except BrokenPipeError:  # the reader was killed
            pass

    writer = threading.Thread(target=deliver_half, daemon=True)
    writer.start()
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(fifo)],
        env={**os.environ, "PYTHONPATH": str(PROJECT_DIR)},
        start_new_session=True,
    )
    root = tmp_path / "decrypted"
    try:
        deadline = time.monotonic() + 60
        while not any(f.stat().st_size for f in root.glob("*/*")):
            assert reader.poll() is None and time.monotonic() < deadline, "no plaintext appeared"
            time.sleep(0.05)
        reader.kill()
        reader.wait()
    finally:
        stall.set()
        try:
            os.killpg(reader.pid, signal.SIGKILL)  # its gpg, which would stop by itself
        except ProcessLookupError:
            pass
    writer.join(10)
    [left] = root.iterdir()
    assert left.name.startswith(f"ingest_dump_{reader.pid}_")
    [partial] = left.iterdir()
    assert 0 < partial.stat().st_size < len(plain.read_bytes())
    assert plain.read_bytes().startswith(partial.read_bytes())  # real plaintext

    with open_dump(tmp_path / "crm_3.zip.gpg", dialect="mssql") as dump:  # the next start
        assert [p.name for p in root.iterdir()] == [dump.archive_path.parent.name]
        with zipfile.ZipFile(dump.archive_path) as archive:
            assert archive.read("t.dat") == payload
    assert list(root.iterdir()) == []


def test_only_directories_of_processes_gone_from_this_host_are_removed(tmp_path, monkeypatch):
    """A running owner keeps its plaintext; a pid now used by another process, or a process that
    ended, does not; another host's directories (shared storage) and other files are left alone."""
    monkeypatch.setenv("INGEST_DECRYPT_DIR", str(tmp_path))
    live = new_decrypt_dir()
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    started = int(psutil.Process(ended.pid).create_time())
    ended.wait()
    host = decrypted._host()
    gone = tmp_path / f"ingest_dump_{ended.pid}_{started}_{host}_a1"
    reused = tmp_path / f"ingest_dump_{os.getpid()}_{started - 3600}_{host}_a2"
    other_host = tmp_path / f"ingest_dump_{ended.pid}_{started}_{host}x_a3"
    unrelated = tmp_path / "notes"
    for directory in (gone, reused, other_host, unrelated):
        directory.mkdir()
        (directory / "dump.zip").write_bytes(b"plaintext")
    assert sorted(remove_stale_decrypted()) == sorted([gone, reused])
    assert sorted(tmp_path.iterdir()) == sorted([live, other_host, unrelated])
