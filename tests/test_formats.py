"""File formats: round trips, schema checks, atomic writes, refusal of foreign files."""

from __future__ import annotations

import json
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
        assert h["image_ids"].dtype.kind == "O"
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
    assert doc["schema"] == "lineclear.thresholds/1" and doc["pixel"]["threshold"] == 0.5
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
    with pytest.raises(FormatError, match="expected lineclear.thresholds/1"):
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
