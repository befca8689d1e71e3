"""A real uvicorn server on a loopback port, and a small SSE reader, for the server tests."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

START_TIMEOUT = 30.0


@dataclass(frozen=True)
class Sse:
    """One server-sent event as a client sees it."""

    id: int
    event: str
    data: dict[str, Any]


@contextmanager
def running_server(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port (in a thread); yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(
        app, log_level="warning", timeout_graceful_shutdown=5, lifespan="on",
    ))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def parse_sse(lines: Iterable[str]) -> Iterator[Sse]:
    """The events in a stream of SSE lines (comments and pings skipped)."""
    fields: dict[str, str] = {}
    for line in lines:
        if not line:
            if "data" in fields:
                yield Sse(int(fields.get("id", "0")), fields.get("event", "message"),
                          json.loads(fields["data"]))
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value


def post_events(client: httpx.Client, path: str, body: Any) -> list[Sse]:
    """POST and read the whole SSE response (until the execution ends)."""
    with client.stream("POST", path, json=body) as response:
        assert response.status_code == 200, response.read()
        return list(parse_sse(response.iter_lines()))


def names(events: Iterable[Sse]) -> list[str]:
    """The event names, in order."""
    return [e.event for e in events]


def wait_for(check: Any, timeout: float = 30.0, what: str = "the condition") -> Any:
    """Poll ``check()`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
