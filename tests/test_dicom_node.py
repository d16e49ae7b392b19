"""The DICOM node driven by dcmtk: echoscu / storescu as the modality, storescp as the destination PACS.

Everything on 127.0.0.1 with free ports, bounded waits, every process and thread stopped at the end.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from pathlib import Path

import pydicom
import pytest
from dicom_fixtures import (
    PATIENT_ID_MARKER,
    PATIENT_MARKER,
    ThresholdSegmenter,
    copy_with,
    free_port,
    make_short_pixel_data,
    require_tool,
    us_file,
)

from tinyusfm_monai.dicom.node import Destination, serve

pytestmark = pytest.mark.slow


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def storescp(tmp_path):
    """dcmtk storescp as the destination node (stands in for the PACS)."""
    require_tool("storescp", "storescu", "echoscu")
    port = free_port()
    received = tmp_path / "pacs"
    received.mkdir()
    # dcmtk 3.6.7's storescp has no bind option; it listens on a random free port for the test's duration
    proc = subprocess.Popen(
        ["storescp", "--aetitle", "PACS", "--output-directory", str(received), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _wait_for(
        lambda: (
            subprocess.run(
                ["echoscu", "-aec", "PACS", "127.0.0.1", str(port)], capture_output=True, timeout=10
            ).returncode
            == 0
        ),
        20,
        "storescp to start",
    )
    yield Destination("PACS", "127.0.0.1", port), received
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _storescu(port: int, *files: Path, options: tuple[str, ...] = ()) -> subprocess.Popen:
    """options e.g. ("--propose-jpeg8",): offer JPEG Baseline first so a JPEG cine travels compressed."""
    return subprocess.Popen(
        ["storescu", *options, "-aet", "MODALITY", "-aec", "TINYUSFM", "127.0.0.1", str(port), *map(str, files)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_node_receives_processes_and_forwards(tmp_path, storescp, caplog):
    caplog.set_level(logging.INFO)
    destination, received = storescp
    port = free_port()
    spool, output = tmp_path / "spool", tmp_path / "results"
    sources = tmp_path / "modality"
    marked = copy_with(
        us_file("US1_UNCR.dcm"), sources / "a.dcm", PatientName=PATIENT_MARKER, PatientID=PATIENT_ID_MARKER
    )
    palette = shutil.copy(us_file("examples_palette.dcm"), sources / "b.dcm")
    cine = shutil.copy(us_file("examples_ybr_color.dcm"), sources / "c.dcm")
    damaged = make_short_pixel_data(sources / "d.dcm", src="US1_UNCI.dcm")
    predictor = ThresholdSegmenter("busi_segmentation")
    dest = f"{destination.ae_title}@{destination.host}:{destination.port}"
    node = serve(
        "unused",
        ae_title="TINYUSFM",
        port=port,
        dest=dest,
        host="127.0.0.1",
        spool=str(spool),
        output=str(output),
        queue_size=4,
        frames="every:10",
        predictor=predictor,
        block=False,
    )
    try:
        echo = subprocess.run(["echoscu", "-aec", "TINYUSFM", "127.0.0.1", str(port)], capture_output=True, timeout=20)
        assert echo.returncode == 0, echo.stderr
        # two modalities sending at the same time: concurrent associations
        senders = [
            _storescu(port, marked, palette),
            _storescu(port, damaged),
            _storescu(port, cine, options=("--propose-jpeg8",)),
        ]
        for proc in senders:
            out, _ = proc.communicate(timeout=60)
            assert proc.returncode == 0, out
        assert node.wait_idle(90)
        _wait_for(lambda: len(list(received.iterdir())) >= 3, 30, "3 results at the destination")
        results = [pydicom.dcmread(p) for p in received.iterdir()]
        kinds = sorted(str(ds.SOPClassUID) for ds in results)
        assert kinds == ["1.2.840.10008.5.1.4.1.1.66.4"] * 2 + ["1.2.840.10008.5.1.4.1.1.88.33"]
        sources_uids = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in (marked, palette, cine)}
        referenced = set()
        for ds in results:
            if "ReferencedSeriesSequence" in ds:
                referenced.add(ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID)
            else:
                ev = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
                referenced.add(ev.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
        assert referenced == sources_uids
        # the damaged instance was acknowledged (it was persisted), failed, and is kept with its reason
        failed = list((spool / "failed").glob("*.dcm"))
        assert [p.stem for p in failed] == [pydicom.dcmread(damaged, stop_before_pixels=True).SOPInstanceUID]
        assert "corrupt" in failed[0].with_name(failed[0].name + ".reason.txt").read_text()
        assert list((spool / "incoming").glob("*.dcm")) == []
        # a non-ultrasound SOP class is refused at association negotiation; nothing is written
        ct = _storescu(port, us_file("CT_small.dcm"))
        ct.communicate(timeout=30)
        assert ct.returncode != 0
        assert not any(p.stem == pydicom.dcmread(us_file("CT_small.dcm")).SOPInstanceUID for p in spool.rglob("*.dcm"))
    finally:
        node.stop()
    assert "Zzyzxpatient" not in caplog.text and PATIENT_ID_MARKER not in caplog.text


def test_node_recovers_spool_after_restart(tmp_path, storescp):
    destination, received = storescp
    spool = tmp_path / "spool"
    # an instance acknowledged before a crash: on disk in incoming/, never processed
    (spool / "incoming").mkdir(parents=True)
    uid = pydicom.dcmread(us_file("US1_J2KR.dcm"), stop_before_pixels=True).SOPInstanceUID
    shutil.copy(us_file("US1_J2KR.dcm"), spool / "incoming" / f"{uid}.dcm")
    dest = f"{destination.ae_title}@{destination.host}:{destination.port}"
    node = serve(
        "unused",
        port=free_port(),
        dest=dest,
        host="127.0.0.1",
        spool=str(spool),
        output=str(tmp_path / "results"),
        predictor=ThresholdSegmenter("busi_segmentation"),
        block=False,
    )
    try:
        _wait_for(lambda: len(list(received.iterdir())) == 1, 60, "the recovered instance's SEG")
        assert node.wait_idle(30)
    finally:
        node.stop()
    seg = pydicom.dcmread(next(received.iterdir()))
    assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == uid
    assert list((spool / "incoming").glob("*.dcm")) == []


def test_node_keeps_instance_when_destination_is_down(tmp_path):
    require_tool("storescu")
    port = free_port()
    spool = tmp_path / "spool"
    node = serve(
        "unused",
        port=port,
        dest=f"NOBODY@127.0.0.1:{free_port()}",
        host="127.0.0.1",
        spool=str(spool),
        output=str(tmp_path / "results"),
        predictor=ThresholdSegmenter("busi_segmentation"),
        block=False,
    )
    try:
        proc = _storescu(port, us_file("US1_UNCR.dcm"))
        proc.communicate(timeout=30)
        assert proc.returncode == 0
        assert node.wait_idle(60)
    finally:
        node.stop()
    failed = list((spool / "failed").glob("*.dcm"))
    assert len(failed) == 1 and "send failed" in failed[0].with_name(failed[0].name + ".reason.txt").read_text()
    assert list((tmp_path / "results").rglob("SEG_*.dcm")), "results stay on disk for a later resend"
