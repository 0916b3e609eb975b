"""What every benchmark shares: load averages, interleaved rounds, peers and why one is missing,
the benchmark table as CSV and Arrow, and the result table.

On a shared machine one run's timings move with the neighbours' load, so each benchmark prints the
load average before and after, runs its methods in rounds (each round every method once, the
order rotated from round to round) and reports the best time of each method together with the
ratio to ours within each round: those ratios are what a noisy machine still says.
"""

from __future__ import annotations

import importlib
import os
import random
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dump_load import BENCH_COLUMNS, _bench_rows

from ingest_platform.demo.dumps import DemoTable, data_lines


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return (
        f"load average {one:.2f} (5 min {five:.2f}, 15 min {fifteen:.2f}) on {os.cpu_count()} CPUs"
    )


def say_load(when: str) -> None:
    print(f"{when}: {load_average()}", flush=True)


class NotAvailable(Exception):
    """A method that cannot run here; the message says why (shown as "not available: ...")."""


@dataclass
class Method:
    name: str
    run: Callable[[], float]  # does its own untimed setup, returns the timed seconds
    times: list[float] = field(default_factory=list)
    missing: str | None = None  # why it cannot run

    @property
    def best(self) -> float | None:
        return min(self.times) if self.times else None


def interleave(methods: list[Method], rounds: int, label: str = "") -> None:
    """Each round runs every available method once, the order rotated by one each round."""
    for number in range(rounds):
        shift = number % max(len(methods), 1)
        for method in methods[shift:] + methods[:shift]:
            if method.missing:
                continue
            try:
                seconds = method.run()
            except NotAvailable as why:
                method.missing = str(why)
                print(f"  {label}{method.name}: not available: {why}", flush=True)
                continue
            method.times.append(seconds)
            print(
                f"  round {number + 1}: {label}{method.name}: {seconds:.2f} s "
                f"({os.getloadavg()[0]:.1f} load)",
                flush=True,
            )


def round_ratios(method: Method, reference: Method) -> str:
    """method's time / the reference's, per round ("1.32 1.28 1.40")."""
    pairs = zip(method.times, reference.times, strict=False)
    return " ".join(f"{a / b:.2f}" for a, b in pairs if b)


# ------------------------------------------------------------------------------------ peers


def python_peer(module: str, install: str) -> str | None:
    """None if `module` imports, else why not."""
    try:
        importlib.import_module(module)
    except ImportError as error:
        return f"{module} does not import ({error}); {install}"
    return None


def sling_binary() -> tuple[str | None, str | None]:
    """(path of the sling binary that the sling-linux-amd64 wheel carries, None) or (None, why).
    The `sling` package itself downloads its binary at first use, which fails offline."""
    try:
        from sling_linux_amd64 import SLING_BIN  # type: ignore[import-not-found]
    except ImportError:
        return None, "the sling-linux-amd64 wheel is not installed (pip install -e '.[bench]')"
    if not SLING_BIN or not Path(SLING_BIN).is_file():
        return None, f"the sling-linux-amd64 wheel has no binary for this machine ({SLING_BIN!r})"
    try:
        subprocess.run([SLING_BIN, "--version"], check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as error:
        return None, f"{SLING_BIN} --version fails: {error}"
    return SLING_BIN, None


def psql_binary() -> tuple[str | None, str | None]:
    path = shutil.which("psql")
    return (path, None) if path else (None, "no psql on PATH")


# ------------------------------------------------------------------------------------ data

CSV_FORMAT_VERSION = 1  # bump when the generated CSV changes, so cached files are rebuilt


def arrow_schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("id", pa.int64()),
            ("customer_id", pa.int32()),
            ("quantity", pa.int16()),
            ("amount", pa.decimal128(12, 2)),
            ("price", pa.decimal128(19, 4)),
            ("sku", pa.string()),
            ("description", pa.string()),
            ("created_at", pa.timestamp("us")),
            ("is_active", pa.bool_()),
            ("score", pa.float64()),
        ]
    )


def read_arrow(path: Path, streaming: bool = False):
    """The benchmark CSV as an Arrow table (or a streaming reader), with its declared types: an
    unquoted empty field is NULL, a quoted one an empty string, as PostgreSQL reads CSV."""
    import pyarrow.csv as pcsv

    convert = pcsv.ConvertOptions(
        column_types=arrow_schema(), strings_can_be_null=True, quoted_strings_can_be_null=False
    )
    if streaming:
        return pcsv.open_csv(path, convert_options=convert)
    return pcsv.read_csv(path, convert_options=convert)


def bench_csv(workdir: Path, rows: int, variant: str) -> Path:
    """`bench_<variant>_<rows>.csv` (cached): the benchmark table's rows with a header, as
    pyarrow writes CSV. "base" holds dump_load.py's rows; "update" the same ids with other values
    (another random seed), so an upsert of it updates every row."""
    import io

    import pyarrow.csv as pcsv

    path = workdir / f"bench_{variant}_{rows}.v{CSV_FORMAT_VERSION}.csv"
    if path.exists():
        return path
    started = time.perf_counter()
    rng = random.Random("bench/1" if variant == "base" else f"bench/{variant}")
    table = DemoTable("item_1", BENCH_COLUMNS, _bench_rows)
    text = "".join(data_lines(table, "mssql", _bench_rows(rng, rows, "")))
    schema = arrow_schema()
    arrow = pcsv.read_csv(
        io.BytesIO(text.encode()),
        read_options=pcsv.ReadOptions(column_names=schema.names),
        parse_options=pcsv.ParseOptions(delimiter="\t", quote_char=False),
        convert_options=pcsv.ConvertOptions(
            column_types=schema, strings_can_be_null=True, true_values=["1"], false_values=["0"]
        ),
    )
    partial = path.with_suffix(".partial")
    pcsv.write_csv(arrow, partial)
    partial.rename(path)
    print(f"  generated {path.name} in {time.perf_counter() - started:.0f} s", flush=True)
    return path


# ------------------------------------------------------------------------------------ output


def print_table(header: list[str], lines: list[list[str]], left: set[int]) -> None:
    table = [header] + lines
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for number, row in enumerate(table):
        print(
            "  ".join(
                cell.ljust(width) if i in left else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
        if number == 0:
            print("  ".join("-" * width for width in widths))
