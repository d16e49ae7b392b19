"""The node against a real PACS: Orthanc 1.10 with its DICOMweb plugin (Debian packages), on free local ports.

* push: Orthanc's own Lua routing sends each new ultrasound instance to the node; the node C-STOREs SEG/SR back;
  Orthanc is stopped while results wait in the outbox, the node is SIGKILLed twice (once with results waiting,
  once while Orthanc is storing them), and Orthanc restarts;
* pull: `dicom pull` finds the US studies by QIDO-RS, retrieves by WADO-RS, stores results by STOW-RS; it is
  SIGKILLed half way, meets Orthanc down (exit 75), and resumes;
* the node's `--dest` as a DICOMweb URL (STOW-RS) with HTTP basic authentication: wrong credentials keep the
  results in the outbox (then SIGKILL), the right ones deliver them, with a SIGKILL once delivery has begun.

Every count is read from Orthanc's REST API: results sit in the source study (same Study Instance UID, their
own series), reference their source instance, each source has exactly one result (0 lost, 0 duplicated), and
Orthanc's log holds no warning or error about them. The models are the deterministic stand-ins of the other node
tests (`dicom_fixtures.ThresholdSegmenter`): no trained weights are needed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pydicom
import pytest
from dicom_fixtures import free_port, require_tool, us_file
from orthanc_harness import Orthanc, require_orthanc

from tinyusfm_monai.dicom.dicomweb import ENV_PASSWORD, ENV_USER

pytestmark = pytest.mark.slow
TESTS = Path(__file__).resolve().parent
# real vendor ultrasound files with distinct SOP Instance UIDs: 5 instances in 4 studies, one a 30-frame cine
VENDOR_FILES = [
    "US1_UNCR.dcm",
    "examples_rgb_color.dcm",
    "examples_palette.dcm",
    "gdcm-US-ALOKA-16.dcm",
    "examples_ybr_color.dcm",
]
RESULT_MODALITIES = ("SEG", "SR")
# Orthanc's routing: the rule hospital IT installs (packaging/orthanc/), plus, for the test only, a filter holding
# each result that comes back by DICOM for 0.5 s, so that delivering a batch takes long enough for the test to
# kill the node in the middle of it.
ROUTING_LUA = (
    (TESTS.parent / "packaging" / "orthanc" / "route-us-to-tinyusfm.lua").read_text()
    + """
function ReceivedInstanceFilter(dicom, origin)
   if (dicom['Modality'] == 'SEG' or dicom['Modality'] == 'SR') and origin['RequestOrigin'] == 'DicomProtocol' then
      os.execute('sleep 0.5')
   end
   return true
end
"""
)


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def _sources() -> dict[str, pydicom.Dataset]:
    return {str(ds.SOPInstanceUID): ds for ds in (pydicom.dcmread(us_file(n)) for n in VENDOR_FILES)}


def _referenced(ds: pydicom.Dataset) -> set[str]:
    """Every Referenced SOP Instance UID anywhere in the dataset (SEG: Referenced Series Sequence; SR: evidence)."""
    found: set[str] = set()

    def walk(item: pydicom.Dataset) -> None:
        for element in item:
            if element.VR == "SQ":
                for child in element.value:
                    walk(child)
            elif element.keyword == "ReferencedSOPInstanceUID":
                found.add(str(element.value))

    walk(ds)
    return found


def _result_count(orthanc: Orthanc) -> int:
    return sum(
        orthanc.get(f"/series/{s}")["MainDicomTags"].get("Modality") in RESULT_MODALITIES
        and len(orthanc.get(f"/series/{s}")["Instances"])
        for s in orthanc.get("/series")
    )


def check_results_in_orthanc(orthanc: Orthanc, sources: dict[str, pydicom.Dataset], others: int = 0) -> dict[str, int]:
    """0 lost, 0 duplicated, every result in its source study and referencing its source; returns the counts.
    `others`: instances that are neither a source nor a result (left alone)."""
    stored = orthanc.instances()
    results = [ds for ds in stored if ds.Modality in RESULT_MODALITIES]
    per_source: Counter[str] = Counter()
    source_series = {str(ds.SeriesInstanceUID) for ds in sources.values()}
    for ds in results:
        refs = _referenced(ds) & set(sources)
        assert len(refs) == 1, f"result {ds.SOPInstanceUID} references {refs}"
        source = sources[next(iter(refs))]
        assert ds.StudyInstanceUID == source.StudyInstanceUID  # in the source study
        assert str(ds.SeriesInstanceUID) not in source_series  # in its own series
        assert ds.PatientID == source.PatientID
        per_source[str(source.SOPInstanceUID)] += 1
    assert per_source == Counter({sop: 1 for sop in sources}), "each source must have exactly one result"
    assert len(stored) == len(sources) + len(results) + others  # nothing else: no second copy, no stray object
    statistics = orthanc.get("/statistics")
    assert statistics["CountInstances"] == len(stored)
    assert orthanc.warnings() == [], "Orthanc logged warnings/errors:\n" + "\n".join(orthanc.warnings())
    kinds = Counter(str(ds.Modality) for ds in results)
    return {"instances": len(stored), "results": len(results), **kinds}


class NodeProcess:
    """`tests/node_process.py` (the node in its own process), killable with SIGKILL and restartable."""

    def __init__(self, folder: Path, options: dict, kind: str = "threshold", env: dict | None = None) -> None:
        self.folder, self.options, self.kind = folder, options, kind
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.log = folder / "node.log"

    def start(self) -> NodeProcess:
        log = open(self.log, "ab")  # noqa: SIM115 - owned by the process
        command = [sys.executable, str(TESTS / "node_process.py"), json.dumps(self.options), self.kind]
        self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()
        _wait_for(lambda: self.status().get("pid") == self.proc.pid, 60, "the node to start")
        return self

    def status(self) -> dict:
        try:
            return json.loads((Path(self.options["spool"]) / "status.json").read_text())
        except (OSError, ValueError):
            return {}

    def outbox(self) -> int:
        return len(list((Path(self.options["spool"]) / "outbox").glob("*.json")))

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


@pytest.fixture
def cleanup():
    """Everything started is stopped at the end, in reverse order, by PID."""
    started: list = []
    yield started.append
    for thing in reversed(started):
        thing.stop()


def test_push_orthanc_routes_us_to_the_node_and_gets_seg_sr_back(tmp_path, cleanup):
    require_orthanc()
    node_port = free_port()
    orthanc = Orthanc(
        tmp_path / "orthanc", modalities={"tinyusfm": ["TINYUSFM", "127.0.0.1", node_port]}, lua=ROUTING_LUA
    )
    cleanup(orthanc.start())
    node = NodeProcess(
        tmp_path,
        {
            "port": node_port,
            "spool": str(tmp_path / "spool"),
            "output": str(tmp_path / "results"),
            "dest": f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}",
            "allow": "ORTHANC@127.0.0.1",
            "frames": "every:10",
            "backoff_max": 1.0,
        },
        kind="slow:2",  # a CPU model's pace: most results are still to come when Orthanc goes down
    )
    cleanup(node.start())
    sources = _sources()
    paths = [us_file(n) for n in VENDOR_FILES]

    # 0. the checks of the walk-through (docs/hospital_it.md): Orthanc echoes the node; a modality stores by DICOM
    orthanc.post("/modalities/tinyusfm/echo", {})  # raises unless the C-ECHO succeeded
    # 1. plain push: one instance in (storescu, as a modality), its SEG back in the source study
    require_tool("storescu")
    store = subprocess.run(
        ["storescu", "-aet", "US_ROOM1", "-aec", orthanc.aet, "127.0.0.1", str(orthanc.dicom_port), str(paths[0])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert store.returncode == 0, store.stderr
    _wait_for(lambda: _result_count(orthanc) == 1, 60, "the first result in Orthanc")

    # 2. the other four arrive; Orthanc goes down as soon as the node has them: results wait in the outbox
    for path in paths[1:]:
        orthanc.upload(path)
    _wait_for(lambda: node.status().get("counts", {}).get("received") == 5, 60, "the node to receive all five")
    orthanc.stop()
    _wait_for(lambda: node.status().get("counts", {}).get("processed") == 5, 120, "the node to process all")
    _wait_for(lambda: node.status().get("destination", {}).get("state") == "retrying", 30, "the node to retry")
    waiting = node.outbox()
    assert waiting >= 1  # results of the instances processed while Orthanc is down wait in the outbox

    # 3. SIGKILL with results waiting; the restarted node delivers them once Orthanc is back
    node.kill()
    node.start()
    orthanc.start()
    # 4. SIGKILL again while Orthanc is storing the batch (each result held 0.5 s by the Lua filter)
    at_kill = _wait_for(lambda: _result_count(orthanc) > 1 and _result_count(orthanc), 60, "delivery to start")
    node.kill()
    left = node.outbox()
    node.start()
    _wait_for(lambda: node.outbox() == 0, 90, "the outbox to drain")
    _wait_for(lambda: _result_count(orthanc) == 5, 30, "five results in Orthanc")
    counts = check_results_in_orthanc(orthanc, sources)
    assert counts["results"] == 5 and counts["SEG"] == 4 and counts["SR"] == 1
    print(
        f"push: {waiting} result(s) waited through the outage; killed during delivery at {at_kill}/5 stored, "
        f"{left} outbox entr(ies) left; Orthanc holds {counts}"
    )


def _pull(tmp_path: Path, url: str, kind: str = "threshold", wait: bool = True, env: dict | None = None):
    options = {"url": url, "output": str(tmp_path / "pulled"), "frames": "every:10", "timeout": 20}
    command = [sys.executable, str(TESTS / "pull_process.py"), json.dumps(options), kind]
    log = open(tmp_path / "pull.log", "ab")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    log.close()
    if wait:
        proc.wait(180)
    return proc


def _state(tmp_path: Path) -> dict:
    try:
        return json.loads((tmp_path / "pulled" / "dicomweb-pull-state.json").read_text())["studies"]
    except (OSError, ValueError, KeyError):
        return {}


def test_pull_qido_wado_stow_resumes_after_sigkill_and_orthanc_outage(tmp_path, cleanup):
    require_orthanc()
    orthanc = Orthanc(tmp_path / "orthanc")
    cleanup(orthanc.start())
    sources = _sources()
    for name in VENDOR_FILES:
        orthanc.upload(us_file(name))
    ct = orthanc.upload(us_file("CT_small.dcm"))  # not ultrasound: never retrieved

    # SIGKILL once the first instance's results are stored (the model takes 0.5 s a frame: the run is mid-way)
    proc = _pull(tmp_path, orthanc.dicomweb, kind="slow:0.5", wait=False)
    _wait_for(lambda: any(s["instances"] for s in _state(tmp_path).values()), 120, "the first pulled instance")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    state = _state(tmp_path)
    finished_before = sum(len(s["instances"]) for s in state.values())
    assert 1 <= finished_before < 5

    # Orthanc down: the pull says so and exits 75 (EX_TEMPFAIL), keeping its state
    orthanc.stop()
    assert _pull(tmp_path, orthanc.dicomweb).returncode == 75
    assert sum(len(s["instances"]) for s in _state(tmp_path).values()) == finished_before

    orthanc.start()
    assert _pull(tmp_path, orthanc.dicomweb).returncode == 0
    state = _state(tmp_path)
    assert len(state) == 4 and all(s["done"] for s in state.values())
    assert all(v.startswith("stored: ") for s in state.values() for v in s["instances"].values())
    # a further pass processes nothing: each study once
    assert _pull(tmp_path, orthanc.dicomweb).returncode == 0
    assert "0 study(ies) done, 0 instance(s) processed" in (tmp_path / "pull.log").read_text().splitlines()[-1]
    assert orthanc.get(f"/instances/{ct['ID']}")["ID"] == ct["ID"]  # the CT is left alone
    counts = check_results_in_orthanc(orthanc, sources, others=1)
    assert counts["results"] == 5 and counts["SEG"] == 4 and counts["SR"] == 1


def test_node_dest_dicomweb_stow_with_basic_auth_exactly_once(tmp_path, cleanup):
    require_orthanc()
    require_tool("storescu")
    orthanc = Orthanc(tmp_path / "orthanc", users={"tinyusfm": "s3cret-pw"})
    cleanup(orthanc.start())
    options = {
        "port": free_port(),
        "spool": str(tmp_path / "spool"),
        "output": str(tmp_path / "results"),
        "dest": orthanc.dicomweb,
        "allow": "MODALITY",
        "frames": "every:10",
        "backoff_max": 1.0,
    }
    wrong = NodeProcess(tmp_path, options, env={ENV_USER: "tinyusfm", ENV_PASSWORD: "wrong"})
    cleanup(wrong.start())
    paths = [us_file(n) for n in VENDOR_FILES]
    for path in paths:  # the PACS holds the studies; the modality also sends them to the node
        orthanc.upload(path)
    send = subprocess.run(
        ["storescu", "-aet", "MODALITY", "-aec", "TINYUSFM", "--propose-jpeg8", "127.0.0.1", str(options["port"])]
        + [str(p) for p in paths],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert send.returncode == 0, send.stderr
    _wait_for(lambda: wrong.status().get("counts", {}).get("processed") == 5, 120, "the node to process all")
    status = _wait_for(
        lambda: wrong.status() if "HTTP 401" in str(wrong.status().get("destination", {})) else None,
        30,
        "the 401 to show in status",
    )
    assert status["destination"]["state"] == "retrying" and wrong.outbox() == 5
    assert "s3cret" not in wrong.log.read_text() and "wrong" not in json.dumps(status)
    wrong.kill()  # SIGKILL with every result waiting: the outbox is on disk
    right = NodeProcess(tmp_path, options, env={ENV_USER: "tinyusfm", ENV_PASSWORD: "s3cret-pw"})
    cleanup(right.start())
    # SIGKILL once STOW-RS delivery has begun, and start again: what Orthanc confirmed is not sent with new UIDs
    at_kill = _wait_for(lambda: _result_count(orthanc), 60, "the first STOW-RS delivery")
    right.kill()
    left = right.outbox()
    right.start()
    _wait_for(lambda: right.outbox() == 0, 60, "the outbox to drain")
    print(f"STOW-RS: killed after {at_kill}/5 stored with {left} outbox entr(ies) left")
    counts = check_results_in_orthanc(orthanc, _sources())
    assert counts["results"] == 5
    _wait_for(lambda: right.status().get("counts", {}).get("delivered_instances") == left, 10, "status to count them")
