"""The OPC UA server (asyncua) that the packaging machine's PLC reads: the last set's verdict, per view and whole.

Address space (namespace ``urn:lineclear:station``, string node ids, all read-only)::

    Objects/LineClearStation                      ns=<i>;s=Station
        LineClear   Boolean   true only when the last set is clear *and* recorded
        Undecided   Boolean   the last set is undecided (also true before the first set)
        ExitCode    Int32     0 clear, 3 leftover, 4 undecided (``lineclear check``'s codes)
        Verdict     String    clear | leftover | undecided | none
        SetNumber   Int64     the last set's number (0: none yet)
        CheckedUtc  DateTime  when it was checked
        Views/<view>                               ns=<i>;s=Station.Views.<view>
            Verdict, Score (Double, NaN when there is none), Threshold (Double), Reason (String),
            SetNumber (Int64), CheckedUtc (DateTime)

Node ids are ``Station.<name>`` and ``Station.Views.<view>.<name>``. Before the first set the station
says ``Undecided`` / ``ExitCode`` 4, never clear. The per-view nodes are written first and the set-level
ones last, ``SetNumber`` very last: a PLC that reads ``SetNumber`` before and after its other reads and
sees the same number has read one set.

The server runs its own asyncio loop in a thread; :meth:`OpcUaServer.publish` is called from the watch
thread. Security: no encryption or user tokens (the usual ``None`` policy of a machine network); it binds
to the address of the URL, 127.0.0.1 by default -- put it on the machine network only behind the
plant's own network controls.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import math
import threading
from typing import Any
from urllib.parse import urlparse

from lineclear.errors import UsageError

NAMESPACE = "urn:lineclear:station"
DEFAULT_URL = "opc.tcp://127.0.0.1:4840/lineclear/"


def check_url(url: str) -> str:
    u = urlparse(url)
    if u.scheme != "opc.tcp" or not u.hostname or not u.port:
        raise UsageError(f"--opcua {url!r}: expected opc.tcp://HOST:PORT/PATH, e.g. {DEFAULT_URL}")
    return url


def _utc(iso: str | None) -> _dt.datetime | None:
    if not iso:
        return None
    return _dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(_dt.timezone.utc)


class OpcUaServer:
    """Start with :meth:`start` (blocks until the endpoint listens), feed with :meth:`publish`, :meth:`stop`."""

    def __init__(self, url: str, views: list[str]) -> None:
        self.url = check_url(url)
        self.views = list(views)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.nodes: dict[str, Any] = {}
        self.ns: int | None = None
        self._ready = threading.Event()
        self._stopped: asyncio.Event | None = None
        self._error: BaseException | None = None

    # -- the server's loop -------------------------------------------------------------------------------------
    async def _build(self):
        from asyncua import Server, ua

        server = Server()
        await server.init()
        server.set_endpoint(self.url)
        server.set_server_name("lineclear station")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        ns = await server.register_namespace(NAMESPACE)
        self.ns = ns
        objects = server.nodes.objects
        station = await objects.add_object(ua.NodeId("Station", ns), ua.QualifiedName("LineClearStation", ns))

        async def var(parent, nid: str, name: str, value: Any, vtype):
            node = await parent.add_variable(ua.NodeId(nid, ns), ua.QualifiedName(name, ns), ua.Variant(value, vtype))
            self.nodes[nid] = (node, vtype)
            return node

        V = ua.VariantType
        epoch = _dt.datetime(1601, 1, 1, tzinfo=_dt.timezone.utc)
        await var(station, "Station.LineClear", "LineClear", False, V.Boolean)
        await var(station, "Station.Undecided", "Undecided", True, V.Boolean)
        await var(station, "Station.ExitCode", "ExitCode", 4, V.Int32)
        await var(station, "Station.Verdict", "Verdict", "none", V.String)
        await var(station, "Station.SetNumber", "SetNumber", 0, V.Int64)
        await var(station, "Station.CheckedUtc", "CheckedUtc", epoch, V.DateTime)
        views = await station.add_folder(ua.NodeId("Station.Views", ns), ua.QualifiedName("Views", ns))
        for v in self.views:
            obj = await views.add_object(ua.NodeId(f"Station.Views.{v}", ns), ua.QualifiedName(v, ns))
            p = f"Station.Views.{v}."
            await var(obj, p + "Verdict", "Verdict", "none", V.String)
            await var(obj, p + "Score", "Score", math.nan, V.Double)
            await var(obj, p + "Threshold", "Threshold", math.nan, V.Double)
            await var(obj, p + "Reason", "Reason", "no set checked yet", V.String)
            await var(obj, p + "SetNumber", "SetNumber", 0, V.Int64)
            await var(obj, p + "CheckedUtc", "CheckedUtc", epoch, V.DateTime)
        return server

    async def _main(self) -> None:
        logging.getLogger("asyncua").setLevel(logging.ERROR)
        self._stopped = asyncio.Event()
        try:
            server = await self._build()
            await server.start()
        except BaseException as exc:  # noqa: BLE001 - handed to start()'s caller
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stopped.wait()
        finally:
            await server.stop()

    async def _write(self, values: list[tuple[str, Any]]) -> None:
        from asyncua import ua

        for nid, value in values:
            node, vtype = self.nodes[nid]
            await node.write_value(ua.DataValue(ua.Variant(value, vtype), SourceTimestamp=_dt.datetime.now(_dt.timezone.utc)))

    # -- the caller's side ---------------------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> None:
        def run() -> None:
            self.loop = asyncio.new_event_loop()
            try:
                self.loop.run_until_complete(self._main())
            finally:
                self.loop.close()

        self.thread = threading.Thread(target=run, name="lineclear-opcua", daemon=True)
        self.thread.start()
        if not self._ready.wait(timeout):
            raise UsageError(f"OPC UA server at {self.url} did not start within {timeout:g} s")
        if self._error is not None:
            raise UsageError(f"OPC UA server at {self.url} cannot start: {type(self._error).__name__}: {self._error}")

    def values_for(self, summary: dict[str, Any]) -> list[tuple[str, Any]]:
        """The node writes for a set summary (see :meth:`lineclear.station.service.Station.summary`)."""
        n = int(summary["set"])
        when = _utc(summary.get("checked_utc")) or _dt.datetime.now(_dt.timezone.utc)
        out: list[tuple[str, Any]] = []
        for v in summary["views"]:
            if v["view"] not in self.views:
                continue
            p = f"Station.Views.{v['view']}."
            score, thr = v.get("score"), v.get("threshold")
            out += [(p + "Verdict", v["verdict"]), (p + "Score", math.nan if score is None else float(score)),
                    (p + "Threshold", math.nan if thr is None else float(thr)), (p + "Reason", v.get("reason") or ""),
                    (p + "CheckedUtc", when), (p + "SetNumber", n)]
        verdict = summary["verdict"]
        out += [("Station.Verdict", verdict), ("Station.ExitCode", int(summary["exit_code"])),
                ("Station.Undecided", verdict == "undecided"),
                ("Station.LineClear", verdict == "clear" and bool(summary.get("recorded"))),
                ("Station.CheckedUtc", when), ("Station.SetNumber", n)]
        return out

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        """A station listener: a ``set`` event updates the nodes (waits until written, at most 5 s)."""
        if kind != "set" or self.loop is None or self.loop.is_closed():
            return
        fut = asyncio.run_coroutine_threadsafe(self._write(self.values_for(data)), self.loop)
        fut.result(timeout=5)

    def stop(self, timeout: float = 10.0) -> None:
        if self.loop is not None and self._stopped is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._stopped.set)
        if self.thread is not None:
            self.thread.join(timeout)
