"""The record reader fuzzed (``lineclear audit verify``): damaged SQLite bytes are refused in one line or
verified -- and a record that verifies holds exactly the rows that were written, nothing changed unseen."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given

from lineclear.formats.record import verify_record
from tests.fuzzing import attempt, fuzz_settings, mutated_bytes
from tests.test_record import _make

_COLS = "seq, kind, set_no, verdict, created_utc, body, prev_hash, hash"


def _rows(path: Path) -> list[tuple]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(f"SELECT {_COLS} FROM entries ORDER BY seq").fetchall()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def seed(tmp_path_factory) -> tuple[bytes, list[tuple], str, Path]:
    work = tmp_path_factory.mktemp("record_fuzz")
    db = work / "seed.db"
    _make(db, sets=("clear", "leftover", "undecided", "clear"))
    assert not (work / "seed.db-wal").exists()  # checkpointed on close: one file holds everything
    return db.read_bytes(), _rows(db), verify_record(db)["head"], work


def test_record_seed_verifies(seed) -> None:
    data, rows, head, work = seed
    p = work / "copy.db"
    p.write_bytes(data)
    assert verify_record(p, head)["ok"] and _rows(p) == rows


def test_fuzz_record(seed) -> None:
    data, rows, head, work = seed

    @fuzz_settings(300)
    @given(mutated=mutated_bytes(data, max_ops=3))
    def run(mutated: bytes) -> None:
        p = work / "fuzzed.db"
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{p}{suffix}").unlink(missing_ok=True)
        p.write_bytes(mutated)
        ok, rep = attempt("record (SQLite)", lambda: verify_record(p, head))
        if ok:
            assert isinstance(rep["ok"], bool) and all(isinstance(x["problem"], str) for x in rep["problems"])
            if rep["ok"]:
                # verified against the kept head: every row is exactly as written
                assert _rows(p) == rows

    run()
