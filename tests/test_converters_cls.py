"""The eight classification-source converters, each on a fixture tree in its publisher's layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fixtures_raw import BUILDERS, build_cubs, tree_digest
from monai.data import load_decathlon_datalist
from PIL import Image

from tinyusfm_monai.data.prepare import prepare
from tinyusfm_monai.data.registry import get_task, tasks_of

CLS_SOURCES = ("cubs", "uf1990", "tn3k", "stmus", "aul", "busi", "mmotu", "fetal_planes")


def _run(key: str, tmp_path: Path, **kwargs):
    info = BUILDERS[key](tmp_path / "raw", **kwargs)
    out = tmp_path / "out"
    before = tree_digest(info["root"])
    prepare(key, str(info["root"]), str(out), splits_dir=str(tmp_path / "splits"), progress=False)
    assert tree_digest(info["root"]) == before, "the source folder was modified"
    return info, out


def _datalist(out: Path, task: str) -> dict:
    return json.loads((out / task / "datalist.json").read_text())


def _labels_by_id(out: Path, task: str) -> dict[str, object]:
    d = _datalist(out, task)
    return {item["id"]: item["label"] for s in ("training", "validation", "test") for item in d[s]}


def _report(out: Path, task: str) -> dict:
    return json.loads((out / task / "conversion_report.json").read_text())


@pytest.mark.parametrize("key", CLS_SOURCES)
def test_every_split_loads_with_monai_and_points_at_real_pngs(key, tmp_path):
    _, out = _run(key, tmp_path)
    for task in tasks_of(key):
        is_seg = task.task_type == "segmentation"
        total = 0
        for split in ("training", "validation", "test"):
            items = load_decathlon_datalist(out / task.name / "datalist.json", is_seg, split)
            assert items, f"{task.name}: empty {split} split"
            total += len(items)
            for item in items:
                assert Path(item["image"]).is_file() and item["image"].endswith(".png")
                if is_seg:
                    assert set(np.unique(np.asarray(Image.open(item["label"])))) <= set(range(task.num_classes))
                else:
                    assert 0 <= item["label"] < task.num_classes
        assert total == _report(out, task.name)["converted"]


def test_busi_feeds_both_tasks_unions_lesions_and_reports_bad_files(tmp_path):
    info, out = _run("busi", tmp_path)
    cls, seg = "busi_classification", "busi_segmentation"
    labels = _labels_by_id(out, cls)
    names = get_task(cls).labels
    assert names[labels["benign_1"]] == "benign" and names[labels["normal_4"]] == "normal"
    assert "malignant_3" not in labels  # corrupt file left out of both tasks ...
    for task in (cls, seg):
        causes = {i["id"]: i for i in _report(out, task)["issues"]}
        assert "unreadable image" in causes["malignant_3"]["cause"]
        assert causes["malignant_3"]["file"].endswith("malignant (3).png")
    # ... the size-mismatched mask only out of segmentation
    assert info["mismatch"] in labels
    seg_issues = {i["id"]: i["cause"] for i in _report(out, seg)["issues"] if i["severity"] == "error"}
    assert "size mismatch" in seg_issues[info["mismatch"]]
    assert info["mismatch"] not in _labels_by_id(out, seg)
    # two lesion files are united; normal images keep an empty mask, with a warning
    two = np.asarray(Image.open(out / seg / "masks" / f"{info['two_lesions']}.png"))
    assert two[50, 50] == 1 and two[22, 30] == 1 and set(np.unique(two)) == {0, 1}
    assert not np.asarray(Image.open(out / seg / "masks" / "normal_1.png")).any()
    warnings = {i["id"] for i in _report(out, seg)["issues"] if i["severity"] == "warning"}
    assert {f"normal_{i}" for i in range(1, 11)} <= warnings
    # everything else converted: 30 images - 1 corrupt
    assert _report(out, cls)["converted"] == 29 and _report(out, seg)["converted"] == 28


def test_tn3k_uses_official_folders_fold0_and_csv_labels(tmp_path):
    info, out = _run("tn3k", tmp_path)
    d = _datalist(out, "tn3k_classification")
    assert sorted(i["id"] for i in d["validation"]) == info["validation"]
    assert all(i["id"].startswith("test_") for i in d["test"]) and len(d["test"]) == 6
    labels = _labels_by_id(out, "tn3k_classification")
    assert labels["trainval_0003"] == 1 and labels["trainval_0004"] == 0 and labels["test_0001"] == 1
    seg = _datalist(out, "tn3k_segmentation")
    assert {i["id"] for i in seg["test"]} == {i["id"] for i in d["test"]}  # one scan, one split, both tasks
    mask = np.asarray(Image.open(out / "tn3k_segmentation" / "masks" / "trainval_0000.png"))
    assert set(np.unique(mask)) == {0, 1}  # JPEG ringing thresholded away


def test_mmotu_maps_class_indices_and_uses_val_as_test(tmp_path):
    info, out = _run("mmotu", tmp_path)
    d = _datalist(out, "mmotu_classification")
    assert sorted(i["id"] for i in d["test"]) == sorted(info["val_names"])
    labels = _labels_by_id(out, "mmotu_classification")
    assert all(labels[name] == index for name, index in info["classes"].items())
    assert get_task("mmotu_classification").labels[0] == "chocolate cyst"  # index 0 of *_cls.txt
    assert d["validation"] and not {i["id"] for i in d["validation"]} & set(info["val_names"])


def test_fetal_planes_keeps_patients_together_and_official_test(tmp_path):
    _, out = _run("fetal_planes", tmp_path)
    d = _datalist(out, "fetal_planes_classification")
    patients = {s: {i["id"].split("_")[0] for i in d[s]} for s in ("training", "validation", "test")}
    assert not patients["training"] & patients["validation"]
    assert not (patients["training"] | patients["validation"]) & patients["test"]
    assert patients["test"] == {f"Patient{p:05d}" for p in range(28, 37)}  # Train == 0
    labels = _labels_by_id(out, "fetal_planes_classification")
    names = get_task("fetal_planes_classification").labels
    assert names[labels["Patient00001_Plane2_1_of_2"]] == "fetal brain"
    assert names[labels["Patient00006_Plane1_2_of_2"]] == "fetal abdomen"


def test_aul_ids_carry_the_class_because_numbers_repeat(tmp_path):
    _, out = _run("aul", tmp_path)
    labels = _labels_by_id(out, "aul_classification")
    names = get_task("aul_classification").labels
    assert len(labels) == 30
    assert names[labels["benign_1"]] == "benign" and names[labels["malignant_1"]] == "malignant"
    assert names[labels["normal_1"]] == "normal"


def test_stmus_labels_muscle_and_ignores_the_code_folder_copy(tmp_path):
    info, out = _run("stmus", tmp_path)
    labels = _labels_by_id(out, "stmus_classification")
    names = get_task("stmus_classification").labels
    assert len(labels) == info["n"]
    assert names[labels["BB_Healthy_BBH000"]] == "biceps brachii"
    assert names[labels["GM_Pathological_GMP001"]] == "gastrocnemius medialis"
    assert names[labels["TA_Healthy_TAH002"]] == "tibialis anterior"


def test_uf1990_reads_class_folders_and_reports_stray_files(tmp_path):
    info, out = _run("uf1990", tmp_path)
    labels = _labels_by_id(out, "uf1990_classification")
    names = get_task("uf1990_classification").labels
    assert len(labels) == 20
    assert names[labels["Uterine_Fibroid_1"]] == "fibroid"  # ids do not include the wrapper folder
    assert names[labels["Non-Uterine_Fibroid_1"]] == "non-fibroid"
    issues = _report(out, "uf1990_classification")["issues"]
    assert any(i["file"] == str(info["stray"]) and "class" in i["cause"] for i in issues)


@pytest.mark.parametrize("tech", [False, True], ids=["cubs2021", "cubs2022-tech"])
def test_cubs_label_is_thresholded_imt_and_sides_share_a_patient(tech, tmp_path):
    info = build_cubs(tmp_path / "raw", tech=tech)
    out = tmp_path / "out"
    prepare("cubs", str(info["root"]), str(out), splits_dir=str(tmp_path / "splits"), progress=False)
    labels = _labels_by_id(out, "cubs_classification")
    names = get_task("cubs_classification").labels
    assert {k: names[v] for k, v in labels.items()} == info["expected"]
    issue = next(i for i in _report(out, "cubs_classification")["issues"] if i["id"] == info["missing_profile"])
    assert "MA profile" in issue["cause"]
    d = _datalist(out, "cubs_classification")
    split_of_patient: dict[str, set] = {}
    for s in ("training", "validation", "test"):
        for item in d[s]:
            split_of_patient.setdefault(item["id"].rsplit("_", 1)[0], set()).add(s)
    assert all(len(v) == 1 for v in split_of_patient.values())
