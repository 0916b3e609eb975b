"""Stream one ZIP member, inflated by ISA-L (python-isal) instead of zlib.

Inflating is the largest single cost of reading a dump (~0.75 s per 125 MB with zlib, ~0.3 s
with ISA-L), and in a load it competes with the server for the same cores. Stored and deflated
members that are not encrypted (what dumps hold) are read here; anything else goes through
``zipfile``. As ``zipfile`` does, the CRC-32 is checked when the member ends, and a damaged or
truncated body raises ``zipfile.BadZipFile`` (the caller names the file).
"""

from __future__ import annotations

import struct
import zipfile

from isal import isal_zlib

_LOCAL_HEADER = struct.Struct(
    "<4s22xHH"
)  # signature, 22 bytes we do not need, name and extra lengths
_LOCAL_SIGNATURE = b"PK\x03\x04"
_READ_BYTES = 1 << 18
# isal's stub declares `error` an instance; it is the exception class.
INFLATE_ERRORS: tuple[type[Exception], ...] = (isal_zlib.error,)  # type: ignore[assignment]


def can_stream(info: zipfile.ZipInfo) -> bool:
    return (
        info.compress_type in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
        and not info.flag_bits & 0x1
    )


class MemberReader:
    """``read(size)`` returns at most `size` bytes of the member, b"" only at its end."""

    def __init__(self, path: str, info: zipfile.ZipInfo):
        self.info = info
        self.file = open(path, "rb")
        try:
            self.file.seek(info.header_offset)
            signature, name_length, extra_length = _LOCAL_HEADER.unpack(
                self.file.read(_LOCAL_HEADER.size)
            )
        except (OSError, struct.error) as error:
            self.file.close()
            raise zipfile.BadZipFile(
                f"cannot read the local header of {info.filename!r}: {error}"
            ) from error
        if signature != _LOCAL_SIGNATURE:
            self.file.close()
            raise zipfile.BadZipFile(f"bad local header of {info.filename!r}")
        self.file.seek(name_length + extra_length, 1)
        self.compressed_left = info.compress_size
        self.inflater = (
            isal_zlib.decompressobj(-15) if info.compress_type == zipfile.ZIP_DEFLATED else None
        )
        self.pending = b""  # compressed bytes read but not inflated yet
        self.crc = 0
        self.finished = False

    def read(self, size: int = -1) -> bytes:
        size = size if size > 0 else _READ_BYTES
        while not self.finished:
            data = self._next(size)
            if data:
                self.crc = isal_zlib.crc32(data, self.crc)
                return data
        return b""

    def _next(self, size: int) -> bytes:
        if not self.pending and self.compressed_left:
            self.pending = self.file.read(min(self.compressed_left, _READ_BYTES))
            if not self.pending:
                raise zipfile.BadZipFile(f"{self.info.filename!r} is truncated")
            self.compressed_left -= len(self.pending)
        if self.inflater is None:
            data, self.pending = self.pending[:size], self.pending[size:]
        else:
            data = self.inflater.decompress(
                self.pending, size
            )  # at most `size`: a zip bomb stays bounded
            self.pending = self.inflater.unconsumed_tail
        if (
            not data
            and not self.pending
            and (not self.compressed_left or self.inflater and self.inflater.eof)
        ):
            self._finish()
        return data

    def _finish(self) -> None:
        self.finished = True
        if self.inflater is not None and not self.inflater.eof:
            raise zipfile.BadZipFile(f"{self.info.filename!r} is truncated")
        if self.crc != self.info.CRC:
            raise zipfile.BadZipFile(f"Bad CRC-32 for file {self.info.filename!r}")

    def close(self) -> None:
        self.file.close()
