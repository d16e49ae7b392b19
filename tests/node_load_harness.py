"""The node under load, as a hospital would stress it: many modalities at once, a crash, a PACS outage.

`run_load` (used by the slow test `test_dicom_node_load.py` at reduced size and by `benchmarks/node_load.py`
at full size) does:

1. `n` distinct real ultrasound instances (US1_J2KI.dcm with new UIDs) plus damaged ones (short pixel data),
   split over `associations` dcmtk `storescu` senders running at once, each with its own calling AE title;
   plus the memory-hostile set: a JPEG cine of `cine_frames` x 2000^2 frames (processed frame by frame), one
   colour JPEG frame at the frame limit (3840 x 2160, processed), a 20000^2 RLE and a 13000^2 JPEG (refused
   from their headers), a JPEG lying about its size (failed).
2. The node runs in its own process (`node_process.py`, deterministic stand-in predictor taking `model_s`
   seconds per frame like a CPU model), with a small queue so that it fills and refuses (0xA700); refused and
   unanswered instances are sent again, as modalities do.
3. The node is killed with SIGKILL once `kill_at` of the instances are acknowledged, and restarted.
4. The destination (a pynetdicom storage SCP counting every C-STORE) is down from the start; it comes up only
   when every instance has been processed, so every result waits in the outbox through the crash.
5. Checked: acknowledged = processed + failed-with-reason (none lost, none unexplained), every processed
   instance's result received by the destination exactly once, peak RSS of the node process (VmHWM, sampled
   from /proc every 0.2 s, and the node's own getrusage in status.json) under `rss_bound_mb`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pydicom
from dicom_fixtures import (
    free_port,
    make_huge_cine,
    make_huge_jpeg,
    make_huge_rle,
    make_limit_frame,
    make_lying_jpeg,
    us_file,
)
from pydicom.uid import generate_uid

TESTS = Path(__file__).resolve().parent
SEND_OPTIONS = ("--propose-j2k-lossy",)


def make_instances(folder: Path, n: int, damaged: int) -> list[Path]:
    """n distinct instances of a real J2K ultrasound file (new SOP/Series/Study UIDs) + `damaged` ones whose
    pixel data is cut in half (acknowledged: their header is sound; they fail with the reason)."""
    base = pydicom.dcmread(us_file("US1_J2KI.dcm"))
    broken = pydicom.dcmread(us_file("examples_rgb_color.dcm"))
    broken.PixelData = broken.PixelData[: len(broken.PixelData) // 2]
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n + damaged):
        ds = base if i < n else broken
        ds.SOPInstanceUID = generate_uid(entropy_srcs=["load", str(i)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyInstanceUID = generate_uid(entropy_srcs=["load-study", str(i // 25)])
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=["load-series", str(i // 25)])
        path = folder / f"{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


class CountingSCP:
    """The destination: a pynetdicom storage SCP that counts every C-STORE per SOP Instance UID and maps each
    result to the source instance it references."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.counts: Counter[str] = Counter()
        self.source_of: dict[str, str] = {}
        self.lock = threading.Lock()
        self.server = None

    def _on_store(self, event):
        ds = event.dataset
        ds.file_meta = event.file_meta
        source = ""
        if "ReferencedSeriesSequence" in ds:
            source = ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
        elif "CurrentRequestedProcedureEvidenceSequence" in ds:
            evidence = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
            source = evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        with self.lock:
            self.counts[str(ds.SOPInstanceUID)] += 1
            self.source_of[str(ds.SOPInstanceUID)] = str(source)
        return 0x0000

    def start(self) -> None:
        from pynetdicom import AE, evt
        from pynetdicom.sop_class import ComprehensiveSRStorage, SecondaryCaptureImageStorage, SegmentationStorage

        ae = AE(ae_title="PACS")
        for sop_class in (SegmentationStorage, ComprehensiveSRStorage, SecondaryCaptureImageStorage):
            ae.add_supported_context(sop_class)
        self.server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None


class NodeProcess:
    """The node in its own process group; peak RSS sampled from /proc while it runs."""

    def __init__(self, options: dict, log: Path, predictor: str = "threshold") -> None:
        self.options, self.log, self.predictor = options, log, predictor
        self.proc: subprocess.Popen | None = None
        self.peak_kb = 0
        self._sampler: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        cmd = [sys.executable, str(TESTS / "node_process.py"), json.dumps(self.options), self.predictor]
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
        self.proc = subprocess.Popen(
            cmd, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
        self._stop.clear()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        status = Path(f"/proc/{self.proc.pid}/status")
        while not self._stop.is_set() and self.proc.poll() is None:
            try:
                match = re.search(r"VmHWM:\s+(\d+) kB", status.read_text())
                if match:
                    self.peak_kb = max(self.peak_kb, int(match.group(1)))
            except OSError:
                pass
            time.sleep(0.2)

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self._stop.set()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()
        self._stop.set()


def _status(spool: Path) -> dict:
    try:
        return json.loads((spool / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def _echo_ok(port: int) -> bool:
    proc = subprocess.run(
        ["echoscu", "-aet", "MOD1", "-aec", "TINYUSFM", "127.0.0.1", str(port)], capture_output=True, timeout=20
    )
    return proc.returncode == 0


def _storescu(port: int, aet: str, files: list[Path], options: tuple[str, ...]) -> subprocess.Popen:
    return subprocess.Popen(
        ["storescu", "-v", *options, "-aet", aet, "-aec", "TINYUSFM", "127.0.0.1", str(port), *map(str, files)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def parse_storescu(output: str) -> tuple[set[str], dict[str, str]]:
    """(files acknowledged with Success, {file: other response}) from `storescu -v` output."""
    acked, other = set(), {}
    current = None
    for line in output.splitlines():
        if line.startswith("I: Sending file: "):
            current = line[len("I: Sending file: ") :].strip()
        elif line.startswith("I: Received Store Response") and current is not None:
            if "(Success)" in line:
                acked.add(current)
            else:
                other[current] = line.split("(", 1)[-1].rstrip(")")
            current = None
    return acked, other


def run_load(
    workdir: Path,
    n: int = 1000,
    associations: int = 8,
    damaged: int = 10,
    kill_at: float = 0.4,
    queue_size: int = 16,
    cine_frames: int = 150,
    model_s: float = 0.05,
    rss_bound_mb: float = 1536.0,
    timeout: float = 1800.0,
) -> dict:
    """Run the scenario of the module docstring; returns the figures (raises AssertionError if a check fails)."""
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    files = make_instances(workdir / "src", n, damaged)
    hostile = workdir / "hostile"
    cine = make_huge_cine(hostile / "cine.dcm", frames=cine_frames)
    limit = make_limit_frame(hostile / "limit.dcm")
    refused_files = [make_huge_rle(hostile / "rle.dcm"), make_huge_jpeg(hostile / "jpeg.dcm")]
    lying = make_lying_jpeg(hostile / "lying.dcm")
    accepted_big = [cine, limit, lying]
    sop_of = {str(f): str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in [*files, *accepted_big]}
    prepare_s = time.monotonic() - t0

    spool, output = workdir / "spool", workdir / "results"
    port, pacs_port = free_port(), free_port()
    aets = [f"MOD{k + 1}" for k in range(associations)] + ["BIG"]
    options = {
        "port": port,
        "spool": str(spool),
        "output": str(output),
        "dest": f"PACS@127.0.0.1:{pacs_port}",
        "queue_size": queue_size,
        "allow": ",".join(aets),
        "max_per_peer": 2,
        "max_associations": associations + 4,
        "max_per_address": associations + 4,  # every modality of the scenario sends from 127.0.0.1
        "backoff_max": 2.0,
        "queue_wait": 0.5,
        "frames": "all",
    }
    node = NodeProcess(options, workdir / "node.log", predictor=f"slow:{model_s}")
    node.start()
    _wait(lambda: _echo_ok(port), 120, "the node to start")

    acked: set[str] = set()
    responses: Counter[str] = Counter()
    killed = {"done": False, "acked_at_kill": 0}
    peak_kb = 0

    def killer() -> None:
        # SIGKILL once kill_at of the instances are acknowledged: counted from the node's own status file
        target = int(kill_at * n)
        while not killed["done"]:
            counts = _status(spool).get("counts", {})
            if counts.get("received", 0) >= target:
                node.kill()
                killed["done"] = True
                killed["acked_at_kill"] = counts.get("received", 0)
                return
            time.sleep(0.2)

    kill_thread = threading.Thread(target=killer, daemon=True)
    kill_thread.start()
    send_started = time.monotonic()
    rounds = 0
    remaining = [*files]
    big = list(accepted_big)
    unanswered = list(refused_files)  # refused from their headers: sent until they get their answer
    answered: dict[str, str] = {}
    while (remaining or big or unanswered) and time.monotonic() - t0 < timeout:
        rounds += 1
        groups = [remaining[k::associations] for k in range(associations)]
        procs = [_storescu(port, aets[k], g, SEND_OPTIONS) for k, g in enumerate(groups) if g]
        jpegs = [*big, *(f for f in unanswered if f.name == "jpeg.dcm")]
        if jpegs:
            procs.append(_storescu(port, "BIG", jpegs, ("--propose-jpeg8",)))
        if any(f.name == "rle.dcm" for f in unanswered):
            procs.append(_storescu(port, "BIG", [refused_files[0]], ("--propose-rle",)))
        for proc in procs:
            out, _ = proc.communicate(timeout=timeout)
            ok, other = parse_storescu(out)
            acked |= ok
            answered.update(other)
            responses.update(v for f, v in other.items() if Path(f) not in refused_files)
        remaining = [f for f in remaining if str(f) not in acked]
        big = [f for f in accepted_big if str(f) not in acked]
        unanswered = [f for f in refused_files if str(f) not in answered]
        if remaining or big or unanswered:
            if killed["done"] and node.proc.poll() is not None:
                peak_kb = max(peak_kb, node.peak_kb)
                node.start()  # the restart after the crash (systemd would do this)
                _wait(lambda: _echo_ok(port), 120, "the node to restart")
            time.sleep(1.0)
    send_end = time.time()
    send_s = time.monotonic() - send_started
    assert not remaining and not big, f"{len(remaining)} instances never acknowledged"
    refusals = {Path(f).name: answered[str(f)] for f in refused_files}
    assert killed["done"], "the node was never killed (raise n or lower kill_at)"

    def drained() -> bool:
        status = _status(spool)
        fresh = float(status.get("updated_epoch", 0)) > send_end + 1.0  # written after the last acknowledgement
        return fresh and status["queue"]["pending"] == 0 and not any((spool / "incoming").glob("*.dcm"))

    _wait(drained, timeout, "the spool to drain")
    processed_s = time.monotonic() - send_started
    outbox_before = len(list((spool / "outbox").glob("*.json")))
    destination = CountingSCP(pacs_port)
    destination.start()
    delivery_started = time.monotonic()
    try:
        _wait(lambda: not any((spool / "outbox").glob("*.json")), timeout, "the outbox to be delivered")
        time.sleep(2.0)
    finally:
        status = _status(spool)
        node.stop()
        destination.stop()
    delivery_s = time.monotonic() - delivery_started
    peak_kb = max(peak_kb, node.peak_kb)

    # accounting: acknowledged = processed + failed with a reason
    acked_sops = {sop_of[f] for f in acked}
    failed = {p.name.split(".dcm")[0]: p for p in (spool / "failed").glob("*.dcm")}
    for sop, path in failed.items():
        assert path.with_name(path.name + ".reason.txt").read_text().strip(), f"{sop} failed without a reason"
    delivered_sources = Counter(destination.source_of[uid] for uid in destination.counts)
    duplicates = {uid: c for uid, c in destination.counts.items() if c != 1}
    processed = set(delivered_sources)
    assert not (processed & set(failed)), "an instance both processed and failed"
    assert acked_sops == processed | set(failed), (
        f"acknowledged but neither processed nor failed: {sorted(acked_sops - processed - set(failed))[:5]}; "
        f"processed or failed but never acknowledged: {sorted((processed | set(failed)) - acked_sops)[:5]}"
    )
    assert duplicates == {}, f"results delivered more than once: {list(duplicates.items())[:5]}"
    assert list((spool / "incoming").glob("*.dcm")) == [] and list((spool / "outbox").glob("*.json")) == []
    peak_mb = max(peak_kb / 1024.0, float(status.get("peak_rss_mb", 0)))
    assert peak_mb < rss_bound_mb, f"peak RSS {peak_mb:.0f} MB over the bound of {rss_bound_mb:.0f} MB"
    reasons = Counter(
        p.read_text().split(":")[0 if "gave up" in p.read_text() else 1].strip()
        for p in (spool / "failed").glob("*.dcm.reason.txt")
    )
    return {
        "instances": n,
        "damaged": damaged,
        "associations": associations,
        "cine_frames": cine_frames,
        "send_rounds": rounds,
        "acknowledged": len(acked_sops),
        "acknowledged_at_kill": killed["acked_at_kill"],
        "processed": len(processed),
        "failed": len(failed),
        "failed_reasons": dict(reasons),
        "refused_responses": dict(responses),
        "hostile_refusals": refusals,
        "outbox_when_destination_came_back": outbox_before,
        "delivered_objects": sum(destination.counts.values()),
        "duplicate_deliveries": len(duplicates),
        "peak_rss_mb": round(peak_mb, 1),
        "rss_bound_mb": rss_bound_mb,
        "prepare_s": round(prepare_s, 1),
        "send_s": round(send_s, 1),
        "send_to_processed_s": round(processed_s, 1),
        "delivery_s": round(delivery_s, 1),
        "node_counts": status.get("counts", {}),
    }
