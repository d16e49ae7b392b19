"""Every file shipped with pydicom and pydicom-data, through the DICOM batch and through bundle inference:
each one predicted, or refused with a reason that names the file and the cause. No silent skip, no raw
exception (a hospital export contains anything: CT, MR, SR, DICOMDIR, JSON, text, compressed blobs)."""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

import pydicom
import pytest
from dicom_fixtures import REAL_US_FILES, UNSUPPORTED_US_FILE, IntensityClassifier, ThresholdSegmenter
from monai.data import DataLoader
from pydicom.data import get_testdata_files

from tinyusfm_monai.data.datalist import inference_datalist
from tinyusfm_monai.data.skipping_dataset import SkipUnreadableDataset
from tinyusfm_monai.dicom.batch import run_batch
from tinyusfm_monai.io.dicom import SKIP_REASONS, US_IMAGE_STORAGE_RETIRED
from tinyusfm_monai.transforms.pipelines import ANY_FORMAT, build_preprocessing

# real ultrasound files beyond the fixture table that must be predicted (single-frame class with 2 frames,
# retired SOP class without Patient ID and with an ACR-NEMA time, big endian, JPEG 2000)
MORE_US_FILES = [
    "OBXXXX1A_2frame.dcm",
    "OBXXXX1A_expb_2frame.dcm",
    "color-pl.dcm",
    "color-px.dcm",
    "ExplVR_BigEnd.dcm",
    "examples_jpeg2k.dcm",
]


@pytest.fixture(scope="module")
def every_file(tmp_path_factory) -> Path:
    """All test files of pydicom and pydicom-data in one folder (numbered: some names repeat)."""
    folder = tmp_path_factory.mktemp("vendor") / "in"
    folder.mkdir()
    files = sorted(f for f in get_testdata_files() if os.path.isfile(f))
    assert len(files) > 200, "pydicom-data must be installed (test extra)"
    for i, f in enumerate(files):
        shutil.copy(f, folder / f"{i:03d}_{Path(f).name}")
    return folder


def _name(row_input: str) -> str:
    return row_input.split("_", 1)[1]


@pytest.mark.parametrize("predictor", [ThresholdSegmenter("busi_segmentation"), IntensityClassifier()])
def test_every_vendor_file_through_the_batch(every_file, tmp_path, predictor):
    rows = run_batch(predictor, every_file, tmp_path / "out", frames="first")
    assert len(rows) == len(list(every_file.iterdir()))
    failed = [(r.input, r.detail) for r in rows if r.status == "failed"]
    assert failed == [], failed
    for row in rows:
        if row.status == "skipped":
            assert row.reason in SKIP_REASONS and row.detail, row
        if row.status == "ignored":
            assert _name(row.input).startswith("DICOMDIR"), row
    processed = {_name(r.input) for r in rows if r.status == "processed"}
    expected = {name for name, _, _ in REAL_US_FILES} | set(MORE_US_FILES)
    assert expected <= processed, expected - processed
    unsupported = [r for r in rows if _name(r.input) == UNSUPPORTED_US_FILE]
    assert unsupported[0].status == "processed" or unsupported[0].reason == "unsupported-syntax"
    # the retired SOP class is referenced as what it is, although highdicom only knows the current one
    retired = next(r for r in rows if _name(r.input) == "color-pl.dcm")
    out = pydicom.dcmread(tmp_path / "out" / retired.outputs[0])
    referenced = {str(e.value) for e in out.iterall() if e.keyword == "ReferencedSOPClassUID"}
    assert referenced == {US_IMAGE_STORAGE_RETIRED}


def test_every_vendor_file_through_bundle_inference(every_file, caplog):
    """The bundle path: the inference datalist names what it leaves out, the per-item loader names what it
    cannot read; together with what loads, that is every file."""
    caplog.set_level(logging.WARNING)
    items = inference_datalist("busi_segmentation", str(every_file))
    left_out = {r.getMessage().split(":")[0].removeprefix("left out ") for r in caplog.records}
    listed = {Path(i["image"]).name for i in items}
    assert listed | left_out == {p.name for p in every_file.iterdir()} and not listed & left_out
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="tinyusfm_monai.data.skipping_dataset"):
        dataset = SkipUnreadableDataset(items, build_preprocessing(32, ANY_FORMAT))
        loaded = [Path(m).name for b in DataLoader(dataset, batch_size=1) for m in b["image"].meta["filename_or_obj"]]
    skipped = {}
    for record in caplog.records:
        match = re.match(r"skipped #(\d+) (\S+): (\w+): (.+)", record.getMessage())
        assert match, record.getMessage()
        skipped[match.group(2)] = match.group(3)
    assert set(loaded) | set(skipped) == listed and not set(loaded) & set(skipped)
    # every refusal names its cause: a reader error type, never a bare MONAI wrapper
    assert all(cause not in ("RuntimeError", "Exception") for cause in skipped.values()), skipped
    us = {n for n in loaded if n.split("_", 1)[1] in {name for name, _, _ in REAL_US_FILES} | set(MORE_US_FILES)}
    assert len(us) == len(REAL_US_FILES) + len(MORE_US_FILES)
    assert str(every_file) not in caplog.text, "no full paths in the log"
