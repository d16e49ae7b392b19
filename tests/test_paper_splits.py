"""Splits the paper's way: ready-made folders in the official layout, and a labelled reading of the maintainer's
"stratified random split of 7:1:2, seed 1234"."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from tinyusfm_monai.data.datalist import task_datalist
from tinyusfm_monai.data.official_layout import prepare_official
from tinyusfm_monai.data.splits import MAINTAINER_RULE, Item, maintainer_reading_split


def _items(n_a: int = 70, n_b: int = 30) -> list[Item]:
    return [Item(id=f"a{i:03d}", group=f"a{i:03d}", stratum="a") for i in range(n_a)] + [
        Item(id=f"b{i:03d}", group=f"b{i:03d}", stratum="b") for i in range(n_b)
    ]


def test_maintainer_reading_is_stratified_7_1_2_and_labelled_ours():
    split, rule = maintainer_reading_split(_items())
    counts = Counter((i[0], s) for i, s in split.items())
    assert (counts["a", "training"], counts["a", "validation"], counts["a", "test"]) == (49, 7, 14)
    assert (counts["b", "training"], counts["b", "validation"], counts["b", "test"]) == (21, 3, 6)
    assert rule == MAINTAINER_RULE and "not the paper's split" in rule and "OUR reading" in rule
    assert "maintainer_reading_split" in rule  # names the function used


def test_maintainer_reading_is_deterministic_order_free_and_seeded():
    items = _items()
    first, _ = maintainer_reading_split(items)
    assert maintainer_reading_split(list(reversed(items)))[0] == first
    assert maintainer_reading_split(items, seed=1235)[0] != first
    # the numpy RandomState(1234) permutation of the first class, cut 70/10/20
    order = np.random.RandomState(1234).permutation(70)
    assert first[f"a{order[0]:03d}"] == "training" and first[f"a{order[-1]:03d}"] == "test"


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def test_official_classification_layout(tmp_path):
    src = tmp_path / "busi"
    for split, n in (("train", 3), ("val", 1), ("test", 2)):
        for cls in ("Benign", "malignant", "normal"):
            for i in range(n):
                _png(src / split / cls / f"{cls}{i}.png", np.full((20, 30), 40 * i))
    path = prepare_official("busi_classification", str(src), str(tmp_path / "data"))
    content = json.loads(open(path).read())
    assert [len(content[s]) for s in ("training", "validation", "test")] == [9, 3, 6]
    train = task_datalist("busi_classification", str(tmp_path / "data" / "busi_classification"), "training")
    assert {d["label"] for d in train} == {0, 1, 2}
    assert all("/train/" in d["image"] for d in train)
    with pytest.raises(FileExistsError):
        prepare_official("busi_classification", str(src), str(tmp_path / "data"))
    _png(src / "train" / "cyst" / "x.png", np.zeros((4, 4)))
    with pytest.raises(ValueError, match="'cyst' is not a class of busi_classification"):
        prepare_official("busi_classification", str(src), str(tmp_path / "data"), overwrite=True)


def test_official_binary_segmentation_layout_converts_0_255_masks(tmp_path):
    src = tmp_path / "ddti"
    for split in ("train", "val", "test"):
        for i in range(2):
            _png(src / split / "img" / f"c{i}.png", np.full((16, 16), 90))
            mask = np.zeros((16, 16))
            mask[4:8, 4:8] = 255
            _png(src / split / "label" / f"c{i}.png", mask)
    _png(src / "train" / "img" / "orphan.png", np.zeros((16, 16)))  # no mask: reported, left out
    path = prepare_official("ddti_segmentation", str(src), str(tmp_path / "data"))
    folder = tmp_path / "data" / "ddti_segmentation"
    content = json.loads(open(path).read())
    assert len(content["training"]) == 2
    label = np.asarray(Image.open(content["training"][0]["label"]))
    assert set(np.unique(label).tolist()) == {0, 1} and label.sum() == 16
    report = json.loads((folder / "conversion_report.json").read_text())
    assert any("orphan.png" in p["file"] and "no mask" in p["cause"] for p in report["left_out"])
