"""The DICOM node on a full disk, in a private mount namespace with a small tmpfs as its disk.

    unshare -m python tests/disk_full_scenario.py WORKDIR     (root)
    unshare -rm python tests/disk_full_scenario.py WORKDIR    (unprivileged, where user namespaces are enabled)

Why a namespace: the tmpfs exists only for this process and disappears with it, whatever happens to the test
(no mount is left behind on the machine), and no privilege beyond `unshare` is needed. Prints one JSON object
with what was observed; tests/test_dicom_node.py asserts on it.

Scenario: 3 instances are acknowledged while the worker is held; the disk is then filled to the last byte;
a 4th C-STORE must be answered 0xA700 (not aborted); the worker is released and meets the full disk; the filler
is removed and the node must finish the 3 acknowledged instances by itself and accept the 4th.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pydicom  # noqa: E402
from dicom_fixtures import ThresholdSegmenter, copy_with, free_port, us_file  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

from tinyusfm_monai.dicom.node import serve  # noqa: E402


class Gated(ThresholdSegmenter):
    def __init__(self) -> None:
        super().__init__("busi_segmentation")
        self.gate = threading.Event()

    def predict(self, image):
        self.gate.wait(60)
        return super().predict(image)


def _fill(path: Path) -> int:
    written = 0
    with open(path, "wb", buffering=0) as fh:
        block = b"\0" * 65536
        while True:
            try:
                n = fh.write(block if len(block) else b"\0")
            except OSError:
                if len(block) == 1:
                    break
                block = block[: len(block) // 2]
                continue
            written += n
    return written


def _store(port: int, ds: pydicom.Dataset) -> int | None:
    from pynetdicom import AE
    from pynetdicom.sop_class import UltrasoundImageStorage, Verification

    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(Verification)
    ae.add_requested_context(UltrasoundImageStorage, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="TINYUSFM")
    if not assoc.is_established:
        return None
    status = assoc.send_c_store(ds)
    echo = assoc.send_c_echo() if assoc.is_established else None  # the association survived the refusal
    assoc.release()
    code = getattr(status, "Status", None)
    return code if getattr(echo, "Status", None) == 0 else (None if code is None else -code)


def scenario(disk: Path, src: Path) -> dict:
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    (disk / "receiving").mkdir()
    tempfile.tempdir = str(disk / "receiving")  # pynetdicom's receive files on the small disk too
    predictor = Gated()
    node = serve(
        "stand-in",
        port=free_port(),
        spool=str(disk / "spool"),
        output=str(disk / "results"),
        predictor=predictor,
        allow="MODALITY",
        block=False,
    )
    out: dict = {}
    try:
        files = [
            pydicom.dcmread(copy_with(us_file("US1_UNCR.dcm"), src / f"{k}.dcm", SOPInstanceUID=generate_uid()))
            for k in range(4)
        ]
        out["acknowledged"] = [_store(node.port, ds) for ds in files[:3]]
        out["filler_bytes"] = _fill(disk / "filler")
        out["refused_while_full"] = _store(node.port, files[3])
        predictor.gate.set()
        time.sleep(3)  # the worker meets the full disk
        status = node.status()
        out["while_full"] = {
            "disk": status["disk"],
            "failed": status["counts"]["failed"],
            "processed": status["counts"]["processed"],
            "incoming": len(list((disk / "spool" / "incoming").glob("*.dcm"))),
            "refused": status["counts"]["refused"],
        }
        (disk / "filler").unlink()
        t0 = time.monotonic()
        out["idle"] = node.wait_idle(60)
        out["resumed_after_s"] = round(time.monotonic() - t0, 1)
        out["resent"] = _store(node.port, files[3])
        node.wait_idle(60)
        status = node.status()
        out["after"] = {
            "disk": status["disk"],
            "failed": status["counts"]["failed"],
            "processed": status["counts"]["processed"],
            "results": len(list((disk / "results").rglob("*.dcm"))),
        }
    finally:
        node.stop()
    text = log.getvalue()
    out["tracebacks"] = text.count("Traceback")
    out["disk_full_log_lines"] = sum("disk full" in line for line in text.splitlines())
    return out


def main() -> None:
    work = Path(sys.argv[1])
    disk = work / "disk"
    disk.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], check=True)
    try:
        result = scenario(disk, work / "src")
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
