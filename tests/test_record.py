"""The tamper-evident record (``lineclear.record/1``) and ``lineclear audit verify/export``."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
from pathlib import Path

import pytest

from lineclear.errors import FormatError
from lineclear.formats.record import GENESIS, RECORD_SCHEMA, canonical_json, open_record, read_record, verify_record
from tests.conftest import run_cli


def _doc(verdict: str, views=("A", "B")) -> dict:
    code = {"clear": 0, "leftover": 3, "undecided": 4}[verdict]
    return {"schema": "lineclear.verdict/1", "verdict": verdict, "exit_code": code, "checked_utc": "2026-12-03T10:00:00Z",
            "views": [{"view": v, "verdict": verdict, "reason": "r", "score": 1.5, "threshold": 2.0, "regions": [],
                       "image": f"/in/{v}.png"} for v in views]}


def _make(path: Path, sets=("clear", "leftover", "clear")) -> None:
    with open_record(path) as rec:
        rec.append("start", {"bundle": {"path": "line", "manifest_sha256": "ab" * 32}})
        for n, v in enumerate(sets, 1):
            rec.append("set", {"set": n, "verdict": _doc(v), "images": {"A": {"sha256": f"{n:064x}"}},
                               "bundle": {"manifest_sha256": "ab" * 32}, "lineclear_version": "0.1.0"},
                       set_no=n, verdict=v)
        rec.append("ack", {"set": 2, "name": "Ana", "comment": "leaflet removed", "acknowledged_utc": "t"}, set_no=2)


def _raw(path: Path) -> sqlite3.Connection:
    """A connection as someone with an SQLite tool would use it, append-only triggers dropped."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TRIGGER entries_no_update")
    conn.execute("DROP TRIGGER entries_no_delete")
    return conn


def _problems(path: Path, head: str | None = None) -> list[tuple[int | None, str]]:
    rep = verify_record(path, head)
    assert rep["ok"] is (not rep["problems"])
    return [(p["seq"], p["problem"]) for p in rep["problems"]]


def test_the_chain_links_every_row_by_sha256(tmp_path: Path) -> None:
    db = tmp_path / "rec.db"
    _make(db)
    rows = sqlite3.connect(db).execute("SELECT seq, kind, set_no, verdict, created_utc, body, prev_hash, hash "
                                       "FROM entries ORDER BY seq").fetchall()
    assert [r[1] for r in rows] == ["start", "set", "set", "set", "ack"]
    prev = GENESIS
    for seq, kind, set_no, verdict, created, body, prev_hash, h in rows:
        assert prev_hash == prev
        # an independent recomputation of the documented hash
        text = json.dumps([RECORD_SCHEMA, seq, kind, set_no, verdict, created, body, prev_hash],
                          sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert h == hashlib.sha256(text.encode()).hexdigest()
        prev = h
    rep = verify_record(db)
    assert rep["ok"] and rep["rows"] == 5 and rep["sets"] == 3 and rep["acknowledgements"] == 1
    assert rep["head"] == f"5:{rows[-1][7]}"
    assert sqlite3.connect(db).execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0] == RECORD_SCHEMA


def test_the_record_refuses_update_and_delete(tmp_path: Path) -> None:
    db = tmp_path / "rec.db"
    _make(db)
    conn = sqlite3.connect(db, isolation_level=None)
    for sql in ("UPDATE entries SET verdict='clear' WHERE seq=3", "DELETE FROM entries WHERE seq=3"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(sql)
    assert verify_record(db)["ok"]


def test_an_edited_row_is_named(tmp_path: Path) -> None:
    db = tmp_path / "rec.db"
    _make(db)
    conn = _raw(db)
    body = json.loads(conn.execute("SELECT body FROM entries WHERE seq=3").fetchone()[0])
    body["verdict"]["verdict"] = "clear"  # a leftover turned into clear, in the document only
    conn.execute("UPDATE entries SET body=? WHERE seq=3", (canonical_json(body),))
    probs = _problems(db)
    assert (3, "row 3 edited: its hash does not match its content") in probs
    assert any(s is None and "triggers were removed" in p for s, p in probs)
    assert not any(s in (1, 2, 4, 5) for s, p in probs)


def test_an_edited_column_is_named(tmp_path: Path) -> None:
    db = tmp_path / "rec.db"
    _make(db)
    _raw(db).execute("UPDATE entries SET verdict='clear' WHERE seq=3")
    assert [s for s, _ in _problems(db) if s is not None] == [3]


def test_a_deleted_row_is_named(tmp_path: Path) -> None:
    db = tmp_path / "rec.db"
    _make(db)
    _raw(db).execute("DELETE FROM entries WHERE seq=3")
    probs = [(s, p) for s, p in _problems(db) if s is not None]
    # and the acknowledgement of the deleted set now points at nothing
    assert probs == [(3, "row 3 deleted (row 4 follows row 2)"),
                     (5, "row 5: acknowledges set 2, which is not recorded before it")]


def test_a_deleted_row_renumbered_is_still_found(tmp_path: Path) -> None:
    db = tmp_path / "rec.db"
    _make(db)
    conn = _raw(db)
    conn.execute("DELETE FROM entries WHERE seq=3")
    conn.execute("UPDATE entries SET seq=seq-1 WHERE seq>3")  # close the gap
    probs = [s for s, p in _problems(db) if s is not None]
    assert probs[0] == 3  # the row now at 3 neither chains to row 2 nor matches its hash


def test_an_inserted_row_is_named(tmp_path: Path) -> None:
    db = tmp_path / "rec.db"
    _make(db)
    conn = _raw(db)
    # a forged set 4 at the end, chained to a made-up predecessor, with a hash of its own
    from lineclear.formats.record import row_hash

    body = canonical_json({"set": 4, "verdict": _doc("clear")})
    h = row_hash(6, "set", 4, "clear", "2026-12-03T11:00:00Z", body, "f" * 64)
    conn.execute("INSERT INTO entries VALUES (6, 'set', 4, 'clear', '2026-12-03T11:00:00Z', ?, ?, ?)",
                 (body, "f" * 64, h))
    probs = [(s, p) for s, p in _problems(db) if s is not None]
    assert probs == [(6, "row 6 does not chain to row 5: inserted, or row 5 replaced")]


def test_a_rewritten_chain_is_caught_by_the_kept_head(tmp_path: Path) -> None:
    db = tmp_path / "rec.db"
    _make(db)
    head = verify_record(db)["head"]
    # someone rewrites row 3 and recomputes every hash from there on: the chain alone is consistent
    from lineclear.formats.record import row_hash

    conn = _raw(db)
    rows = conn.execute("SELECT seq, kind, set_no, verdict, created_utc, body, prev_hash FROM entries "
                        "WHERE seq>=3 ORDER BY seq").fetchall()
    prev = conn.execute("SELECT hash FROM entries WHERE seq=2").fetchone()[0]
    for seq, kind, set_no, verdict, created, body, _ in rows:
        if seq == 3:
            verdict = "clear"
            b = json.loads(body)
            b["verdict"] = _doc("clear")
            body = canonical_json(b)
        h = row_hash(seq, kind, set_no, verdict, created, body, prev)
        conn.execute("UPDATE entries SET verdict=?, body=?, prev_hash=?, hash=? WHERE seq=?", (verdict, body, prev, h, seq))
        prev = h
    assert [s for s, _ in _problems(db) if s is not None] == []  # undetectable without an anchor
    assert [s for s, _ in _problems(db, head) if s is not None] == [5]
    # a deleted tail is caught by the head too
    db2 = tmp_path / "rec2.db"
    _make(db2)
    head2 = verify_record(db2)["head"]
    _raw(db2).execute("DELETE FROM entries WHERE seq=5")
    assert [(s, p.split(":")[0]) for s, p in _problems(db2, head2) if s is not None] == [(5, "rows 5-5 deleted")]


def test_foreign_files_are_refused_in_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(FormatError, match="not an SQLite database"):
        read_record(junk)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)")
    with pytest.raises(FormatError, match="not a lineclear record"):
        open_record(other)
    future = tmp_path / "future.db"
    _make(future)
    conn = sqlite3.connect(future, isolation_level=None)
    conn.execute("UPDATE meta SET value='lineclear.record/2' WHERE key='schema'")
    with pytest.raises(FormatError, match="not supported"):
        read_record(future)
    with pytest.raises(FormatError, match="no such record"):
        read_record(tmp_path / "missing.db")


def test_appends_reopen_and_continue_the_chain(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "rec.db"
    _make(db)
    before = verify_record(db)["head"].split(":")[1]
    with open_record(db) as rec:
        assert rec.last_set_no() == 3
        e = rec.append("set", {"set": 4, "verdict": _doc("undecided")}, set_no=4, verdict="undecided")
        assert e.seq == 6 and e.prev_hash == before
        assert [s.set_no for s in rec.sets(since=2)] == [3, 4]
        assert [a.body["name"] for a in rec.acks([2])[2]] == ["Ana"]
        assert rec.get_set(4).verdict == "undecided" and rec.get_set(99) is None
    assert verify_record(db)["ok"] and verify_record(db)["rows"] == 6


# -- the CLI ----------------------------------------------------------------------------------------------------


def test_audit_verify_exit_codes_and_the_named_row(tmp_path: Path, capsys) -> None:
    db = tmp_path / "rec.db"
    _make(db)
    assert run_cli(["audit", "verify", str(db)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["rows"] == 5
    head = out["head"]
    conn = _raw(db)
    conn.execute("UPDATE entries SET body=replace(body, '\"leftover\"', '\"clear\"') WHERE seq=3")
    assert run_cli(["audit", "verify", str(db)]) == 1
    cap = capsys.readouterr()
    assert "row 3 edited: its hash does not match its content" in cap.err
    assert [p["seq"] for p in json.loads(cap.out)["problems"]] == [None, 3]  # triggers dropped, row 3
    conn.execute("DELETE FROM entries WHERE seq=2")
    assert run_cli(["audit", "verify", str(db), "--head", head]) == 1
    cap = capsys.readouterr()
    assert json.loads(cap.out)["ok"] is False
    assert "row 2 deleted" in cap.err and "fails verification" in cap.err
    assert run_cli(["audit", "verify", str(db), "--head", "nonsense"]) == 1
    assert "expected SEQ:HASH" in capsys.readouterr().err


def test_audit_export_csv_and_json(tmp_path: Path, capsys) -> None:
    db = tmp_path / "rec.db"
    _make(db)
    out_csv = tmp_path / "rec.csv"
    assert run_cli(["audit", "export", str(db), "--csv", str(out_csv)]) == 0
    rows = list(csv.DictReader(io.StringIO(out_csv.read_text())))
    assert [(r["set"], r["view"], r["verdict"]) for r in rows] == [
        ("1", "A", "clear"), ("1", "B", "clear"), ("2", "A", "leftover"), ("2", "B", "leftover"),
        ("3", "A", "clear"), ("3", "B", "clear")]
    assert rows[2]["acknowledged_by"] == "Ana" and rows[2]["acknowledgement_comment"] == "leaflet removed"
    assert rows[0]["acknowledged_by"] == "" and rows[0]["image_sha256"] == f"{1:064x}"
    assert rows[0]["bundle_manifest_sha256"] == "ab" * 32 and len(rows[0]["row_hash"]) == 64
    # no overwrite without the flag
    assert run_cli(["audit", "export", str(db), "--csv", str(out_csv)]) == 1
    assert "exists" in capsys.readouterr().err
    capsys.readouterr()
    assert run_cli(["audit", "export", str(db), "--json", "-"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "lineclear.record_export/1" and doc["verification"]["ok"]
    assert [e["kind"] for e in doc["entries"]] == ["start", "set", "set", "set", "ack"]
    assert doc["entries"][2]["body"]["verdict"]["verdict"] == "leftover"
    # a tampered record is not exported without --force
    _raw(db).execute("UPDATE entries SET verdict='clear' WHERE seq=3")
    assert run_cli(["audit", "export", str(db), "--json", str(tmp_path / "x.json")]) == 1
    assert "row 3 edited" in capsys.readouterr().err and not (tmp_path / "x.json").exists()
    assert run_cli(["audit", "export", str(db), "--json", str(tmp_path / "x.json"), "--force"]) == 0
    assert json.loads((tmp_path / "x.json").read_text())["verification"]["ok"] is False
    assert run_cli(["audit", "export", str(db)]) == 2


@pytest.mark.parametrize("sub", ["verify", "export"])
def test_audit_help_reads_at_80_columns(sub: str) -> None:
    from typer.testing import CliRunner

    from lineclear.cli.main import app

    r = CliRunner().invoke(app, ["audit", sub, "--help"], env={"COLUMNS": "80"}, prog_name="lineclear")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].startswith(f"Usage: lineclear audit {sub} [OPTIONS] DB")
    assert max(len(x) for x in lines) <= 80 and "…" not in r.output and "<bool>" not in r.output
    for flag in (["--head"] if sub == "verify" else ["--csv", "--json", "--force", "--overwrite"]):
        assert flag in r.output


def test_two_writers_never_number_two_sets_alike(tmp_path: Path) -> None:
    import threading

    db = tmp_path / "rec.db"
    open_record(db).close()
    recs = [open_record(db), open_record(db)]  # two stations on one file
    got: list[int] = []

    def write(rec, k: int) -> None:
        for _ in range(15):
            e = rec.append_set(lambda n: {"set": n, "verdict": _doc("clear")}, "clear", at_least=1)
            got.append(e.set_no)

    ts = [threading.Thread(target=write, args=(r, i)) for i, r in enumerate(recs)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for r in recs:
        r.close()
    assert sorted(got) == list(range(1, 31))
    rep = verify_record(db)
    assert rep["ok"] and rep["sets"] == 30
    # a floor above the record's last number is kept (numbers shown while the record failed are not reused)
    with open_record(db) as rec:
        assert rec.append_set(lambda n: {"set": n, "verdict": _doc("clear")}, "clear", at_least=40).set_no == 40
        assert rec.append_set(lambda n: {"set": n, "verdict": _doc("clear")}, "clear", at_least=1).set_no == 41
