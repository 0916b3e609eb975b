"""MySQL character sets as Python codecs, for text columns a data file holds in their own charset.

``SELECT ... INTO OUTFILE`` without ``CHARACTER SET``, and so ``mysqldump --tab`` without
``--default-character-set``, writes each column's bytes as stored: a latin1 column in latin1, a
utf8mb4 column in UTF-8, in the same file. The schema reader records each text column's codec
(``Column.encoding``) and the per-row path decodes that column's bytes with it.

Only charsets in which bytes below 0x80 are ASCII can be split into fields: in UTF-16, Shift-JIS
or GBK a byte of a multi-byte character can be a TAB, a LF or a backslash, which MySQL does not
escape. Loading such a column is refused with the advice to export with
``--default-character-set=utf8mb4`` (then every column is UTF-8: ``column_charsets = false``).

MySQL's ``latin1`` is Windows-1252, except that the five bytes cp1252 leaves undefined (0x81,
0x8D, 0x8F, 0x90, 0x9D) are the C1 controls of the same number; Python has no such codec, so this
module registers it as ``mysql-latin1`` (import it before decoding).
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ingest_platform.dumps.dialect import FileFormat
    from ingest_platform.dumps.schema import Column

MYSQL_LATIN1 = "mysql-latin1"

# MySQL charset -> Python codec; None: the bytes are UTF-8 (or its ASCII subset) already.
CODECS: dict[str, str | None] = {
    "utf8": None,
    "utf8mb3": None,
    "utf8mb4": None,
    "ascii": None,
    "latin1": MYSQL_LATIN1,
    "latin2": "iso8859-2",
    "latin5": "iso8859-9",
    "latin7": "iso8859-13",
    "greek": "iso8859-7",
    "hebrew": "iso8859-8",
    "cp1250": "cp1250",
    "cp1251": "cp1251",
    "cp1256": "cp1256",
    "cp1257": "cp1257",
    "cp850": "cp850",
    "cp852": "cp852",
    "cp866": "cp866",
    "koi8r": "koi8-r",
    "koi8u": "koi8-u",
    "macroman": "mac-roman",
    "macce": "mac-latin2",
    "tis620": "tis-620",
    "ujis": "euc-jp",
    "euckr": "euc-kr",
    "gb2312": "gb2312",
}
# Multi-byte charsets whose bytes can look like TAB, LF or backslash: their files cannot be split.
UNSPLITTABLE = {
    "ucs2": "utf-16-be",
    "utf16": "utf-16-be",
    "utf16le": "utf-16-le",
    "utf32": "utf-32-be",
    "sjis": "shift_jis",
    "cp932": "cp932",
    "gbk": "gbk",
    "gb18030": "gb18030",
    "big5": "big5",
}


def codec_of(charset: str) -> str | None:
    """Python codec of a MySQL charset (None: UTF-8); ValueError for one Python cannot decode."""
    name = charset.lower()
    if name in CODECS:
        return CODECS[name]
    if name in UNSPLITTABLE:
        return UNSPLITTABLE[name]
    raise ValueError(
        f"CHARACTER SET {name} has no Python codec; export the dump with "
        "mysqldump --default-character-set=utf8mb4 and set column_charsets to false"
    )


def recoded_columns(file_format: FileFormat, columns: Sequence[Column]) -> list[int]:
    """Indexes of the columns whose bytes are decoded with their own codec, not the file's.

    Raises ValueError when a column's charset makes the file impossible to split into fields.
    """
    if not file_format.column_charsets:
        return []
    recoded = [i for i, c in enumerate(columns) if c.encoding]
    for index in recoded:
        if columns[index].encoding in UNSPLITTABLE.values():
            raise ValueError(
                f"column {columns[index].name!r} is written in {columns[index].encoding}, whose "
                "bytes can look like tabs, newlines and backslashes, which MySQL does not escape; "
                "export with mysqldump --default-character-set=utf8mb4 and set "
                '"column_charsets": false for the table in manifest.json'
            )
    return recoded


def charset_of_collation(collation: str) -> str | None:
    """``latin1_swedish_ci`` -> ``latin1``; ``binary`` -> ``binary``; None when unknown."""
    name = collation.lower()
    if name == "binary":
        return "binary"
    known = sorted([*CODECS, *UNSPLITTABLE], key=len, reverse=True)
    return next((c for c in known if name.startswith(c + "_")), None)


def _mysql_latin1_table() -> str:
    table = []
    for byte in range(256):
        try:
            table.append(bytes([byte]).decode("cp1252"))
        except UnicodeDecodeError:
            table.append(chr(byte))  # MySQL maps cp1252's five holes to the C1 control
    return "".join(table)


_DECODING_TABLE = _mysql_latin1_table()
_ENCODING_TABLE = codecs.charmap_build(_DECODING_TABLE)


class _MysqlLatin1(codecs.Codec):
    def encode(self, text, errors="strict"):
        return codecs.charmap_encode(text, errors, _ENCODING_TABLE)

    def decode(self, data, errors="strict"):
        return codecs.charmap_decode(data, errors, _DECODING_TABLE)


def _search(name: str) -> codecs.CodecInfo | None:
    if name.replace("_", "-") != MYSQL_LATIN1:
        return None
    codec = _MysqlLatin1()
    return codecs.CodecInfo(codec.encode, codec.decode, name=MYSQL_LATIN1)


codecs.register(_search)
