"""Connections of the PostgreSQL-protocol sinks: libpq options with bounded waits, and the stall hook.

Every connection has bounded waits: `connect_timeout`, TCP keepalives and `tcp_user_timeout` (a
dead peer or a dropped route is noticed within about a minute) and a `statement_timeout`. A server
that is up but stopped answering (SIGSTOP) defeats all of these (its kernel still acknowledges the
keepalives, and its timers are stopped): the run's no-progress watchdog (`core/watchdog.py`)
catches that, and `SocketGuard` shuts the run's sockets down so every blocked read returns.

Connections use TLS when the server offers it (`sslmode=prefer`); `has_self_signed_cert` insists
on TLS without verifying the certificate (`sslmode=require`). This module opens no connection.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Mapping
from typing import Any

from batchexports.core import watchdog

CONNECT_TIMEOUT = 10
# TCP keepalives: the first probe after 30 s idle, then every 10 s, 3 unanswered: dead in ~1 min.
KEEPALIVES_IDLE, KEEPALIVES_INTERVAL, KEEPALIVES_COUNT = 30, 10, 3
TCP_USER_TIMEOUT_MS = 60_000  # data sent but unacknowledged for this long: the connection is dead
# One statement (a segment's COPY, a merge) may run this long; the watchdog waits as long in a merge.
STATEMENT_TIMEOUT_S = 3600
APPLICATION_NAME = "batchexports"


def connection_options(config: Mapping[str, Any], *, statement_timeout_in_options: bool) -> dict[str, Any]:
    """psycopg's `connect()` keywords for `config` (host, port, database, user, password, has_self_signed_cert).

    `statement_timeout_in_options`: sent as libpq `options`; a server that rejects them (Redshift)
    gets it by `SET` after connecting instead."""
    timeout = {"options": f"-c statement_timeout={STATEMENT_TIMEOUT_S * 1000}"}
    return {
        "host": config["host"],
        "port": int(config.get("port") or 5432),
        "dbname": config["database"],
        "user": config["user"],
        "password": config.get("password") or "",
        "connect_timeout": CONNECT_TIMEOUT,
        "keepalives": 1,
        "keepalives_idle": KEEPALIVES_IDLE,
        "keepalives_interval": KEEPALIVES_INTERVAL,
        "keepalives_count": KEEPALIVES_COUNT,
        "tcp_user_timeout": TCP_USER_TIMEOUT_MS,
        **(timeout if statement_timeout_in_options else {}),
        "application_name": APPLICATION_NAME,
        # Encrypted whenever the server offers TLS; a self-signed certificate insists on TLS
        # without verifying the certificate (libpq verifies only with verify-ca/verify-full).
        "sslmode": "require" if config.get("has_self_signed_cert") else "prefer",
    }


def shut_down(duplicate: socket.socket) -> None:
    """End a connection at once: a blocked read or write on any descriptor of the socket returns."""
    with contextlib.suppress(OSError):
        duplicate.shutdown(socket.SHUT_RDWR)


class SocketGuard:
    """Lets the run's watchdog unblock the run's connections: a duplicate of each one's socket is shut
    down if the run stalls (a duplicate, so that the descriptor cannot be reused by another socket meanwhile)."""

    def __init__(self) -> None:
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def watch(self, connection: Any, dog: watchdog.Watchdog | None) -> None:
        fileno = getattr(getattr(connection, "pgconn", None), "socket", None)
        if dog is None or not isinstance(fileno, int) or fileno < 0:
            return
        duplicate = socket.socket(fileno=os.dup(fileno))
        with self._lock:
            self._sockets.append(duplicate)
        dog.on_stall(lambda: shut_down(duplicate))

    def release(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for duplicate in sockets:
            with contextlib.suppress(OSError):
                duplicate.close()
