"""``lineclear serve BUNDLE --watch DIR``: the operator's station (page, JSON API, OPC UA, record)."""

from __future__ import annotations

import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import Annotated, List, Optional

import typer
from rich.markup import escape

from lineclear.cli import console
from lineclear.cli.check import device_for
from lineclear.cli.options import Device
from lineclear.errors import LineclearError, UsageError
from lineclear.formats.deploy import read_manifest
from lineclear.formats.record import open_record
from lineclear.line.checker import Checker
from lineclear.line.watch import WatchOptions
from lineclear.station.shifts import DEFAULT_SHIFTS, parse_shifts

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def read_token(path: Path) -> str:
    """The bearer token: the file's first line; refused when empty (a token nobody can guess is the point)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LineclearError(f"{path}: cannot read the token file ({exc.strerror or exc})") from None
    token = text.strip().splitlines()[0].strip() if text.strip() else ""
    if len(token) < 16:
        raise LineclearError(f"{path}: the token must be at least 16 characters (e.g. `openssl rand -hex 24 > {path}`)")
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        console.warn(f"{path}: the token file is readable by other accounts (chmod 600 {path})")
    return token


def serve_command(
    bundle: Annotated[Path, typer.Argument(help="Deployment bundle folder (from `lineclear deploy`).", show_default=False)],
    watch: Annotated[Path, typer.Option("--watch", help="Watch this folder and check each new image set.", file_okay=False)],
    host: Annotated[str, typer.Option("--host", help="Address to serve the page on (loopback unless told otherwise).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port of the page and the API.")] = 8765,
    opcua: Annotated[Optional[str], typer.Option("--opcua", metavar="URL", help="Also serve the verdicts over OPC UA, e.g. opc.tcp://127.0.0.1:4840/lineclear/.")] = None,
    record: Annotated[Optional[Path], typer.Option("--record", metavar="DB", help="Append every set and acknowledgement to this record (SQLite, hash-chained).", dir_okay=False)] = None,
    token_file: Annotated[Optional[Path], typer.Option("--token-file", metavar="FILE", help="Bearer token for acknowledgements (without it they are off).", dir_okay=False)] = None,
    overlay_dir: Annotated[Optional[Path], typer.Option("--overlay-dir", help="Keep the overlays here (default: a temporary folder, removed at exit).", file_okay=False)] = None,
    log: Annotated[Optional[Path], typer.Option("--log", help="Append one JSON line per view verdict to this file (fsynced).")] = None,
    shifts: Annotated[str, typer.Option("--shifts", metavar="HH:MM,...", help="Local start times of the shifts.")] = DEFAULT_SHIFTS,
    allowed_host: Annotated[Optional[List[str]], typer.Option("--allowed-host", metavar="NAME", help="Host name the page may be reached by (repeatable; default: loopback names, or any with a non-loopback --host).")] = None,
    set_timeout: Annotated[float, typer.Option("--set-timeout", min=0.0, help="Check an incomplete image set this many seconds after its first image.")] = 10.0,
    settle: Annotated[float, typer.Option("--settle", min=0.0, help="A file is complete when unchanged for this many seconds.")] = 1.0,
    poll: Annotated[float, typer.Option("--poll", min=0.01, help="Seconds between folder scans.")] = 0.2,
    existing: Annotated[bool, typer.Option("--existing", help="Also check the images already in the folder.")] = False,
    bf16: Annotated[bool, typer.Option("--bf16/--fp32", help="Run the networks under bfloat16 autocast.")] = False,
    device: Device = "auto",
) -> None:
    """Serve the operator's station: watch a folder, show each verdict live, record it.

    A page (one tile per view: verdict, overlay, score against threshold, reason; history; counts per
    shift; acknowledgements), a JSON API (/api/status, /api/sets?since=N, /api/sets/N, OpenAPI at
    /openapi.json), optionally an OPC UA server for the PLC (--opcua), and a tamper-evident record (--record;
    see `lineclear audit`). Ctrl-C stops it (an open image set is checked first).
    """
    try:
        import uvicorn

        from lineclear.station.app import LOOPBACK_HOSTS, create_app
        from lineclear.station.opcua import OpcUaServer, check_url
        from lineclear.station.service import Station
    except ModuleNotFoundError as exc:
        raise LineclearError(f"lineclear serve needs {exc.name}: pip install 'lineclear[station]'") from None

    if not watch.is_dir():
        raise LineclearError(f"{watch}: no such folder to watch")
    parse_shifts(shifts)
    if opcua is not None:
        check_url(opcua)
    token = read_token(token_file) if token_file is not None else None
    if host not in _LOOPBACK:
        console.warn(f"serving on {host}: the page is reachable from the network (acknowledgements need the token)")
    hosts = list(allowed_host) if allowed_host else (LOOPBACK_HOSTS if host in _LOOPBACK else ["*"])
    manifest = read_manifest(bundle)
    dev = device_for(manifest, device, bf16)
    t0 = time.perf_counter()
    checker = Checker(manifest, dev, bf16=bf16)
    for name, reason in checker.errors.items():
        console.warn(f"view {name}: {reason}")
    console.note(f"loaded {len(checker.views)} view(s) from {bundle} in {time.perf_counter() - t0:.2f} s on {dev}")
    if record is None:
        console.note("no --record: sets and acknowledgements are kept in memory only, for this run")
    rec = open_record(record if record is not None else ":memory:")
    temp_overlays = None
    if overlay_dir is None:
        temp_overlays = Path(tempfile.mkdtemp(prefix="lineclear-overlays-"))
    opts = WatchOptions(poll=poll, settle=settle, set_timeout=set_timeout, existing=existing)
    ua_server = None
    try:
        station = Station(checker, watch, rec, overlay_dir or temp_overlays, opts, log_path=log, shifts=shifts,
                          on_event=lambda m: console.note(escape(m)) if not console.state.quiet else None)
        if opcua is not None:
            ua_server = OpcUaServer(opcua, station.views)
            ua_server.start()
            # not the record's last set: after a restart the PLC waits for a fresh check (Undecided until then)
            station.listeners.append(ua_server.publish)
            console.note(f"OPC UA server at {opcua} (namespace urn:lineclear:station)")
        app = create_app(station, token=token, allowed_hosts=hosts)
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=3,
                                limit_concurrency=200, h11_max_incomplete_event_size=16 * 1024, access_log=False)
        hub = app.state.hub

        class Server(uvicorn.Server):
            def handle_exit(self, sig, frame) -> None:
                hub.close_threadsafe()  # the page's event streams end now, not after the graceful timeout
                super().handle_exit(sig, frame)

        server = Server(config)
        station.start()
        shown = f"[{host}]" if ":" in host else host
        console.note(f"station at http://{shown}:{port}/ watching {watch} (views {', '.join(station.views)}); "
                     f"acknowledgements {'on' if token else 'off (no --token-file)'}; Ctrl-C stops")
        try:
            server.run()
        except KeyboardInterrupt:
            pass
        except SystemExit:  # uvicorn exits when it cannot bind; say so in lineclear's one line
            server.started = False
        if not server.started:
            raise LineclearError(f"cannot serve on {host}:{port} (address in use, or not this machine's?)")
    finally:
        if "station" in locals():
            station.stop()
        if ua_server is not None:
            ua_server.stop()
        rec.close()
        if temp_overlays is not None:
            shutil.rmtree(temp_overlays, ignore_errors=True)
    console.note(f"stopped after {station.sets_this_run} set(s)")


def register(app: typer.Typer) -> None:
    app.command("serve", no_args_is_help=True)(serve_command)
