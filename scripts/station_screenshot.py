"""Take the README's screenshot of the station page: ``python scripts/station_screenshot.py [OUT.png] [--work=DIR]``.

Builds (or reuses) the two-view template bundle of ``benchmarks/bench_station.py``, serves a station on
loopback, drops four image sets (clear, leftover, an unreadable image, leftover), acknowledges the leftover
through the API, and screenshots the page with Debian's headless Chromium (Playwright; no download).
Default OUT: docs/station.png.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main(argv: list[str]) -> int:
    import httpx
    import uvicorn
    from playwright.sync_api import sync_playwright

    from benchmarks.bench_station import build_bundle
    from lineclear.formats.record import open_record
    from lineclear.line.checker import Checker
    from lineclear.line.watch import WatchOptions
    from lineclear.station.app import create_app
    from lineclear.station.service import Station

    args = [a for a in argv if not a.startswith("--")]
    out = Path(args[0]) if args else ROOT / "docs" / "station.png"
    work = next((a.split("=", 1)[1] for a in argv if a.startswith("--work=")), None)
    work_dir = Path(work) if work else Path(tempfile.mkdtemp(prefix="station_shot_"))
    line = build_bundle(work_dir)
    run = Path(tempfile.mkdtemp(prefix="shot_", dir=work_dir))
    inbox = run / "inbox"
    inbox.mkdir()
    token = "screenshot-token-0123456789"
    rec = open_record(run / "record.db")
    station = Station(Checker(line, "cpu"), inbox, rec, run / "overlays",
                      WatchOptions(poll=0.05, settle=0.2, set_timeout=2))
    station.start()
    app = create_app(station, token=token)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=8799, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    data = work_dir / "data"
    sets = [{"A": data / "A/test/good/good_000.png", "B": data / "B/test/good/shift_000.png"},
            {"A": data / "A/test/cap/cap_000.png", "B": data / "B/test/good/good_001.png"},
            {"A": None, "B": data / "B/test/good/good_002.png"},
            {"A": data / "A/test/leaflet/leaflet_001.png", "B": data / "B/test/good/good_003.png"}]
    for k, s in enumerate(sets, 1):
        for v, src in s.items():
            dest = inbox / f"s{k:03d}_{v}.png"
            if src is None:
                (inbox / ".tmp").write_bytes(b"\x89PNG\r\n\x1a\n a camera file cut short")
            else:
                shutil.copyfile(src, inbox / ".tmp")
            (inbox / ".tmp").rename(dest)
        while station.sets_this_run < k:
            time.sleep(0.05)
        if k == 2:
            httpx.post("http://127.0.0.1:8799/api/sets/2/ack", headers={"Authorization": f"Bearer {token}"},
                       json={"name": "A. Operator", "comment": "cap removed from the infeed, line cleared again"}).raise_for_status()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium", args=ARGS)
        page = b.new_page(viewport={"width": 1280, "height": 860})
        page.goto("http://127.0.0.1:8799/")
        page.wait_for_selector('[data-testid="tile-A"][data-set="4"]')
        # (wait_for_function would eval a string in the page, which the page's CSP forbids)
        while not page.evaluate("() => [...document.images].every(i => i.complete && i.naturalWidth > 0)"):
            time.sleep(0.05)
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=True)
        b.close()
    server.should_exit = True
    app.state.hub.close_threadsafe()
    station.stop()
    rec.close()
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
