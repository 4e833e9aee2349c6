"""``lineclear serve``: the station's API, events, security limits, record and the watch loop beside it."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from lineclear.formats import sha256_file  # noqa: E402
from lineclear.formats.record import open_record, verify_record  # noqa: E402
from lineclear.line.checker import Checker  # noqa: E402
from lineclear.station.app import create_app  # noqa: E402
from lineclear.station.service import Station  # noqa: E402
from lineclear.station.shifts import count_per_shift, parse_shifts, shift_windows  # noqa: E402
from tests.station_util import FAST, TOKEN, drop_set, station_at, wait_for  # noqa: E402
from tests.test_check import bundle  # noqa: E402,F401 - the module-scoped bundle fixture

pytestmark = pytest.mark.usefixtures("restore_thread_counts")


@pytest.fixture(scope="module")
def checker(bundle: Path) -> Checker:  # noqa: F811
    return Checker(bundle, "cpu", torch_threads=None)


@pytest.fixture
def served(checker: Checker, tmp_path: Path):
    """A station with a record file and one leftover set checked; a TestClient on its app."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    rec = open_record(tmp_path / "record.db")
    station = Station(checker, inbox, rec, tmp_path / "overlays", FAST, log_path=tmp_path / "verdicts.jsonl")
    station.start()
    images = drop_set(inbox, "1", leftover=True)
    wait_for(lambda: station.sets_this_run >= 1)
    app = create_app(station, token=TOKEN)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield station, client, images, tmp_path
    station.stop()
    rec.close()


def test_api_status_sets_and_the_record_row(served) -> None:
    station, client, images, tmp = served
    st = client.get("/api/status").json()
    assert st["last_set"] == 1 and st["watching"] and st["acknowledgements"]
    assert st["counts"] == {"clear": 0, "leftover": 1, "undecided": 0} and st["sets_this_run"] == 1
    tiles = {v["view"]: v for v in st["latest"]["views"]}
    assert tiles["A"]["verdict"] == "leftover" and tiles["A"]["score"] > tiles["A"]["threshold"]
    assert tiles["B"]["verdict"] == "clear" and st["latest"]["exit_code"] == 3 and st["latest"]["recorded"]
    assert sum(s["counts"]["leftover"] for s in st["shifts"]) == 1 and len(st["shifts"]) == 3
    # the overlay is served, and is the PNG the checker wrote
    png = client.get(tiles["A"]["overlay_url"])
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG") and png.headers["content-type"] == "image/png"
    one = client.get("/api/sets/1").json()
    doc = one["document"]
    assert doc["images"]["A"]["sha256"] == sha256_file(images["A"]) and doc["images"]["B"]["bytes"] > 0
    assert doc["bundle"]["manifest_sha256"] == sha256_file(Path(station.checker.bundle.root) / "manifest.json")
    assert doc["verdict"]["schema"] == "lineclear.verdict/1" and doc["lineclear_version"]
    assert len(doc["overlays"]["A"]["sha256"]) == 64
    assert client.get("/api/sets", params={"since": 0}).json()["sets"][0]["set"] == 1
    assert client.get("/api/sets", params={"since": 1}).json()["sets"] == []
    assert client.get("/api/sets/2").status_code == 404
    assert client.get("/api/sets", params={"limit": 5000}).status_code == 422
    assert client.get("/api/sets", params={"since": -1}).status_code == 422
    # the watch log is written (fsynced by the watch loop) as without the server
    lines = [json.loads(x) for x in (tmp / "verdicts.jsonl").read_text().splitlines()]
    assert [(r["set"], r["view"], r["verdict"]) for r in lines] == [(1, "A", "leftover"), (1, "B", "clear")]
    # the page and its assets come from the package; strict CSP
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text and "http" not in page.text.split("<body>")[0]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/static/app.js").status_code == 200


def test_openapi_describes_the_api(served) -> None:
    _, client, _, _ = served
    spec = client.get("/openapi.json").json()
    assert {"/api/status", "/api/sets", "/api/sets/{n}", "/api/sets/{n}/ack", "/api/events"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 404  # its page would load scripts from a CDN
    assert "SetSummary" in spec["components"]["schemas"] and "HTTPBearer" in spec["components"]["securitySchemes"]
    assert spec["paths"]["/api/sets/{n}/ack"]["post"]["security"] == [{"HTTPBearer": []}]


def test_acknowledgement_needs_the_token_and_is_chained_in_the_record(served) -> None:
    station, client, _, tmp = served
    ack = {"name": "  Ana   Silva ", "comment": "leaflet removed from pocket 3"}
    assert client.post("/api/sets/1/ack", json=ack).status_code == 401
    assert client.post("/api/sets/1/ack", json=ack, headers={"Authorization": "Bearer wrong"}).status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.post("/api/sets/9/ack", json=ack, headers=auth).status_code == 404
    assert client.post("/api/sets/1/ack", json={"name": ""}, headers=auth).status_code == 422
    assert client.post("/api/sets/1/ack", json={"name": "x" * 81}, headers=auth).status_code == 422
    r = client.post("/api/sets/1/ack", json=ack, headers=auth)
    assert r.status_code == 201, r.text
    got = r.json()
    assert got["name"] == "Ana Silva" and got["comment"] == ack["comment"] and got["row"]["seq"] == 3
    assert client.get("/api/sets/1").json()["acks"][0]["name"] == "Ana Silva"
    rep = verify_record(tmp / "record.db")
    assert rep["ok"] and rep["acknowledgements"] == 1 and rep["sets"] == 1 and rep["starts"] == 1
    row = sqlite3.connect(tmp / "record.db").execute("SELECT kind, set_no, body FROM entries WHERE seq=3").fetchone()
    assert row[0] == "ack" and row[1] == 1 and json.loads(row[2])["name"] == "Ana Silva"


def test_acknowledgements_are_off_without_a_token(checker: Checker, tmp_path: Path) -> None:
    rec = open_record(":memory:")
    station = Station(checker, tmp_path, rec, tmp_path / "ov")
    with TestClient(create_app(station), base_url="http://127.0.0.1") as client:
        assert client.get("/api/status").json()["acknowledgements"] is False
        r = client.post("/api/sets/1/ack", json={"name": "a"}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 403 and "--token-file" in r.json()["detail"]


def test_only_files_inside_the_overlay_folder_are_served(served) -> None:
    station, client, _, tmp = served
    secret = tmp / "secret.txt"
    secret.write_text("not for the page")
    (station.overlay_root / "link.png").symlink_to(secret)
    (station.overlay_root / "linkdir").symlink_to(tmp)
    attempts = ["/overlays/../secret.txt", "/overlays/%2e%2e/secret.txt", "/overlays/%2E%2E%2Fsecret.txt",
                "/overlays/..%2fsecret.txt", "/overlays/run-x/../../secret.txt", f"/overlays/{secret}",
                f"/overlays//{secret}", "/overlays/%2F" + str(secret).lstrip("/").replace("/", "%2F"),
                "/overlays/link.png", "/overlays/linkdir/secret.txt", "/overlays/linkdir/record.db",
                "/overlays/%00", "/overlays/../record.db", "/overlays/%2e%2e/%2e%2e/etc/passwd",
                "/static/../../cli/serve.py", "/static/%2e%2e/app.py"]
    for url in attempts:
        r = client.get(url)
        assert r.status_code in (400, 404), (url, r.status_code)
        assert b"not for the page" not in r.content and b"SQLite" not in r.content
    # a real overlay still is
    tiles = {v["view"]: v for v in client.get("/api/status").json()["latest"]["views"]}
    url = tiles["A"]["overlay_url"]  # the leftover view's (once failed as None in a loaded full run: say what it held)
    assert url, tiles
    assert client.get(url).status_code == 200


def test_raw_traversal_request_lines_over_a_socket(checker: Checker, tmp_path: Path) -> None:
    """The request line as a hostile client sends it, unnormalised, to the real server."""
    import socket

    (tmp_path / "secret.txt").write_text("not for the page")
    with station_at(checker, tmp_path, http=True) as (station, url):
        (station.overlay_root / "inner.png").write_bytes(b"\x89PNG inner")
        port = int(url.rsplit(":", 1)[1])
        for path in ("/overlays/../secret.txt", "/overlays/%2e%2e/secret.txt", "/overlays/..%2fsecret.txt",
                     "/overlays/..%5csecret.txt", "/overlays/....//secret.txt", "/overlays/" + str(tmp_path / "secret.txt"),
                     "/overlays/%2e%2e%2f%2e%2e%2fsecret.txt", "/overlays/inner.png"):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
            status = int(data.split(b" ", 2)[1])
            if path.endswith("inner.png"):
                assert status == 200 and data.endswith(b"\x89PNG inner")
            else:
                assert status in (400, 404) and b"not for the page" not in data, (path, data[:200])


def test_request_sizes_and_hosts_are_bounded(served) -> None:
    _, client, _, _ = served
    auth = {"Authorization": f"Bearer {TOKEN}"}
    big = {"name": "a", "comment": "x" * 20000}
    assert client.post("/api/sets/1/ack", json=big, headers=auth).status_code == 413

    def chunks():
        yield b'{"name": "a"'
        yield b"}"

    r = client.post("/api/sets/1/ack", content=chunks(), headers={**auth, "Content-Type": "application/json"})
    assert r.status_code == 411
    assert client.get("/api/status", headers={"Host": "evil.example"}).status_code == 400
    assert client.get("/api/status", headers={"Host": "localhost:8765"}).status_code == 200


def test_live_events_and_the_watch_loop_with_the_server_on(checker: Checker, tmp_path: Path) -> None:
    """Over a real uvicorn on loopback: an event per set, a bad image does not stop anything, the log is written."""
    log = tmp_path / "verdicts.jsonl"
    with station_at(checker, tmp_path, record=tmp_path / "r.db", log=log) as (station, url):
        def boom(kind, data):
            raise RuntimeError("a listener that fails")

        station.listeners.insert(0, boom)  # must not reach the watch loop
        events = []
        with httpx.Client(base_url=url, timeout=30) as client:
            with client.stream("GET", "/api/events") as stream:
                lines = stream.iter_lines()
                t0, kind = None, None
                for line in lines:
                    if line.startswith("event: "):
                        kind = line[7:]
                    if line.startswith("event: hello"):
                        inbox = tmp_path / "inbox"
                        (inbox / "A_1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken IEND\xaeB`\x82")
                        # A_1b closes set 1 (A's broken image, no B), set 2 is A_1b + B_1b
                        drop_set(inbox, "1b", src=tmp_path / "s")
                        t0 = time.monotonic()
                    if line.startswith("data: ") and kind == "set":
                        events.append(json.loads(line[6:]))
                        if len(events) == 2:
                            break
        first, second = events
        assert first["set"] == 1 and first["verdict"] == "undecided"
        assert {v["view"]: v["verdict"] for v in first["views"]}["A"] == "undecided"
        assert "unreadable" in {v["view"]: v["reason"] for v in first["views"]}["A"]
        assert second["set"] == 2 and second["verdict"] == "clear"
        assert station.listener_errors >= 2 and station.thread.is_alive()
    recs = [json.loads(x) for x in log.read_text().splitlines()]
    assert sorted({r["set"] for r in recs}) == [1, 2]
    assert verify_record(tmp_path / "r.db")["sets"] == 2


def test_a_record_that_fails_does_not_stop_the_station(checker: Checker, tmp_path: Path) -> None:
    with station_at(checker, tmp_path, http=False) as (station, _):
        station.record.conn.execute("PRAGMA query_only=1")  # every write now fails
        drop_set(tmp_path / "inbox", "1")
        wait_for(lambda: station.sets_this_run >= 1)
        st = station.status()
        assert "could not be recorded" in st["record_error"] and st["latest"]["recorded"] is False
        assert station.get_set(st["latest"]["set"])["recorded"] is False
        assert [s["set"] for s in station.list_sets()] == [st["latest"]["set"]]
        station.record.conn.execute("PRAGMA query_only=0")
        drop_set(tmp_path / "inbox", "2")
        wait_for(lambda: station.sets_this_run >= 2)
        assert station.status()["record_error"] is None and station.status()["latest"]["recorded"]


def test_set_numbers_continue_across_runs_of_one_record(checker: Checker, tmp_path: Path) -> None:
    """The record, the watch log and the overlay names number sets alike, across restarts; a set the log
    has but the record missed (the station killed between the two writes) is recovered at the next start."""
    from lineclear.formats.verdict import append_verdict_log, open_verdict_log

    db, log = tmp_path / "r.db", tmp_path / "v.jsonl"
    for run in range(2):
        with station_at(checker, tmp_path / f"run{run}", record=db, log=log, http=False) as (station, _):
            drop_set(station.watch_dir, f"{run}")
            wait_for(lambda: station.sets_this_run >= 1)
            assert station.latest["set"] == run + 1
            got = station.get_set(run + 1)
            url = got["views"][0]["overlay_url"]
            assert url, got
            assert url.startswith("/overlays/run-") and f"set{run + 1:06d}_A__" in url
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [(r["set"], r["view"]) for r in lines] == [(1, "A"), (1, "B"), (2, "A"), (2, "B")]
    # a kill after the log's fsync and before the record's commit: set 3 is in the log only
    fd, _ = open_verdict_log(log)
    append_verdict_log(fd, [{**r, "set": 3, "checked_utc": "2026-12-03T12:00:00.000+00:00"} for r in lines[2:]])
    os.close(fd)
    with station_at(checker, tmp_path / "run2", record=db, log=log, http=False) as (station, _):
        assert station.recovered == [3]
        got = station.get_set(3)
        assert got["verdict"] == lines[2]["set_verdict"] and got["document"]["recovered_from_log"] == str(log)
        assert got["document"]["images"] == {} and [v["view"] for v in got["views"]] == ["A", "B"]
        drop_set(station.watch_dir, "3")
        wait_for(lambda: station.sets_this_run >= 1)
        assert station.latest["set"] == 4
    with station_at(checker, tmp_path / "run3", record=db, log=log, http=False) as (station, _):
        assert station.recovered == []  # nothing twice
    rep = verify_record(db)
    assert rep["ok"] and rep["sets"] == 4 and rep["starts"] == 4
    assert [json.loads(x)["set"] for x in log.read_text().splitlines()][-2:] == [4, 4]


def test_recovery_needs_the_records_last_set_in_the_log() -> None:
    from lineclear.station.record import sets_missing_from_record

    def rec(n, t, view="A", verdict="clear"):
        return {"set": n, "checked_utc": t, "set_verdict": verdict, "set_exit_code": 0, "view": view,
                "verdict": verdict, "reason": "r", "regions": []}

    log = [rec(1, "t1"), rec(1, "t1", "B"), rec(2, "t2"), rec(2, "t2", "B"), rec(3, "t3"), rec(3, "t3", "B")]
    got = sets_missing_from_record(log, 2, "t2")
    assert [(n, [v["view"] for v in d["views"]], d["verdict"]) for n, d in got] == [(3, ["A", "B"], "clear")]
    assert "set" not in got[0][1]["views"][0] and got[0][1]["checked_utc"] == "t3"
    assert sets_missing_from_record(log, 3, "t3") == []
    assert sets_missing_from_record(log, 2, "another time") == []  # another run's set 2: not ours
    # a log another run restarted at 1 after our set 2: its sets are not taken for ours
    assert sets_missing_from_record(log[:4] + [rec(1, "u1"), rec(2, "u2")], 2, "t2") == []


def test_shift_windows_and_counts() -> None:
    import datetime as dt

    tz = dt.timezone(dt.timedelta(hours=1))
    starts = parse_shifts("22:00,06:00,14:00")
    now = dt.datetime(2026, 12, 3, 5, 30, tzinfo=tz)  # the night shift that began yesterday at 22:00
    w = shift_windows(now, starts, 3)
    assert [(a.day, a.hour, b.day, b.hour) for a, b in w] == [(2, 22, 3, 6), (2, 14, 2, 22), (2, 6, 2, 14)]
    sets = [(1, "clear", "2026-12-03T04:00:00+00:00"),   # 05:00 local: current shift
            (2, "leftover", "2026-12-02T20:59:59+00:00"),  # 21:59:59 local: the evening shift
            (3, "clear", "2026-12-02T21:00:00Z"),  # 22:00 local exactly: the night shift
            (4, "clear", "2026-12-01T10:00:00Z")]  # before the windows
    c = count_per_shift(w, sets)
    assert [x["counts"] for x in c] == [{"clear": 2, "leftover": 0, "undecided": 0},
                                        {"clear": 0, "leftover": 1, "undecided": 0},
                                        {"clear": 0, "leftover": 0, "undecided": 0}]
    from lineclear.errors import UsageError

    for bad in ("25:00", "06:00,06:00", "", "six"):
        with pytest.raises(UsageError):
            parse_shifts(bad)


def test_opcua_client_reads_the_nodes_of_a_checked_set(checker: Checker, tmp_path: Path) -> None:
    """A real asyncua client on loopback reads what the PLC would, before and after a leftover set."""
    import asyncio

    from asyncua import Client, ua

    from lineclear.station.opcua import NAMESPACE, OpcUaServer
    from tests.station_util import free_port

    url = f"opc.tcp://127.0.0.1:{free_port()}/lineclear/"

    async def read(names: list[str]) -> dict[str, object]:
        async with Client(url=url, timeout=10) as client:
            ns = await client.get_namespace_index(NAMESPACE)
            nodes = [client.get_node(ua.NodeId(n, ns)) for n in names]
            values = await client.read_values(nodes)
            return dict(zip(names, values))

    names = ["Station.LineClear", "Station.Undecided", "Station.ExitCode", "Station.SetNumber", "Station.Verdict",
             "Station.CheckedUtc"] + [f"Station.Views.{v}.{k}" for v in ("A", "B")
                                      for k in ("Verdict", "Score", "Threshold", "Reason", "SetNumber", "CheckedUtc")]
    with station_at(checker, tmp_path, record=tmp_path / "r.db", http=False) as (station, _):
        server = OpcUaServer(url, station.views)
        server.start()
        try:
            station.listeners.append(server.publish)
            before = asyncio.run(read(names))
            assert before["Station.LineClear"] is False and before["Station.Undecided"] is True
            assert before["Station.ExitCode"] == 4 and before["Station.SetNumber"] == 0
            drop_set(station.watch_dir, "1", leftover=True)
            wait_for(lambda: station.sets_this_run >= 1)
            got = asyncio.run(read(names))
            summary = station.latest
            views = {v["view"]: v for v in summary["views"]}
            assert got["Station.LineClear"] is False and got["Station.Undecided"] is False
            assert got["Station.ExitCode"] == 3 and got["Station.Verdict"] == "leftover" and got["Station.SetNumber"] == 1
            assert got["Station.Views.A.Verdict"] == "leftover" and got["Station.Views.B.Verdict"] == "clear"
            assert got["Station.Views.A.Score"] == pytest.approx(views["A"]["score"])
            assert got["Station.Views.A.Threshold"] == pytest.approx(views["A"]["threshold"])
            assert got["Station.Views.A.Score"] > got["Station.Views.A.Threshold"]
            assert got["Station.Views.A.Reason"] == views["A"]["reason"] and got["Station.Views.B.SetNumber"] == 1
            checked = got["Station.CheckedUtc"].replace(tzinfo=None).isoformat(timespec="milliseconds")
            assert summary["checked_utc"].startswith(checked)
            drop_set(station.watch_dir, "2")
            wait_for(lambda: station.sets_this_run >= 2)
            got = asyncio.run(read(["Station.LineClear", "Station.ExitCode", "Station.SetNumber"]))
            assert got == {"Station.LineClear": True, "Station.ExitCode": 0, "Station.SetNumber": 2}
            # read-only for clients: a PLC cannot fake a clear line
            async def write() -> None:
                async with Client(url=url, timeout=10) as client:
                    ns = await client.get_namespace_index(NAMESPACE)
                    await client.get_node(ua.NodeId("Station.ExitCode", ns)).write_value(ua.Variant(0, ua.VariantType.Int32))

            with pytest.raises(ua.UaStatusCodeError):
                asyncio.run(write())
        finally:
            server.stop()


def test_answers_match_the_documented_models(served) -> None:
    """The read endpoints send pre-rendered JSON: the OpenAPI models must still describe it."""
    from lineclear.station.app import SetDetail, SetList, Status

    station, client, _, _ = served
    Status.model_validate(client.get("/api/status").json())
    SetList.model_validate(client.get("/api/sets").json())
    SetDetail.model_validate(client.get("/api/sets/1").json())
    # a change of the station shows at once (the cache is keyed by the station's version)
    before = client.get("/api/sets/1").json()["acks"]
    station.acknowledge(1, "Bo", "")
    assert before == [] and client.get("/api/sets/1").json()["acks"][0]["name"] == "Bo"
    assert client.get("/api/sets").json()["sets"][0]["acks"][0]["name"] == "Bo"


# -- the command ---------------------------------------------------------------------------------------------


def test_serve_command_end_to_end_and_ctrl_c(bundle: Path, tmp_path: Path, capsys) -> None:  # noqa: F811
    """``lineclear serve`` in this process: a set checked, acknowledged over HTTP, read over OPC UA; Ctrl-C stops it."""
    import signal
    import threading

    from tests.conftest import run_cli
    from tests.station_util import free_port

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    port, ua_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    seen: dict = {}

    def drive() -> None:
        try:
            wait_for(lambda: _get(url + "/api/status"), 60)
            drop_set(inbox, "1", leftover=True)
            seen["set"] = wait_for(lambda: (_get(url + "/api/sets/1") or {}).get("verdict"), 30)
            r = httpx.post(url + "/api/sets/1/ack", json={"name": "Ana"}, headers={"Authorization": f"Bearer {TOKEN}"})
            seen["ack"] = r.status_code
            seen["host"] = httpx.get(url + "/api/status", headers={"Host": "evil.example"}).status_code
            import asyncio

            from asyncua import Client, ua

            async def read() -> int:
                async with Client(url=f"opc.tcp://127.0.0.1:{ua_port}/lineclear/", timeout=10) as c:
                    ns = await c.get_namespace_index("urn:lineclear:station")
                    return await c.get_node(ua.NodeId("Station.ExitCode", ns)).read_value()

            seen["exit_code"] = asyncio.run(read())
        finally:
            time.sleep(0.2)
            os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=drive, daemon=True).start()
    rc = run_cli(["serve", str(bundle), "--watch", str(inbox), "--port", str(port), "--record", str(tmp_path / "r.db"),
                  "--token-file", str(token), "--opcua", f"opc.tcp://127.0.0.1:{ua_port}/lineclear/",
                  "--overlay-dir", str(tmp_path / "ov"), "--log", str(tmp_path / "v.jsonl"), "--settle", "0.15",
                  "--poll", "0.05", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert seen == {"set": "leftover", "ack": 201, "host": 400, "exit_code": 3}, (seen, err)
    assert "station at http://127.0.0.1:" in err and "stopped after 1 set(s)" in err
    rep = verify_record(tmp_path / "r.db")
    assert rep["ok"] and (rep["starts"], rep["sets"], rep["acknowledgements"]) == (1, 1, 1)
    assert len((tmp_path / "v.jsonl").read_text().splitlines()) == 2
    assert list((tmp_path / "ov").glob("run-*/set000001_A__A_1.png"))


def _get(url: str):
    try:
        r = httpx.get(url, timeout=5)
    except httpx.HTTPError:
        return None
    return r.json() if r.status_code == 200 else None


@pytest.mark.parametrize("args, message", [
    (["--opcua", "http://x"], "expected opc.tcp://HOST:PORT"),
    (["--shifts", "6am"], "not a clock time"),
    (["--token-file", "{tmp}/short"], "at least 16 characters"),
    (["--token-file", "{tmp}/missing"], "cannot read the token file"),
])
def test_serve_refuses_bad_options_in_one_line(bundle: Path, tmp_path: Path, capsys, args, message) -> None:  # noqa: F811
    from tests.conftest import run_cli

    (tmp_path / "short").write_text("abc\n")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    rc = run_cli(["serve", str(bundle), "--watch", str(inbox), *[a.format(tmp=tmp_path) for a in args]])
    err = capsys.readouterr().err
    assert rc in (1, 2) and message in err and "Traceback" not in err
    assert run_cli(["serve", str(bundle), "--watch", str(tmp_path / "nowhere")]) in (1, 2)


def test_a_client_that_does_not_read_its_events_is_dropped() -> None:
    import asyncio

    from lineclear.station.app import Hub

    async def run() -> tuple[list, list, int]:
        hub = Hub(queue_size=3)
        hub.loop = asyncio.get_running_loop()
        with hub.subscribe() as slow, hub.subscribe() as fast:
            got = []
            for n in range(1, 6):
                hub.publish("set", {"set": n})
                await asyncio.sleep(0)  # the fan-out runs on the loop
                got.append(fast.get_nowait()[1]["set"])
            # the slow one was cut off: its stream ends (the page reconnects and catches up)
            return got, [slow.get_nowait()], len(hub.queues)

    got, slow, left = asyncio.run(run())
    assert got == [1, 2, 3, 4, 5] and slow == [None] and left == 1


def test_serve_on_a_port_in_use_says_so(bundle: Path, tmp_path: Path, capsys) -> None:  # noqa: F811
    import socket

    from tests.conftest import run_cli

    (tmp_path / "inbox").mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        rc = run_cli(["serve", str(bundle), "--watch", str(tmp_path / "inbox"), "--port", str(port), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 1 and f"cannot serve on 127.0.0.1:{port}" in err


def test_after_a_restart_the_plc_sees_undecided_not_the_records_last_set(bundle: Path, tmp_path: Path,  # noqa: F811
                                                                          capsys) -> None:
    import asyncio
    import signal
    import threading

    from asyncua import Client, ua

    from tests.conftest import run_cli
    from tests.station_util import free_port
    from tests.test_record import _doc

    db = tmp_path / "r.db"
    with open_record(db) as rec:  # a clear set from an earlier run
        rec.append_set(lambda n: {"set": n, "verdict": _doc("clear")}, "clear")
    (tmp_path / "inbox").mkdir()
    port, ua_port = free_port(), free_port()
    seen: dict = {}

    def drive() -> None:
        try:
            seen["page"] = wait_for(lambda: (_get(f"http://127.0.0.1:{port}/api/status") or {}).get("last_set"), 60)

            async def read() -> list:
                async with Client(url=f"opc.tcp://127.0.0.1:{ua_port}/lineclear/", timeout=10) as c:
                    ns = await c.get_namespace_index("urn:lineclear:station")
                    return await c.read_values([c.get_node(ua.NodeId(f"Station.{k}", ns))
                                                for k in ("LineClear", "Undecided", "ExitCode", "SetNumber")])

            seen["plc"] = asyncio.run(read())
        finally:
            os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=drive, daemon=True).start()
    rc = run_cli(["-q", "serve", str(bundle), "--watch", str(tmp_path / "inbox"), "--port", str(port),
                  "--record", str(db), "--opcua", f"opc.tcp://127.0.0.1:{ua_port}/lineclear/", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    # the page shows the record's last set; the PLC is not told "clear" from before the restart
    assert seen == {"page": 1, "plc": [False, True, 4, 0]}
