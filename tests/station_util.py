"""Helpers for the station tests: a running station on loopback, image sets dropped into its folder."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from lineclear.formats.record import Record, open_record
from lineclear.line.checker import Checker
from lineclear.line.watch import WatchOptions
from lineclear.station.app import create_app
from lineclear.station.service import Station
from tests.test_check import LEAFLET, _image

TOKEN = "s3cret-token-for-the-tests-0123"
FAST = WatchOptions(poll=0.05, settle=0.15, set_timeout=3.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def drop_set(inbox: Path, tag: str, *, leftover: bool = False, src: Path | None = None) -> dict[str, Path]:
    """Write A_<tag>.png and B_<tag>.png the way a camera would: to a hidden name, then renamed."""
    src = src or inbox.parent / "src"
    out = {}
    for view, seed in (("A", 1), ("B", 2)):
        tmp = _image(seed, src / f"{view}_{tag}.png", leaflet=LEAFLET if leftover and view == "A" else None)
        dest = inbox / tmp.name
        hidden = inbox / f".{tmp.name}.part"
        hidden.write_bytes(tmp.read_bytes())
        hidden.rename(dest)
        out[view] = dest
    return out


def wait_for(cond: Callable[[], Any], timeout: float = 30.0, step: float = 0.05) -> Any:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        got = cond()
        if got:
            return got
        time.sleep(step)
    raise AssertionError(f"not within {timeout} s")


@contextlib.contextmanager
def station_at(checker: Checker, tmp: Path, *, record: Path | str | None = None, log: Path | None = None,
               options: WatchOptions = FAST, token: str | None = TOKEN, http: bool = True
               ) -> Iterator[tuple[Station, str | None]]:
    """A started station (watch thread running) and, with ``http``, uvicorn serving it: ``(station, base_url)``."""
    import uvicorn

    inbox = tmp / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    rec: Record = open_record(record if record is not None else ":memory:")
    station = Station(checker, inbox, rec, tmp / "overlays", options, log_path=log)
    server = thread = None
    url = None
    try:
        station.start()
        if http:
            port = free_port()
            app = create_app(station, token=token)
            server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                                   timeout_graceful_shutdown=1, access_log=False))
            thread = threading.Thread(target=server.run, daemon=True)
            thread.start()
            wait_for(lambda: server.started, 20)
            url = f"http://127.0.0.1:{port}"
        yield station, url
    finally:
        if server is not None:
            app.state.hub.close_threadsafe()
            server.should_exit = True
            thread.join(10)
        station.stop()
        rec.close()
