"""The station under load: ``lineclear serve`` on loopback, image sets dropped while API clients poll it.

Builds a two-view bundle from the synthetic dataset (views A and B at 384×256, the ``template`` model at
its ``demo`` preset, thresholds from ``calibrate --method ksigma``), then:

* **baseline** (in this process): :meth:`Checker.check` on a few sets, no server -- the bare check time;
  the API's latency with a single client on an idle station; and the station's CPU per request with the
  clients alone for 5 s (no sets);
* **load**: ``lineclear serve`` in its own process (record, log, token), ``--sets`` image sets dropped into
  the watched folder at an even pace over ``--seconds`` (camera-style: a hidden name, then a rename),
  ``--clients`` concurrent API clients (``/api/status``, ``/api/sets?since=N``, ``/api/sets/{n}``) for
  ``--seconds``, and one event-stream listener. The station is stopped with SIGINT at the end.

Reported: latency percentiles per endpoint, requests per second, the time from a set's last file landing
to its event on the stream, and the checks that nothing was lost -- every set is in the API, the event
stream, the watch log and the record (and ``audit verify`` passes). Ratios: loaded against idle API
latency, drop-to-event against the bare check time.

Options: ``--sets 200 --clients 20 --seconds 60`` (default), ``--quick`` (40 sets, 8 clients, 15 s),
``--work=DIR`` keeps and reuses the data and bundle. Only loopback addresses are used; every loop is
bounded in count and time.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks._args import option
from benchmarks.bench_check import _cli

VIEWS = ("A", "B")


def build_bundle(work: Path) -> Path:
    """``work/line``: the two-view template bundle (built once, reused when it exists)."""
    from lineclear.synth import generate

    line = work / "line"
    if (line / "manifest.json").is_file():
        return line
    print(f"building a 2-view bundle (384x256, template demo) in {work} ...", flush=True)
    generate(work / "data", views=VIEWS, size=(384, 256), seed=0, n_train=8, n_good=4, n_shifted=4, n_anomalous=6)
    runs = []
    for v in VIEWS:
        view, run = work / "data" / v, work / "runs" / v
        _cli(["-q", "train", str(view), "--model", "template", "--preset", "demo", "--out", str(run), "--device", "cpu"])
        _cli(["-q", "score", str(run), str(view), "--split", "val", "--out", str(run / "val_maps.h5"),
              "--mask", str(view / "roi.png"), "--mask-stage", "post"])
        _cli(["-q", "calibrate", str(run / "val_maps.h5"), "--method", "ksigma"])
        runs.append(str(run))
    _cli(["-q", "deploy", *runs, "--out", str(line)])
    return line


def test_images(work: Path) -> dict[str, list[Path]]:
    """Per view, the test images to drop: normal, camera-shifted and with leftovers."""
    out = {}
    for v in VIEWS:
        test = work / "data" / v / "test"
        out[v] = sorted(p for p in test.rglob("*.png"))
    return out


def drop(inbox: Path, k: int, images: dict[str, list[Path]], rng: random.Random) -> None:
    """Set k: one image per view, written to a hidden name and renamed (as a camera or a copy tool does)."""
    for v in VIEWS:
        src = rng.choice(images[v])
        hidden = inbox / f".s{k:05d}_{v}.part"
        shutil.copyfile(src, hidden)
        os.rename(hidden, inbox / f"s{k:05d}_{v}.png")


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc), 0 where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _clients(url: str, n_clients: int, seconds: float, last_set: list[int]) -> dict[str, list[float]]:
    import httpx

    lat: dict[str, list[float]] = {"status": [], "sets_since": [], "set": []}
    errors: list[str] = []
    deadline = time.monotonic() + seconds

    async def client(i: int) -> None:
        rng = random.Random(i)
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            while time.monotonic() < deadline:
                kind = rng.choice(("status", "sets_since", "set"))
                n = last_set[0]
                if kind == "status":
                    path = "/api/status"
                elif kind == "sets_since":
                    path = f"/api/sets?since={max(0, n - rng.randint(1, 20))}"
                else:
                    if n < 1:
                        kind, path = "status", "/api/status"
                    else:
                        path = f"/api/sets/{rng.randint(1, n)}"
                t0 = time.perf_counter()
                try:
                    r = await c.get(path)
                    ok = r.status_code == 200
                except httpx.HTTPError as exc:
                    ok, r = False, exc
                lat[kind].append(time.perf_counter() - t0)
                if not ok:
                    errors.append(f"{path}: {getattr(r, 'status_code', r)}")

    await asyncio.gather(*(client(i) for i in range(n_clients)))
    lat["errors"] = errors  # type: ignore[assignment]
    return lat


def _listen(url: str, got: dict[int, float], stop: threading.Event, last_set: list[int]) -> None:
    import httpx

    with httpx.Client(base_url=url, timeout=httpx.Timeout(10, read=None)) as c:
        with c.stream("GET", "/api/events") as s:
            kind = None
            for line in s.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind == "set":
                    n = json.loads(line[6:])["set"]
                    got[n] = time.monotonic()
                    last_set[0] = max(last_set[0], n)
                if stop.is_set():
                    return


def main(argv: list[str]) -> dict:
    import httpx

    from lineclear.formats.record import verify_record
    from lineclear.formats.verdict import read_verdict_log
    from lineclear.line.checker import Checker

    quick = "--quick" in argv
    n_sets = int(option(argv, "--sets", "40" if quick else "200"))
    n_clients = int(option(argv, "--clients", "8" if quick else "20"))
    seconds = float(option(argv, "--seconds", "15" if quick else "60"))
    work = option(argv, "--work")
    tmp = Path(work) if work else Path(tempfile.mkdtemp(prefix="bench_station_"))
    tmp.mkdir(parents=True, exist_ok=True)
    line = build_bundle(tmp)
    images = test_images(tmp)
    run = Path(tempfile.mkdtemp(prefix="run_", dir=tmp))
    inbox = run / "inbox"
    inbox.mkdir()

    # -- baseline: the bare check, no server ------------------------------------------------------------------
    checker = Checker(line, "cpu")
    rng = random.Random(0)
    bare = []
    for _ in range(8):
        imgs = {v: rng.choice(images[v]) for v in VIEWS}
        t0 = time.perf_counter()
        checker.check(imgs)
        bare.append(time.perf_counter() - t0)
    del checker
    bare_ms = statistics.median(bare) * 1000

    # -- the station in its own process ---------------------------------------------------------------------
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    token = run / "token"
    token.write_text("bench-token-" + "x" * 24 + "\n")
    token.chmod(0o600)
    cmd = [sys.executable, "-m", "lineclear", "-q", "serve", str(line), "--watch", str(inbox), "--port", str(port),
           "--record", str(run / "record.db"), "--log", str(run / "verdicts.jsonl"), "--overlay-dir", str(run / "ov"),
           "--token-file", str(token), "--settle", "0.2", "--poll", "0.1", "--set-timeout", "5", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=open(run / "serve.stderr", "w"))
    try:
        t0 = time.monotonic()
        while True:
            try:
                if httpx.get(url + "/api/status", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() - t0 > 120:
                raise RuntimeError(f"the station did not start: {(run / 'serve.stderr').read_text()[-2000:]}")
            time.sleep(0.2)
        # idle API latency: one client, no sets
        idle = []
        with httpx.Client(base_url=url) as c:
            for _ in range(50):
                t = time.perf_counter()
                c.get("/api/status").raise_for_status()
                idle.append(time.perf_counter() - t)

        # the API's own cost: the clients for a few seconds before any set, the station's CPU per request
        api_only_s = 5.0
        c0 = _cpu_seconds(proc.pid)
        warm = asyncio.run(_clients(url, max(n_clients, 1), api_only_s, [0]))
        warm.pop("errors")
        api_requests = sum(len(v) for v in warm.values())
        api_cpu_ms = (_cpu_seconds(proc.pid) - c0) / max(api_requests, 1) * 1000

        events: dict[int, float] = {}
        dropped: dict[int, float] = {}
        last_set = [0]
        stop = threading.Event()
        listener = threading.Thread(target=_listen, args=(url, events, stop, last_set), daemon=True)
        listener.start()
        time.sleep(0.5)

        def produce() -> None:
            r = random.Random(1)
            gap = seconds * 0.85 / n_sets
            start = time.monotonic()
            for k in range(1, n_sets + 1):
                wait = start + (k - 1) * gap - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                drop(inbox, k, images, r)
                dropped[k] = time.monotonic()

        producer = threading.Thread(target=produce, daemon=True)
        load_t0 = time.monotonic()
        server_cpu0, own_cpu0 = _cpu_seconds(proc.pid), time.process_time()
        producer.start()
        lat = asyncio.run(_clients(url, n_clients, seconds, last_set))
        load_s = time.monotonic() - load_t0
        server_cpu, own_cpu = _cpu_seconds(proc.pid) - server_cpu0, time.process_time() - own_cpu0
        producer.join()
        t_wait = time.monotonic()
        while len(events) < n_sets and time.monotonic() - t_wait < 180:
            time.sleep(0.1)
        stop.set()
        listed = []
        since = 0
        with httpx.Client(base_url=url) as c:
            while True:
                page = c.get(f"/api/sets?since={since}&limit=1000").json()["sets"]
                listed += [s["set"] for s in page]
                if len(page) < 1000:
                    break
                since = page[-1]["set"]
            status = c.get("/api/status").json()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
    log = read_verdict_log(run / "verdicts.jsonl")
    log_sets = sorted({r["set"] for r in log.records})
    rep = verify_record(run / "record.db")
    errors = lat.pop("errors")
    e2e = [(events[k] - dropped[k]) for k in dropped if k in events]
    want = list(range(1, n_sets + 1))
    lost = {"api": sorted(set(want) - set(listed)), "events": sorted(set(want) - set(events)),
            "log": sorted(set(want) - set(log_sets)), "record": n_sets - rep["sets"]}
    all_lat = [x for v in lat.values() for x in v]
    n_req = len(all_lat)
    print(f"\n{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; {n_sets} sets over {seconds:.0f} s, "
          f"{n_clients} API clients for {seconds if n_clients else 0:.0f} s; station exit code {rc}")
    print(f"{'':24s} {'n':>7s} {'p50 ms':>8s} {'p90 ms':>8s} {'p99 ms':>8s} {'max ms':>8s}")
    rows = {"idle /api/status (1 client)": idle, **{f"load {k}": v for k, v in lat.items()}, "load all": all_lat,
            "set dropped → event": e2e}
    out_rows = {}
    for name, xs in rows.items():
        ms = [x * 1000 for x in xs]
        out_rows[name] = {"n": len(ms), "p50": round(pct(ms, 50), 1), "p90": round(pct(ms, 90), 1),
                          "p99": round(pct(ms, 99), 1), "max": round(max(ms) if ms else float("nan"), 1)}
        r = out_rows[name]
        print(f"{name:28s} {r['n']:7d} {r['p50']:8.1f} {r['p90']:8.1f} {r['p99']:8.1f} {r['max']:8.1f}")
    rps = n_req / max(load_s, 1e-9)
    print(f"{rps:.0f} requests/s, {len(errors)} failed; bare check (no server) {bare_ms:.0f} ms median")
    print(f"station CPU per API request (clients alone, {api_only_s:g} s, {api_requests} requests): {api_cpu_ms:.2f} ms")
    print(f"CPU during the load phase: station {server_cpu:.1f} s (checks and HTTP), the load generator "
          f"(clients, listener, producer) {own_cpu:.1f} s, over {load_s:.0f} s on {os.cpu_count()} cores")
    api_ratio = (f"loaded/idle API p50 {out_rows['load all']['p50'] / out_rows['idle /api/status (1 client)']['p50']:.1f}x; "
                 if n_req else "")
    print(f"ratios: {api_ratio}drop→event p50 / bare check {out_rows['set dropped → event']['p50'] / bare_ms:.1f}x "
          "(includes the 0.2 s settle time and the folder poll)")
    print(f"lost sets: api {lost['api'] or 'none'}, events {lost['events'] or 'none'}, log {lost['log'] or 'none'}, "
          f"record {lost['record'] or 'none'}; record verify ok={rep['ok']} ({rep['rows']} rows); "
          f"counts {status['counts']}")
    if errors:
        print("first errors:", errors[:5])
    return {"sets": n_sets, "clients": n_clients, "seconds": seconds, "requests": n_req, "rps": round(rps, 1),
            "failed_requests": len(errors), "latency_ms": out_rows, "bare_check_ms": round(bare_ms, 1),
            "lost": lost, "record_ok": rep["ok"], "counts": status["counts"], "exit_code": rc,
            "station_cpu_s": round(server_cpu, 1), "api_cpu_ms_per_request": round(api_cpu_ms, 3), "load_generator_cpu_s": round(own_cpu, 1),
            "load_average": os.getloadavg()[0]}


if __name__ == "__main__":
    main(sys.argv[1:])
