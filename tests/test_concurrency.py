"""Several threads and processes writing results and logs at once lose nothing."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

from langchain_persist import ResultsPersistenceService

WRITER = textwrap.dedent(
    """
    import sys
    from langchain_persist import ResultsPersistenceService
    service = ResultsPersistenceService(sys.argv[1])
    for i in range(int(sys.argv[3])):
        r = service.save_result(agent_id=sys.argv[2], execution_id=f"{sys.argv[2]}-{i}")
        assert service.save_log(agent_id=sys.argv[2], execution_id=r.execution_id, message="m")
        service.update_result(r.id, status="completed", result=str(i))
    assert not service.dropped, service.dropped
    """
)


def _work(service: ResultsPersistenceService, agent: str, n: int) -> None:
    for i in range(n):
        r = service.save_result(agent_id=agent, execution_id=f"{agent}-{i}")
        service.save_log(agent_id=agent, execution_id=f"{agent}-{i}", message="m")
        service.update_result(r.id, status="completed", result=str(i))


def _assert_all_stored(service: ResultsPersistenceService, agents: list[str], n: int) -> None:
    for agent in agents:
        results = service.get_agent_results(agent, limit=1000)
        assert len(results) == n and {r.status for r in results} == {"completed"}
        for r in results:
            assert len(service.get_execution_logs(r.execution_id or "")) == 1
    assert service.dropped == {}


def test_eight_threads(service: ResultsPersistenceService) -> None:
    agents = [f"thread-{i}" for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        for f in [pool.submit(_work, service, a, 40) for a in agents]:
            f.result()
    _assert_all_stored(service, agents, 40)


def test_two_processes_and_threads(service: ResultsPersistenceService, db_url: str) -> None:
    service.get_agent_results("x")  # create the schema first, as an application would at start-up
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, db_url, f"proc-{i}", "60"])
        for i in range(2)
    ]
    _work(service, "main", 60)
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    _assert_all_stored(service, ["proc-0", "proc-1", "main"], 60)
