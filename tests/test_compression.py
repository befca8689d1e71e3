"""Long results are stored compressed on SQLite (zstd), as text on PostgreSQL (TOAST
compresses them), and read back the same either way."""

from __future__ import annotations

from sqlalchemy import select

from langchain_persist import ResultsPersistenceService
from langchain_persist._db.schema import agent_results

REPORT = "\n".join(f"- day {i}: Lisbon, sunny, 24°C; flight TP {500 + i} at €129"
                   for i in range(400))


def _stored(service: ResultsPersistenceService, result_id: str) -> tuple[str | None, bytes | None]:
    with service.db.read() as conn:
        row = conn.execute(select(agent_results.c.result, agent_results.c.result_zstd)
                           .where(agent_results.c.id == result_id)).one()
    return row.result, row.result_zstd


def test_a_long_result_is_compressed_where_the_database_does_not(service) -> None:
    assert len(REPORT) > service.result_compress_over
    saved = service.save_result(agent_id="writer", result=REPORT, status="completed")
    assert saved.result == REPORT
    assert service.get_result(saved.id).result == REPORT
    assert service.find_results(agent_id="writer")[0].result == REPORT
    text, packed = _stored(service, saved.id)
    if service.db.dialect == "sqlite":
        assert text is None and len(packed) < len(REPORT.encode()) / 4
    else:
        assert text == REPORT and packed is None  # TOAST compresses it

    running = service.save_result(agent_id="writer")
    assert service.update_result(running.id, result=REPORT).result == REPORT
    short = service.update_result(running.id, result="done", status="completed")
    assert short.result == "done" and _stored(service, running.id) == ("done", None)


def test_short_results_and_a_service_that_never_compresses(db_url: str) -> None:
    service = ResultsPersistenceService(db_url, result_compress_over=None)
    saved = service.save_result(agent_id="writer", result=REPORT)
    assert _stored(service, saved.id) == (REPORT, None)
    small = service.save_result(agent_id="writer", result="ok")
    assert _stored(service, small.id) == ("ok", None)
    service.close()
