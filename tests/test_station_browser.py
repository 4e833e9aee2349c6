"""The station page in a real browser: Playwright driving Debian's Chromium, headless, on loopback.

No browser is downloaded: the tests use ``/usr/bin/chromium`` (apt package ``chromium``; ``.ci/run``
installs it when missing) and are skipped, saying so, only when it is absent.
"""

from __future__ import annotations

import shutil
import sqlite3
import json
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (PyPI) is not installed")

from lineclear.formats.record import verify_record  # noqa: E402
from lineclear.line.checker import Checker  # noqa: E402
from tests.station_util import TOKEN, drop_set, station_at, wait_for  # noqa: E402
from tests.test_check import bundle  # noqa: E402,F401 - the module-scoped bundle fixture

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.usefixtures("restore_thread_counts"),
              pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                                 "(apt-get install chromium); no browser is downloaded")]


@pytest.fixture(scope="module")
def checker(bundle: Path) -> Checker:  # noqa: F811
    return Checker(bundle, "cpu", torch_threads=None)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _open(browser, url: str):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(url + "/")
    sync_api.expect(page.get_by_test_id("conn")).to_have_text("live", timeout=10000)
    return page, errors


def test_a_new_image_set_shows_on_the_page_within_2_s(checker: Checker, browser, tmp_path: Path) -> None:
    with station_at(checker, tmp_path, record=tmp_path / "r.db") as (station, url):
        page, errors = _open(browser, url)
        assert page.get_by_test_id("set-verdict").inner_text() == "waiting for the first image set"
        t0 = time.monotonic()
        drop_set(station.watch_dir, "1", leftover=True)
        # the page is never reloaded: the verdict arrives through the event stream
        page.wait_for_selector('[data-testid="tile-A"][data-set="1"]', timeout=2000)
        elapsed = time.monotonic() - t0
        print(f"verdict on the page {elapsed:.2f} s after the set was dropped")
        assert elapsed < 2.0
        assert page.get_by_test_id("verdict-A").inner_text() == "LEFTOVER"
        assert page.get_by_test_id("verdict-B").inner_text() == "CLEAR"
        assert page.get_by_test_id("set-verdict").inner_text() == "LEFTOVER FOUND"
        assert "score" in page.get_by_test_id("reason-A").inner_text()
        # the overlay image really loaded (decoded by the browser, from the overlay folder)
        width = page.get_by_test_id("overlay-A").evaluate("img => img.complete ? img.naturalWidth : 0")
        assert width == 256
        # a second set: an unreadable A image makes it undecided, with the reason on the tile
        (station.watch_dir / "A_2.png").write_bytes(b"\x89PNG\r\n\x1a\n broken IEND\xaeB`\x82")
        drop_set(station.watch_dir, "3")
        page.wait_for_selector('[data-testid="tile-A"][data-set="3"]', timeout=15000)
        assert page.get_by_test_id("history-2").locator(".v").inner_text() == "undecided"
        assert page.get_by_test_id("history").locator("tbody tr").count() == 3
        assert "clear 1" in page.get_by_test_id("totals").inner_text()
        assert not errors, errors
        page.close()


def test_an_acknowledgement_through_the_page_is_in_the_record(checker: Checker, browser, tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    with station_at(checker, tmp_path, record=db) as (station, url):
        drop_set(station.watch_dir, "1", leftover=True)
        wait_for(lambda: station.sets_this_run >= 1)
        page, errors = _open(browser, url)
        page.wait_for_selector('[data-testid="history-1"]', timeout=5000)
        page.get_by_test_id("history-1").get_by_role("button").click()  # picks set 1 in the form
        assert page.get_by_test_id("ack-set").input_value() == "1"
        page.get_by_test_id("ack-name").fill("Ana Silva")
        page.get_by_test_id("ack-comment").fill("leaflet removed from pocket 3")
        page.get_by_test_id("ack-token").fill("wrong-token")
        page.get_by_test_id("ack-submit").click()
        sync_api.expect(page.get_by_test_id("ack-result")).to_contain_text("not acknowledged", timeout=5000)
        page.get_by_test_id("ack-token").fill(TOKEN)
        page.get_by_test_id("ack-submit").click()
        sync_api.expect(page.get_by_test_id("ack-result")).to_contain_text("acknowledged by Ana Silva", timeout=5000)
        # the history row shows it, pushed by the event stream
        sync_api.expect(page.get_by_test_id("ack-1")).to_contain_text("Ana Silva", timeout=5000)
        errors = [e for e in errors if "401" not in e]  # the refused first try is logged by the browser
        assert not errors, errors
        page.close()
    rep = verify_record(db)
    assert rep["ok"] and rep["acknowledgements"] == 1
    kind, set_no, body = sqlite3.connect(db).execute(
        "SELECT kind, set_no, body FROM entries WHERE kind='ack'").fetchone()
    body = json.loads(body)
    assert set_no == 1 and body["name"] == "Ana Silva" and body["comment"] == "leaflet removed from pocket 3"
    assert body["client"] == "127.0.0.1" and body["acknowledged_utc"]
