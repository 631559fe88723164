"""The dashboard in a real browser: headless Chromium (Debian's ``chromium``) driven by
Playwright loads the page, sees a worker appear and a task finish through the live feed
(no reload), clicks "kill" on an actor and the actor dies; without the token the page is
refused. A screenshot is kept under pytest's tmp dir (its path is printed).

Skips when chromium or playwright is missing, unless ``ACTORGRID_REQUIRE_BROWSER=1`` (as
in CI), which makes that a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import actorgrid as ag

CLUSTER_OPTIONS = {"num_workers": 1, "dashboard": True}
WAIT_MS = 30_000
CHROMIUM = os.environ.get("ACTORGRID_CHROMIUM", "/usr/bin/chromium")


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright)"
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        return f"no chromium at {CHROMIUM} (apt-get install chromium, or set ACTORGRID_CHROMIUM)"
    return None


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    missing = _missing()
    if missing is not None:
        if os.environ.get("ACTORGRID_REQUIRE_BROWSER") == "1":
            pytest.fail(f"ACTORGRID_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--disable-dev-shm-usage", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(WAIT_MS)
            yield page
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"dashboard screenshot: {shot}")
        finally:
            browser.close()


@ag.remote
def wait_for_file(path: str) -> str:
    while not os.path.exists(path):
        time.sleep(0.02)
    return "done"


@ag.remote
class Victim:
    def ping(self) -> str:
        return "pong"


def test_the_page_follows_the_cluster_live_and_kills_an_actor(
    cluster: ag.Cluster, page: Any, tmp_path: Path
) -> None:
    url = cluster.dashboard_url
    assert url is not None
    refused = page.goto(url.partition("?")[0])
    assert refused is not None and refused.status == 401

    page.goto(url)
    page.wait_for_selector("#conn.live")
    (first,) = cluster.workers()
    page.wait_for_selector(f"#workers tr[data-id='{first.worker_id.hex()}']")

    # A worker appears: the one that takes the slot of a worker killed from outside.
    os.kill(first.pid, signal.SIGKILL)
    deadline = time.monotonic() + WAIT_MS / 1000
    while not (fresh := [w for w in cluster.workers() if w.worker_id != first.worker_id]):
        assert time.monotonic() < deadline, "no worker replaced the killed one"
        time.sleep(0.05)
    page.wait_for_selector(f"#workers tr[data-id='{fresh[0].worker_id.hex()}']")
    page.wait_for_selector(f"#workers tr[data-id='{first.worker_id.hex()}']", state="detached")

    # A task runs, then finishes.
    release = tmp_path / "release"
    ref = wait_for_file.remote(str(release))
    running = page.locator("#tasks tr", has_text="wait_for_file")
    running.wait_for()
    release.touch()
    assert ag.get(ref, timeout=30) == "done"
    running.wait_for(state="detached")

    # Kill an actor from the page.
    victim = Victim.options(name="victim").remote()
    assert ag.get(victim.ping.remote(), timeout=30) == "pong"
    row = page.locator("#actors tr", has_text="victim")
    row.locator("button.kill_actor").click()
    row.wait_for(state="detached")
    page.wait_for_selector("#result:has-text('killed actor victim')")
    assert not [a for a in cluster.status().actors if a.name == "victim"]
    with pytest.raises(ag.ActorDiedError):
        ag.get(victim.ping.remote(), timeout=30)
