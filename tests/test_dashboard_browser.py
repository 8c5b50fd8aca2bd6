"""The dashboard end to end in headless Chromium (Debian's, driven by Playwright).

A run of the embedded backend starts in this process; its tasks block on
events the test sets. The dashboard serves on 127.0.0.1 in a thread, and a
real browser uses it as a person would: the run appears in the list, its
page shows each task's status as it changes (the page's own polling, no
reload by the test), and the buttons act. A page on another origin that
posts to a button is refused, and nothing changes.

One browser for the whole session (`browser`); `make test` installs
chromium when it is missing. Playwright's own browser downloads are never
used: executable_path is /usr/bin/chromium.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Iterator

import pytest

from function_flow.backends import Backend
from function_flow.bus.local import LocalBus
from function_flow.core.records import RunStatus, TaskStatus
from function_flow.dashboard import create_app
from function_flow.store.sqlite import SqliteStore
from function_flow.tasks import Job
from functions_stack import wait_for

pytestmark = pytest.mark.timeout(120)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking"]
#: How long the browser waits for a page to show something (the page polls every 1 s).
SHOWS = 20_000


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install -y "
                    "chromium)")
    from playwright.sync_api import sync_playwright  # the dev extra's; never `playwright install`

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Served:
    """A WSGI app on 127.0.0.1 in a thread, at `url`."""

    def __init__(self, app: Any) -> None:
        from werkzeug.serving import make_server

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def attacker_page(target: str) -> Any:
    """Another site: its page posts to the dashboard's pause button on load."""
    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/html")])
        return [f"""<!doctype html><form id=f method=post action="{target}">
            <input name=csrf_token value=guessed></form>
            <script>document.getElementById('f').submit()</script>""".encode()]
    return app


def test_a_run_in_the_browser_live_with_its_buttons(browser: Any, tmp_path) -> None:
    from playwright.sync_api import expect

    store = SqliteStore(str(tmp_path / "state.db"))
    gates = {"extract": threading.Event(), "load": threading.Event()}
    job = Job("browser_demo")

    def body(task: Any, job: Any) -> Any:
        assert gates[task.id].wait(60), "the test never opened the gate"
        return {"rows": 3, "html": "<b>bold?</b>"}

    job.task("extract")(body)
    job.task("load", ["extract"])(body)
    bus = LocalBus(4)
    job.use_backend(Backend("embedded", store, bus))
    run_id = job.start()
    dashboard = Served(create_app(lambda: SqliteStore(str(tmp_path / "state.db")),
                                  jobs={job.name: job}))
    page = browser.new_page()
    try:
        page.goto(dashboard.url + "/")
        page.click(f"tr[data-run='{run_id}'] a")  # the run appears in the list
        page.wait_for_selector("[data-node='extract'].st-RUNNING", timeout=SHOWS)
        assert page.get_attribute("[data-node='load']", "class") == "node task st-WAITING"

        # Another site's page posts to the Pause button: refused, nothing changes.
        attacker = Served(attacker_page(f"{dashboard.url}/runs/{run_id}/actions/pause"))
        other = browser.new_page()
        try:
            # "localhost" is another site than "127.0.0.1" (another port alone is
            # the same site, refused as same-site: test_dashboard.py).
            other.goto(attacker.url.replace("127.0.0.1", "localhost") + "/")
            other.wait_for_selector("#error", timeout=SHOWS)
            assert other.text_content("#error") == (
                "refused: a cross-site request (Sec-Fetch-Site); actions come from the "
                "dashboard's own pages; nothing was changed")
        finally:
            other.close()
            attacker.close()
        assert store.get_run(run_id).paused_at is None

        page.click("#action-pause")
        page.wait_for_selector(".flash", timeout=SHOWS)
        assert page.text_content("#run-status") == "PAUSED"
        gates["extract"].set()  # extract finishes; load is held, as the run is paused
        page.wait_for_selector("[data-node='extract'].st-SUCCEEDED", timeout=SHOWS)
        wait_for(lambda: store.get_tasks(run_id, ["load"])[0].status is TaskStatus.QUEUED,
                 "load to be queued (and held)")
        # The page may have polled while load was claimed (RUNNING, then held):
        # it shows the hold at its next poll.
        expect(page.locator("#summary")).to_have_text("1/2 done, 0 running, 0 failed",
                                                      timeout=SHOWS)

        page.click("#action-resume")
        page.wait_for_selector("[data-node='load'].st-RUNNING", timeout=SHOWS)
        gates["load"].set()
        page.wait_for_selector("#run-status.st-SUCCEEDED", timeout=SHOWS)
        assert page.get_attribute("[data-node='load']", "class") == "node task st-SUCCEEDED"
        assert page.query_selector("#action-pause") is None  # no buttons on an ended run

        page.click("[data-node='load']")
        assert "&lt;b&gt;bold?&lt;/b&gt;" in page.inner_html("#result")  # text, not markup
        assert page.query_selector("#result b") is None
    finally:
        for gate in gates.values():
            gate.set()
        page.close()
        dashboard.close()
        assert bus.wait_idle(30)
        bus.close()
        store.close()
    assert job.engine.store.get_run(run_id).status is RunStatus.SUCCEEDED
