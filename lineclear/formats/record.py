"""The line-clearance record: an SQLite database (schema ``lineclear.record/1``) with a hash chain over its rows.

Every image set the station checks, and every operator acknowledgement, is one row of ``entries``, appended
and never changed. Each row carries the SHA-256 of the row before it (``prev_hash``) and its own
``hash`` = SHA-256 over the canonical JSON of ``[schema, seq, kind, set_no, verdict, created_utc, body,
prev_hash]``; the first row's ``prev_hash`` is 64 zeros. :func:`verify_record` recomputes the chain and names
every row that was edited (its hash no longer matches), deleted (a gap in ``seq``, or a chain that skips
it) or inserted (a row that does not chain to the one before it).

=============== =====================================================================================
table           columns
=============== =====================================================================================
``meta``        ``key``, ``value``: ``schema`` (``lineclear.record/1``), ``created_utc``,
                ``lineclear_version`` (of the run that created the file)
``entries``     ``seq`` (1, 2, ... no gaps), ``kind`` (``start`` | ``set`` | ``ack``), ``set_no``
                (the set a ``set`` or ``ack`` row is about), ``verdict`` (a ``set`` row's set verdict),
                ``created_utc`` (ISO 8601, UTC), ``body`` (canonical JSON: sorted keys, no spaces),
                ``prev_hash``, ``hash``
=============== =====================================================================================

Bodies: ``start`` -- the bundle (path, SHA-256 of its manifest, which lists the SHA-256 of every bundle
file), lineclear version, host and command line of a station run; ``set`` -- ``set``, the verdict document
(``lineclear.verdict/1``), ``images`` and ``overlays`` (path, SHA-256, bytes per view), ``bundle``,
``lineclear_version``; ``ack`` -- ``set``, ``name``, ``comment``, ``acknowledged_utc``.

Triggers refuse ``UPDATE`` and ``DELETE`` on ``entries``, so a slip with an SQLite tool cannot change the
record; someone who drops them can, and :func:`verify_record` finds it (and reports the missing triggers).
A hash chain cannot tell a record rewritten *from the tampered row onward* with recomputed hashes from
a genuine one: for that, keep the head (``seq`` and ``hash`` printed by ``lineclear audit verify``) in
the quality system and give it back with ``--head``.

Writes: WAL journal, ``synchronous=FULL`` (a committed row survives a power cut), each append one
``BEGIN IMMEDIATE`` transaction, so two writers can never fork the chain.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from lineclear import __version__
from lineclear.errors import FormatError, LineclearError
from lineclear.formats._io import _json_default, check_schema

RECORD_SCHEMA = "lineclear.record/1"
KINDS = ("start", "set", "ack")
GENESIS = "0" * 64
_VERDICTS = ("clear", "leftover", "undecided")
_TRIGGERS = ("entries_no_update", "entries_no_delete")

_DDL = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE entries (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    set_no INTEGER,
    verdict TEXT,
    created_utc TEXT NOT NULL,
    body TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX entries_set ON entries (set_no, kind);
CREATE TRIGGER entries_no_update BEFORE UPDATE ON entries
    BEGIN SELECT RAISE(ABORT, 'the line-clearance record is append-only'); END;
CREATE TRIGGER entries_no_delete BEFORE DELETE ON entries
    BEGIN SELECT RAISE(ABORT, 'the line-clearance record is append-only'); END;
"""

_COLUMNS = "seq, kind, set_no, verdict, created_utc, body, prev_hash, hash"


def canonical_json(obj: Any) -> str:
    """The one text a body is stored and hashed as: sorted keys, no spaces, no NaN."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                      default=_json_default)


def row_hash(seq: int, kind: str, set_no: int | None, verdict: str | None, created_utc: str, body: str,
             prev_hash: str) -> str:
    """SHA-256 (hex) of one row: its columns and the previous row's hash, as canonical JSON."""
    text = canonical_json([RECORD_SCHEMA, seq, kind, set_no, verdict, created_utc, body, prev_hash])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Entry:
    seq: int
    kind: str
    set_no: int | None
    verdict: str | None
    created_utc: str
    body_text: str
    prev_hash: str
    hash: str

    @property
    def body(self) -> dict[str, Any]:
        return json.loads(self.body_text)

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "set": self.set_no, "verdict": self.verdict,
                "created_utc": self.created_utc, "body": self.body, "prev_hash": self.prev_hash, "hash": self.hash}


def _connect(path: str | os.PathLike, readonly: bool) -> sqlite3.Connection:
    if str(path) == ":memory:":
        return sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
    p = Path(path)
    if readonly:
        if not p.is_file():
            raise FormatError(f"{p}: no such record")
        uri = f"file:{p.resolve().as_posix()}?mode=ro"
        return sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
    return sqlite3.connect(p, check_same_thread=False, isolation_level=None, timeout=10)


def damaged(path: Any, exc: Exception) -> LineclearError:
    """One line for an SQLite error: a busy database is not a damaged one."""
    msg = " ".join(str(exc).split())[:200]  # damaged text may hold newlines and be long
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in msg or "unable to open" in msg or "busy" in msg):
        return LineclearError(f"{path}: cannot open the record ({msg})")
    if "file is not a database" in msg:
        return FormatError(f"{path}: not an SQLite database ({msg})")
    return FormatError(f"{path}: the record's SQLite file is damaged ({msg})")


def _schema_of(conn: sqlite3.Connection, path: Any) -> None:
    """Check that an existing database is a lineclear record of a version this lineclear reads."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "meta" not in tables or "entries" not in tables:
        raise FormatError(f"{path}: not a lineclear record (no meta/entries tables; expected {RECORD_SCHEMA})")
    row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
    check_schema(path, row[0] if row else None, RECORD_SCHEMA)


class Record:
    """An open record: :meth:`append` rows, read them back. Thread-safe (one lock, one connection).

    ``path`` ``":memory:"`` keeps the record in memory only (a station run without ``--record``).
    A new file is created (with its folder); an existing one must be a ``lineclear.record/1`` file.
    """

    def __init__(self, path: str | os.PathLike, *, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self._lock = threading.Lock()
        if not readonly and str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = _connect(path, readonly)
        except sqlite3.Error as exc:
            raise LineclearError(f"{path}: cannot open the record ({exc})") from None
        try:
            fresh = not readonly and not self.conn.execute("SELECT name FROM sqlite_master").fetchall()
            if fresh:
                self._create()
            else:
                _schema_of(self.conn, path)
            if not readonly and str(path) != ":memory:":
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=FULL")
        except BaseException as exc:
            self.conn.close()
            if isinstance(exc, (sqlite3.Error, UnicodeDecodeError)):
                raise damaged(path, exc) from None
            raise

    def _create(self) -> None:
        def lit(v: str) -> str:
            return "'" + v.replace("'", "''") + "'"

        meta = "".join(f"INSERT INTO meta VALUES ({lit(k)}, {lit(v)});" for k, v in (
            ("schema", RECORD_SCHEMA), ("created_utc", utc_now()), ("lineclear_version", __version__)))
        with self._lock:
            # one script, one transaction: a half-created record never exists
            self.conn.executescript("BEGIN IMMEDIATE;" + _DDL + meta + "COMMIT;")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Record":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------------------------
    def append(self, kind: str, body: dict[str, Any], *, set_no: int | None = None, verdict: str | None = None,
               created_utc: str | None = None) -> Entry:
        """Append one row in its own transaction (committed and synced on return); returns it."""
        return self._append(kind, lambda _: body, set_no=set_no, verdict=verdict, created_utc=created_utc)

    def append_set(self, make_body: Callable[[int], dict[str, Any]], verdict: str, at_least: int = 1) -> Entry:
        """Append a ``set`` row numbered one above the record's last set (and at least ``at_least``), in the
        same transaction as the insert: two writers never give two sets one number. ``make_body(set_no)``
        builds the body."""
        return self._append("set", make_body, set_no=at_least, verdict=verdict, number_set=True)

    def _append(self, kind: str, make_body: Callable[[int], dict[str, Any]], *, set_no: int | None,
                verdict: str | None, created_utc: str | None = None, number_set: bool = False) -> Entry:
        if kind not in KINDS:
            raise ValueError(f"kind {kind!r} is not one of {KINDS}")
        if verdict is not None and verdict not in _VERDICTS:
            raise ValueError(f"verdict {verdict!r} is not one of {_VERDICTS}")
        created = created_utc or utc_now()
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                if number_set:
                    top = self.conn.execute("SELECT MAX(set_no) FROM entries WHERE kind='set'").fetchone()[0]
                    set_no = max(int(top or 0) + 1, set_no or 1)
                text = canonical_json(make_body(set_no or 0))
                last = self.conn.execute("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
                seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
                h = row_hash(seq, kind, set_no, verdict, created, text, prev)
                self.conn.execute(f"INSERT INTO entries ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                  (seq, kind, set_no, verdict, created, text, prev, h))
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        return Entry(seq, kind, set_no, verdict, created, text, prev, h)

    # -- reading ---------------------------------------------------------------------------------------------
    def _rows(self, sql: str, args: tuple = ()) -> list[Entry]:
        with self._lock:
            return [Entry(*r) for r in self.conn.execute(f"SELECT {_COLUMNS} FROM entries {sql}", args)]

    def entries(self) -> Iterator[Entry]:
        """Every row in ``seq`` order, streamed (a long record is not read into memory at once)."""
        cur = self.conn.cursor()
        cur.execute(f"SELECT {_COLUMNS} FROM entries ORDER BY seq")
        while batch := cur.fetchmany(500):
            yield from (Entry(*r) for r in batch)

    def last_set_no(self) -> int:
        with self._lock:
            row = self.conn.execute("SELECT MAX(set_no) FROM entries WHERE kind='set'").fetchone()
        return int(row[0] or 0)

    def verdict_counts(self) -> dict[str, int]:
        """How many recorded sets are clear, leftover, undecided."""
        counts = {v: 0 for v in _VERDICTS}
        with self._lock:
            for verdict, n in self.conn.execute(
                    "SELECT verdict, COUNT(*) FROM entries WHERE kind='set' GROUP BY verdict"):
                if verdict in counts:
                    counts[verdict] = n
        return counts

    def head(self) -> Entry | None:
        rows = self._rows("ORDER BY seq DESC LIMIT 1")
        return rows[0] if rows else None

    def get_set(self, set_no: int) -> Entry | None:
        rows = self._rows("WHERE kind='set' AND set_no=? ORDER BY seq LIMIT 1", (set_no,))
        return rows[0] if rows else None

    def sets(self, since: int = 0, limit: int = 100) -> list[Entry]:
        """``set`` rows with a set number above ``since``, oldest first, at most ``limit``."""
        return self._rows("WHERE kind='set' AND set_no>? ORDER BY set_no LIMIT ?", (since, limit))

    def last_sets(self, n: int) -> list[Entry]:
        """The newest ``n`` ``set`` rows, oldest first."""
        return self._rows("WHERE kind='set' ORDER BY set_no DESC LIMIT ?", (n,))[::-1]

    def sets_since_utc(self, since_utc: str) -> list[tuple[int, str, str]]:
        """``(set_no, verdict, created_utc)`` of the sets recorded at or after ``since_utc`` (ISO 8601 UTC)."""
        with self._lock:
            return list(self.conn.execute(
                "SELECT set_no, verdict, created_utc FROM entries WHERE kind='set' AND created_utc>=? ORDER BY seq",
                (since_utc,)))

    def acks(self, set_nos: list[int] | None = None) -> dict[int, list[Entry]]:
        """``ack`` rows per set number (all, or those of ``set_nos``), oldest first."""
        if set_nos is None:
            rows = self._rows("WHERE kind='ack' ORDER BY seq")
        elif not set_nos:
            return {}
        else:
            marks = ",".join("?" * len(set_nos))
            rows = self._rows(f"WHERE kind='ack' AND set_no IN ({marks}) ORDER BY seq", tuple(set_nos))
        out: dict[int, list[Entry]] = {}
        for r in rows:
            out.setdefault(int(r.set_no), []).append(r)  # type: ignore[arg-type]
        return out


def open_record(path: str | os.PathLike) -> Record:
    """Open (or create) a record for appending; a foreign or damaged file is a :class:`FormatError`."""
    return Record(path)


def read_record(path: str | os.PathLike) -> Record:
    """Open an existing record read-only (verify, export)."""
    return Record(path, readonly=True)


# -- verification ----------------------------------------------------------------------------------------------


def _typed(e: Entry) -> bool:
    """Every column of the type lineclear writes (SQLite stores whatever a damaged page says)."""
    return (type(e.seq) is int and isinstance(e.kind, str) and (e.set_no is None or type(e.set_no) is int)
            and (e.verdict is None or isinstance(e.verdict, str)) and isinstance(e.created_utc, str)
            and isinstance(e.body_text, str) and isinstance(e.prev_hash, str) and isinstance(e.hash, str))


def _body_problem(e: Entry, known_sets: set[int]) -> str | None:
    """What is wrong with a row whose hash is right (a row written by something other than lineclear)."""
    if e.kind not in KINDS:
        return f"unknown kind {e.kind!r}"
    try:
        body = json.loads(e.body_text)
    except ValueError:
        return "body is not JSON"
    if not isinstance(body, dict):
        return "body is not a JSON object"
    if e.kind == "set":
        if e.verdict not in _VERDICTS or not isinstance(body.get("verdict"), dict):
            return "set row without a verdict"
        if body["verdict"].get("verdict") != e.verdict or body.get("set") != e.set_no:
            return "set row whose columns disagree with its verdict document"
    if e.kind == "ack":
        if e.set_no not in known_sets:
            return f"acknowledges set {e.set_no}, which is not recorded before it"
        if not isinstance(body.get("name"), str) or not body["name"].strip():
            return "acknowledgement without a name"
    return None


def verify_record(path: str | os.PathLike, head: str | None = None, max_problems: int = 50) -> dict[str, Any]:
    """Recompute the chain of the record at ``path``: a report dict (``ok``, ``problems`` with the ``seq`` of each).

    ``head`` ``"SEQ:HASH"`` (from an earlier verification): row SEQ must still have that hash, which proves
    that nothing up to it was rewritten, even with recomputed hashes.
    """
    anchor = None
    if head is not None:
        seq_s, _, h = head.partition(":")
        if not (seq_s.isdigit() and len(h) == 64 and all(c in "0123456789abcdef" for c in h)):
            raise LineclearError(f"--head {head!r}: expected SEQ:HASH (e.g. 12:3fa9..., 64 hex digits)")
        anchor = (int(seq_s), h)
    with read_record(path) as rec:
        try:
            return _verify(rec, path, anchor, max_problems)
        except (sqlite3.Error, UnicodeDecodeError) as exc:  # text that is not UTF-8: damaged too
            raise damaged(path, exc) from None


def _verify(rec: Record, path: Any, anchor: tuple[int, str] | None, max_problems: int) -> dict[str, Any]:
    problems: list[dict[str, Any]] = []
    counts = {k: 0 for k in KINDS}
    known_sets: set[int] = set()

    def problem(seq: int | None, what: str) -> None:
        if len(problems) < max_problems:
            problems.append({"seq": seq, "problem": what})

    triggers = {r[0] for r in rec.conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'")}
    missing = [t for t in _TRIGGERS if t not in triggers]
    if missing:
        problem(None, f"the append-only triggers were removed ({', '.join(missing)}): rows may have been changed")
    prev_seq, prev_hash = 0, GENESIS
    last = None
    n = 0
    for e in rec.entries():
        n += 1
        if not _typed(e):
            problem(e.seq if isinstance(e.seq, int) else None, f"row {e.seq!r}: columns of the wrong type (damaged)")
            continue
        if e.seq != prev_seq + 1:
            gap = f"row {prev_seq + 1}" if e.seq == prev_seq + 2 else f"rows {prev_seq + 1}-{e.seq - 1}"
            problem(prev_seq + 1, f"{gap} deleted (row {e.seq} follows row {prev_seq})")
        elif e.prev_hash != prev_hash:
            problem(e.seq, f"row {e.seq} does not chain to row {prev_seq}: inserted, or row {prev_seq} replaced")
        if row_hash(e.seq, e.kind, e.set_no, e.verdict, e.created_utc, e.body_text, e.prev_hash) != e.hash:
            problem(e.seq, f"row {e.seq} edited: its hash does not match its content")
        else:
            bad = _body_problem(e, known_sets)
            if bad:
                problem(e.seq, f"row {e.seq}: {bad}")
        if anchor is not None and e.seq == anchor[0] and e.hash != anchor[1]:
            problem(e.seq, f"row {e.seq} is not the row of the given head: the record was rewritten up to it")
        if e.kind in counts:
            counts[e.kind] += 1
        if e.kind == "set" and e.set_no is not None:
            known_sets.add(e.set_no)
        prev_seq, prev_hash = e.seq, e.hash
        last = e
    if anchor is not None and prev_seq < anchor[0]:
        problem(prev_seq + 1, f"rows {prev_seq + 1}-{anchor[0]} deleted: the given head is row {anchor[0]}, "
                              f"the record ends at row {prev_seq}")
    return {
        "record": str(path),
        "schema": RECORD_SCHEMA,
        "ok": not problems,
        "rows": n,
        "sets": counts["set"],
        "acknowledgements": counts["ack"],
        "starts": counts["start"],
        "head": f"{last.seq}:{last.hash}" if last else None,
        "problems": problems,
    }


# -- export for the quality system ------------------------------------------------------------------------------

EXPORT_SCHEMA = "lineclear.record_export/1"
CSV_COLUMNS = [
    "set", "checked_utc", "set_verdict", "set_exit_code", "view", "verdict", "score", "threshold", "reason",
    "image", "image_sha256", "overlay_sha256", "bundle_manifest_sha256", "lineclear_version",
    "acknowledged_by", "acknowledged_utc", "acknowledgement_comment", "acknowledgements", "row_seq", "row_hash",
]


def csv_rows(rec: Record) -> Iterator[dict[str, Any]]:
    """One flat row per view of every recorded set, with the set's latest acknowledgement (CSV_COLUMNS)."""
    acks = rec.acks()
    for e in rec.entries():
        if e.kind != "set":
            continue
        body = e.body
        doc = body.get("verdict", {})
        mine = acks.get(int(e.set_no), []) if e.set_no is not None else []
        last = mine[-1].body if mine else {}
        for v in doc.get("views", []):
            img = (body.get("images") or {}).get(v.get("view")) or {}
            ov = (body.get("overlays") or {}).get(v.get("view")) or {}
            yield {
                "set": e.set_no, "checked_utc": doc.get("checked_utc"), "set_verdict": e.verdict,
                "set_exit_code": doc.get("exit_code"), "view": v.get("view"), "verdict": v.get("verdict"),
                "score": v.get("score"), "threshold": v.get("threshold"), "reason": v.get("reason"),
                "image": v.get("image"), "image_sha256": img.get("sha256"), "overlay_sha256": ov.get("sha256"),
                "bundle_manifest_sha256": (body.get("bundle") or {}).get("manifest_sha256"),
                "lineclear_version": body.get("lineclear_version"),
                "acknowledged_by": last.get("name"), "acknowledged_utc": last.get("acknowledged_utc"),
                "acknowledgement_comment": last.get("comment"), "acknowledgements": len(mine),
                "row_seq": e.seq, "row_hash": e.hash,
            }


def export_doc(rec: Record, verification: dict[str, Any]) -> dict[str, Any]:
    """The whole record as one JSON document (``lineclear.record_export/1``): the verification and every row."""
    return {"schema": EXPORT_SCHEMA, "exported_utc": utc_now(), "lineclear_version": __version__,
            "verification": verification, "entries": [e.to_dict() for e in rec.entries()]}
