"""Loopback ports: use the preferred one when free, else pick a free one and say so."""

from __future__ import annotations

import socket

from ingest_platform.errors import ConfigError


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    # A server without SO_REUSEADDR semantics may still hold it on another address.
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) != 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def choose_port(preferred: int, what: str, *, explicit: bool, say) -> int:
    """`preferred` if free. A port the user asked for must be free; a default one is replaced."""
    if port_is_free(preferred):
        return preferred
    if explicit:
        raise ConfigError(
            f"Port {preferred} for {what} is already taken by another program; choose another one."
        )
    port = free_port()
    say(f"Port {preferred} for {what} is taken; using {port} instead.")
    return port
