"""Fuzzing the readers: generated and mutated inputs are read correctly or refused with a LineclearError.

Each reader starts from a valid file that lineclear's own writers produce (VIA's own layouts for the VIA
JSON files, which lineclear only reads), then takes byte edits (flips, inserts, deletes, truncation,
parser-hostile tokens) and field edits (any JSON value in any place, NaN, 5000-digit numbers, deep
nesting, hostile paths). Whatever a reader accepts must also be usable: shapes rasterise, maps read to
the end with the promised shapes and finite values, thresholds are numbers, bundle files can be hashed.
Run lengths and the input counts printed at the end: tests/fuzzing.py (``make fuzz`` for the long run).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lineclear.check import ViewVerdict
from lineclear.formats import MapsFile, MapsWriter, provenance, read_mask, read_thresholds, write_mask, write_thresholds
from lineclear.formats.deploy import read_manifest, verify_files, view_problems, write_manifest
from lineclear.formats.verdict import (
    VERDICT_SCHEMA, parse_verdict_log, read_verdict, read_verdict_log, write_verdict,
)
from lineclear.formats.via import ImageAnnotation, format_via_csv, read_via
from lineclear.images import image_size, read_gray, read_raw, read_rgb, write_image
from lineclear.labels import Region, rasterise, shape_bounds, validate_shape
from lineclear.watch import log_records
from tests.fuzzing import EXTREMES, attempt, dump_json, fuzz_settings, mutated_bytes, mutated_json, mutated_json_doc

# -- seeds: valid files from lineclear's writers ---------------------------------------------------------------

SHAPES = [
    {"name": "rect", "x": 2, "y": 3, "width": 5, "height": 4},
    {"name": "circle", "cx": 8, "cy": 8, "r": 3},
    {"name": "ellipse", "cx": 6, "cy": 5, "rx": 4, "ry": 2, "theta": 0.5},
    {"name": "polygon", "all_points_x": [1, 9, 5], "all_points_y": [1, 2, 9]},
    {"name": "polyline", "all_points_x": [0, 15], "all_points_y": [0, 15]},
    {"name": "point", "cx": 3, "cy": 12},
]
ANNOTATIONS = [
    ImageAnnotation("a.png", 1234, {"caption": "x, \"y\""},
                    [Region(validate_shape(s), {"type": "leaflet", "n": i}) for i, s in enumerate(SHAPES)]),
    ImageAnnotation("dir/b, c.png", 99, {}, []),
]
VIA_CSV = format_via_csv(ANNOTATIONS).encode("utf-8")


def _via_entries(via1: bool) -> dict:
    out = {}
    for a in ANNOTATIONS:
        regions = [{"shape_attributes": r.shape, "region_attributes": r.attributes} for r in a.regions]
        out[f"{a.filename}{a.size}"] = {"filename": a.filename, "size": a.size, "file_attributes": a.file_attributes,
                                         "regions": {str(i): r for i, r in enumerate(regions)} if via1 else regions}
    return out


VIA_JSON_DOCS = [
    {"_via_settings": {"ui": {}}, "_via_img_metadata": _via_entries(False), "_via_attributes": {"region": {}}},
    _via_entries(False),  # VIA 2 "export as JSON"
    _via_entries(True),  # VIA 1 project
]

H, W = 12, 16


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _put(work: Path, name: str, data: bytes) -> Path:
    p = work / name
    p.write_bytes(data)
    return p


# -- VIA CSV and JSON ------------------------------------------------------------------------------------------


def _read_via_fully(path: Path) -> list[ImageAnnotation]:
    anns = read_via(path)
    for a in anns:
        assert isinstance(a.filename, str) and isinstance(a.basename, str)
        assert isinstance(a.file_attributes, dict)
        for r in a.regions:
            assert isinstance(r.attributes, dict)
            assert all(math.isfinite(v) for v in shape_bounds(r.shape))
        # what `lineclear labels` does with them next
        rasterise(a.regions, (H, W), line_width=2.0)
    return anns


def test_via_seeds_read_back_exactly(work: Path) -> None:
    """The unmutated seeds are read as written: the property below is not vacuous."""
    want = [(a.filename, a.size, [r.shape for r in a.regions]) for a in ANNOTATIONS]
    for name, data in [("v.csv", VIA_CSV)] + [(f"v{i}.json", dump_json(d)) for i, d in enumerate(VIA_JSON_DOCS)]:
        got = _read_via_fully(_put(work, name, data))
        assert [(a.filename, a.size, [r.shape for r in a.regions]) for a in got] == want, name


_csv_cell = st.one_of(
    st.sampled_from(['"{}"', "{}", '"{""name"":""rect"",""x"":1,""y"":2,""width"":3,""height"":4}"',
                     '"{""name"":""circle"",""cx"":1e308,""cy"":-1e308,""r"":1e308}"',
                     '"{""name"":""polygon"",""all_points_x"":[1,2,1e308],""all_points_y"":[1,2,3]}"',
                     '"{""name"":""ellipse"",""cx"":1,""cy"":1,""rx"":1e200,""ry"":1e200}"',
                     "1e999", "NaN", "-1", "99999999999999999999999", "9" * 5000, "a.png", '"', '""', "[1]"]),
    st.text(max_size=20),
)
_csv_rows = st.lists(st.lists(_csv_cell, min_size=0, max_size=9), min_size=0, max_size=6)


@st.composite
def generated_csv(draw) -> bytes:
    header = draw(st.sampled_from([VIA_CSV.split(b"\n")[0].decode(), "#filename,region_shape_attributes",
                                   "filename,file_size,region_count,region_shape_attributes,region_attributes",
                                   "x,y"]))
    rows = draw(_csv_rows)
    return (header + "\n" + "\n".join(",".join(r) for r in rows) + "\n").encode("utf-8", "surrogatepass")


def _csv_json_cell(obj) -> str:
    return '"' + dump_json(obj).decode("utf-8", "surrogatepass").replace("\n", "").replace('"', '""') + '"'


@st.composite
def mutated_csv_fields(draw) -> bytes:
    """VIA's CSV layout with the JSON cells (shapes, attributes) given field edits."""
    rows = [VIA_CSV.split(b"\n")[0].decode()]
    target = draw(st.integers(0, sum(len(a.regions) or 1 for a in ANNOTATIONS) - 1))  # the row edited
    for a in ANNOTATIONS:
        for i, r in enumerate(a.regions or [None]):
            shape, attrs, size = (r.shape if r is not None else {}), (r.attributes if r is not None else {}), a.size
            if len(rows) - 1 == target:
                what = draw(st.sampled_from(["shape", "shape", "attrs", "size"]))
                if what == "shape":
                    shape = draw(mutated_json_doc(shape))
                elif what == "attrs":
                    attrs = draw(mutated_json_doc(attrs))
                else:
                    size = draw(st.sampled_from(["", "-1", "1e999", "NaN", "12.0", "x", "9" * 5000]))
            rows.append(f'"{a.filename}",{size},"{{}}",{len(a.regions)},{i},{_csv_json_cell(shape)},'
                        f"{_csv_json_cell(attrs)}")
    return ("\n".join(rows) + "\n").encode("utf-8", "surrogatepass")


@fuzz_settings(400)
@given(data=st.one_of(mutated_bytes(VIA_CSV, max_ops=3), mutated_csv_fields(), generated_csv()))
def test_fuzz_via_csv(work: Path, data: bytes) -> None:
    attempt("VIA CSV", lambda: _read_via_fully(_put(work, "f.csv", data)))


_coord = st.one_of(st.integers(-50, 50), st.integers(-50, 50), st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from(EXTREMES),
                   st.sampled_from(["1e308", "12", " 3 ", "nan", "", "0x1"]))


@st.composite
def generated_shape(draw) -> dict:
    """A VIA shape of any kind with every number drawn from small, huge, non-finite and textual values."""
    name = draw(st.sampled_from(["rect", "circle", "ellipse", "polygon", "polyline", "point"] * 3 + ["Rect", "path"]))
    keys = {"rect": ["x", "y", "width", "height"], "circle": ["cx", "cy", "r"], "point": ["cx", "cy"],
            "ellipse": ["cx", "cy", "rx", "ry", "theta"]}.get(name, [])
    shape = {"name": name, **{k: draw(_coord) for k in keys if draw(st.sampled_from([True] * 19 + [False]))}}
    if name in ("polygon", "polyline", "path"):
        n = draw(st.integers(0, 5))
        shape["all_points_x"] = draw(st.lists(_coord, min_size=n, max_size=n))
        shape["all_points_y"] = draw(st.lists(_coord, min_size=n, max_size=n + draw(st.integers(0, 1))))
    return shape


@fuzz_settings(300)
@given(shapes=st.lists(generated_shape(), min_size=1, max_size=3), as_csv=st.booleans())
def test_fuzz_via_shapes(work: Path, shapes: list[dict], as_csv: bool) -> None:
    """Generated regions, in a VIA 2 JSON export or a VIA CSV: refused, or rasterised without trouble."""
    if as_csv:
        rows = [f"a.png,12,\"{{}}\",{len(shapes)},{i},{_csv_json_cell(s)},\"{{}}\"" for i, s in enumerate(shapes)]
        name, data = "s.csv", (VIA_CSV.split(b"\n")[0].decode() + "\n" + "\n".join(rows) + "\n").encode()
    else:
        name, data = "s.json", dump_json({"a.png12": {"filename": "a.png", "size": 12,
                                                      "regions": [{"shape_attributes": s} for s in shapes]}})
    attempt("VIA shapes", lambda: _read_via_fully(_put(work, name, data)))


@fuzz_settings(400)
@given(data=st.one_of(*[mutated_json(d) for d in VIA_JSON_DOCS]))
def test_fuzz_via_json(work: Path, data: bytes) -> None:
    attempt("VIA JSON", lambda: _read_via_fully(_put(work, "f.json", data)))


# -- images and masks ------------------------------------------------------------------------------------------


def _image_seeds() -> dict[str, bytes]:
    import tempfile

    rng = np.random.default_rng(3)
    rgb = rng.random((H, W, 3)).astype(np.float32)
    out = {}
    with tempfile.TemporaryDirectory() as d:
        for name, arr in [("rgb.png", rgb), ("gray16.png", (rng.random((H, W)) * 65535).astype(np.uint16)),
                          ("rgba.png", (rng.random((H, W, 4)) * 255).astype(np.uint8)), ("rgb.jpg", rgb),
                          ("rgb.bmp", rgb), ("rgb.tif", rgb)]:
            out[name] = write_image(Path(d) / name, arr).read_bytes()
        m = np.zeros((H, W), bool)
        m[2:7, 3:9] = True
        out["mask.png"] = write_mask(Path(d) / "mask.png", m).read_bytes()
    return out


IMAGE_SEEDS = _image_seeds()


def _read_image_fully(path: Path) -> tuple[int, int]:
    raw = read_raw(path)
    assert raw.dtype in (np.uint8, np.uint16) and raw.ndim in (2, 3) and raw.size > 0
    rgb = read_rgb(path, size=(H, W))
    assert rgb.shape == (H, W, 3) and rgb.dtype == np.float32 and np.all((rgb >= 0) & (rgb <= 1))
    gray = read_gray(path)
    assert gray.dtype == np.uint8 and gray.shape == raw.shape[:2]
    return image_size(path)


def test_image_seeds_read_back(work: Path) -> None:
    for name, data in IMAGE_SEEDS.items():
        assert _read_image_fully(_put(work, name, data)) == (H, W), name
    m = read_mask(_put(work, "m.png", IMAGE_SEEDS["mask.png"]), shape=(H, W))
    assert m.sum() == 30 and m[2:7, 3:9].all()


@fuzz_settings(300)
@given(data=st.one_of(*[mutated_bytes(b, max_ops=4) for n, b in IMAGE_SEEDS.items() if n != "mask.png"]))
def test_fuzz_image_reader(work: Path, data: bytes) -> None:
    attempt("image", lambda: _read_image_fully(_put(work, "f.img", data)))


@fuzz_settings(200)
@given(data=mutated_bytes(IMAGE_SEEDS["mask.png"], max_ops=4), resize=st.booleans())
def test_fuzz_mask_reader(work: Path, data: bytes, resize: bool) -> None:
    def read():
        m = read_mask(_put(work, "f_mask.png", data), shape=(H, W), resize=resize)
        assert m.dtype == bool and m.shape == (H, W)
        return m

    attempt("mask", read)


# -- maps HDF5 -------------------------------------------------------------------------------------------------

N_MAPS = 3


def _maps_seed() -> bytes:
    import tempfile

    rng = np.random.default_rng(4)
    maps = rng.random((N_MAPS, 6, 5)).astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "maps.h5"
        with MapsWriter(p, (6, 5), attrs=provenance(model="toy", view="A"), with_valid=True) as w:
            w.append(maps, maps.max(axis=(1, 2)), [f"A/test/good/{i}.png" for i in range(N_MAPS)], [0, 1, -1],
                     valid=maps > 0.2)
        return p.read_bytes()


MAPS_SEED = _maps_seed()


def _old_maps_seed() -> bytes:
    """The same file as lineclear 0.1 wrote it: HDF5's oldest format, no checksums (still read)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        new, old = Path(d) / "new.h5", Path(d) / "old.h5"
        new.write_bytes(MAPS_SEED)
        with h5py.File(new, "r") as src, h5py.File(old, "w") as dst:
            for name, ds in src.items():
                kw = dict(compression="gzip", shuffle=True) if ds.ndim == 3 else {}
                dst.create_dataset(name, data=ds[()], dtype=ds.dtype, chunks=ds.chunks, maxshape=ds.maxshape, **kw)
            for k, v in src.attrs.items():
                dst.attrs[k] = v
        return old.read_bytes()


OLD_MAPS_SEED = _old_maps_seed()


def _read_maps_fully(path: Path) -> int:
    with MapsFile(path) as f:
        n, (h, w) = len(f), f.map_size
        assert len(f.scores) == len(f.image_ids) == len(f.labels) == n
        assert all(isinstance(s, str) for s in f.image_ids)
        assert np.all(np.isfinite(f.scores)) and f.labels.dtype == np.int64
        assert isinstance(f.attrs, dict)
        seen = 0
        for sl, maps, valid in f.iter_batches(2):
            assert maps.shape == valid.shape == (sl.stop - sl.start, h, w) and valid.dtype == bool
            assert np.all(np.isfinite(maps))
            seen += maps.shape[0]
        for i in range(n):
            assert f.map(i).shape == f.valid(i).shape == (h, w)
        assert seen == n
        return n


def test_maps_seed_reads_back(work: Path) -> None:
    assert _read_maps_fully(_put(work, "m.h5", MAPS_SEED)) == N_MAPS
    assert _read_maps_fully(_put(work, "m0.h5", OLD_MAPS_SEED)) == N_MAPS


_H5_TOKENS = [b"\x00" * 8, b"\xff" * 8, b"HDF", b"\x89HDF\r\n\x1a\n"]


@fuzz_settings(300)
@given(data=st.one_of(mutated_bytes(MAPS_SEED, max_ops=4, tokens=_H5_TOKENS),
                      mutated_bytes(OLD_MAPS_SEED, max_ops=4, tokens=_H5_TOKENS)))
def test_fuzz_maps_bytes(work: Path, data: bytes) -> None:
    attempt("maps HDF5 (bytes)", lambda: _read_maps_fully(_put(work, "f.h5", data)))


_DTYPES = ["float32", "float64", "float16", "int8", "int64", "uint8", "bool", "complex64", "str", "bytes", "compound"]


def _dataset(f: h5py.File, name: str, dtype: str, shape: tuple[int, ...], rng: np.random.Generator,
             nonfinite: bool) -> None:
    if dtype == "str":
        f.create_dataset(name, data=np.array(["é"] * int(np.prod(shape)), dtype=object).reshape(shape),
                         dtype=h5py.string_dtype())
    elif dtype == "bytes":
        f.create_dataset(name, data=np.full(shape, b"ab", dtype="S2"))
    elif dtype == "compound":
        f.create_dataset(name, shape=shape, dtype=np.dtype([("a", "f4"), ("b", "i4")]))
    else:
        vals = rng.choice([0.0, 1.0, -1.0, 0.5, 300.0] + [np.nan, np.inf] * nonfinite, size=shape)
        with np.errstate(invalid="ignore", over="ignore"):
            f.create_dataset(name, data=vals.astype(dtype) if dtype != "bool" else vals > 0.5)


_shape = st.lists(st.integers(0, 4), min_size=0, max_size=4).map(tuple)
_attr = st.one_of(st.none(), st.integers(-5, 2**40), st.floats(allow_nan=True),
                  st.text(st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]), max_size=8),
                  st.sampled_from(["lineclear.maps/1", "lineclear.maps/2", "lineclear.thresholds/1", b"lineclear.maps/1"]),
                  st.lists(st.integers(-3, 9), max_size=4))


@st.composite
def generated_maps(draw) -> dict:
    """A maps-like HDF5 layout: each dataset present or not, of any dtype and shape; odd root attributes."""
    n = draw(st.integers(0, 3))
    spec = {"attrs": {"schema": draw(_attr) if draw(st.sampled_from([False] * 4 + [True])) else "lineclear.maps/1"}}
    spec["attrs"].update(draw(st.dictionaries(st.sampled_from(["map_size", "count", "model", "view", "registered"]),
                                              _attr, max_size=3)))
    good = {"maps": ("float32", (n, 4, 3)), "scores": ("float32", (n,)), "image_ids": ("str", (n,)),
            "labels": ("int8", (n,)), "valid": ("uint8", (n, 4, 3))}
    for name, (dtype, shape) in good.items():
        how = draw(st.sampled_from(["good"] * 6 + ["absent", "dtype", "shape", "both"]))
        if how == "absent":
            continue
        if how in ("dtype", "both"):
            dtype = draw(st.sampled_from(_DTYPES))
        if how in ("shape", "both"):
            shape = draw(_shape)
        spec[name] = (dtype, shape)
    spec["group"] = draw(st.sampled_from([None, "maps", "scores", "extra"]))
    spec["seed"] = draw(st.integers(0, 2**16))
    spec["nonfinite"] = draw(st.sampled_from([False] * 4 + [True]))
    return spec


def _write_spec(path: Path, spec: dict) -> None:
    rng = np.random.default_rng(spec["seed"])
    with h5py.File(path, "w") as f:
        for k, v in spec["attrs"].items():
            f.attrs[k] = v if v is not None else h5py.Empty("f")
        for name in ("maps", "scores", "image_ids", "labels", "valid"):
            if name in spec and name != spec["group"]:
                _dataset(f, name, *spec[name], rng, spec["nonfinite"])
        if spec["group"] is not None and spec["group"] not in f:
            f.create_group(spec["group"])


@fuzz_settings(300)
@given(spec=generated_maps())
def test_fuzz_maps_layout(work: Path, spec: dict) -> None:
    p = work / "g.h5"
    _write_spec(p, spec)
    attempt("maps HDF5 (layout)", lambda: _read_maps_fully(p))


# -- thresholds JSON -------------------------------------------------------------------------------------------


def _json_seed(work: Path, name: str, write) -> dict:
    p = write(work / name)
    return json.loads(p.read_text())


THRESHOLDS = {"method": "quantile", "params": {"p": 0.99},
              "pixel": {"threshold": 0.25, "stats": {"count": 10, "mean": 0.1}},
              "image": {"threshold": 0.5, "stats": {"count": 3}},
              "source": {"path": "val_maps.h5", "sha256": "0" * 64, "model": "toy", "view": "A", "map_size": [6, 5]}}


@pytest.fixture(scope="module")
def thresholds_doc(work: Path) -> dict:
    return _json_seed(work, "t.json", lambda p: write_thresholds(p, THRESHOLDS))


def _read_thresholds_fully(path: Path) -> dict:
    doc = read_thresholds(path)
    for level in ("pixel", "image"):
        t = doc[level]["threshold"]
        assert t is None or (type(t) in (int, float) and math.isfinite(float(t)))
    assert isinstance(doc["source"], dict) and isinstance(doc.get("params", {}), dict)
    return doc


def test_thresholds_seed_reads_back(work: Path, thresholds_doc: dict) -> None:
    doc = _read_thresholds_fully(_put(work, "t2.json", dump_json(thresholds_doc)))
    assert doc["pixel"]["threshold"] == 0.25 and doc["source"]["view"] == "A"


@fuzz_settings(300)
@given(data=st.data())
def test_fuzz_thresholds(work: Path, thresholds_doc: dict, data) -> None:
    blob = data.draw(mutated_json(thresholds_doc))
    attempt("thresholds JSON", lambda: _read_thresholds_fully(_put(work, "f_thr.json", blob)))


# -- deploy manifest JSON --------------------------------------------------------------------------------------


def _fuzzed_copy(fuzzed: Path, seed_dir: Path, name: str, data) -> Path:
    """A copy of ``seed_dir`` (made once) whose JSON file ``name`` is a mutation of the seed's."""
    blob = data.draw(mutated_json(json.loads((seed_dir / name).read_text())))
    if not fuzzed.exists():
        import shutil

        shutil.copytree(seed_dir, fuzzed)
    _put(fuzzed, name, blob)
    return fuzzed


@pytest.fixture(scope="module")
def bundle_dir(work: Path) -> Path:
    b = work / "line"
    for rel, data in [("A/model.pt", b"weights"), ("A/thresholds.json", b"{}"), ("A/reference.png", b"png"),
                      ("A/mask.png", b"mask"), ("A/run.json", b"{}"), ("B/onnx/export.json", b"{}"),
                      ("B/onnx/network.onnx", b"graph"), ("B/onnx/arrays.npz", b"arrays"),
                      ("B/thresholds.json", b"{}"), ("B/reference.png", b"png")]:
        (b / rel).parent.mkdir(parents=True, exist_ok=True)
        (b / rel).write_bytes(data)
    view = {"model": "template", "checkpoint": "A/model.pt", "thresholds": "A/thresholds.json",
            "reference": "A/reference.png", "mask": "A/mask.png", "run": "A/run.json", "mask_stage": "post",
            "border_margin": 2, "image_size": [192, 256], "map_size": [48, 64], "pattern": "*A*",
            "registration": {"model": "homography"}, "image_qc": {"dark": 0.02}, "provenance": {"run": "runs/A"}}
    exported = {"model": "patchcore", "runtime": "onnx", "checkpoint": None, "export": "B/onnx/export.json",
                "export_files": ["B/onnx/network.onnx", "B/onnx/arrays.npz"], "thresholds": "B/thresholds.json",
                "reference": "B/reference.png", "mask": None, "run": None, "mask_stage": "none", "border_margin": 8,
                "image_size": [192, 256], "map_size": [48, 64], "pattern": "B", "registration": None, "image_qc": {}}
    write_manifest(b, {"A": view, "B": exported})
    return b


def _read_manifest_fully(bundle: Path) -> dict:
    b = read_manifest(bundle)
    problems = verify_files(b)
    assert isinstance(problems, dict) and all(isinstance(v, str) for v in problems.values())
    by_view = view_problems(b, problems)
    for spec in b.views.values():
        assert len(spec.image_size) == len(spec.map_size) == 2 and spec.border_margin >= 0
        assert all(bundle in p.parents for p in (spec.checkpoint, spec.export, spec.thresholds, spec.reference)
                   if p is not None)
        assert spec.runtime in ("torch", "onnx", "openvino") and (spec.checkpoint or spec.export) is not None
    return by_view


def test_manifest_seed_reads_back(bundle_dir: Path) -> None:
    assert _read_manifest_fully(bundle_dir) == {"A": [], "B": []}


@fuzz_settings(300)
@given(data=st.data())
def test_fuzz_manifest(work: Path, bundle_dir: Path, data) -> None:
    fuzzed = _fuzzed_copy(work / "fuzzed_line", bundle_dir, "manifest.json", data)
    attempt("deploy manifest JSON", lambda: _read_manifest_fully(fuzzed))


# -- exported model: export.json -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def export_dir(work: Path) -> Path:
    from lineclear.formats.export import write_export

    d = work / "export"
    d.mkdir()
    (d / "network.onnx").write_bytes(b"graph")
    (d / "arrays.npz").write_bytes(b"arrays")
    write_export(d, {"model": "patchcore", "format": "onnx", "map_size": [48, 64], "config": {"image_size": [48, 64]},
                     "params": {"radius": 2, "blur_sigma": 4.0}, "graph": "network.onnx", "graph_inputs": ["image"],
                     "graph_outputs": ["features"], "arrays": "arrays.npz", "checkpoint_sha256": "0" * 64,
                     "fidelity": {"ok": True}}, ["network.onnx", "arrays.npz"])
    return d


def _read_export_fully(d: Path) -> list[str]:
    from lineclear.formats.export import export_problems, read_export

    info = read_export(d)
    assert len(info.map_size) == 2 and min(info.map_size) > 0 and info.format in ("onnx", "openvino")
    for key in ("graph", "arrays"):
        p = info.path(key)
        assert p is None or d in p.parents
    return export_problems(info)


def test_export_seed_reads_back(export_dir: Path) -> None:
    assert _read_export_fully(export_dir) == []


@fuzz_settings(300)
@given(data=st.data())
def test_fuzz_export(work: Path, export_dir: Path, data) -> None:
    fuzzed = _fuzzed_copy(work / "fuzzed_export", export_dir, "export.json", data)
    attempt("export JSON", lambda: _read_export_fully(fuzzed))


# -- verdicts: the check --out document and the watch log ------------------------------------------------------


def _views() -> list[ViewVerdict]:
    return [
        ViewVerdict("A", "clear", "score below threshold", image="in/A_1.png", model="template", score=0.1,
                    threshold=0.5, pixel_threshold=0.3, registration={"ok": True, "transform": [[1, 0, 0]] * 3},
                    timings_ms={"check": 12.5}),
        ViewVerdict("B", "leftover", "1 region above threshold", image="in/B_1.png", model="template", score=0.9,
                    threshold=0.5, regions=[{"bbox": [3, 4, 10, 8], "area_px": 60, "peak_score": 0.9}],
                    regions_total=1, peak_xy=[7.0, 8.0]),
    ]


def _log_seed() -> bytes:
    from lineclear.check import CheckResult

    lines = []
    for n in (1, 2):
        res = CheckResult("line", _views()[:n], {"load": 5.0}, "cpu")
        lines += [json.dumps(r) + "\n" for r in log_records(res, n)]
    return "".join(lines).encode()


LOG_SEED = _log_seed()


def _read_log_fully(path: Path):
    log = read_verdict_log(path)
    assert log.complete_bytes + len(log.torn) == path.stat().st_size
    for r in log.records:
        assert r["set_verdict"] in ("clear", "leftover", "undecided") and isinstance(r["regions"], list)
    return log


def test_log_seed_reads_back(work: Path) -> None:
    log = _read_log_fully(_put(work, "v.jsonl", LOG_SEED))
    assert [(r["set"], r["view"], r["verdict"]) for r in log.records] == [(1, "A", "clear"), (2, "A", "clear"),
                                                                             (2, "B", "leftover")]
    assert log.torn == b""


@fuzz_settings(200)
@given(cut=st.integers(0, len(LOG_SEED)))
def test_fuzz_log_cut_anywhere_keeps_every_complete_line(cut: int) -> None:
    """A write cut short at any byte: every line before it is read, the rest is ``torn`` (never an error)."""
    data = LOG_SEED[:cut]
    ok, log = attempt("verdict log (cut)", lambda: parse_verdict_log(data))
    assert ok
    whole = data.count(b"\n")
    assert len(log.records) in (whole, whole + 1)  # + the last record when only its newline is missing
    assert log.records == [json.loads(x) for x in LOG_SEED.split(b"\n")[:len(log.records)]]
    assert log.torn == (b"" if len(log.records) > whole or not data else data[data.rfind(b"\n") + 1:])


@fuzz_settings(300)
@given(data=st.one_of(
    mutated_bytes(LOG_SEED),
    st.tuples(mutated_json_doc(json.loads(LOG_SEED.split(b"\n")[2])), st.booleans()).map(
        lambda t: LOG_SEED + dump_json(t[0]).replace(b"\n", b"") + (b"\n" if t[1] else b"")),
))
def test_fuzz_verdict_log(work: Path, data: bytes) -> None:
    attempt("verdict log", lambda: _read_log_fully(_put(work, "f.jsonl", data)))


@fuzz_settings(200)
@given(data=st.data())
def test_fuzz_verdict_json(work: Path, data) -> None:
    from lineclear.check import CheckResult

    seed = json.loads(write_verdict(work / "verdict.json", CheckResult("line", _views(), {"load": 1}, "cpu").to_dict(),
                                    overwrite=True).read_text())
    assert seed["schema"] == VERDICT_SCHEMA and read_verdict(work / "verdict.json")["verdict"] == "leftover"
    blob = data.draw(mutated_json(seed))
    attempt("verdict JSON", lambda: read_verdict(_put(work, "f_verdict.json", blob)))
