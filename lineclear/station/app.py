"""The station's web app (FastAPI): the page, the JSON API, live events, operator acknowledgements.

=============================== ====================================================================
route                           what
=============================== ====================================================================
``GET /``                       the page (``static/``: HTML, JS, CSS inside the package, no CDN)
``GET /api/status``             the latest set per view, counts, counts per shift, watch and record state
``GET /api/sets?since=N``       sets with a number above N, oldest first (``limit`` ≤ 1000)
``GET /api/sets/{n}``           one set: summary, acknowledgements and its record row (verdict document,
                                image and overlay SHA-256, bundle hash)
``POST /api/sets/{n}/ack``      acknowledge a set: ``{"name", "comment"}``, ``Authorization: Bearer TOKEN``
``GET /api/events``             server-sent events: ``set`` (a checked set's summary), ``ack``
``GET /overlays/{path}``        overlay PNGs, from the overlay folder only (no symlink out of it)
``GET /openapi.json``           the API's OpenAPI schema (FastAPI's ``/docs`` page is off: it loads
                                its scripts from a CDN, and the station works offline)
=============================== ====================================================================

Security: the CLI binds 127.0.0.1 unless told otherwise; the ``Host`` header must name an allowed host
(a web page elsewhere cannot reach the API by DNS rebinding); writes need the bearer token; a request body
above ``max_body`` bytes is refused (413) and one without a length (411); every response carries a strict
Content-Security-Policy (nothing loads from elsewhere, no inline script).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import threading
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Optional

from fastapi import Depends, FastAPI, HTTPException, Path as PathParam, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.sse import EventSourceResponse, ServerSentEvent
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from lineclear import __version__
from lineclear.station.service import Station

STATIC = Path(__file__).resolve().parent / "static"
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]
MAX_BODY = 8 * 1024

_CSP = ("default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


# -- the API's types (they make the OpenAPI schema) -------------------------------------------------------------


class ViewTile(BaseModel):
    view: str
    verdict: str = Field(description="clear | leftover | undecided")
    score: Optional[float] = None
    threshold: Optional[float] = None
    reason: Optional[str] = None
    image: Optional[str] = None
    regions_total: int = 0
    overlay_url: Optional[str] = Field(None, description="the overlay PNG under /overlays/")
    overlay_error: Optional[str] = Field(None, description="why there is no overlay, when writing it failed")


class Ack(BaseModel):
    set: int
    name: str
    comment: str
    acknowledged_utc: str
    client: Optional[str] = None
    row: Optional[dict[str, Any]] = None


class RowRef(BaseModel):
    seq: int
    hash: str
    created_utc: str


class SetSummary(BaseModel):
    set: int
    verdict: str
    exit_code: int = Field(description="0 clear, 3 leftover, 4 undecided")
    checked_utc: Optional[str] = None
    recorded: bool = Field(description="false: the record could not take this set (see status.record_error)")
    row: Optional[RowRef] = None
    views: list[ViewTile]
    acks: list[Ack] = []


class SetDetail(SetSummary):
    document: dict[str, Any] = Field(description="the record row: verdict document, image/overlay hashes, bundle")


class SetList(BaseModel):
    since: int
    sets: list[SetSummary]
    last_set: Optional[int]


class ShiftCounts(BaseModel):
    start: str
    end: str
    counts: dict[str, int]


class Status(BaseModel):
    station: dict[str, Any]
    watching: bool
    watch_error: Optional[str]
    record_error: Optional[str]
    last_set: Optional[int]
    latest: Optional[SetSummary]
    counts: dict[str, int]
    sets_this_run: int
    shifts: list[ShiftCounts]
    events: list[str]
    acknowledgements: bool = Field(description="whether this station accepts acknowledgements (a token is set)")


class AckIn(BaseModel):
    name: str = Field(min_length=1, max_length=80, description="who acknowledges")
    comment: str = Field("", max_length=1000)


# -- plumbing ---------------------------------------------------------------------------------------------------


class Hub:
    """Fans set and ack events out to the event streams; :meth:`publish` may be called from any thread."""

    def __init__(self, queue_size: int = 256) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.queues: set[asyncio.Queue] = set()
        self.queue_size = queue_size

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        loop = self.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._fan_out, (kind, data))

    def _fan_out(self, event: tuple[str, dict[str, Any]] | None) -> None:
        for q in list(self.queues):
            try:
                q.put_nowait(event)
            except asyncio.QueueFull:  # a client that does not read: dropped, its page reconnects and catches up
                self.queues.discard(q)
                while not q.empty():
                    q.get_nowait()
                q.put_nowait(None)

    def close(self) -> None:
        self._fan_out(None)

    def close_threadsafe(self) -> None:
        """End every event stream (from any thread): a server shutting down does not wait for them."""
        loop = self.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.close)

    @contextlib.contextmanager
    def subscribe(self):
        q: asyncio.Queue = asyncio.Queue(maxsize=self.queue_size)
        self.queues.add(q)
        try:
            yield q
        finally:
            self.queues.discard(q)


class RenderedCache:
    """JSON responses rendered once per version of the station (and at most ``max_age`` seconds old)."""

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self.items: dict[tuple, tuple[int, float, bytes]] = {}
        self.lock = threading.Lock()

    def get(self, key: tuple, version: int, render: Callable[[], Any], max_age: float | None = None) -> Response:
        now = time.monotonic()
        hit = self.items.get(key)
        if hit is not None and hit[0] == version and (max_age is None or now - hit[1] < max_age):
            body = hit[2]
        else:
            body = json.dumps(render(), separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode("utf-8")
            with self.lock:
                if len(self.items) >= self.size:
                    self.items.clear()
                self.items[key] = (version, now, body)
        return Response(body, media_type="application/json")


class BodyLimit:
    """Refuse request bodies above ``limit`` bytes (413) and bodies without a Content-Length (411)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
            headers = dict(scope["headers"])
            length = headers.get(b"content-length")
            if length is None or not length.isdigit():
                return await JSONResponse({"detail": "Content-Length required"}, 411)(scope, receive, send)
            if int(length) > self.limit:
                return await JSONResponse({"detail": f"request body above {self.limit} bytes"}, 413)(
                    scope, receive, send)
        await self.app(scope, receive, send)


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                h = list(message.get("headers", []))
                h += [(b"content-security-policy", _CSP.encode()), (b"x-content-type-options", b"nosniff"),
                      (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY")]
                if scope["path"].startswith("/api/"):
                    h.append((b"cache-control", b"no-store"))
                message["headers"] = h
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(station: Station, *, token: str | None = None, allowed_hosts: list[str] | None = None,
               max_body: int = MAX_BODY) -> FastAPI:
    """The app for ``station``. ``token`` None: acknowledgements are refused (403).

    ``allowed_hosts``: ``Host`` header values accepted (default: the loopback names).
    """
    hub = Hub()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub.loop = asyncio.get_running_loop()
        station.listeners.append(hub.publish)
        try:
            yield
        finally:
            with contextlib.suppress(ValueError):
                station.listeners.remove(hub.publish)
            hub.close()
            hub.loop = None

    app = FastAPI(title="lineclear station", version=__version__, lifespan=lifespan,
                  description="Line-clearance verdicts per camera view, live; operator acknowledgements.",
                  docs_url=None, redoc_url=None)
    app.state.station, app.state.hub = station, hub
    bearer = HTTPBearer(auto_error=False, description="the station's token (`lineclear serve --token-file`)")

    def check_token(cred: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if token is None:
            raise HTTPException(403, "acknowledgements are off: the station was started without --token-file")
        if cred is None or not hmac.compare_digest(cred.credentials.encode(), token.encode()):
            raise HTTPException(401, "a valid bearer token is needed to acknowledge", {"WWW-Authenticate": "Bearer"})

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    # The read endpoints answer from a cache of rendered JSON that every change of the station (a set, an
    # acknowledgement, an event) invalidates: twenty clients polling cost the watch loop next to nothing.
    # The response models document the answers (OpenAPI); tests validate real answers against them.
    cache = RenderedCache()

    @app.get("/api/status", response_model=Status, summary="The latest verdict per view, counts, shifts")
    def status() -> Response:
        return cache.get(("status",), station.version, lambda: {**station.status(), "acknowledgements": token is not None},
                         max_age=1.0)

    @app.get("/api/sets", response_model=SetList, summary="Sets with a number above `since`, oldest first")
    def sets(since: int = Query(0, ge=0, le=2**62), limit: int = Query(100, ge=1, le=1000)) -> Response:
        return cache.get(("sets", since, limit), station.version, lambda: {
            "since": since, "sets": station.list_sets(since, limit), "last_set": station.record.last_set_no() or None})

    @app.get("/api/sets/{n}", response_model=SetDetail, summary="One set with its record row",
             responses={404: {"description": "no such set"}})
    def one_set(n: int = PathParam(ge=1, le=2**62)) -> Response:
        def render() -> dict[str, Any]:
            got = station.get_set(n)
            if got is None:
                raise HTTPException(404, f"no set {n}")
            return got

        return cache.get(("set", n), station.version, render)

    @app.post("/api/sets/{n}/ack", response_model=Ack, status_code=201, dependencies=[Depends(check_token)],
              summary="Acknowledge a set (appended to the record)",
              responses={401: {"description": "no or wrong token"}, 403: {"description": "acknowledgements off"},
                         404: {"description": "no such set"}, 413: {"description": "body too large"}})
    def acknowledge(body: AckIn, request: Request, n: int = PathParam(ge=1, le=2**62)) -> dict[str, Any]:
        name = " ".join(body.name.split())
        if not name:
            raise HTTPException(422, "name must not be blank")
        try:
            return station.acknowledge(n, name, body.comment.strip(), request.client.host if request.client else None)
        except KeyError:
            raise HTTPException(404, f"no recorded set {n}") from None

    @app.get("/api/events", response_class=EventSourceResponse, summary="Server-sent events: `set`, `ack`")
    async def events(request: Request) -> AsyncIterator[ServerSentEvent]:
        with hub.subscribe() as q:
            yield ServerSentEvent(event="hello", data={"last_set": station.record.last_set_no() or None}, retry=1000)
            while True:
                item = await q.get()
                if item is None:
                    return
                kind, data = item
                yield ServerSentEvent(event=kind, data=data, id=str(data.get("set", "")))

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    # follow_symlink=False: a path is served only when its real path lies inside the overlay folder
    station.overlay_root.mkdir(parents=True, exist_ok=True)
    app.mount("/overlays", StaticFiles(directory=station.overlay_root, follow_symlink=False), name="overlays")
    app.add_middleware(BodyLimit, limit=max_body)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts or LOOPBACK_HOSTS)
    app.add_middleware(SecurityHeaders)
    return app
