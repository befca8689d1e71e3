"""The viewer in a real headless Chromium, on SQLite and on PostgreSQL: the demo's story (the
failed run, its error in the waterfall, the thread's checkpoints, the interrupt answered from the
page, the run completing live), resume and fork from the page, the token prompt, and stored
HTML and scripts that run nothing."""

from __future__ import annotations

import httpx
import pytest
from browser_support import (
    browser_errors,
    chromium,
    demo_story,
    failed_run,
    screenshot,
    served_demo,
    serving,
    text_of,
    wait,
)
from handler_support import ScriptedChatModel
from langchain.agents import create_agent
from langchain_core.tools import ToolException, tool
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from langchain_persist import PersistCallbackHandler, PersistSaver, ResultsPersistenceService
from langchain_persist.server import create_ui_app

TOKEN = "s3cret-viewer-token"


@pytest.fixture(scope="module")
def driver():
    with chromium() as d:
        yield d


@pytest.fixture
def browser(driver):
    driver.get_log("browser")  # what earlier tests logged is theirs
    yield driver
    driver.delete_all_cookies()  # cookies are per host, not per port: none leaks to the next


def rows(driver) -> list[str]:
    return [r.text for r in driver.find_elements(By.CSS_SELECTOR, "table.runs tbody tr")]


def test_the_demo_story_from_failure_to_an_answer_given_on_the_page(
    db_url, browser, tmp_path
):
    story = demo_story(db_url)  # run 1 fails; run 2 resumes and stops at interrupt()
    failed, paused = story.execution_ids
    with served_demo(db_url, browser, delay=25) as base:  # book_flight then takes 1.5 s: watchable
        # the runs: both, newest first, status in words and icons
        browser.get(base + "/")
        listed = rows(browser)
        assert len(listed) == 2
        assert "interrupted" in listed[0] and "waiting for a human" in listed[0]
        assert "failed" in listed[1] and "FlightApiTimeout" in listed[1]

        # the failed run: its error, and the raised call marked in the waterfall
        browser.find_element(By.CSS_SELECTOR, f'a[href="/runs/{failed}"]').click()
        wait(browser, lambda d: "Run " in d.title and failed in text_of(d, "h1"), "the run page")
        assert "failed" in text_of(browser, "h1")
        assert "FlightApiTimeout: flight search API timed out" in text_of(browser, ".error-box")
        raised = browser.find_element(By.CSS_SELECTOR, "li.call.error")
        assert "search_flights" in raised.text and "raised" in raised.text
        ok = browser.find_element(By.CSS_SELECTOR, "li.call.ok")
        assert "get_weather" in browser.find_element(By.ID, "step-2").find_element(
            By.XPATH, "following-sibling::ol").text
        assert "ok" in ok.text
        assert "✘" in text_of(browser, "#step-2")  # the step that failed is marked
        raised.find_element(By.TAG_NAME, "summary").send_keys(Keys.ENTER)  # by keyboard
        wait(browser, lambda d: "ERROR (RAISED)" in raised.text.upper(), "the call's details")
        assert '"origin": "Berlin"' in raised.text  # its input
        assert "execution failed: FlightApiTimeout" in text_of(browser, "table.logs")
        screenshot(browser, tmp_path, "run-failed")

        # its thread: the checkpoints as a timeline, the failed step and the waiting question
        browser.find_element(By.CSS_SELECTOR, ".facts a[href^='/threads/']").click()
        wait(browser, lambda d: story.thread_id in text_of(d, "h1"), "the thread page")
        timeline = browser.find_elements(By.CSS_SELECTOR, "ol.timeline li")
        assert len(timeline) == 5  # steps -1 .. 3
        assert "error" in timeline[2].text and "step 1" in timeline[2].text
        assert "waiting" in timeline[-1].text
        detail = text_of(browser, "section.checkpoint")
        assert "Step 3" in detail and "tools(book_flight)" in detail
        assert "The agent asks:" in detail and "Book TP 539 for €129?" in detail
        assert "assistant" in detail and "calls book_flight" in detail  # the state as a chat
        screenshot(browser, tmp_path, "thread")

        # the failed checkpoint: its error, the pending write kept for resume, the diff
        timeline[2].find_element(By.TAG_NAME, "a").click()
        wait(browser, lambda d: "Step 1" in text_of(d, "#checkpoint-h"), "step 1's checkpoint")
        detail = text_of(browser, "section.checkpoint")
        assert "A task of the next step raised: FlightApiTimeout" in detail
        assert "__error__" in detail and "Lisbon: 24°C" in detail  # get_weather's write, kept
        assert "+ messages 1 new item" in detail
        browser.find_element(By.CSS_SELECTOR, "ol.timeline li:last-child a").click()
        wait(browser, lambda d: "Step 3" in text_of(d, "#checkpoint-h"), "the newest checkpoint")

        # answer the interrupt from the page: a new run starts and is followed live
        answer = browser.find_element(By.CSS_SELECTOR, "form.answer textarea")
        answer.clear()
        answer.send_keys('{"approved": true, "by": "the browser test"}')
        browser.find_element(By.CSS_SELECTOR, "form.answer button").click()
        wait(browser, lambda d: "/runs/" in d.current_url
             and d.current_url.rsplit("/", 1)[1] not in (failed, paused), "the new run's page")
        new = browser.current_url.rsplit("/", 1)[1]
        wait(browser, lambda d: "running" in text_of(d, "h1"), "the new run, running")
        wait(browser, lambda d: "book_flight started" in text_of(d, "section.live"),
             "book_flight's start, live")
        screenshot(browser, tmp_path, "run-live")
        wait(browser, lambda d: "completed" in text_of(d, "h1"), "the run completing, live")
        assert "Booked! TP 539 booked for €129" in text_of(browser, "body")
        assert "book_flight" in text_of(browser, "li.call.ok")
        screenshot(browser, tmp_path, "run-completed")
        assert browser_errors(browser) == []
        browser.get(base + "/")
        assert "completed" in rows(browser)[0] and len(rows(browser)) == 3
        screenshot(browser, tmp_path, "runs")

    service = ResultsPersistenceService(db_url, migrate=False)
    done = service.find_results(execution_id=new)[0]
    assert done.status == "completed" and done.thread_id == story.thread_id
    assert "Booked!" in done.result
    service.close()


def test_resume_a_failed_run_and_fork_a_checkpoint_from_the_page(db_url, browser):
    failed, thread = failed_run(db_url)
    with served_demo(db_url, browser) as base:
        browser.get(f"{base}/runs/{failed}")
        form = browser.find_element(By.CSS_SELECTOR, ".error-box form.resume")
        assert "Resume from its last checkpoint" in form.text
        form.find_element(By.TAG_NAME, "button").click()
        wait(browser, lambda d: "/runs/" in d.current_url
             and d.current_url.rsplit("/", 1)[1] != failed, "the resumed run's page")
        wait(browser, lambda d: "stopped at interrupt()" in text_of(d, "h1"),
             "the resumed run to stop at the booking's interrupt()")
        # only the failed call ran again (the server's tools time out once, then it retried)
        calls = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "li.call")]
        assert any("search_flights" in c and "ok" in c for c in calls)
        assert not any("get_weather" in c for c in calls)  # its result was kept
        assert any("book_flight" in c and "paused" in c for c in calls)

        # fork from the very first model step, with extra instructions
        browser.get(f"{base}/threads/{thread}")
        browser.find_element(By.XPATH, "//ol[@class='timeline']//a[contains(., 'step 0')]").click()
        wait(browser, lambda d: "Step 0" in text_of(d, "#checkpoint-h"), "step 0's checkpoint")
        fork = browser.find_element(By.CSS_SELECTOR, "section.checkpoint form.resume")
        assert "Fork from this checkpoint" in fork.text
        fork.find_element(By.TAG_NAME, "textarea").send_keys("Prefer a morning flight.")
        fork.find_element(By.TAG_NAME, "button").click()
        wait(browser, lambda d: "/runs/" in d.current_url, "the fork's page")
        wait(browser, lambda d: "running" not in text_of(d, "h1"), "the fork to end")
        forked = browser.current_url.rsplit("/", 1)[1]

        # a bad answer is refused on the page
        browser.get(f"{base}/threads/{thread}")
        browser.find_element(By.CSS_SELECTOR, "ol.timeline li:last-child a").click()
        wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "form.answer"), "the question")
        box = browser.find_element(By.CSS_SELECTOR, "form.answer")
        box.find_element(By.TAG_NAME, "textarea").clear()
        box.find_element(By.TAG_NAME, "textarea").send_keys("{not json")
        box.find_element(By.TAG_NAME, "button").click()
        wait(browser, lambda d: "That is not JSON" in box.text, "the JSON error")

    service = ResultsPersistenceService(db_url, migrate=False)
    fork_result = service.find_results(execution_id=forked)[0]
    assert fork_result.metadata["kind"] == "resume"
    saver = PersistSaver(db_url, migrate=False)
    branch = saver.get_tuple({"configurable": {"thread_id": thread,
                                               "checkpoint_id": fork_result.checkpoint_id}})
    texts = [m.content for m in branch.checkpoint["channel_values"]["messages"]]
    assert "Prefer a morning flight." in texts
    service.close()
    saver.close()


def test_the_token_is_asked_once_and_never_put_in_a_url(db_url, browser, tmp_path):
    story = demo_story(db_url)
    with served_demo(db_url, browser, api_token=TOKEN) as base:
        browser.get(f"{base}/threads/{story.thread_id}")
        assert "API token" in text_of(browser, "main")  # the prompt, not the page
        assert browser.find_elements(By.CSS_SELECTOR, "form.answer") == []
        screenshot(browser, tmp_path, "token")
        field = browser.find_element(By.ID, "token")
        field.send_keys("wrong token" + Keys.ENTER)
        wait(browser, lambda d: "not accepted" in text_of(d, "main"), "the refusal")
        browser.find_element(By.ID, "token").send_keys(TOKEN + Keys.ENTER)
        wait(browser, lambda d: story.thread_id in text_of(d, "h1"), "the thread page")
        assert TOKEN not in browser.current_url
        cookie = browser.get_cookie("langchain_persist_token")
        assert cookie["value"] == TOKEN and cookie["sameSite"] == "Strict"

        browser.get(base + "/")  # asked once: the next pages open directly
        assert len(rows(browser)) == 2
        with httpx.Client(base_url=base, cookies={"langchain_persist_token": TOKEN}) as client:
            assert client.get("/").status_code == 200  # the cookie opens the pages
            assert client.get("/api/health").status_code == 401  # the API's rules: unchanged
            assert client.get("/api/health", headers={"Authorization": f"Bearer {TOKEN}"}
                              ).status_code == 200

        # the page's script sends the token to the API as the bearer header
        browser.get(f"{base}/threads/{story.thread_id}")
        browser.find_element(By.CSS_SELECTOR, "form.answer textarea").send_keys('"yes"')
        browser.find_element(By.CSS_SELECTOR, "form.answer button").click()
        wait(browser, lambda d: "/runs/" in d.current_url, "the answered run's page")
        wait(browser, lambda d: "completed" in text_of(d, "h1"), "the run to complete")
        assert all(TOKEN not in entry["name"] for entry in browser.execute_script(
            "return performance.getEntries().map(e => ({name: e.name}))"))

        browser.find_element(By.LINK_TEXT, "Forget token").click()
        wait(browser, lambda d: "API token" in text_of(d, "main"), "the prompt again")


HOSTILE = '<script>window.__pwned = 1</script><img src="x" onerror="window.__pwned = 2">'


@tool
def fetch_page(text: str) -> str:
    """Fetch a web page (here: a page whose content is HTML with a script)."""
    return f"{HOSTILE} for {len(text)} characters"


@tool
def strict_lookup(text: str) -> str:
    """Look a key up; refuses unknown keys (a handled error, returned to the model)."""
    raise ToolException("unknown key: <b onmouseover=alert(1)>nope</b>")


strict_lookup.handle_tool_error = True


def test_stored_html_and_scripts_are_shown_as_text_and_run_nothing(db_url, browser, tmp_path):
    model = ScriptedChatModel(plan=[["fetch_page", "strict_lookup"]])
    saver = PersistSaver(db_url)
    agent = create_agent(model, [fetch_page, strict_lookup], checkpointer=saver)
    handler = PersistCallbackHandler(agent_id="agent <i>x</i>", url=db_url)
    agent.invoke({"messages": [("user", f"Summarize {HOSTILE}")]},
                 {"callbacks": [handler], "configurable": {"thread_id": "hostile"}})
    handler.close()
    execution = ResultsPersistenceService(db_url, migrate=False).find_results()[0].execution_id

    with serving(create_ui_app(db_url), browser) as base:
        browser.get(base + "/")
        assert HOSTILE in text_of(browser, "table.runs")  # shown as text
        assert "agent <i>x</i>" in text_of(browser, "table.runs")
        browser.get(f"{base}/runs/{execution}")
        for summary in browser.find_elements(By.CSS_SELECTOR, "li.call summary"):
            summary.click()
        page = text_of(browser, "main")
        assert page.count(HOSTILE) >= 2  # the tool's output and the final answer
        handled = browser.find_element(By.CSS_SELECTOR, "li.call.handled")
        assert "strict_lookup" in handled.text and "handled error" in handled.text
        assert "<b onmouseover=alert(1)>nope</b>" in handled.text
        assert "raised" not in handled.text
        screenshot(browser, tmp_path, "escaping")
        browser.get(f"{base}/threads/hostile")
        assert HOSTILE in text_of(browser, "ol.chat")
        for path in ("/", f"/runs/{execution}", "/threads/hostile"):
            browser.get(base + path)
            assert browser.execute_script("return window.__pwned") is None, path
            hostile = "main img, main script, [onerror], [onmouseover]"
            assert browser.find_elements(By.CSS_SELECTOR, hostile) == []
    saver.close()


def test_every_page_opens_on_the_demo_data_in_the_read_only_viewer(db_url, browser, tmp_path):
    story = demo_story(db_url, approve=True)
    with serving(create_ui_app(db_url), browser) as base:
        browser.get(base + "/")
        assert "read-only" in text_of(browser, "header")
        assert len(rows(browser)) == 3
        browser.get(f"{base}/runs/{story.execution_ids[1]}")
        assert "stopped at interrupt()" in text_of(browser, "h1")
        paused = browser.find_element(By.CSS_SELECTOR, "li.call.paused")
        assert "book_flight" in paused.text and "paused at interrupt()" in paused.text
        assert browser.find_elements(By.CSS_SELECTOR, "form") == []  # no actions: read-only
        screenshot(browser, tmp_path, "run-interrupted")
        browser.get(f"{base}/threads/{story.thread_id}")
        assert len(browser.find_elements(By.CSS_SELECTOR, "ol.timeline li")) == 7
        assert browser.find_elements(By.CSS_SELECTOR, "form") == []
        browser.get(base + "/stats")
        tiles = {t.find_element(By.CLASS_NAME, "label").text:
                 t.find_element(By.CLASS_NAME, "value").text
                 for t in browser.find_elements(By.CSS_SELECTOR, ".tile")}
        assert tiles["Runs"] == "3" and tiles["Failed"] == "1"
        charts = browser.find_elements(By.CSS_SELECTOR, "figure.chart")
        assert [c.get_attribute("class") for c in charts] == [
            "chart runs", "chart failures", "chart durations", "chart tokens"]
        assert all(c.find_elements(By.CSS_SELECTOR, "svg rect") for c in charts)
        assert "FlightApiTimeout" in text_of(browser, "table.errors")
        screenshot(browser, tmp_path, "stats")
        # the most frequent error's "find" link searches for it; the matches are marked
        browser.find_element(By.CSS_SELECTOR, "table.errors a").click()
        wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "table.hits mark"),
             "the search's marked matches")
        hits = browser.find_elements(By.CSS_SELECTOR, "table.hits tbody tr")
        assert any("tool_error" in h.text and "search_flights" in h.text for h in hits)
        search = browser.find_element(By.NAME, "q")
        search.clear()
        search.send_keys("flight*", Keys.ENTER)
        wait(browser, lambda d: "flight*" in d.current_url, "the search for flight*")
        marked = {m.text.lower() for m in browser.find_elements(By.CSS_SELECTOR, "mark")}
        assert marked and all(m.startswith("flight") for m in marked), marked
        screenshot(browser, tmp_path, "search")
        # keyboard: the first Tab reaches the skip link, which moves focus to the content
        browser.get(base + "/")
        browser.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
        assert browser.switch_to.active_element.text == "Skip to content"
        assert browser_errors(browser) == []
