"""The server applies the stored retention policies on a schedule (see `create_app`)."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from .._records import RetentionReport
from .._results.service import ResultsPersistenceService

logger = logging.getLogger("langchain_persist")


class _Stopped(Exception):
    """The server is stopping: the retention run ends after the batch it was in."""


class RetentionSchedule:
    """Applies the retention policies at startup, then every ``interval`` seconds (None or 0:
    never).  A run goes on in a worker thread, batch by batch; at shutdown it stops after the
    batch it is in.  ``last`` is the report of the last run, ``runs`` how many ran."""

    def __init__(self, service: ResultsPersistenceService, interval: float | None) -> None:
        self.service = service
        self.interval = interval or None
        self.last: RetentionReport | None = None
        self.runs = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        """Start the schedule (in the running event loop)."""
        if self.interval is not None and self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self._loop(), name="retention schedule")

    async def stop(self) -> None:
        """Stop the schedule; a run in progress stops after its current batch."""
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        assert self.interval is not None
        while True:
            try:
                await asyncio.to_thread(self._apply)
            except _Stopped:
                return
            except Exception:  # a failed run is reported, and the next one tried on schedule
                logger.exception("langchain-persist server: applying the retention policies "
                                 "failed")
            await asyncio.sleep(self.interval)

    def _apply(self) -> None:
        def check(kind: str, n: int) -> None:
            if self._stopping.is_set():
                raise _Stopped

        report = self.service.apply_retention(on_progress=check)
        self.last, self.runs = report, self.runs + 1
        totals = report.totals
        if any(getattr(totals, k) for k in ("results", "logs", "traces", "threads")):
            logger.info("langchain-persist server: retention deleted %s", _words(report))


def _words(report: RetentionReport) -> Any:
    t = report.totals
    return (f"{t.results} results, {t.logs} logs, {t.traces} traces, {t.threads} checkpoint "
            f"threads ({t.checkpoints} checkpoints)")
