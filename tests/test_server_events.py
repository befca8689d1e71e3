"""The in-memory event logs behind the SSE streams (no database, no server)."""

from __future__ import annotations

import asyncio
import json
import threading

from langchain_persist.server._events import EventLogs


async def _collect(log, after=0):
    return [(e.id, e.name, json.loads(e.data)) async for e in log.follow(after)]


async def test_followers_get_every_event_in_order_from_any_thread():
    logs = EventLogs()
    log = logs.open("ex-1")
    early = asyncio.create_task(_collect(log))
    await asyncio.sleep(0)

    def publish(worker: int) -> None:
        for i in range(200):
            log.publish("token", {"worker": worker, "i": i})

    threads = [threading.Thread(target=publish, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    late = asyncio.create_task(_collect(log, after=500))
    for t in threads:
        t.join()
    log.close()
    everything, tail = await asyncio.gather(early, late)

    assert [i for i, _, _ in everything] == list(range(1, 801))
    for worker in range(4):  # each thread's events in the order it published them
        assert [d["i"] for _, _, d in everything if d["worker"] == worker] == list(range(200))
    assert tail == everything[500:]
    assert log.publish("token", {}) is None  # closed: nothing more
    assert await _collect(log, after=799) == everything[-1:]


async def test_a_bounded_log_says_how_many_events_a_follower_missed():
    logs = EventLogs(max_events=5, keep_finished=2)
    log = logs.open("ex-1")
    for i in range(12):
        log.publish("token", {"i": i})
    log.close()
    assert log.missed(0) == 7 and log.missed(6) == 1 and log.missed(7) == 0
    assert [i for i, _, _ in await _collect(log)] == [8, 9, 10, 11, 12]

    for n in (2, 3):  # finished logs beyond keep_finished are forgotten, oldest first
        logs.open(f"ex-{n}").close()
    running = logs.open("ex-4")
    assert logs.get("ex-1") is None and logs.get("ex-2") and logs.get("ex-3")
    assert logs.running == ["ex-4"] and logs.get("ex-4") is running and not running.finished
