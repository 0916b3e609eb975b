"""Names derived from a dump's app and table names for Dagster and BigQuery, whose alphabets are
narrower than PostgreSQL's (which holds any name).

A name that already fits is kept; any other is transliterated to ASCII, each run of other
characters becomes "_", and "_" + 8 hex digits of the original's SHA-256 are appended:
"Order Details" -> "Order_Details_<hash>", "kunde_ü_客户" -> "kunde_u__<hash>". So two different
names never derive the same name (a kept name would have to end in another name's hash), and
the UI still reads like the original; the exact name is in each asset's description and
`dagster/table_name`.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence

NAME_CHARACTERS = "A-Za-z0-9_"  # Dagster's op, job, group and check names
KEY_CHARACTERS = "A-Za-z0-9_.-"  # asset key parts: Dagster turns "-" and "." into "_" for ops
TAG_CHARACTERS = "A-Za-z0-9_.-"
MAX_TAG_LENGTH = 63


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def distinct(text: str, fitted: str) -> str:
    """`fitted` (text made to fit an alphabet) if it is `text` unchanged, else fitted + a hash."""
    return fitted if fitted == text else f"{fitted}_{short_hash(text)}"


def dagster_name(
    text: str, characters: str = NAME_CHARACTERS, max_length: int | None = None
) -> str:
    """`text` if it is made of `characters` (and not longer than max_length), else its
    sanitized form with a hash."""
    if re.fullmatch(f"[{characters}]+", text) and (max_length is None or len(text) <= max_length):
        return text
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    fitted = re.sub(f"[^{characters}]+", "_", ascii_text)
    if max_length is not None:
        fitted = fitted[: max_length - 9]
    return f"{fitted}_{short_hash(text)}"


def key_part(name: str) -> str:
    """An asset key part for an app or table name."""
    return dagster_name(name, KEY_CHARACTERS)


def tag_value(text: str) -> str:
    return dagster_name(text, TAG_CHARACTERS, MAX_TAG_LENGTH)


def node_name(prefix: str, key_path: Sequence[str]) -> str:
    """An op or check name for an asset key: `prefix` + the key's parts joined by "__" (Dagster's
    python identifier of the key, which maps "-" and "." to "_", so "a-b" and "a_b" would clash)."""
    return f"{prefix}_{dagster_name('__'.join(key_path))}"
