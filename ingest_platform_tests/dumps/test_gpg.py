"""Encrypted dumps: decrypt with the key from INGEST_GPG_HOME; a wrong key is a DumpError."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from ingest_platform.dumps import open_dump
from ingest_platform.errors import DumpError
from ingest_platform_tests.conftest import make_zip

pytestmark = pytest.mark.skipif(
    shutil.which("gpg") is None, reason="needs the gpg binary (apt-get install gnupg)"
)


@pytest.fixture
def new_keyring():
    """Makes GnuPG homes with one key each; stops their gpg-agents afterwards (they outlive gpg)."""
    import gnupg

    homes = []

    def make(home, email):
        home.mkdir()
        homes.append(home)
        gpg = gnupg.GPG(gnupghome=str(home))
        key = gpg.gen_key(
            gpg.gen_key_input(
                name_email=email, passphrase="secret", key_type="RSA", key_length=1024
            )
        )
        assert key.fingerprint
        return gpg, key.fingerprint

    yield make
    for home in homes:
        subprocess.run(
            ["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"],
            check=False,
            capture_output=True,
        )


def test_encrypted_dump_round_trip_and_wrong_key(tmp_path, monkeypatch, new_keyring):
    gpg, fingerprint = new_keyring(tmp_path / "right", "right@example.com")
    schema = json.dumps({"columns": [{"name": "a", "type": "text"}, {"name": "b", "type": "int"}]})
    plain = make_zip(tmp_path / "crm_3.zip", {"t.json": schema, "t.dat": "x\t1\n"})
    encrypted = tmp_path / "crm_3.zip.gpg"
    with open(plain, "rb") as source:
        result = gpg.encrypt_file(
            source, [fingerprint], output=str(encrypted), always_trust=True, armor=False
        )
    assert result.ok, result.status

    monkeypatch.setenv("INGEST_GPG_HOME", str(tmp_path / "right"))
    monkeypatch.setenv("INGEST_GPG_PASSPHRASE", "secret")
    monkeypatch.setenv("INGEST_DECRYPT_DIR", str(tmp_path))
    with open_dump(encrypted, dialect="mssql") as dump:
        assert (dump.app, dump.version) == ("crm", "3")
        assert b"".join(dump.iter_copy_chunks("t")) == b"x\t1\n"
        decrypted = dump.archive_path
        assert decrypted.exists()
    assert not decrypted.exists()

    new_keyring(tmp_path / "wrong", "wrong@example.com")
    monkeypatch.setenv("INGEST_GPG_HOME", str(tmp_path / "wrong"))
    with pytest.raises(DumpError, match="decrypt"):
        open_dump(encrypted, dialect="mssql")
