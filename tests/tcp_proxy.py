"""A TCP proxy a test can cut and restore, and `outage`: a database outage without touching
the server.

`cut` closes every connection that goes through it and refuses new ones (they are accepted and
closed at once, as a server that went away would); `freeze` accepts new ones and never answers
(as a host behind a network that drops packets); `restore` lets connections through again.
"""

from __future__ import annotations

import socket
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target`` until cut."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.up = True
        self.frozen = False
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="tcp-proxy").start()

    def cut(self) -> None:
        """Drop every connection, and refuse new ones until `restore`."""
        with self._lock:
            self.up = False
            for sock in self._sockets:
                _close(sock)
            self._sockets.clear()

    def freeze(self) -> None:
        """Accept new connections and never answer them, until `restore`."""
        self.frozen = True

    def restore(self) -> None:
        """Let connections through again."""
        self.up, self.frozen = True, False

    def close(self) -> None:
        """Stop listening and drop everything."""
        self._closed = True
        self.cut()
        _close(self._listener)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self.up:
                _close(client)
                continue
            if self.frozen:  # held open, unanswered (closed by cut or close)
                with self._lock:
                    self._sockets.add(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                _close(sock)
                with self._lock:
                    self._sockets.discard(sock)


def _close(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@contextmanager
def proxied(url: str) -> Iterator[tuple[str, TcpProxy]]:
    """A PostgreSQL URL that reaches ``url``'s server through a `TcpProxy`, and the proxy."""
    head, rest = url.split("@", 1)
    hostport, path = rest.split("/", 1)
    host, _, port = hostport.partition(":")
    proxy = TcpProxy((host, int(port or 5432)))
    try:
        yield f"{head}@127.0.0.1:{proxy.port}/{path}", proxy
    finally:
        proxy.close()


@contextmanager
def outage(url: str, monkeypatch: Any) -> Iterator[tuple[str, Any, Any]]:
    """(the URL to use, cut, restore): a database outage without touching the shared server.
    PostgreSQL goes through a `TcpProxy`; a SQLite file is write-locked by another connection
    (with a short busy timeout, so that a write fails rather than waits)."""
    from langchain_persist import ResultsPersistenceService
    from langchain_persist._db import engine

    if not url.startswith("sqlite"):
        with proxied(url) as (through, proxy):
            ResultsPersistenceService(through).ping()
            yield through, proxy.cut, proxy.restore
        return
    monkeypatch.setattr(engine, "SQLITE_BUSY_TIMEOUT_MS", 100)
    ResultsPersistenceService(url).ping()  # the schema exists before it is locked
    lock = sqlite3.connect(url.split(":///", 1)[1], isolation_level=None,
                           check_same_thread=False)
    held: list[bool] = []

    def cut() -> None:
        lock.execute("BEGIN EXCLUSIVE")
        held.append(True)

    def restore() -> None:
        if held:
            lock.execute("COMMIT")
            held.clear()

    try:
        yield url, cut, restore
    finally:
        restore()
        lock.close()
