"""Which PostgreSQL type holds a column's values from two dump versions: the widening rules.

Pure functions, no connection. ``parse_pg_type`` reads a type as a dialect map spells it
(``varchar(50)``, ``int``, ``datetime2`` mapped to ``timestamp(7)``) or as PostgreSQL's
``format_type`` prints it (``character varying(50)``, ``timestamp(3) without time zone``) into one
canonical ``PgType``; ``common_type`` returns the narrowest type that holds both, or None.

=================  ======================================================================
family             rule (a version narrower than the parent changes nothing)
=================  ======================================================================
integers           smallint < integer < bigint
exact numbers      an integer joins numeric(p,s) with its digits (smallint 5, integer 10,
                   bigint 19); numeric(p1,s1) + numeric(p2,s2) -> numeric(max(p-s) + max(s),
                   max(s)); unconstrained numeric (or more than 1000 digits) -> numeric
floats             real < double precision
strings            char(n) < varchar(m) < text; lengths take the maximum; a missing length
                   (varchar, bpchar) means unlimited. char -> varchar drops trailing blanks,
                   which char comparisons ignore anyway.
date and time      date < timestamp(p); timestamp, timestamptz, time, timetz, interval: the
                   larger fractional-seconds precision (none given = the default, 6, wins)
anything else      the same type only
=================  ======================================================================

Incompatible on purpose (``common_type`` returns None, the loader raises SchemaError):
integers/numeric vs real/double (exact vs approximate), numbers or dates vs text (text would hide
bad values and break arithmetic), timestamp vs timestamptz and date vs timestamptz (needs a time
zone decision), bytea vs text (needs an encoding), boolean vs integer, arrays of different types.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Spellings of the same type -> the canonical name used in DDL.
_ALIASES = {
    "int2": "smallint",
    "smallint": "smallint",
    "int": "integer",
    "int4": "integer",
    "integer": "integer",
    "int8": "bigint",
    "bigint": "bigint",
    "decimal": "numeric",
    "numeric": "numeric",
    "float4": "real",
    "real": "real",
    "float8": "double precision",
    "double precision": "double precision",
    "character varying": "varchar",
    "varchar": "varchar",
    "character": "char",
    "char": "char",
    "bpchar": "char",
    "bool": "boolean",
    "boolean": "boolean",
    "timestamp": "timestamp",
    "timestamptz": "timestamptz",
    "time": "time",
    "timetz": "timetz",
}
_WITH_TIME_ZONE = {"timestamp": "timestamptz", "time": "timetz"}

INTEGER_DIGITS = {"smallint": 5, "integer": 10, "bigint": 19}
_INTEGER_RANK = ["smallint", "integer", "bigint"]
_STRINGS = {"char", "varchar", "text"}
_SECONDS_PRECISION = {"timestamp", "timestamptz", "time", "timetz", "interval"}
MAX_NUMERIC_PRECISION = 1000  # PostgreSQL's limit for numeric(p,s)
MAX_SECONDS_PRECISION = 6  # PostgreSQL rounds timestamp(7) (SQL Server datetime2) to 6

# Letters, digits, underscores, single spaces and dots only: the spelling is safe to put into DDL.
_TYPE_PATTERN = re.compile(
    r"(?P<name>[a-z_][a-z0-9_]*(?:[ .][a-z_][a-z0-9_]*)*?)"
    r"(?: ?\( ?(?P<mods>-?\d+(?: ?, ?-?\d+)?) ?\))?"
    r"(?: (?P<tz>with(?:out)? time zone))?"
    r"(?P<arrays>(?: ?\[\d*\])*)"
)


@dataclass(frozen=True)
class PgType:
    """A PostgreSQL type in canonical form; ``str()`` is its DDL spelling."""

    name: str  # canonical name, e.g. "integer", "varchar", "timestamptz"
    modifiers: tuple[int, ...] = ()  # (length,), (precision, scale) or (seconds precision,)
    array_dims: int = 0

    def __str__(self) -> str:
        mods = f"({','.join(map(str, self.modifiers))})" if self.modifiers else ""
        name = (
            "bpchar" if self.name == "char" and not self.modifiers else self.name
        )  # bare char = char(1)
        return f"{name}{mods}{'[]' * self.array_dims}"


def parse_pg_type(text: str) -> PgType:
    """Canonical form of a type spelling; ValueError if it is not a plain type name."""
    spelled = " ".join(text.lower().split())
    match = _TYPE_PATTERN.fullmatch(spelled)
    if not match:
        raise ValueError(f"{text!r} is not a PostgreSQL type spelling this platform accepts")
    name = _ALIASES.get(match["name"], match["name"])
    mods = tuple(int(m) for m in match["mods"].split(",")) if match["mods"] else ()
    if match["tz"] == "with time zone":
        if name not in _WITH_TIME_ZONE:
            raise ValueError(f"{text!r}: only timestamp and time take 'with time zone'")
        name = _WITH_TIME_ZONE[name]
    arrays = match["arrays"].count("[")
    if name == "float":  # float(p): PostgreSQL picks real up to 24 bits, else double
        name, mods = ("real" if mods and mods[0] <= 24 else "double precision"), ()
    elif name == "numeric" and len(mods) == 1:
        mods = (mods[0], 0)
    elif name == "char" and not mods and match["name"] != "bpchar":
        mods = (1,)  # char means char(1); bpchar is blank-padded without a limit
    elif name in _SECONDS_PRECISION and mods:
        mods = (min(mods[0], MAX_SECONDS_PRECISION),)
    return PgType(name, mods, arrays)


def common_type(a: PgType, b: PgType) -> PgType | None:
    """The narrowest type holding every value of `a` and of `b`, or None if there is none."""
    if a == b:
        return a
    if a.array_dims or b.array_dims:
        return None
    names = {a.name, b.name}
    if names <= set(INTEGER_DIGITS):
        return max(a, b, key=lambda t: _INTEGER_RANK.index(t.name))
    if names <= set(INTEGER_DIGITS) | {"numeric"}:
        return _common_numeric(a, b)
    if names == {"real", "double precision"}:
        return PgType("double precision")
    if names <= _STRINGS:
        return _common_string(a, b)
    if names == {"date", "timestamp"}:
        return a if a.name == "timestamp" else b
    if len(names) == 1 and a.name in _SECONDS_PRECISION:
        return _pick(a, b, PgType(a.name, _max_or_unlimited(a, b)))
    return None


def _common_numeric(a: PgType, b: PgType) -> PgType:
    a_digits, b_digits = _integer_digits_and_scale(a), _integer_digits_and_scale(b)
    if a_digits is None or b_digits is None:
        return _pick(a, b, PgType("numeric"))
    integer_digits = max(a_digits[0], b_digits[0])
    scale = max(a_digits[1], b_digits[1])
    if integer_digits + scale > MAX_NUMERIC_PRECISION:
        return _pick(a, b, PgType("numeric"))
    return _pick(a, b, PgType("numeric", (integer_digits + scale, scale)))


def _integer_digits_and_scale(t: PgType) -> tuple[int, int] | None:
    if t.name in INTEGER_DIGITS:
        return INTEGER_DIGITS[t.name], 0
    if not t.modifiers:
        return None  # unconstrained numeric
    precision, scale = t.modifiers
    return precision - scale, scale


def _common_string(a: PgType, b: PgType) -> PgType:
    if "text" in (a.name, b.name):
        return PgType("text")
    name = "char" if a.name == b.name == "char" else "varchar"
    return _pick(a, b, PgType(name, _max_or_unlimited(a, b)))


def _max_or_unlimited(a: PgType, b: PgType) -> tuple[int, ...]:
    """The larger single modifier; none at all if either has none (= unlimited or default)."""
    if not a.modifiers or not b.modifiers:
        return ()
    return (max(a.modifiers[0], b.modifiers[0]),)


def _pick(a: PgType, b: PgType, result: PgType) -> PgType:
    # Return an input when it already is the result, so callers can compare with `is`/`==`.
    return a if result == a else b if result == b else result
