"""Headless Chromium (Debian's ``chromium`` and ``chromium-driver``) driven by Selenium, and the
demo's story served with its graph, for the viewer's browser tests.

Nothing is downloaded: the browser and its driver are the system's (``.ci/run`` installs them
with apt-get).  Screenshots go to the test's temporary directory, and also to
``$LANGCHAIN_PERSIST_SCREENSHOTS`` when it is set (``scripts/screenshots`` sets it to
``docs/screenshots`` to refresh the README's pictures).
"""

from __future__ import annotations

import io
import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait
from server_support import running_server

from langchain_persist import PersistCallbackHandler, PersistSaver
from langchain_persist._cli.demo import DemoOutcome, run_demo
from langchain_persist._cli.demo_agent import (
    AGENT_ID,
    TASK,
    DemoTools,
    FlightApiTimeout,
    build_agent,
    scripted_model,
)
from langchain_persist._ids import uuid7
from langchain_persist.server import create_app

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# without the background-networking flags this machine's closed network refuses connections
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,900", "--lang=en-US")
WAIT = 30.0
SCREENSHOTS = os.environ.get("LANGCHAIN_PERSIST_SCREENSHOTS")


@contextmanager
def chromium() -> Iterator[WebDriver]:
    """A headless Chromium with a new, empty profile."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:  # fail, never skip: the browser tests must run
        raise RuntimeError(f"{', '.join(missing)} missing: apt-get install -y chromium "
                           "chromium-driver (.ci/run does it)")
    with tempfile.TemporaryDirectory(prefix="lp-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (*FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def wait(driver: WebDriver, check: Any, what: str, timeout: float = WAIT) -> Any:
    """Wait until ``check(driver)`` is truthy; fail naming ``what``."""
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(
        check, message=f"timed out waiting for {what}")


def text_of(driver: WebDriver, css: str) -> str:
    """The visible text of the first element matching ``css`` ('' while there is none, or
    while the page is being replaced)."""
    try:
        return driver.find_element(By.CSS_SELECTOR, css).text
    except (NoSuchElementException, StaleElementReferenceException):
        return ""
    except WebDriverException as exc:  # chromedriver's other word for a stale element
        if "does not belong to the document" in (exc.msg or ""):
            return ""
        raise


def screenshot(driver: WebDriver, directory: Path, name: str) -> Path:
    """A full-page PNG (the window grown to the page's height), also kept for the docs when
    ``$LANGCHAIN_PERSIST_SCREENSHOTS`` names a directory."""
    height, chrome = driver.execute_script(
        "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight]")
    driver.set_window_size(1280, min(max(int(height), 600), 2400) + int(chrome))
    path = directory / f"{name}.png"
    driver.save_screenshot(str(path))
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(SCREENSHOTS) / f"{name}.png"))
    driver.set_window_size(1280, 900)
    return path


def browser_errors(driver: WebDriver) -> list[str]:
    """What the page's script reported as errors in the console."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def failed_run(url: str) -> tuple[str, str]:
    """The demo agent's first run alone, which fails: its execution id and thread id."""
    saver = PersistSaver(url)
    handler = PersistCallbackHandler(agent_id=AGENT_ID, url=url)
    agent = build_agent(scripted_model(), DemoTools(), saver)
    thread, run_id = f"trip-{uuid.uuid4().hex[:8]}", uuid.UUID(uuid7())
    config = {"callbacks": [handler], "run_id": run_id,
              "configurable": {"thread_id": thread, "agent_id": AGENT_ID}}
    try:
        agent.invoke({"messages": [("user", TASK)]}, config)
    except FlightApiTimeout:
        pass
    else:
        raise AssertionError("the demo's first run was meant to fail")
    finally:
        handler.close()
        saver.close()
    return str(run_id), thread


def demo_story(url: str, *, approve: bool = False) -> DemoOutcome:
    """The demo's data: a run that fails, its resume that stops at interrupt() (and, with
    ``approve``, the approval that completes it)."""
    return run_demo(url, Console(file=io.StringIO(), width=160), approve=approve)


@contextmanager
def serving(app: Any, driver: WebDriver) -> Iterator[str]:
    """Serve ``app``; yield its base URL; leave its pages before it stops (so that no live
    event stream keeps the server waiting)."""
    with running_server(app) as base:
        try:
            yield base
        finally:
            driver.get("about:blank")


@contextmanager
def served_demo(url: str, driver: WebDriver, *, delay: float = 1.0,
                **options: Any) -> Iterator[str]:
    """The demo's agent served with its viewer on ``url``; yields the base URL.

    ``delay`` scales the tools' latency (long enough, a run can be watched while it runs).
    """
    with serving(served_demo_app(url, delay=delay, **options), driver) as base:
        yield base


def served_demo_app(url: str, *, delay: float = 1.0, **options: Any) -> Any:
    """The application that serves the demo's agent (and the viewer) on ``url``."""
    graph = build_agent(scripted_model(), DemoTools(delay), None)
    return create_app(graph, url=url, retry_delay=0, **options)
