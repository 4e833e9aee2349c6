"""File formats: round trips, schema checks, atomic writes, refusal of foreign files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from lineclear.errors import FormatError, LineclearError, OutputExistsError
from lineclear.formats import (
    MapsFile,
    MapsWriter,
    atomic_path,
    load_checkpoint,
    provenance,

    read_mask,
    read_thresholds,
    save_checkpoint,
    write_json,
    write_mask,
    write_thresholds,
)


def _write_maps(path: Path, n: int = 5, valid: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    maps = rng.random((n, 6, 7)).astype(np.float32)
    scores = maps.reshape(n, -1).max(1)
    with MapsWriter(path, (6, 7), attrs=provenance(model="toy", view="A", registered=True), with_valid=valid) as w:
        w.append(maps[:3], scores[:3], [f"A/test/good/{i}.png" for i in range(3)], [0, 0, 0],
                 valid=np.ones((3, 6, 7), bool) if valid else None)
        w.append(maps[3:], scores[3:], ["A/test/leaflet/é.png", "A/test/leaflet/x.png"], [1, 1],
                 valid=np.zeros((2, 6, 7), bool) if valid else None)
    return maps, scores


def test_maps_round_trip(tmp_path: Path) -> None:
    p = tmp_path / "maps.h5"
    maps, scores = _write_maps(p)
    with MapsFile(p) as f:
        assert len(f) == 5 and f.map_size == (6, 7)
        np.testing.assert_array_equal(f.map(4), maps[4])
        np.testing.assert_allclose(f.scores, scores, rtol=1e-7)
        assert f.image_ids[3] == "A/test/leaflet/é.png"
        assert f.labels.tolist() == [0, 0, 0, 1, 1]
        assert f.attrs["model"] == "toy" and f.attrs["schema"] == "lineclear.maps/1"
        assert f.attrs["registered"] == 1
        assert f.valid(0).all() and not f.valid(4).any()
        got = np.concatenate([m for _, m, _ in f.iter_batches(2)])
        np.testing.assert_array_equal(got, maps)
    with h5py.File(p) as h:  # the layout the README documents
        assert h["maps"].chunks == (1, 6, 7) and h["maps"].compression == "gzip"
        ids = h["image_ids"]
        assert h5py.check_string_dtype(ids.dtype).encoding == "utf-8" and ids.dtype.itemsize == 21  # é: 2 bytes
        assert all(h[n].fletcher32 for n in ("maps", "scores", "image_ids", "labels", "valid"))
        assert h.id.get_create_plist().get_version()[0] >= 2  # a superblock with a checksum (HDF5 >= 1.8 format)
        assert isinstance(h.attrs["schema"], bytes)  # fixed-length: not in the global heap
        assert h["labels"].dtype == np.int8


def test_maps_refuses_nan_and_leaves_nothing(tmp_path: Path) -> None:
    p = tmp_path / "maps.h5"
    with pytest.raises(LineclearError, match="NaN"):
        with MapsWriter(p, (2, 2)) as w:
            w.append(np.full((1, 2, 2), np.nan), [0.0], ["a.png"], [0])
    assert not p.exists()
    assert list(tmp_path.iterdir()) == []


def test_maps_refuses_foreign_files(tmp_path: Path) -> None:
    foreign = tmp_path / "other.h5"
    with h5py.File(foreign, "w") as h:
        h["data"] = np.zeros(3)
    with pytest.raises(FormatError, match="schema"):
        MapsFile(foreign)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(FormatError, match="not an HDF5"):
        MapsFile(junk)
    newer = tmp_path / "newer.h5"
    _write_maps(newer)
    with h5py.File(newer, "a") as h:
        h.attrs["schema"] = "lineclear.maps/2"
    with pytest.raises(FormatError, match="not supported"):
        MapsFile(newer)


def test_no_overwrite_without_flag(tmp_path: Path) -> None:
    p = tmp_path / "maps.h5"
    _write_maps(p)
    before = p.read_bytes()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        _write_maps(p)
    assert p.read_bytes() == before


def test_atomic_path_cleans_up_on_error(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def _thresholds_doc() -> dict:
    return {
        "method": "ksigma",
        "params": {"k": 3.0},
        "pixel": {"threshold": 0.5, "stats": {"mean": 0.1, "std": 0.13}},
        "image": {"threshold": 0.8, "stats": {"mean": 0.5, "std": 0.1}},
        "source": {"path": "val_maps.h5", "sha256": "ab" * 32},
    }


def test_thresholds_round_trip_and_validation(tmp_path: Path) -> None:
    p = tmp_path / "t.json"
    write_thresholds(p, _thresholds_doc())
    doc = read_thresholds(p)
    assert doc["schema"] == "lineclear.thresholds/2" and doc["pixel"]["threshold"] == 0.5 and doc["level"] == "image"
    assert json.loads(p.read_text())["method"] == "ksigma"
    bad = _thresholds_doc() | {"method": "magic"}
    with pytest.raises(FormatError, match="method"):
        write_thresholds(tmp_path / "bad.json", bad)
    assert not (tmp_path / "bad.json").exists()
    foreign = tmp_path / "foreign.json"
    foreign.write_text('{"threshold": 1}')
    with pytest.raises(FormatError, match="not a lineclear file"):
        read_thresholds(foreign)
    other = tmp_path / "other.json"
    write_json(other, {"x": 1}, "lineclear.maps/1")
    with pytest.raises(FormatError, match="expected lineclear.thresholds/2"):
        read_thresholds(other)
    broken = tmp_path / "broken.json"
    broken.write_text('{"schema": "lineclear.thresholds/1",')
    with pytest.raises(FormatError, match="not valid JSON"):
        read_thresholds(broken)


def test_json_refuses_nan(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_json(tmp_path / "x.json", {"v": float("nan")}, "lineclear.x/1")
    assert not (tmp_path / "x.json").exists()


def test_checkpoint_round_trip_and_refusals(tmp_path: Path) -> None:
    net = torch.nn.Linear(3, 2)
    p = tmp_path / "m.pt"
    save_checkpoint(p, net.state_dict(), {"model": "toy", "config": {"a": 1}})
    sd, meta = load_checkpoint(p)
    assert meta["model"] == "toy" and meta["config"] == {"a": 1} and meta["schema"] == "lineclear.checkpoint/1"
    torch.testing.assert_close(sd["weight"], net.weight)
    bare = tmp_path / "bare.pt"
    torch.save(net.state_dict(), bare)
    with pytest.raises(FormatError, match="not a lineclear checkpoint"):
        load_checkpoint(bare)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pt"
    torch.save({"lineclear": "{}", "state_dict": {}, "x": Evil()}, evil)
    with pytest.raises(FormatError, match="refused"):
        load_checkpoint(evil)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(p.read_bytes()[:100])
    with pytest.raises(FormatError):
        load_checkpoint(corrupt)


def test_masks(tmp_path: Path) -> None:
    m = np.zeros((5, 8), bool)
    m[1:3, 2:6] = True
    p = write_mask(tmp_path / "m.png", m)
    np.testing.assert_array_equal(read_mask(p), m)
    with pytest.raises(LineclearError, match="expected 9x5"):
        read_mask(p, shape=(5, 9))
    assert read_mask(p, shape=(10, 16), resize=True).sum() == m.sum() * 4


# -- found by tests/test_formats_fuzz.py -------------------------------------------------------------------------


def test_maps_reader_refuses_damaged_layouts(tmp_path: Path) -> None:
    """h5py's IndexError (scalar /maps), AttributeError (a group for a dataset), ValueError (string scores)
    and a silently accepted NaN map were all crashes or garbage before."""
    def make(name: str, build) -> Path:
        p = tmp_path / name
        with h5py.File(p, "w") as f:
            f.attrs["schema"] = "lineclear.maps/1"
            build(f)
        return p

    def full(f, maps=np.zeros((1, 2, 2), np.float32), scores=(0.5,)):
        f["maps"], f["scores"], f["labels"] = maps, np.asarray(scores), np.zeros(1, np.int8)
        f.create_dataset("image_ids", data=["a.png"], dtype=h5py.string_dtype())

    cases = {
        "scalar.h5": (lambda f: f.create_dataset("maps", data=1.0), "must be \\(N,H,W\\)"),
        "group.h5": (lambda f: (f.create_group("scores"), f.create_dataset("maps", data=np.zeros((1, 2, 2)))),
                     "no /scores dataset"),
        "strings.h5": (lambda f: full(f, scores=np.array([b"x"])), "/scores has type"),
        "nan_score.h5": (lambda f: full(f, scores=(np.nan,)), "NaN or infinite image scores"),
    }
    for name, (build, message) in cases.items():
        with pytest.raises(FormatError, match=message):
            MapsFile(make(name, build))
    with MapsFile(make("nan_map.h5", lambda f: full(f, maps=np.full((1, 2, 2), np.nan, np.float32)))) as f:
        with pytest.raises(FormatError, match=r"NaN or infinite values in /maps\[0:1\]"):
            list(f.iter_batches())


def test_maps_reader_refuses_a_damaged_chunk(tmp_path: Path) -> None:
    """A flipped byte inside a compressed map: h5py's OSError at read time becomes one clear line."""
    p = tmp_path / "maps.h5"
    _write_maps(p)
    with h5py.File(p, "r") as f:
        info = f["maps"].id.get_chunk_info(1)
    data = bytearray(p.read_bytes())
    data[info.byte_offset + 8:info.byte_offset + 24] = b"\xff" * 16
    p.write_bytes(bytes(data))
    with MapsFile(p) as f:
        np.testing.assert_array_equal(f.map(0).shape, (6, 7))  # the other maps still read
        with pytest.raises(FormatError, match=r"maps.h5: corrupt maps file \(cannot read /maps\[1\]\)"):
            f.map(1)


def test_numbers_json_cannot_hold_are_refused(tmp_path: Path) -> None:
    from lineclear.formats._io import finite_number, read_json

    assert [finite_number(v) for v in (1, 0.5, -3)] == [True] * 3
    assert not any(finite_number(v) for v in (True, None, "1", 10**400, float("nan"), float("inf")))
    doc = {"method": "max", "params": {}, "pixel": {"threshold": 0.2}, "image": {"threshold": 0.5}, "source": {}}
    for bad in (True, 10**400):
        p = tmp_path / "t.json"
        p.write_text(json.dumps({"schema": "lineclear.thresholds/1", **doc, "image": {"threshold": bad}}))
        with pytest.raises(FormatError, match="'image.threshold' must be a finite number"):
            read_thresholds(p)
    for body in ('{"schema": "lineclear.run/1", "n": ' + "9" * 5000 + "}", "[" * 100000):
        (tmp_path / "bomb.json").write_text(body)
        with pytest.raises(FormatError, match="not valid JSON"):
            read_json(tmp_path / "bomb.json", "lineclear.run/1")


def test_verdict_regions_must_be_a_list(tmp_path: Path) -> None:
    from lineclear.formats.verdict import read_verdict

    view = {"view": "A", "verdict": "clear", "reason": "", "regions": None}
    (tmp_path / "v.json").write_text(json.dumps({"schema": "lineclear.verdict/1", "verdict": "clear",
                                                 "exit_code": 0, "views": [view]}))
    with pytest.raises(FormatError, match="regions of view 'A' must be a list"):
        read_verdict(tmp_path / "v.json")


def test_checkpoint_metadata_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    torch.save({"lineclear": "[]", "state_dict": {}}, tmp_path / "m.pt")
    with pytest.raises(FormatError, match="corrupt checkpoint metadata"):
        load_checkpoint(tmp_path / "m.pt")


# -- the watch log -------------------------------------------------------------------------------------------------


def _record(n: int, verdict: str = "clear") -> dict:
    return {"set": n, "set_verdict": verdict, "set_exit_code": {"clear": 0, "leftover": 3}[verdict],
            "checked_utc": "2026-01-01T00:00:00Z", "view": "A", "verdict": verdict, "reason": "",
            "score": 0.9 if verdict == "leftover" else 0.1, "regions": []}


def test_verdict_log_keeps_complete_lines_and_sets_a_torn_one_apart(tmp_path: Path) -> None:
    from lineclear.formats.verdict import append_verdict_log, open_verdict_log, read_verdict_log

    log = tmp_path / "v.jsonl"
    fd, note = open_verdict_log(log)
    append_verdict_log(fd, [_record(1), _record(2, "leftover")])
    os.close(fd)
    assert note is None and [r["set"] for r in read_verdict_log(log).records] == [1, 2]
    whole = log.read_bytes()
    log.write_bytes(whole + json.dumps(_record(3)).encode()[:30])  # a write cut short
    torn = read_verdict_log(log)
    assert [r["set"] for r in torn.records] == [1, 2] and torn.complete_bytes == len(whole) and torn.torn
    # the next watch removes the torn line before appending, so no record is glued onto it
    fd, note = open_verdict_log(log)
    append_verdict_log(fd, [_record(1)])
    os.close(fd)
    assert "removed an unfinished last line (30 bytes" in note
    assert log.read_bytes().startswith(whole) and [r["set"] for r in read_verdict_log(log).records] == [1, 2, 1]
    # a complete last line that only lacks its newline is kept and ended
    log.write_bytes(whole.rstrip(b"\n"))
    fd, note = open_verdict_log(log)
    append_verdict_log(fd, [_record(3)])
    os.close(fd)
    assert note is None and [r["set"] for r in read_verdict_log(log).records] == [1, 2, 3]
    # someone else's line is never removed: it is ended, and the reader refuses the file in one line
    log.write_bytes(whole + b"notes: not json")
    fd, note = open_verdict_log(log)
    os.close(fd)
    assert log.read_bytes() == whole + b"notes: not json\n"
    with pytest.raises(FormatError, match=r"v.jsonl:3: not valid JSON"):
        read_verdict_log(log)
