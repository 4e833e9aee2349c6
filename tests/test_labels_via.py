"""Reading VIA files: the CSV quirks, VIA 1 and VIA 2 JSON, errors with line numbers; writing VIA 2 CSV."""

from __future__ import annotations

import json

import pytest

from lineclear.errors import FormatError, LineclearError
from lineclear.formats.via import ImageAnnotation, format_via_csv, read_via
from lineclear.labels import Region, validate_shape

HEADER = "filename,file_size,file_attributes,region_count,region_id,region_shape_attributes,region_attributes"
# Exactly as VIA 2.0 exports it: JSON in quoted cells with doubled quotes, a region_count 0 row.
VIA2_CSV = (
    HEADER + "\n"
    'a.png,1234,"{}",2,0,"{""name"":""rect"",""x"":10,""y"":20,""width"":30,""height"":40}","{""type"":""leaflet""}"\n'
    'a.png,1234,"{}",2,1,"{""name"":""polygon"",""all_points_x"":[1,5,3],""all_points_y"":[1,1,4]}",'
    '"{""type"":""cap"",""note"":""a \\""quoted\\"", comma""}"\n'
    'b.png,999,"{""caption"":""x, y""}",0,0,"{}","{}"\n'
)


def write(tmp_path, name, text, encoding="utf-8", newline="\n"):
    p = tmp_path / name
    p.write_bytes(text.replace("\n", newline).encode(encoding))
    return p


def check_standard(anns):
    assert [a.filename for a in anns] == ["a.png", "b.png"]
    a, b = anns
    assert a.size == 1234 and len(a.regions) == 2
    assert a.regions[0].shape == {"name": "rect", "x": 10.0, "y": 20.0, "width": 30.0, "height": 40.0}
    assert a.regions[0].attributes == {"type": "leaflet"}
    assert a.regions[1].shape["all_points_y"] == [1.0, 1.0, 4.0]
    assert a.regions[1].attributes["note"] == 'a "quoted", comma'
    assert b.regions == [] and b.file_attributes == {"caption": "x, y"}


def test_via2_csv(tmp_path):
    check_standard(read_via(write(tmp_path, "v.csv", VIA2_CSV)))


def test_csv_with_bom_crlf_and_empty_rows(tmp_path):
    text = VIA2_CSV.replace("\na.png,1234,\"{}\",2,1", "\n\n,,,,,,\na.png,1234,\"{}\",2,1") + "\n\n"
    p = write(tmp_path, "v.csv", text, encoding="utf-8-sig", newline="\r\n")
    assert p.read_bytes().startswith(b"\xef\xbb\xbf")
    check_standard(read_via(p))


def test_via1_csv_header(tmp_path):
    check_standard(read_via(write(tmp_path, "v1.csv", "#" + VIA2_CSV)))


def test_region_line_is_recorded(tmp_path):
    anns = read_via(write(tmp_path, "v.csv", VIA2_CSV))
    assert anns[0].regions[0].where.endswith("v.csv:2")
    assert anns[0].regions[1].where.endswith("v.csv:3")


def test_malformed_row_names_the_line(tmp_path):
    # JSON written into the CSV without quoting: its commas split the cell.
    bad = VIA2_CSV + 'c.png,1,"{}",1,0,{"name":"rect","x":1,"y":1,"width":2,"height":2},"{}"\n'
    with pytest.raises(FormatError, match=r"v\.csv:5: malformed row"):
        read_via(write(tmp_path, "v.csv", bad))


def test_bad_json_cell_names_the_line(tmp_path):
    bad = VIA2_CSV + 'c.png,1,"{}",1,0,"{""name"":""rect"",""x"":1,","{}"\n'
    with pytest.raises(FormatError, match=r"v\.csv:5: region_shape_attributes is not valid JSON"):
        read_via(write(tmp_path, "v.csv", bad))


def test_unknown_shape_names_the_line(tmp_path):
    bad = VIA2_CSV + 'c.png,1,"{}",1,0,"{""name"":""star"",""cx"":1}","{}"\n'
    with pytest.raises(FormatError, match=r"v\.csv:5: unknown shape 'star'"):
        read_via(write(tmp_path, "v.csv", bad))


def test_not_a_via_file(tmp_path):
    with pytest.raises(FormatError, match="not a VIA CSV"):
        read_via(write(tmp_path, "x.csv", "a,b,c\n1,2,3\n"))
    with pytest.raises(FormatError, match="empty"):
        read_via(write(tmp_path, "e.csv", "\n\n"))
    with pytest.raises(FormatError, match="not valid JSON"):
        read_via(write(tmp_path, "j.json", "{ nope"))
    with pytest.raises(LineclearError, match="no such annotation file"):
        read_via(tmp_path / "missing.csv")
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\x89PNG\xff\xfe\x00a")
    with pytest.raises(FormatError, match="not UTF-8"):
        read_via(binary)


def _entries(regions_as_dict: bool):
    regs = [
        {"shape_attributes": {"name": "rect", "x": 10, "y": 20, "width": 30, "height": 40},
         "region_attributes": {"type": "leaflet"}},
        {"shape_attributes": {"name": "polygon", "all_points_x": [1, 5, 3], "all_points_y": [1, 1, 4]},
         "region_attributes": {"type": "cap", "note": 'a "quoted", comma'}},
    ]
    a = {"filename": "a.png", "size": 1234, "file_attributes": {},
         "regions": {str(i): r for i, r in enumerate(regs)} if regions_as_dict else regs}
    b = {"filename": "b.png", "size": 999, "file_attributes": {"caption": "x, y"}, "regions": {} if regions_as_dict else []}
    return {"a.png1234": a, "b.png999": b}


def test_via2_project_json(tmp_path):
    doc = {"_via_settings": {"ui": {}}, "_via_img_metadata": _entries(False), "_via_attributes": {"region": {}},
           "_via_data_format_version": "2.0.10", "_via_image_id_list": ["a.png1234", "b.png999"]}
    check_standard(read_via(write(tmp_path, "p.json", json.dumps(doc))))


def test_via2_exported_json(tmp_path):
    check_standard(read_via(write(tmp_path, "e.json", json.dumps(_entries(False)))))


def test_via1_project_json(tmp_path):
    # VIA 1 keeps regions in an object keyed by index; "10" must come after "2".
    entries = _entries(True)
    check_standard(read_via(write(tmp_path, "v1.json", json.dumps(entries), encoding="utf-8-sig")))
    many = {str(i): {"shape_attributes": {"name": "point", "cx": i, "cy": 0}, "region_attributes": {}} for i in range(12)}
    entries["a.png1234"]["regions"] = many
    got = read_via(write(tmp_path, "v1b.json", json.dumps(entries)))
    assert [r.shape["cx"] for r in got[0].regions] == [float(i) for i in range(12)]


def test_via3_is_refused_clearly(tmp_path):
    doc = {"project": {}, "config": {}, "attribute": {}, "file": {}, "metadata": {}, "view": {}}
    with pytest.raises(FormatError, match="VIA 3"):
        read_via(write(tmp_path, "v3.json", json.dumps(doc)))


def test_json_unknown_shape_names_the_entry(tmp_path):
    entries = _entries(False)
    entries["a.png1234"]["regions"][1]["shape_attributes"] = {"name": "blob"}
    with pytest.raises(FormatError, match=r"entry 'a.png1234' region 1: unknown shape 'blob'"):
        read_via(write(tmp_path, "p.json", json.dumps(entries)))


def test_written_csv_is_via2_format_and_round_trips(tmp_path):
    anns = [
        ImageAnnotation("a.png", 1234, {}, [
            Region(validate_shape({"name": "rect", "x": 10, "y": 20, "width": 30, "height": 40}), {"type": "leaflet"}),
            Region(validate_shape({"name": "ellipse", "cx": 5.25, "cy": 6, "rx": 3, "ry": 2, "theta": 0.5}), {}),
        ]),
        ImageAnnotation("b.png", 999),
    ]
    text = format_via_csv(anns)
    lines = text.splitlines()
    assert lines[0] == HEADER
    assert lines[1] == ('a.png,1234,"{}",2,0,"{""name"":""rect"",""x"":10,""y"":20,""width"":30,""height"":40}",'
                        '"{""type"":""leaflet""}"')
    assert lines[2].startswith('a.png,1234,"{}",2,1,"{""name"":""ellipse"",""cx"":5.25,""cy"":6,')
    assert lines[3] == 'b.png,999,"{}",0,0,"{}","{}"'
    back = read_via(write(tmp_path, "rt.csv", text))
    assert [[r.shape for r in a.regions] for a in back] == [[r.shape for r in a.regions] for a in anns]


@pytest.mark.parametrize("shape, message", [
    ({"name": "circle", "cx": 1, "cy": 1, "r": 1e200}, "out of range"),  # r**2 overflowed in rasterise
    ({"name": "rect", "x": 1e308, "y": 0, "width": 1e308, "height": 3}, "out of range"),  # x + width = inf
    ({"name": "point", "cx": 10**400, "cy": 1}, "must be a number"),  # float(10**400) overflowed
])
def test_shapes_beyond_any_image_are_refused(shape, message):
    """Found by tests/test_formats_fuzz.py (VIA shapes): these passed validation and crashed drawing."""
    with pytest.raises(FormatError, match=message):
        validate_shape(shape, "x.csv:2")
    assert validate_shape({"name": "circle", "cx": -5e6, "cy": 1, "r": 9e6})["r"] == 9e6  # big but drawable


def test_numbers_that_overflow_are_refused_in_one_line(tmp_path):
    """Found by tests/test_formats_fuzz.py: int(float("1e999")) and 5000-digit JSON numbers raised
    OverflowError / ValueError instead of a FormatError."""
    row = 'a.png,{size},"{{}}",1,0,"{{""name"":""point"",""cx"":1,""cy"":2}}","{{}}"\n'
    with pytest.raises(FormatError, match=r"v.csv:2: file_size is not a number: '1e999'"):
        read_via(write(tmp_path, "v.csv", HEADER + "\n" + row.format(size="1e999")))
    assert read_via(write(tmp_path, "v.csv", HEADER + "\n" + row.format(size="-1")))[0].size == -1  # VIA: a URL
    huge = '{"a.png1": {"filename": "a.png", "size": 1, "regions": [], "n": ' + "9" * 5000 + "}}"
    with pytest.raises(FormatError, match="not valid JSON"):
        read_via(write(tmp_path, "v.json", huge))
    with pytest.raises(FormatError, match="not valid JSON"):
        read_via(write(tmp_path, "v.json", "[" * 100000))
    ok = '{"a.png1": {"filename": "a.png", "size": 1e999, "regions": []}}'  # size is informative only
    assert read_via(write(tmp_path, "v.json", ok))[0].size is None
