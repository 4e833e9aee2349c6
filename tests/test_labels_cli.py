"""``lineclear labels``: files in, mask PNGs out; a CSV written by another tool; bad input."""

from __future__ import annotations

import csv
import json
import math

import cv2
import numpy as np
import pytest

from lineclear.images import write_image
from tests.conftest import run_cli

HEADER = ["filename", "file_size", "file_attributes", "region_count", "region_id", "region_shape_attributes",
          "region_attributes"]


def read_png(path):
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return img


@pytest.fixture
def view(tmp_path):
    """A view with two anomalous images (different sizes) and a good one."""
    v = tmp_path / "V"
    write_image(v / "train" / "good" / "t0.png", np.zeros((20, 30, 3), np.uint8))
    write_image(v / "test" / "good" / "g0.png", np.zeros((20, 30, 3), np.uint8))
    write_image(v / "test" / "leaflet" / "l0.png", np.zeros((20, 30, 3), np.uint8))
    write_image(v / "test" / "cap" / "c0.jpg", np.zeros((12, 16), np.uint8))
    return v


def via_csv(path, rows, bom=False, crlf=False):
    """A VIA 2 CSV, quoting like VIA: every JSON cell quoted with doubled quotes."""
    lines = [",".join(HEADER)]
    for fname, regions in rows:
        if not regions:
            lines.append(f'{fname},0,"{{}}",0,0,"{{}}","{{}}"')
        for i, (shape, attrs) in enumerate(regions):
            cell = lambda o: '"' + json.dumps(o, separators=(",", ":")).replace('"', '""') + '"'  # noqa: E731
            lines.append(f'{fname},0,"{{}}",{len(regions)},{i},{cell(shape)},{cell(attrs)}')
    text = ("\r\n" if crlf else "\n").join(lines) + "\n"
    path.write_bytes(text.encode("utf-8-sig" if bom else "utf-8"))
    return path


def test_mvtec_tree_when_out_is_ground_truth(tmp_path, view, capsys):
    ann = via_csv(tmp_path / "a.csv", [
        ("l0.png", [({"name": "rect", "x": 2, "y": 3, "width": 4, "height": 5}, {"type": "leaflet"}),
                    ({"name": "circle", "cx": 20.5, "cy": 10.5, "r": 1}, {"type": "leaflet"})]),
        ("c0.jpg", [({"name": "point", "cx": 8, "cy": 6}, {"type": "cap"})]),
        ("g0.png", []),
    ], bom=True, crlf=True)
    assert run_cli(["labels", str(ann), "--images", str(view), "--out", str(view / "ground_truth")]) == 0
    m = read_png(view / "ground_truth" / "leaflet" / "l0_mask.png")
    assert m.dtype == np.uint8 and m.shape == (20, 30) and set(np.unique(m)) == {0, 255}
    want = np.zeros((20, 30), np.uint8)
    want[3:8, 2:6] = 255
    want[9:12, 20] = want[10, 19:22] = 255  # circle r=1 at a pixel centre: a plus
    assert (m == want).all()
    c = read_png(view / "ground_truth" / "cap" / "c0_mask.png")
    assert c.shape == (12, 16) and (c > 0).sum() == 32  # disk of radius 3 about a pixel corner: 32 centres
    g = read_png(view / "ground_truth" / "good" / "g0_mask.png")
    assert g.shape == (20, 30) and not g.any()
    assert "wrote 3 masks" in capsys.readouterr().out


def test_view_dir_gives_mvtec_tree_and_flat_otherwise(tmp_path, view):
    ann = via_csv(tmp_path / "a.csv", [("l0.png", [({"name": "rect", "x": 0, "y": 0, "width": 1, "height": 1}, {})])])
    assert run_cli(["labels", str(ann), "--images", str(view), "--out", str(view)]) == 0
    assert (view / "ground_truth" / "leaflet" / "l0_mask.png").is_file()
    flat = tmp_path / "masks"
    assert run_cli(["labels", str(ann), "--images", str(view), "--out", str(flat), "--json"]) == 0
    assert read_png(flat / "l0_mask.png")[0, 0] == 255


def test_where_polyline_and_point_options(tmp_path, view):
    ann = via_csv(tmp_path / "a.csv", [("l0.png", [
        ({"name": "polyline", "all_points_x": [0.5, 29.5], "all_points_y": [10.5, 10.5]}, {"type": "cable"}),
        ({"name": "point", "cx": 5, "cy": 5}, {"type": "leaflet"}),
    ])])
    out = tmp_path / "o"
    assert run_cli(["labels", str(ann), "--images", str(view), "--out", str(out), "--where", "type=cable",
                    "--line-width", "3"]) == 0
    m = read_png(out / "l0_mask.png") > 0
    assert m[9:12].all() and m.sum() == 3 * 30
    assert run_cli(["labels", str(ann), "--images", str(view), "--out", str(out), "--where", "type=leaflet",
                    "--point-radius", "1", "--overwrite"]) == 0
    m = read_png(out / "l0_mask.png") > 0
    assert m.sum() == 4 and m[4:6, 4:6].all()


def test_csv_written_by_another_tool(tmp_path, view):
    """Python's csv module + json.dumps with spaces, VIA 1 header: a polygon and a rotated ellipse."""
    ann = tmp_path / "other.csv"
    with open(ann, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)  # quotes only where needed, doubles inner quotes, CRLF line ends
        w.writerow(["#filename", "file_size", "file_attributes", "region_count", "region_id",
                    "region_shape_attributes", "region_attributes"])
        w.writerow(["test/leaflet/l0.png", 0, "{}", 2, 0,
                    json.dumps({"name": "polygon", "all_points_x": [4, 14, 4], "all_points_y": [2, 2, 12]}),
                    json.dumps({"type": "leaflet"})])
        w.writerow(["test/leaflet/l0.png", 0, "{}", 2, 1,
                    json.dumps({"name": "ellipse", "cx": 22, "cy": 10, "rx": 6, "ry": 2, "theta": math.pi / 2}),
                    json.dumps({"type": "leaflet"})])
    out = tmp_path / "o"
    assert run_cli(["labels", str(ann), "--images", str(view), "--out", str(out)]) == 0
    m = read_png(out / "l0_mask.png") > 0
    # What the tool meant: pixels whose centres lie in the right triangle with legs 10 px, and in the
    # ellipse 12 px tall, 4 px wide (theta = 90 degrees turns the long axis vertical).
    yy, xx = np.mgrid[0:20, 0:30] + 0.5
    tri = (xx >= 4) & (yy >= 2) & ((xx - 4) + (yy - 2) < 10)
    ell = ((xx - 22) / 2) ** 2 + ((yy - 10) / 6) ** 2 <= 1
    assert (m == (tri | ell)).all()
    assert m[:, 20:25].any(axis=1).sum() == 12 and m[10, 18:27].sum() == 4


def test_missing_and_ambiguous_names_in_one_error(tmp_path, view, capsys):
    write_image(view / "train" / "good" / "l0.png", np.zeros((20, 30, 3), np.uint8))  # now l0.png is ambiguous
    ann = via_csv(tmp_path / "a.csv", [("l0.png", []), ("nope.png", []), ("gone.png", [])])
    out = tmp_path / "o"
    assert run_cli(["labels", str(ann), "--images", str(view), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "2 image(s) not found" in err and "gone.png" in err and "nope.png" in err
    assert "1 name(s) match several files: l0.png" in err
    assert "Traceback" not in err and not out.exists()


def test_existing_output_is_refused_without_overwrite_and_nothing_written(tmp_path, view, capsys):
    ann = via_csv(tmp_path / "a.csv", [("l0.png", []), ("g0.png", [])])
    out = tmp_path / "o"
    out.mkdir()
    (out / "g0_mask.png").write_bytes(b"old")
    assert run_cli(["labels", str(ann), "--images", str(view), "--out", str(out)]) == 1
    assert "exist" in capsys.readouterr().err
    assert not (out / "l0_mask.png").exists() and (out / "g0_mask.png").read_bytes() == b"old"
    assert run_cli(["labels", str(ann), "--images", str(view), "--out", str(out), "--overwrite"]) == 0
    assert read_png(out / "g0_mask.png").shape == (20, 30)


def test_region_partly_outside_is_clipped_with_a_warning(tmp_path, view, capsys):
    ann = via_csv(tmp_path / "a.csv", [("l0.png", [({"name": "rect", "x": 25, "y": -5, "width": 10, "height": 10}, {})])])
    out = tmp_path / "o"
    assert run_cli(["labels", str(ann), "--images", str(view), "--out", str(out)]) == 0
    assert "clipped" in capsys.readouterr().err
    m = read_png(out / "l0_mask.png") > 0
    assert m.sum() == 5 * 5 and m[0:5, 25:30].all()


@pytest.mark.parametrize(
    "row, message",
    [
        ('l0.png,0,"{}",1,0,"{""name"":""hexagon""}","{}"', "a.csv:2: unknown shape 'hexagon'"),
        ('l0.png,0,"{}",1,0,{"name":"rect","x":1},"{}"', "a.csv:2: malformed row"),
        ('l0.png,0,"{}",1,0,"{""name"":""rect""}","{}"', "a.csv:2: rect without 'x'"),
    ],
)
def test_bad_rows_exit_1_naming_the_line(tmp_path, view, capsys, row, message):
    ann = tmp_path / "a.csv"
    ann.write_text(",".join(HEADER) + "\n" + row + "\n")
    out = tmp_path / "o"
    assert run_cli(["labels", str(ann), "--images", str(view), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_unreadable_image_and_usage_errors(tmp_path, view, capsys):
    (view / "test" / "leaflet" / "bad.png").write_bytes(b"not a png")
    ann = via_csv(tmp_path / "a.csv", [("bad.png", [])])
    assert run_cli(["labels", str(ann), "--images", str(view), "--out", str(tmp_path / "o")]) == 1
    assert "bad.png: not a readable image" in capsys.readouterr().err
    ok = via_csv(tmp_path / "b.csv", [("l0.png", [])])
    assert run_cli(["labels", str(ok), "--images", str(view), "--out", str(tmp_path / "o"), "--where", "type"]) == 2
    assert run_cli(["labels", str(ok), "--images", str(view), "--out", str(tmp_path / "o"), "--line-width", "0"]) == 2
    assert run_cli(["labels", str(tmp_path / "none.csv"), "--images", str(view), "--out", str(tmp_path / "o")]) in (1, 2)


def test_via2_project_json_through_the_cli(tmp_path, view):
    project = {
        "_via_settings": {}, "_via_attributes": {},
        "_via_img_metadata": {
            "l0.png0": {"filename": "l0.png", "size": 0, "file_attributes": {}, "regions": [
                {"shape_attributes": {"name": "rect", "x": 1, "y": 1, "width": 2, "height": 2},
                 "region_attributes": {"type": "leaflet"}},
                {"shape_attributes": {"name": "rect", "x": 10, "y": 10, "width": 2, "height": 2},
                 "region_attributes": {"type": "cap"}}]},
        },
    }
    p = tmp_path / "project.json"
    p.write_text(json.dumps(project))
    out = tmp_path / "o"
    assert run_cli(["labels", str(p), "--images", str(view), "--out", str(out), "--where", "type=leaflet"]) == 0
    m = read_png(out / "l0_mask.png") > 0
    assert m.sum() == 4 and m[1:3, 1:3].all()


def test_header_only_csv_is_an_error_and_writes_nothing(tmp_path, view, capsys):
    """Regression: a CSV with only the header 'succeeded' with 0 masks and exit 0."""
    ann = via_csv(tmp_path / "h.csv", [])
    out = tmp_path / "masks"
    assert run_cli(["labels", str(ann), "--images", str(view), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "h.csv: lists no image" in err and "Traceback" not in err
    assert not out.exists()


def test_region_wholly_outside_is_named_as_such(tmp_path, view, capsys):
    """Regression: a region entirely off the image was reported as 'clipped at the image border'."""
    ann = via_csv(tmp_path / "o.csv", [
        ("l0.png", [({"name": "rect", "x": 100, "y": 100, "width": 5, "height": 5}, {}),
                    ({"name": "rect", "x": 28, "y": 2, "width": 5, "height": 3}, {})]),
    ])
    out = tmp_path / "masks"
    assert run_cli(["labels", str(ann), "--images", str(view), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "o.csv:2: rect lies entirely outside l0.png (30x20); it marks no pixel" in err
    assert "o.csv:3: rect reaches outside l0.png (30x20); clipped at the image border" in err
    m = read_png(out / "l0_mask.png")
    assert (m > 0).sum() == 2 * 3 and m[2:5, 28:30].all()
