"""The shared conversion pipeline: splits, committed split files, leakage, overwrite rules, per-file reports."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from fixtures_raw import build_aul, build_busi, build_fetal_planes, speckle, tree_digest
from PIL import Image

from tinyusfm_monai.data import splits as splits_module
from tinyusfm_monai.data.converters import busi as busi_converter
from tinyusfm_monai.data.converters.base import RawSample
from tinyusfm_monai.data.leakage import find_cross_split_duplicates, fingerprint
from tinyusfm_monai.data.prepare import prepare
from tinyusfm_monai.data.splits import Item, assign_splits, grouped_split, split_file_path

SPLITS = ("training", "validation", "test")


def _datalist(out: Path, task: str) -> dict:
    return json.loads((out / task / "datalist.json").read_text())


def _split_of(out: Path, task: str) -> dict[str, str]:
    d = _datalist(out, task)
    return {item["id"]: s for s in SPLITS for item in d[s]}


def _report(out: Path, task: str) -> dict:
    return json.loads((out / task / "conversion_report.json").read_text())


def _prepare(key, root, out, tmp_path, **kwargs):
    kwargs.setdefault("splits_dir", str(tmp_path / "splits"))
    return prepare(key, str(root), str(out), progress=False, **kwargs)


# ---- split rule -------------------------------------------------------------------------------------------


def test_rule_split_is_70_10_20_stratified_and_reproducible(tmp_path):
    root = build_aul(tmp_path / "raw", per_class=20)["root"]
    _prepare("aul", root, tmp_path / "a", tmp_path)
    _prepare("aul", root, tmp_path / "b", tmp_path)
    a, b = _split_of(tmp_path / "a", "aul_classification"), _split_of(tmp_path / "b", "aul_classification")
    assert a == b  # same data, same seed -> same split, on any machine
    counts = _report(tmp_path / "a", "aul_classification")["classes"]
    for cls in ("benign", "malignant", "normal"):
        assert [counts[s][cls] for s in SPLITS] == [14, 2, 4]
    _prepare("aul", root, tmp_path / "c", tmp_path, seed=7)
    assert _split_of(tmp_path / "c", "aul_classification") != a  # the seed really keys the order


def test_adding_one_group_moves_at_most_the_boundary_groups():
    items = [Item(id=f"img{i}", group=f"p{i // 2}", stratum="x") for i in range(200)]
    before = grouped_split(items, 3, (0.7, 0.1, 0.2), SPLITS)
    after = grouped_split(items + [Item(id="new", group="pnew", stratum="x")], 3, (0.7, 0.1, 0.2), SPLITS)
    moved_groups = {i.group for i in items if before[i.id] != after[i.id]}
    assert len(moved_groups) <= 2


def test_patient_groups_never_straddle_splits():
    items = [Item(id=f"{p}_{k}", group=p, stratum=("a" if k else "b")) for p in map(str, range(60)) for k in range(3)]
    assignment, rule = assign_splits(items, seed=1)
    per_group: dict[str, set] = {}
    for it in items:
        per_group.setdefault(it.group, set()).add(assignment[it.id])
    assert all(len(s) == 1 for s in per_group.values())
    assert "by patient" in rule


def test_official_train_test_keeps_test_and_carves_validation_from_training(tmp_path):
    root = build_fetal_planes(tmp_path / "raw", n_patients=48)["root"]
    _prepare("fetal_planes", root, tmp_path / "out", tmp_path)
    split = _split_of(tmp_path / "out", "fetal_planes_classification")
    official_test = {f"Patient{p:05d}" for p in range(37, 49)}
    assert {i.split("_")[0] for i, s in split.items() if s == "test"} == official_test
    assert any(s == "validation" for s in split.values())
    assert "official" in _report(tmp_path / "out", "fetal_planes_classification")["split_rule"]


# ---- committed split files --------------------------------------------------------------------------------


def test_committed_split_file_is_written_then_used_and_differences_are_reported(tmp_path):
    root = build_aul(tmp_path / "raw", per_class=10)["root"]
    splits_dir = tmp_path / "datasets"
    _prepare("aul", root, tmp_path / "first", tmp_path, splits_dir=str(splits_dir), write_splits=True)
    path = split_file_path(splits_dir, "aul", "aul_classification")
    committed = json.loads(path.read_text())
    assert sorted(committed["training"] + committed["validation"] + committed["test"]) == sorted(
        _split_of(tmp_path / "first", "aul_classification")
    )
    # edit the committed file: move one id to test, drop one, add one that is not in the data
    moved = committed["training"].pop(0)
    dropped = committed["training"].pop(0)
    committed["test"] += [moved, "ghost_99"]
    path.write_text(json.dumps(committed))
    _prepare("aul", root, tmp_path / "second", tmp_path, splits_dir=str(splits_dir), seed=12345)
    split = _split_of(tmp_path / "second", "aul_classification")
    assert split[moved] == "test"  # the file wins over the rule (and over a different seed)
    assert dropped not in split
    report = _report(tmp_path / "second", "aul_classification")
    assert report["split_file"]["missing_from_file"] == [dropped]
    assert report["split_file"]["missing_from_data"] == ["ghost_99"]
    assert "committed split file" in report["split_rule"]


def test_write_splits_does_not_replace_a_committed_file_without_overwrite(tmp_path):
    root = build_aul(tmp_path / "raw", per_class=10)["root"]
    splits_dir = tmp_path / "datasets"
    path = split_file_path(splits_dir, "aul", "aul_classification")
    path.parent.mkdir(parents=True)
    ids = sorted(_ids for _ids in (f"{c}_{i}" for c in ("benign", "malignant", "normal") for i in range(1, 11)))
    path.write_text(json.dumps({"training": ids[:20], "validation": ids[20:23], "test": ids[23:]}))
    before = path.read_text()
    _prepare("aul", root, tmp_path / "out", tmp_path, splits_dir=str(splits_dir), write_splits=True)
    assert path.read_text() == before


# ---- leakage ----------------------------------------------------------------------------------------------


def test_leakage_check_finds_exact_and_near_duplicates_only():
    base = speckle("a", size=128)
    noisy = np.clip(base.astype(int) + np.random.default_rng(0).integers(-3, 4, base.shape), 0, 255).astype(np.uint8)
    resized = np.asarray(Image.fromarray(base).resize((96, 96)))
    prints = {
        "orig": fingerprint(base),
        "copy": fingerprint(base.copy()),
        "noisy": fingerprint(noisy),
        "resized": fingerprint(resized),
        "other": fingerprint(speckle("b", size=128)),
        "blank1": fingerprint(np.zeros((64, 64), np.uint8)),
        "blank2": fingerprint(np.full((64, 64), 3, np.uint8)),
    }
    split = {
        "orig": "training",
        "copy": "test",
        "noisy": "validation",
        "resized": "test",
        "other": "test",
        "blank1": "training",
        "blank2": "test",
    }
    found = {(f["kind"], tuple(f["ids"])) for f in find_cross_split_duplicates(prints, split)}
    assert ("exact", ("copy", "orig")) in found
    assert ("near-duplicate", ("noisy", "orig")) in found
    assert ("near-duplicate", ("orig", "resized")) in found
    assert not any("other" in ids for _, ids in found)
    assert not any("blank1" in ids for _, ids in found)  # blank frames have meaningless hashes
    same_split = {k: "training" for k in prints}
    assert find_cross_split_duplicates(prints, same_split) == []


def test_pipeline_reports_a_copy_that_the_split_put_on_both_sides(tmp_path):
    info = build_busi(tmp_path / "raw", per_class=10)
    base = info["root"] / "Dataset_BUSI_with_GT" / "benign"
    shutil.copy(base / "benign (1).png", base / "benign (11).png")
    shutil.copy(base / "benign (1)_mask.png", base / "benign (11)_mask.png")
    splits_dir = tmp_path / "datasets"
    _prepare("busi", info["root"], tmp_path / "first", tmp_path, splits_dir=str(splits_dir), write_splits=True)
    path = split_file_path(splits_dir, "busi", "busi_classification")
    committed = json.loads(path.read_text())
    for s in SPLITS:
        committed[s] = [i for i in committed[s] if i not in ("benign_1", "benign_11")]
    committed["training"].append("benign_1")
    committed["test"].append("benign_11")
    path.write_text(json.dumps(committed))
    _prepare("busi", info["root"], tmp_path / "second", tmp_path, splits_dir=str(splits_dir))
    leakage = _report(tmp_path / "second", "busi_classification")["leakage"]
    assert [(f["kind"], f["ids"]) for f in leakage] == [("exact", ["benign_1", "benign_11"])]


# ---- per-file problems, safety ----------------------------------------------------------------------------


def test_unknown_class_bad_mask_values_and_unsafe_ids_are_reported_and_the_rest_converted(tmp_path, monkeypatch):
    root = tmp_path / "raw"
    root.mkdir()
    good = [
        RawSample(
            id=f"ok_{i}",
            source=root / f"{i}.png",
            load_image=partial(speckle, f"ok{i}"),
            label="benign",
            load_mask=partial(lambda: np.ones((64, 64), np.uint8)),
        )
        for i in range(10)
    ]
    bad = [
        RawSample(
            id="alien",
            source=root / "alien.png",
            load_image=partial(speckle, "x"),
            label="cyst",
            load_mask=lambda: np.zeros((64, 64), np.uint8),
        ),
        RawSample(
            id="values",
            source=root / "values.png",
            load_image=partial(speckle, "y"),
            label="benign",
            load_mask=lambda: np.full((64, 64), 255, np.uint8),
        ),
        RawSample(id="../escape", source=root / "e.png", load_image=partial(speckle, "z"), label="benign"),
        RawSample(id="ok_1", source=root / "dup.png", load_image=partial(speckle, "w"), label="benign"),
    ]
    monkeypatch.setattr(busi_converter, "scan", lambda src: good + bad)
    _prepare("busi", root, tmp_path / "out", tmp_path)
    cls_causes = {i["id"]: i["cause"] for i in _report(tmp_path / "out", "busi_classification")["issues"]}
    seg_causes = {i["id"]: i["cause"] for i in _report(tmp_path / "out", "busi_segmentation")["issues"]}
    assert "unknown class 'cyst'" in cls_causes["alien"]
    assert "outside the registry labels" in seg_causes["values"]
    assert "unsafe id" in cls_causes["../escape"] and "duplicate id" in cls_causes["ok_1"]
    assert "alien" in _split_of(tmp_path / "out", "busi_segmentation")  # its mask is fine
    assert not (tmp_path / "escape.png").exists() and not list((tmp_path / "out").glob("*/escape.png"))
    assert _report(tmp_path / "out", "busi_classification")["converted"] == 11  # 10 good + values


def test_existing_output_is_refused_then_replaced_with_overwrite(tmp_path):
    root = build_aul(tmp_path / "raw", per_class=10)["root"]
    out = tmp_path / "out"
    _prepare("aul", root, out, tmp_path)
    marker = out / "aul_classification" / "images" / "stale.png"
    marker.write_bytes(b"old")
    with pytest.raises(FileExistsError, match="--overwrite"):
        _prepare("aul", root, out, tmp_path)
    assert marker.exists()
    _prepare("aul", root, out, tmp_path, overwrite=True)
    assert not marker.exists() and (out / "aul_classification" / "datalist.json").is_file()


def test_overwrite_never_deletes_a_folder_it_did_not_make(tmp_path):
    root = build_aul(tmp_path / "raw", per_class=10)["root"]
    foreign = tmp_path / "out" / "aul_classification"
    foreign.mkdir(parents=True)
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="does not look like prepare output"):
        _prepare("aul", root, tmp_path / "out", tmp_path, overwrite=True)
    assert (foreign / "thesis.tex").read_text() == "precious"


def test_output_inside_the_source_is_refused_and_the_source_is_untouched(tmp_path):
    root = build_aul(tmp_path / "raw", per_class=10)["root"]
    before = tree_digest(root)
    with pytest.raises(ValueError, match="never modified"):
        _prepare("aul", root, root / "converted", tmp_path)
    assert tree_digest(root) == before


def test_empty_source_says_where_the_layout_is_documented(tmp_path):
    (tmp_path / "raw").mkdir()
    with pytest.raises(FileNotFoundError, match="AUL class folders"):
        _prepare("aul", tmp_path / "raw", tmp_path / "out", tmp_path)


def test_command_line_entry_point(tmp_path):
    root = build_aul(tmp_path / "raw", per_class=10)["root"]
    cmd = [
        sys.executable,
        "-m",
        "tinyusfm_monai.cli",
        "prepare",
        "aul",
        "--src",
        str(root),
        "--out",
        str(tmp_path / "out"),
        "--splits_dir",
        str(tmp_path / "splits"),
        "--progress",
        "False",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "aul_classification: 30 found, 30 converted" in result.stdout
    assert (tmp_path / "out" / "aul_classification" / "datalist.json").is_file()


def test_split_module_has_no_hidden_randomness():
    """The split depends only on ids, groups, strata and seed - not on input order."""
    items = [Item(id=f"i{k}", group=f"g{k % 17}", stratum=str(k % 3)) for k in range(90)]
    a = splits_module.grouped_split(items, 5, (0.7, 0.1, 0.2), SPLITS)
    b = splits_module.grouped_split(list(reversed(items)), 5, (0.7, 0.1, 0.2), SPLITS)
    assert a == b


def test_maintainer_reading_rule_and_a_users_split_list(tmp_path):
    """`split_rule="maintainer-reading"`: the labelled 7:1:2 seed-1234 reading; `split_file`: the user's lists win."""
    root = build_aul(tmp_path / "raw", per_class=20)["root"]
    _prepare("aul", root, tmp_path / "m", tmp_path, split_rule="maintainer-reading")
    report = _report(tmp_path / "m", "aul_classification")
    assert "not the paper's split" in report["split_rule"] and "maintainer_reading_split" in report["split_rule"]
    assert [report["classes"][s]["benign"] for s in SPLITS] == [14, 2, 4]
    ours = _split_of(tmp_path / "m", "aul_classification")
    assert _split_of(tmp_path / "m", "aul_classification") != _split_of(
        (_prepare("aul", root, tmp_path / "o", tmp_path), tmp_path / "o")[1], "aul_classification"
    )
    ids = sorted(ours)
    lists = {"training": ids[:40], "validation": ids[40:50], "test": ids[50:]}
    user = tmp_path / "my_split.json"
    user.write_text(json.dumps(lists))
    _prepare("aul", root, tmp_path / "u", tmp_path, split_file=str(user))
    got = _split_of(tmp_path / "u", "aul_classification")
    assert {s: sorted(i for i, v in got.items() if v == s) for s in SPLITS} == lists
    with pytest.raises(ValueError, match="split_rule"):
        _prepare("aul", root, tmp_path / "x", tmp_path, split_rule="paper")
