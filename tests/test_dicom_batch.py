"""`tinyusfm-monai dicom infer`: a folder of studies in, results per study and a report out."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import shutil

import pydicom
import pytest
from dicom_fixtures import (
    PATIENT_ID_MARKER,
    PATIENT_MARKER,
    UNSUPPORTED_US_FILE,
    IntensityClassifier,
    ThresholdSegmenter,
    copy_with,
    dciodvfy_errors,
    make_monochrome,
    make_no_pixel_data,
    make_short_pixel_data,
    make_truncated,
    us_file,
)
from pydicom.pixels import get_decoder

from tinyusfm_monai.dicom.batch import infer, run_batch


def _tree(root):
    """Two studies of real US files plus the inputs a hospital export really contains."""
    a, b = root / "study_a", root / "study_b" / "series1"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    copy_with(us_file("US1_UNCR.dcm"), a / "IMG0001", PatientName=PATIENT_MARKER, PatientID=PATIENT_ID_MARKER)
    shutil.copy(us_file("examples_palette.dcm"), a / "IMG0002.dcm")
    shutil.copy(us_file("examples_ybr_color.dcm"), b / "cine.dcm")
    make_monochrome(b / "mono1.dcm", "MONOCHROME1")
    shutil.copy(us_file("CT_small.dcm"), b / "ct.dcm")
    shutil.copy(us_file(UNSUPPORTED_US_FILE), b / "lossless.dcm")
    make_truncated(b / "truncated.dcm")
    make_short_pixel_data(a / "short_pixels.dcm")
    make_no_pixel_data(a / "nopixels.dcm")
    (root / "README.txt").write_text("export notes\n")
    return root


def _hashes(root):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _outputs(out):
    return sorted(p.relative_to(out) for p in out.rglob("*.dcm"))


def test_batch_segmentation_end_to_end(tmp_path, caplog):
    inputs = _tree(tmp_path / "in")
    out = tmp_path / "out"
    before = _hashes(inputs)
    caplog.set_level(logging.DEBUG)
    predictor = ThresholdSegmenter("busi_segmentation")
    message = infer("bundles/busi_segmentation", str(inputs), str(out), frames="every:10", predictor=predictor)
    assert "4/10" in message
    rows = {r["input"]: r for r in csv.DictReader(open(out / "report.csv"))}
    assert len(rows) == 10
    status = {k: (r["status"], r["reason"]) for k, r in rows.items()}
    assert status["study_a/IMG0001"] == ("processed", "")
    assert status["study_a/IMG0002.dcm"] == ("processed", "")
    assert status["study_b/series1/cine.dcm"] == ("processed", "")
    assert status["study_b/series1/mono1.dcm"] == ("processed", "")
    assert status["study_b/series1/ct.dcm"] == ("skipped", "not-ultrasound")
    assert status["study_b/series1/truncated.dcm"] == ("skipped", "corrupt")
    assert status["study_a/short_pixels.dcm"] == ("skipped", "corrupt")
    assert status["study_a/nopixels.dcm"] == ("skipped", "no-pixel-data")
    assert status["README.txt"] == ("skipped", "not-dicom")
    lossless = pydicom.dcmread(us_file(UNSUPPORTED_US_FILE), stop_before_pixels=True).file_meta.TransferSyntaxUID
    if not get_decoder(lossless).is_available:
        assert status["study_b/series1/lossless.dcm"] == ("skipped", "unsupported-syntax")
    assert rows["study_b/series1/cine.dcm"]["frames"] == "1,11,21"
    report = json.loads((out / "report.json").read_text())
    assert report["bundle"] == "busi_segmentation" and report["counts"]["processed"] == 4

    # outputs per study: SEG for single-frame sources, the SR fallback for the cine
    for row in rows.values():
        for rel in filter(None, row["outputs"].split(";")):
            path = out / rel
            assert path.parent.name == row["study_instance_uid"]
            kind = path.name.split("_")[0]
            assert kind == ("SR" if row["input"].endswith("cine.dcm") else "SEG")
            assert dciodvfy_errors(path) == [], rel
    assert _hashes(inputs) == before, "inputs must never be modified"

    # patient identifiers never in logs (the marker patient was processed)
    assert PATIENT_MARKER.split("^")[0] not in caplog.text and PATIENT_ID_MARKER not in caplog.text
    assert "Zzyzxpatient" not in (out / "report.json").read_text()

    # rerun: same files, no duplicates
    first = _outputs(out)
    run_batch(predictor, inputs, out, frames="every:10")
    assert _outputs(out) == first


def test_batch_classification_with_overlays(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(us_file("US1_J2KI.dcm"), inputs / "a.dcm")
    shutil.copy(us_file("OBXXXX1A_rle_2frame.dcm"), inputs / "b.dcm")
    out = inputs / "results"  # an output folder inside the input is not fed back in
    rows = run_batch(IntensityClassifier("busi_classification"), inputs, out, frames="all", secondary_capture=True)
    assert [r.status for r in rows] == ["processed", "processed"]
    kinds = sorted(p.name.split("_")[0] for p in out.rglob("*.dcm"))
    assert kinds == ["SC", "SC", "SC", "SR", "SR"]  # one SC per processed frame (1 + 2), one SR per instance
    for p in out.rglob("*.dcm"):
        assert dciodvfy_errors(p) == [], p.name
    rows2 = run_batch(IntensityClassifier("busi_classification"), inputs, out, frames="all", secondary_capture=True)
    assert len(rows2) == 2


def test_missing_input_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        run_batch(IntensityClassifier(), tmp_path / "nope", tmp_path / "out")
