"""calibrate → evaluate → table on a tiny synthetic run (maps built with MapsWriter, no model)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from lineclear.cli.main import run
from lineclear.formats import MapsWriter, provenance, read_thresholds
from lineclear.formats.metrics import read_metrics

H = W = 32  # map size; images and masks are 64x64 (ground truth gets resized)


def _run(argv: list[str]) -> int:
    try:
        run(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def make_run(tmp: Path, seed: int = 0, n_good: int = 4, n_bad: int = 4, n_val: int = 3, mask_stage: str = "post",
             registered: bool = False, with_valid: bool = True) -> dict:
    """Dataset tree + val_maps.h5 + test_maps.h5 in ``tmp/run``; returns paths and arrays."""
    rng = np.random.default_rng(seed)
    root = tmp / "data"
    runp = tmp / "run"
    runp.mkdir(parents=True, exist_ok=True)
    attrs = provenance(model="toy", view="A", dataset_root=str(root), map_size=[H, W], image_size=[64, 64],
                       mask_stage=mask_stage, mask="/x/roi.png" if mask_stage != "none" else "", mask_sha256="",
                       registered=int(registered), checkpoint="/x/model.pt", checkpoint_sha256="abc", border_margin=0,
                       split="test")
    valid = np.ones((H, W), bool)
    valid[:, :3] = False  # an ignored strip
    test_ids, labels, maps, gts = [], [], [], []
    for i in range(n_good + n_bad):
        bad = i >= n_good
        sub = "leaflet" if bad else "good"
        iid = f"A/test/{sub}/{i:03d}.png"
        img = (rng.random((64, 64, 3)) * 120).astype(np.uint8)
        m = rng.random((H, W)).astype(np.float32) * 0.5
        g = np.zeros((64, 64), np.uint8)
        if bad:
            y, x = rng.integers(4, 20, 2)
            g[2 * y: 2 * y + 16, 2 * x: 2 * x + 12] = 255
            img[g > 0] = 230
            (root / "A/ground_truth/leaflet").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / f"A/ground_truth/leaflet/{i:03d}_mask.png"), g)
            gs = cv2.resize(g, (W, H), interpolation=cv2.INTER_NEAREST) > 127
            m[gs] += 0.3 + 0.4 * rng.random(gs.sum()).astype(np.float32)
        else:
            gs = np.zeros((H, W), bool)
        (root / f"A/test/{sub}").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / iid), img)
        test_ids.append(iid)
        labels.append(int(bad))
        maps.append(m)
        gts.append(gs)
    maps = np.stack(maps)
    scores = np.array([mm[valid].max() for mm in maps], np.float32)
    with MapsWriter(runp / "test_maps.h5", (H, W), attrs=attrs, with_valid=with_valid) as w:
        w.append(maps, scores, test_ids, labels, valid=np.repeat(valid[None], len(maps), 0) if with_valid else None)
    vmaps = rng.random((n_val, H, W)).astype(np.float32) * 0.5
    vscores = np.array([mm[valid].max() for mm in vmaps], np.float32)
    with MapsWriter(runp / "val_maps.h5", (H, W), attrs={**attrs, "split": "val"}, with_valid=with_valid) as w:
        w.append(vmaps, vscores, [f"A/train/good/{i:03d}.png" for i in range(n_val)], [0] * n_val,
                 valid=np.repeat(valid[None], n_val, 0) if with_valid else None)
    return {"root": root, "run": runp, "maps": maps, "gts": np.stack(gts), "labels": np.array(labels),
            "scores": scores, "valid": valid, "vmaps": vmaps, "vscores": vscores}


def test_calibrate_evaluate_table(tmp_path, monkeypatch, capsys):
    d = make_run(tmp_path)
    monkeypatch.chdir(d["run"])
    assert _run(["calibrate", "--method", "ksigma"]) == 0  # defaults: val_maps.h5 → thresholds.json
    t = read_thresholds(d["run"] / "thresholds.json")
    vals = d["vmaps"][:, d["valid"]].astype(np.float64)
    assert t["pixel"]["threshold"] == pytest.approx(vals.mean() + 3 * vals.std(), abs=1e-6)
    assert t["image"]["threshold"] == pytest.approx(d["vscores"].astype(np.float64).mean() + 3 * d["vscores"].astype(np.float64).std(), abs=1e-6)
    assert t["source"]["model"] == "toy" and t["source"]["map_size"] == [H, W]
    assert _run(["calibrate", "--method", "all"]) == 0
    for m in ("max", "quantile", "ksigma"):
        assert read_thresholds(d["run"] / f"thresholds_{m}.json")["method"] == m
    assert read_thresholds(d["run"] / "thresholds_max.json")["pixel"]["threshold"] == pytest.approx(vals.max())
    assert read_thresholds(d["run"] / "thresholds_quantile.json")["pixel"]["threshold"] == pytest.approx(np.quantile(vals, 0.99))
    capsys.readouterr()
    assert _run(["-q", "evaluate", "--json", "--max-overlays", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    rep = d["run"] / "report"
    doc = read_metrics(rep / "metrics.json")
    assert out["summary"] == doc["summary"]
    # thresholds.json (ksigma) equals thresholds_ksigma.json: evaluated once, not as two identical columns
    assert sorted(e["method"] for e in doc["thresholds"]) == ["ksigma", "max", "quantile"]
    assert doc["best"]["chosen_on"] == "test labels"
    # independent oracles
    v = d["valid"]
    y = d["gts"][:, v].ravel()
    s = d["maps"][:, v].ravel()
    assert doc["pixel"]["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-6)
    assert doc["image"]["auroc"] == pytest.approx(roc_auc_score(d["labels"], d["scores"]), abs=1e-6)
    assert doc["config_name"] == "PO+M+NR"
    for e in doc["thresholds"]:
        pred = d["scores"] > e["image"]["threshold"]
        assert e["image"]["accuracy"] == pytest.approx(np.mean(pred == (d["labels"] == 1)))
        anom = d["labels"] == 1
        pp = d["maps"][anom][:, v] > e["pixel"]["threshold"]
        gg = d["gts"][anom][:, v]
        assert e["pixel"]["iou"] == pytest.approx((pp & gg).sum() / (pp | gg).sum())
    html = (rep / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(doc["files"]["curves"]) + 2
    assert "chosen on the" in html and "A/test/leaflet/007.png" in html
    for f in doc["files"]["curves"] + doc["files"]["overlays"]:
        assert (rep / f).read_bytes()[:4] == b"\x89PNG"
    assert {Path(f).name for f in doc["files"]["curves"]} == {"roc_image.png", "roc_pixel.png", "pr_pixel.png", "pro.png", "iou.png"}
    # overlays worst first: errors before correct ones
    order = sorted(doc["images"], key=lambda r: r["order"])
    outcomes = [r["outcome"] for r in order]
    n_err = sum(o in ("FP", "FN") for o in outcomes)
    assert all(o in ("FP", "FN") for o in outcomes[:n_err])
    # refuses to overwrite, then replaces with --overwrite
    assert _run(["evaluate"]) == 1
    assert _run(["-q", "evaluate", "--overwrite", "--max-overlays", "1", "--name", "mine"]) == 0
    doc2 = read_metrics(rep / "metrics.json")
    assert doc2["config_name"] == "mine" and len(list((rep / "overlays").iterdir())) == 1
    # comparison table
    capsys.readouterr()
    assert _run(["table", str(rep), str(rep / "metrics.json"), "--name", "A1", "--name", "A2",
                 "--out", "t.md", "--out", "t.html"]) == 0
    md = (d["run"] / "t.md").read_text()
    assert "| | A1 | A2 |" in md and "**" in md and "AUROC" in md and "ACC" in md
    assert "<b class='best'>" in (d["run"] / "t.html").read_text()
    assert capsys.readouterr().out == md


def test_bad_inputs(tmp_path, monkeypatch, capsys):
    d = make_run(tmp_path)
    monkeypatch.chdir(d["run"])
    assert _run(["evaluate"]) == 1  # no thresholds yet
    assert "no thresholds given" in capsys.readouterr().err
    assert _run(["calibrate", "--method", "median"]) == 2
    assert _run(["calibrate", "--p", "1.5"]) == 2  # an option value out of range is a usage error
    assert _run(["calibrate"]) == 0
    # missing ground truth for an anomalous image: one clear error, nothing written
    (d["root"] / "A/ground_truth/leaflet/005_mask.png").unlink()
    capsys.readouterr()
    assert _run(["evaluate"]) == 1
    err = capsys.readouterr().err
    assert "005_mask.png" in err and "ground-truth mask missing" in err
    assert not (d["run"] / "report" / "metrics.json").exists()
    # --gt pointing at a folder laid out like ground_truth/
    gtdir = tmp_path / "gt"
    (gtdir / "leaflet").mkdir(parents=True)
    for p in (d["root"] / "A/ground_truth/leaflet").iterdir():
        (gtdir / "leaflet" / p.name).write_bytes(p.read_bytes())
    (gtdir / "leaflet" / "005_mask.png").write_bytes((gtdir / "leaflet" / "004_mask.png").read_bytes())
    assert _run(["-q", "evaluate", "--gt", str(gtdir), "--max-overlays", "0"]) == 0
    # a mask of another size than the scored images (image_size attribute): refused
    cv2.imwrite(str(gtdir / "leaflet" / "005_mask.png"), np.zeros((48, 64), np.uint8))
    capsys.readouterr()
    assert _run(["-q", "evaluate", "--gt", str(gtdir), "--out", "r2"]) == 1
    assert "mask is 64x48 but the scored images are 64x64" in capsys.readouterr().err
    # a maps file of another schema
    (d["run"] / "x.json").write_text("{}")
    assert _run(["evaluate", "x.json"]) == 1


def test_nan_maps_and_foreign_thresholds(tmp_path, monkeypatch, capsys):
    import h5py

    d = make_run(tmp_path)
    monkeypatch.chdir(d["run"])
    assert _run(["calibrate"]) == 0
    t = json.loads((d["run"] / "thresholds.json").read_text())
    t["source"]["model"] = "other"
    t["source"]["map_size"] = [64, 64]
    (d["run"] / "foreign.json").write_text(json.dumps(t))
    capsys.readouterr()
    # thresholds of another model are refused in one line, nothing written; --force evaluates with warnings
    assert _run(["-q", "evaluate", "-t", "foreign.json", "--out", "rep2", "--max-overlays", "0"]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "lineclear: error: foreign.json: thresholds of model 'other', but the maps are of model 'toy'; "
        "calibrate on this view's maps (or give --force)"]
    assert not (d["run"] / "rep2").exists()
    assert _run(["-q", "evaluate", "-t", "foreign.json", "--out", "rep2", "--max-overlays", "0", "--force"]) == 0
    err = capsys.readouterr().err
    assert "model=other" in err and "map size [64, 64]" in err
    with h5py.File(d["run"] / "test_maps.h5", "r+") as f:
        f["maps"][2, 5, 5] = np.nan
    assert _run(["evaluate", "--out", "rep3"]) == 1
    assert "NaN" in capsys.readouterr().err and not (d["run"] / "rep3" / "metrics.json").exists()


def test_calibrate_refuses_without_normal_or_valid(tmp_path, monkeypatch, capsys):
    d = make_run(tmp_path)
    monkeypatch.chdir(d["run"])
    with MapsWriter("anom.h5", (H, W), attrs={}) as w:
        w.append(np.zeros((2, H, W)), [0, 0], ["A/test/leaflet/a.png", "A/test/leaflet/b.png"], [1, 1])
    assert _run(["calibrate", "anom.h5", "--out", "t1.json"]) == 1
    assert "no normal image" in capsys.readouterr().err
    with MapsWriter("masked.h5", (H, W), attrs={}, with_valid=True) as w:
        w.append(np.zeros((2, H, W)), [0, 0], ["a.png", "b.png"], [0, 0], valid=np.zeros((2, H, W), bool))
    assert _run(["calibrate", "masked.h5", "--out", "t2.json"]) == 1
    assert "no valid pixel" in capsys.readouterr().err
    with MapsWriter("mixed.h5", (H, W), attrs={}) as w:
        w.append(np.ones((2, H, W)) * np.array([1, 5])[:, None, None], [1, 5], ["a.png", "b.png"], [0, 1])
    assert _run(["calibrate", "mixed.h5", "--method", "max", "--out", "t3.json"]) == 0
    assert "anomalous image(s)" in capsys.readouterr().err
    assert read_thresholds("t3.json")["pixel"]["threshold"] == 1.0
    assert not Path("t1.json").exists() and not Path("t2.json").exists()


def test_calibrate_all_with_out_and_table_json(tmp_path, monkeypatch, capsys):
    from lineclear.cli.calibrate import output_paths

    assert output_paths(Path("r/val.h5"), Path("x/t.json"), ["max", "ksigma"], True) == {
        ("max", "image"): Path("x/t_max.json"), ("ksigma", "image"): Path("x/t_ksigma.json")}
    assert output_paths(Path("r/val.h5"), None, ["max"], False) == {("max", "image"): Path("r/thresholds.json")}
    assert output_paths(Path("r/val.h5"), None, ["max"], False, ("pixel", "image")) == {
        ("max", "pixel"): Path("r/thresholds_pixel.json"), ("max", "image"): Path("r/thresholds_image.json")}
    d = make_run(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert _run(["calibrate", "run/val_maps.h5", "--method", "all", "--out", "cal/t.json", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"max", "quantile", "ksigma"} and out["max"]["path"] == "cal/t_max.json"
    assert read_thresholds("cal/t_quantile.json")["params"] == {"p": 0.99}
    assert _run(["calibrate", "run/val_maps.h5", "--method", "all", "--out", "cal/t.json"]) == 1  # exists
    assert _run(["-q", "evaluate", "run/test_maps.h5", "-t", "cal/t_max.json", "-t", "cal/t_ksigma.json",
                 "--max-overlays", "0"]) == 0
    assert (d["run"] / "report" / "metrics.json").is_file()  # default: report/ beside the maps
    capsys.readouterr()
    assert _run(["table", "run", "--json"]) == 0  # a run directory holding report/metrics.json
    t = json.loads(capsys.readouterr().out)
    assert t["columns"] == ["PO+M+NR"] and [r["metric"] for r in t["rows"]] == ["AUROC", "PRO", "IoU", "AP", "ACC",
                                                                        "threshold", "checkpoint"]
    assert all(c["best"] for r in t["rows"][:5] for cell in r["cells"] for c in cell if c["value"] != "–")
    assert [r["cells"][0][0]["value"] for r in t["rows"][5:]] == ["max · image", "final"]
    assert _run(["table", "run", "--name", "a", "--name", "b"]) == 2
    assert _run(["table", "run", "--out", "t.txt"]) == 2


def test_duplicate_thresholds_evaluated_once_and_same_method_columns_named(tmp_path, monkeypatch, capsys):
    """Regression: thresholds.json and thresholds_ksigma.json from one maps file gave two identical columns."""
    d = make_run(tmp_path)
    monkeypatch.chdir(d["run"])
    assert _run(["calibrate", "--method", "ksigma"]) == 0
    assert _run(["calibrate", "--method", "ksigma", "-o", "thresholds_ksigma.json"]) == 0
    assert _run(["calibrate", "--method", "ksigma", "--k", "2", "-o", "k2.json"]) == 0
    capsys.readouterr()
    assert _run(["-q", "evaluate", "--max-overlays", "0"]) == 0
    err = capsys.readouterr().err
    assert "same thresholds as thresholds.json" in err
    doc = read_metrics(d["run"] / "report" / "metrics.json")
    assert [e["path"] for e in doc["thresholds"]] == ["thresholds.json"]
    # two different ksigma files stay two, and their columns can be told apart
    assert _run(["-q", "evaluate", "-t", "thresholds.json", "-t", "k2.json", "-t", "thresholds.json",
                 "-o", "rep2", "--max-overlays", "0"]) == 0
    doc = read_metrics(d["run"] / "rep2" / "metrics.json")
    assert [e["params"]["k"] for e in doc["thresholds"]] == [3.0, 2.0]
    html = (d["run"] / "rep2" / "report.html").read_text()
    assert "ksigma (thresholds.json)" in html and "ksigma (k2.json)" in html


def test_calibrate_never_overwrites_its_input_and_bad_params_are_usage_errors(tmp_path, monkeypatch, capsys):
    """Regression: calibrate -o val_maps.h5 --overwrite replaced the maps file with JSON."""
    d = make_run(tmp_path)
    monkeypatch.chdir(d["run"])
    before = (d["run"] / "val_maps.h5").read_bytes()
    assert _run(["calibrate", "val_maps.h5", "-o", "val_maps.h5", "--overwrite"]) == 2
    assert "is the input maps file" in capsys.readouterr().err
    assert (d["run"] / "val_maps.h5").read_bytes() == before
    assert _run(["calibrate", "--p", "1.5", "--method", "quantile"]) == 2
    err = capsys.readouterr().err
    assert "--p must lie strictly between 0 and 1" in err and "Traceback" not in err
    assert not (d["run"] / "thresholds.json").exists()


def test_evaluate_refuses_an_unusable_report_folder_before_work(tmp_path, monkeypatch, capsys):
    """Regression: --out naming a file was an 'internal error' after all metrics were computed."""
    d = make_run(tmp_path)
    monkeypatch.chdir(d["run"])
    assert _run(["calibrate"]) == 0
    (d["run"] / "afile").write_text("x")
    capsys.readouterr()
    assert _run(["-q", "evaluate", "-o", "afile"]) == 1
    err = capsys.readouterr().err
    assert "afile: exists and is not a folder" in err and "internal error" not in err
    assert _run(["-q", "evaluate", "-o", "afile/sub"]) == 1
    assert "not a writable folder" in capsys.readouterr().err
    assert (d["run"] / "afile").read_text() == "x"


def test_thresholds_of_another_view_are_refused_unless_forced(tmp_path, monkeypatch, capsys):
    d = make_run(tmp_path)
    monkeypatch.chdir(d["run"])
    assert _run(["-q", "calibrate"]) == 0
    t = json.loads((d["run"] / "thresholds.json").read_text())
    t["source"]["view"] = "B"
    (d["run"] / "b.json").write_text(json.dumps(t))
    capsys.readouterr()
    assert _run(["-q", "evaluate", "-t", "b.json", "--out", "rep", "--max-overlays", "0"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "lineclear: error: b.json: thresholds of view 'B', but the maps are of view 'A'; "
        "calibrate on this view's maps (or give --force)"]
    assert not (d["run"] / "rep").exists()
    assert _run(["-q", "evaluate", "-t", "b.json", "--out", "rep", "--max-overlays", "0", "--force"]) == 0
    assert "view=B, applied to maps with view=A" in capsys.readouterr().err
    assert json.loads((d["run"] / "rep" / "metrics.json").read_text())["source"]["view"] == "A"


@pytest.mark.parametrize("n_val, warned", [(3, True), (9, True), (10, False)])
def test_calibrate_warns_below_ten_normal_images(tmp_path, monkeypatch, capsys, n_val, warned):
    d = make_run(tmp_path, n_val=n_val)
    monkeypatch.chdir(d["run"])
    capsys.readouterr()
    assert _run(["-q", "calibrate"]) == 0
    err = capsys.readouterr().err
    assert (f"val_maps.h5: thresholds from only {n_val} normal image(s); fewer than 10" in err) is warned
    assert (d["run"] / "thresholds.json").is_file()


def test_evaluate_overwrite_removes_only_the_previous_reports_files(tmp_path, monkeypatch, capsys):
    d = make_run(tmp_path)
    monkeypatch.chdir(d["run"])
    assert _run(["-q", "calibrate"]) == 0
    assert _run(["-q", "evaluate", "--out", "rep", "--max-overlays", "3"]) == 0
    rep = d["run"] / "rep"
    old = json.loads((rep / "metrics.json").read_text())["files"]
    assert len(old["overlays"]) == 3
    (rep / "overlays" / "my_annotated.png").write_bytes(b"mine")  # not lineclear's
    (rep / "notes.md").write_text("mine")
    assert _run(["-q", "evaluate", "--out", "rep", "--max-overlays", "1", "--overwrite"]) == 0
    new = json.loads((rep / "metrics.json").read_text())["files"]
    assert sorted(p.name for p in (rep / "overlays").iterdir()) == sorted(
        [Path(n).name for n in new["overlays"]] + ["my_annotated.png"])
    assert (rep / "notes.md").read_text() == "mine"
    assert not [p for p in rep.iterdir() if p.name.startswith(".")]  # no staging folder left
