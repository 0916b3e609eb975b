"""The local BigQuery emulator (bqemulator), started with DuckDB's spatial extension switched off.

bqemulator refuses to start when it cannot `INSTALL spatial`, which needs the network. Offline
we skip that step: everything but GEOGRAPHY works. Run as a module, this file *is* the emulator
process; `start_emulator` launches it as a child process and waits until both ports answer.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ingest_platform.errors import ServiceUnavailableError

STARTUP_TIMEOUT = 60


@dataclass
class EmulatorProcess:
    process: subprocess.Popen
    rest_endpoint: str  # http://127.0.0.1:9050, for google.cloud.bigquery.Client
    grpc_endpoint: str  # 127.0.0.1:9060, for BigQueryWriteClient
    log_path: Path | None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_emulator(
    rest_port: int, grpc_port: int, data_dir: Path | None, log_path: Path | None
) -> EmulatorProcess:
    """Start the emulator on loopback; persistent in `data_dir`, or in memory when it is None."""
    args = [
        sys.executable,
        "-m",
        __name__,
        "--rest-port",
        str(rest_port),
        "--grpc-port",
        str(grpc_port),
    ]
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
        args += ["--data-dir", str(data_dir)]
    log_file = open(log_path, "ab") if log_path else None
    try:
        process = subprocess.Popen(
            args,
            stdout=log_file or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # A terminal's Ctrl-C must not stop it under Dagster: the launcher stops it last.
            start_new_session=True,
        )
    finally:
        if log_file:
            log_file.close()
    emulator = EmulatorProcess(
        process, f"http://127.0.0.1:{rest_port}", f"127.0.0.1:{grpc_port}", log_path
    )
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:] if log_path else ""
            raise ServiceUnavailableError(
                f"The BigQuery emulator exited during startup (code {process.returncode}).\n{tail}"
            )
        if _rest_ready(emulator.rest_endpoint) and _port_open(grpc_port):
            return emulator
        time.sleep(0.2)
    emulator.stop()
    raise ServiceUnavailableError(
        f"The BigQuery emulator did not answer within {STARTUP_TIMEOUT}s; see {log_path}."
    )


def _rest_ready(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/healthz", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _run(argv: list[str]) -> None:
    import argparse

    from bqemulator.cli import main as bqemulator_main
    from bqemulator.storage.engine import DuckDBEngine

    parser = argparse.ArgumentParser(prog="bigquery_emulator")
    parser.add_argument("--rest-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--data-dir")
    options = parser.parse_args(argv)

    def skip_spatial(engine: DuckDBEngine) -> None:
        """GEOGRAPHY is unsupported locally: the spatial extension cannot be downloaded offline."""

    DuckDBEngine._load_spatial = skip_spatial  # type: ignore[method-assign,assignment]
    start = [
        "start",
        "--rest-port",
        str(options.rest_port),
        "--grpc-port",
        str(options.grpc_port),
        "--log-level",
        "warning",
        "--log-format",
        "console",
    ]
    start += ["--data-dir", options.data_dir] if options.data_dir else ["--ephemeral"]
    bqemulator_main(start, standalone_mode=True)


if __name__ == "__main__":
    _run(sys.argv[1:])
