"""The DICOM node driven by dcmtk: echoscu / storescu as the modality, storescp as the destination PACS, plus
pynetdicom clients where a test needs to hold associations open or speak TLS.

Everything on 127.0.0.1 with free ports, bounded waits, every process and thread stopped at the end.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
from dicom_fixtures import (
    HOSTILE_UIDS,
    PATIENT_ID_MARKER,
    PATIENT_MARKER,
    ThresholdSegmenter,
    copy_with,
    free_port,
    make_huge_jpeg,
    make_huge_rle,
    make_lying_jpeg,
    make_relabelled_ct,
    make_short_pixel_data,
    make_with_uid,
    require_tool,
    us_file,
)
from node_load_harness import NodeProcess, _echo_ok

from tinyusfm_monai.dicom.node import Destination, serve

pytestmark = pytest.mark.slow
TESTS = Path(__file__).resolve().parent


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def _start_storescp(folder: Path, port: int) -> subprocess.Popen:
    # dcmtk 3.6.7's storescp has no bind option; it listens on a random free port for the test's duration
    proc = subprocess.Popen(
        ["storescp", "--aetitle", "PACS", "--output-directory", str(folder), str(port)],
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
    return proc


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture
def storescp(tmp_path):
    """dcmtk storescp as the destination node (stands in for the PACS)."""
    require_tool("storescp", "storescu", "echoscu")
    port = free_port()
    received = tmp_path / "pacs"
    received.mkdir()
    proc = _start_storescp(received, port)
    yield Destination("PACS", "127.0.0.1", port), received
    _stop(proc)


@pytest.fixture
def node_factory(tmp_path):
    """serve(block=False) with test defaults; every node started is stopped at the end."""
    started = []

    def make(**options):
        defaults = dict(
            port=free_port(),
            host="127.0.0.1",
            spool=str(tmp_path / "spool"),
            output=str(tmp_path / "results"),
            predictor=ThresholdSegmenter("busi_segmentation"),
            allow="MODALITY,MOD2",
            block=False,
        )
        defaults.update(options)
        node = serve("unused", **defaults)
        started.append(node)
        return node

    yield make
    for node in started:
        node.stop()


def _storescu(port: int, *files: Path, options: tuple[str, ...] = (), aet: str = "MODALITY", aec: str = "TINYUSFM"):
    """options e.g. ("--propose-jpeg8",): offer JPEG Baseline first so a JPEG cine travels compressed."""
    return subprocess.Popen(
        ["storescu", "-v", *options, "-aet", aet, "-aec", aec, "127.0.0.1", str(port), *map(str, files)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _send(port: int, *files: Path, **kwargs) -> tuple[int, str]:
    proc = _storescu(port, *files, **kwargs)
    out, _ = proc.communicate(timeout=120)
    return proc.returncode, out


def _status(spool: Path, node=None) -> dict:
    """status.json as the node writes it every second; with `node`, written now."""
    if node is not None:
        node.write_status()
    return json.loads((spool / "status.json").read_text())


def _files_outside(root: Path, allowed: list[Path]) -> list[Path]:
    allowed = [a.resolve() for a in allowed]
    return [p for p in root.rglob("*") if not any(p.resolve().is_relative_to(a) for a in allowed)]


def test_node_receives_processes_and_forwards(tmp_path, storescp, node_factory, caplog):
    caplog.set_level(logging.INFO)
    destination, received = storescp
    spool, output = tmp_path / "spool", tmp_path / "results"
    sources = tmp_path / "modality"
    marked = copy_with(
        us_file("US1_UNCR.dcm"), sources / "a.dcm", PatientName=PATIENT_MARKER, PatientID=PATIENT_ID_MARKER
    )
    palette = shutil.copy(us_file("examples_palette.dcm"), sources / "b.dcm")
    cine = shutil.copy(us_file("examples_ybr_color.dcm"), sources / "c.dcm")
    damaged = make_short_pixel_data(sources / "d.dcm", src="US1_UNCI.dcm")
    dest = f"{destination.ae_title}@{destination.host}:{destination.port}"
    node = node_factory(dest=dest, queue_size=4, frames="every:10")
    port = node.port
    echo = subprocess.run(["echoscu", "-aet", "MODALITY", "-aec", "TINYUSFM", "127.0.0.1", str(port)], timeout=20)
    assert echo.returncode == 0
    # three modalities sending at the same time: concurrent associations
    senders = [
        _storescu(port, marked, palette),
        _storescu(port, damaged, aet="MOD2"),
        _storescu(port, cine, options=("--propose-jpeg8",)),
    ]
    for proc in senders:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
    assert node.wait_idle(90) and node.wait_delivered(60)
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
    # the damaged instance was acknowledged (its header is sound), failed, and is kept with its reason
    failed = list((spool / "failed").glob("*.dcm"))
    assert [p.stem for p in failed] == [pydicom.dcmread(damaged, stop_before_pixels=True).SOPInstanceUID]
    assert "corrupt" in failed[0].with_name(failed[0].name + ".reason.txt").read_text()
    assert list((spool / "incoming").glob("*.dcm")) == [] and list((spool / "outbox").iterdir()) == []
    # a non-ultrasound SOP class is refused at association negotiation; nothing is written
    code, _ = _send(port, us_file("CT_small.dcm"))
    assert code != 0
    assert not any(p.stem == pydicom.dcmread(us_file("CT_small.dcm")).SOPInstanceUID for p in spool.rglob("*.dcm"))
    # the status file and the status command
    status = _status(spool, node)
    assert status["counts"]["received"] == 4 and status["counts"]["processed"] == 3
    assert status["counts"]["failed"] == {"corrupt": 1} and status["counts"]["delivered_instances"] == 3
    assert status["queue"]["pending"] == 0 and status["destination"]["state"] == "ok"
    cli = [sys.executable, "-m", "tinyusfm_monai.cli", "dicom", "status", "--spool", str(spool)]
    proc = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr  # running, with a warning: one instance failed
    assert json.loads(proc.stdout)["health"] == "warning"
    umask = os.umask(0o022)
    os.umask(umask)
    for p in output.rglob("*.dcm"):
        assert oct(p.stat().st_mode & 0o777) == oct(0o666 & ~umask), "results readable as the umask says"
    assert "Zzyzxpatient" not in caplog.text and PATIENT_ID_MARKER not in caplog.text
    node.stop()
    proc = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and json.loads(proc.stdout)["health"] == "down"


def test_node_recovers_spool_after_restart(tmp_path, storescp, node_factory):
    destination, received = storescp
    spool = tmp_path / "spool"
    # an instance acknowledged before a crash: on disk in incoming/, never processed; and a stale temporary
    (spool / "incoming").mkdir(parents=True)
    uid = pydicom.dcmread(us_file("US1_J2KR.dcm"), stop_before_pixels=True).SOPInstanceUID
    shutil.copy(us_file("US1_J2KR.dcm"), spool / "incoming" / f"{uid}.dcm")
    (spool / "incoming" / ".tmp-1234-abcd-x.dcm").write_bytes(b"half a file")
    node = node_factory(dest=f"{destination.ae_title}@{destination.host}:{destination.port}")
    _wait_for(lambda: len(list(received.iterdir())) == 1, 60, "the recovered instance's SEG")
    assert node.wait_idle(30)
    seg = pydicom.dcmread(next(received.iterdir()))
    assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == uid
    assert list((spool / "incoming").iterdir()) == [], "processed, and the stale temporary removed"


def test_results_wait_in_the_outbox_until_the_destination_is_back(tmp_path, node_factory):
    """A PACS outage: results are kept in the outbox and delivered, once each, when it comes back."""
    require_tool("storescu", "storescp")
    spool, pacs_port = tmp_path / "spool", free_port()
    node = node_factory(dest=f"PACS@127.0.0.1:{pacs_port}", backoff_max=1.0)
    files = [
        copy_with(us_file("US1_J2KI.dcm"), tmp_path / "m" / f"{i}.dcm", SOPInstanceUID=f"1.2.3.4.{i}") for i in range(3)
    ]
    for f in files:
        assert pydicom.dcmread(f).file_meta.TransferSyntaxUID == pydicom.uid.JPEG2000
    code, out = _send(node.port, *files, options=("--propose-j2k-lossy",))
    assert code == 0, out
    assert node.wait_idle(60)
    _wait_for(lambda: _status(spool)["destination"]["state"] == "retrying", 30, "a failed delivery attempt")
    assert len(list((spool / "outbox").glob("*.json"))) == 3 and list((spool / "failed").iterdir()) == []
    time.sleep(2)  # down for a while: several retries
    received = tmp_path / "pacs"
    received.mkdir()
    pacs = _start_storescp(received, pacs_port)
    try:
        assert node.wait_delivered(60)
        _wait_for(lambda: len(list(received.iterdir())) == 3, 30, "3 SEGs at the destination")
    finally:
        _stop(pacs)
    status = _status(spool, node)
    assert status["counts"]["delivery_retries"] >= 2 and status["counts"]["delivered_instances"] == 3
    uids = sorted(pydicom.dcmread(p).SOPInstanceUID for p in received.iterdir())
    assert len(set(uids)) == 3, "each result once"


def _pynetdicom_pacs(port: int, status: int = 0x0000, classes=None):
    """A PACS stand-in (pynetdicom) answering every C-STORE with `status`, supporting only `classes`."""
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import SegmentationStorage

    ae = AE(ae_title="PACS")
    for uid in classes or [SegmentationStorage]:
        ae.add_supported_context(uid)
    received = []

    def on_store(event):
        received.append(str(event.request.AffectedSOPInstanceUID))
        return status

    return ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]), received


def test_delivery_failures_reach_the_status_and_fail_their_own_entry(tmp_path, node_factory, caplog):
    """A PACS refusing every result (0xC000), a PACS without a SEG presentation context, and a result file
    damaged in the outbox: each entry concerned goes to failed/ with its reason (not retried for ever), the other
    entries are delivered, no traceback, and `dicom status` exits 1 with the reason."""
    from pynetdicom.sop_class import CTImageStorage

    from tinyusfm_monai.dicom.status import STATUS_WARNING, read_status

    require_tool("storescu")
    files = [
        copy_with(us_file("US1_UNCR.dcm"), tmp_path / "m" / f"{i}.dcm", SOPInstanceUID=f"1.2.3.9.{i}") for i in range(3)
    ]
    cases = [("refusing", 0xC000, None), ("no-seg", 0x0000, [CTImageStorage])]
    for k, (name, code, classes) in enumerate(cases):
        port, spool = free_port(), tmp_path / f"spool-{name}"
        pacs, received = _pynetdicom_pacs(port, code, classes)
        try:
            node = node_factory(dest=f"PACS@127.0.0.1:{port}", spool=str(spool), output=str(tmp_path / name))
            assert _send(node.port, files[k])[0] == 0
            assert node.wait_idle(60) and node.wait_delivered(60)
            node.write_status()
            status, exit_code = read_status(spool)
        finally:
            pacs.shutdown()
        assert exit_code == STATUS_WARNING, status
        assert status["counts"]["delivery_failed"] == 1 and status["destination"]["state"] == "ok"
        reason = "C-STORE status 0xC000" if name == "refusing" else "accepts no presentation context"
        assert any("not delivered" in r and reason in r for r in status["reasons"]), status["reasons"]
        assert len(list((spool / "failed").glob("*.delivery.json"))) == 1
        assert len(received) == (0 if name == "no-seg" else 1)  # refused once, not retried

    # damaged result: two entries wait in the outbox while the PACS is down; one result file is overwritten
    port, spool = free_port(), tmp_path / "spool-damaged"
    node = node_factory(
        dest=f"PACS@127.0.0.1:{port}", spool=str(spool), output=str(tmp_path / "damaged"), backoff_max=1.0
    )
    assert _send(node.port, files[0], files[2])[0] == 0
    assert node.wait_idle(60)
    entries = sorted((spool / "outbox").glob("*.json"))
    assert len(entries) == 2
    victim = tmp_path / "damaged" / json.loads(entries[0].read_text())["files"][0]
    victim.write_bytes(b"not DICOM at all" * 10)
    pacs, received = _pynetdicom_pacs(port)
    try:
        assert node.wait_delivered(60)
    finally:
        pacs.shutdown()
    status = _status(spool, node)
    assert status["counts"]["delivered_instances"] == 1 and status["counts"]["delivery_failed"] == 1
    assert len(received) == 1
    assert "cannot be read" in (spool / "failed" / f"{entries[0].stem}.delivery.json.reason.txt").read_text()
    assert "Traceback" not in caplog.text and "sender error" not in caplog.text


def test_hostile_uids_never_leave_the_output(tmp_path, node_factory):
    """A peer sending '../../../../tmp/x', absolute, over-long or non-digit UIDs: refused with the reason,
    nothing written outside the spool and the output folder."""
    require_tool("storescu")
    root = tmp_path / "deep" / "er"
    spool, output = root / "spool", root / "a" / "b" / "results"
    node = node_factory(spool=str(spool), output=str(output))
    before = set(Path("/tmp").iterdir())
    sent = 0
    for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        for kind, value in HOSTILE_UIDS.items():
            f = make_with_uid(tmp_path / "src" / f"{keyword}-{kind}.dcm", keyword, value)
            code, out = _send(node.port, f)
            assert code != 0, f"{keyword} {kind} must be refused"
            sent += 1
    assert node.wait_idle(30)
    outside = _files_outside(tmp_path, [tmp_path / "src", spool, output])
    assert all(p.is_dir() for p in outside) and len(outside) == 4, outside  # deep, deep/er, .../a, .../a/b
    assert not any(output.rglob("*.dcm")) and not any((spool / "incoming").iterdir())
    assert {p.name for p in set(Path("/tmp").iterdir()) - before if "tinyusfm-escape" in p.name} == set()
    refused = _status(spool, node)["counts"]["refused"]
    assert refused == {"invalid-uid": sent}, refused


def test_refused_by_header_and_failed_by_content(tmp_path):
    """Judged from the header before acknowledging: a CT relabelled as US, a 13000^2 JPEG, a 20000^2 RLE. A
    JPEG whose codestream lies about its size is acknowledged (the header is sound) and fails with the reason.
    The node runs in a process of its own so that its peak memory is its own, not the test runner's."""
    require_tool("storescu", "echoscu")
    spool, port = tmp_path / "spool", free_port()
    options = dict(
        port=port, host="127.0.0.1", spool=str(spool), output=str(tmp_path / "results"), allow="MODALITY,MOD1"
    )
    node = NodeProcess(options, tmp_path / "node.log")
    node.start()
    try:
        _wait_for(lambda: _echo_ok(port), 120, "the node to start")
        ct = make_relabelled_ct(tmp_path / "src" / "ct.dcm")
        code, out = _send(port, ct)
        assert code != 0 and "DataSetDoesNotMatchSOPClass" in out, out  # 0xA900
        code, out = _send(port, make_huge_rle(tmp_path / "src" / "rle.dcm"), options=("--propose-rle",))
        assert code != 0, out
        jpegs = [make_huge_jpeg(tmp_path / "src" / "big.dcm"), make_lying_jpeg(tmp_path / "src" / "lying.dcm")]
        codes = [_send(port, f, options=("--propose-jpeg8",))[0] for f in jpegs]
        assert codes[0] != 0 and codes[1] == 0

        def settled() -> bool:
            status = _status(spool)  # rewritten by the node every second
            return status["queue"]["pending"] == 0 and status["counts"]["failed"] == {"corrupt": 1}

        _wait_for(settled, 60, "the lying JPEG to fail")
        status = _status(spool)
    finally:
        node.stop()
    assert status["counts"]["refused"] == {"not-ultrasound": 1, "too-large": 2}
    (reason,) = list((spool / "failed").glob("*.reason.txt"))
    assert "encoded as 13000 x 13000 pixels but the header says 512 x 512" in reason.read_text()
    assert max(status["peak_rss_mb"], node.peak_kb / 1024) < 1536, (status["peak_rss_mb"], node.peak_kb)


def test_access_control_allowlist_called_ae_cap_and_idle_timeout(tmp_path, node_factory):
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    require_tool("echoscu")
    spool = tmp_path / "spool"
    node = node_factory(allow="MODALITY,MOD2@127.0.0.1,MOD3@10.9.9.9", max_per_peer=2, idle_timeout=2)

    def echo(aet, aec="TINYUSFM"):
        return subprocess.run(["echoscu", "-aet", aet, "-aec", aec, "127.0.0.1", str(node.port)], timeout=20).returncode

    assert echo("MODALITY") == 0 and echo("MOD2") == 0
    assert echo("STRANGER") != 0, "unknown calling AE title"
    assert echo("MOD3") != 0, "allowed AE title from the wrong address"
    assert echo("MODALITY", aec="SOMEONE") != 0, "called AE title must be the node's"

    def associate(aet):
        ae = AE(ae_title=aet)
        ae.add_requested_context(Verification)
        return ae.associate("127.0.0.1", node.port, ae_title="TINYUSFM")

    held = [associate("MODALITY"), associate("MODALITY")]
    assert all(a.is_established for a in held)
    third = associate("MODALITY")
    assert third.is_rejected, "a third association from the same peer is over the cap"
    other = associate("MOD2")
    assert other.is_established, "other peers are not locked out"
    other.release()
    _wait_for(lambda: not any(a.is_established for a in held), 15, "idle associations to be dropped")
    again = associate("MODALITY")
    assert again.is_established
    again.release()
    rejected = _status(spool, node)["counts"]["rejected_associations"]
    assert rejected == {"unknown-peer": 2, "called-ae-title": 1, "peer-limit": 1}


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    require_tool("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert)]
        + ["-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_silent_and_dribbling_clients_cannot_lock_the_node(tmp_path, node_factory, caplog, tls):
    """11 silent + 11 byte-dribbling connections from 22 different addresses (more than max_associations), then
    6 silent ones from one address: a legitimate peer is still served within seconds, every hostile connection
    is closed by the node within its handshake deadline, and each refusal is counted in the status."""
    import ssl

    from hostile_clients import Attacker, echo_seconds, open_attackers

    cert, key = _self_signed(tmp_path) if tls else (None, None)
    options = dict(tls_cert=str(cert), tls_key=str(key)) if tls else {}
    node = node_factory(handshake_timeout=2.0, max_per_address=4, **options)
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert)) if tls else None
    attackers = open_attackers(node.port, silent=11, dribbling=11, tls=tls)
    one_host = [Attacker(node.port, "127.0.0.50") for _ in range(6)]
    try:
        time.sleep(0.5)  # every hostile connection is in place
        served = echo_seconds(node.port, client, attempts_for=20)
        assert served < 3.0, f"legitimate peer served after {served:.1f} s"
        _wait_for(lambda: all(a.closed_after is not None for a in attackers + one_host), 10, "hostile sockets closed")
        assert max(a.closed_after for a in attackers + one_host) < 2.0 + 1.5  # handshake deadline + watchdog tick
        assert echo_seconds(node.port, client, attempts_for=5) < 3.0
    finally:
        for a in attackers + one_host:
            a.close()
    rejected = _status(tmp_path / "spool", node)["counts"]["rejected_associations"]
    assert rejected.get("address-limit") == 2, rejected
    dropped = rejected.get("handshake-timeout", 0) + rejected.get("evicted-unfinished-connection", 0)
    assert dropped == 22 + 4, rejected
    assert "address-limit" in caplog.text and "127.0.0.50" in caplog.text
    assert "shorter than expected" not in caplog.text, "pynetdicom's noise on a drop is filtered (the node logs it)"


def test_full_disk_loses_nothing_answers_a700_and_heals(tmp_path):
    """ENOSPC in receiving, spooling, processing and status writing, on a 4 MiB tmpfs made for the test in a
    private mount namespace (tests/disk_full_scenario.py; `unshare -m` as root, `unshare -rm` otherwise): the
    acknowledged instances wait and are processed by themselves once space returns, a C-STORE during the full
    disk is answered 0xA700 on a live association, nothing fails, no traceback, one log line."""
    require_tool("unshare", "mount")
    script = [sys.executable, str(TESTS / "disk_full_scenario.py"), str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")])}
    runs = []
    for prefix in (["unshare", "-m"], ["unshare", "-rm"]):  # root, else an unprivileged user namespace
        proc = subprocess.run(prefix + script, capture_output=True, text=True, timeout=300, env=env)
        runs.append(proc)
        if proc.returncode == 0:
            break
    lines = [line for line in runs[-1].stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, "the scenario could not run: " + " | ".join(p.stderr[-500:] for p in runs)
    result = json.loads(lines[0][len("RESULT ") :])
    assert result["acknowledged"] == [0, 0, 0] and result["filler_bytes"] > 0
    assert result["refused_while_full"] == 0xA700, "answered Out of Resources, and the association still works"
    full = result["while_full"]
    assert full["disk"]["state"] == "full" and full["failed"] == {} and full["processed"] == 0
    assert full["incoming"] == 3, "the acknowledged instances are still in the spool"
    assert result["idle"] and result["resent"] == 0
    after = result["after"]
    assert after["disk"]["state"] == "ok" and after["failed"] == {} and after["processed"] == 4
    assert after["results"] == 4
    assert result["tracebacks"] == 0 and result["disk_full_log_lines"] == 1


def test_dicom_tls(tmp_path, node_factory, caplog):
    """DICOM TLS with a self-signed certificate made by the openssl CLI; a plain connection gets nothing, and the
    failed handshake is logged and counted."""
    import ssl

    from pynetdicom import AE
    from pynetdicom.sop_class import UltrasoundImageStorage, Verification

    cert, key = _self_signed(tmp_path)
    node = node_factory(tls_cert=str(cert), tls_key=str(key))
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(Verification)
    ae.add_requested_context(UltrasoundImageStorage, pydicom.uid.ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="TINYUSFM", tls_args=(client, "127.0.0.1"))
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    assert assoc.send_c_store(pydicom.dcmread(us_file("US1_UNCR.dcm"))).Status == 0
    assoc.release()
    plain = ae.associate("127.0.0.1", node.port, ae_title="TINYUSFM")
    assert not plain.is_established
    assert node.wait_idle(60)
    status = _status(tmp_path / "spool", node)
    assert status["counts"]["processed"] == 1 and status["node"]["tls"]
    assert status["counts"]["rejected_associations"] == {"tls-handshake-failed": 1}
    assert "tls-handshake-failed: TLS handshake failed" in caplog.text


def test_queue_full_and_resend_never_loses_an_acknowledged_instance(tmp_path, node_factory):
    """The old node unlinked the acknowledged copy when a second sender re-sent the same instance while the
    queue was full. Now: a full queue refuses (0xA700) without touching the spool, and a resend of a pending
    instance is acknowledged as a duplicate; every acknowledged instance is processed exactly once."""
    import threading

    from pynetdicom import AE
    from pynetdicom.sop_class import UltrasoundImageStorage

    gate = threading.Event()
    processed: list[str] = []

    class Slow(ThresholdSegmenter):
        def predict(self, image):
            gate.wait(60)  # hold the worker: the queue stays full
            return super().predict(image)

    node = node_factory(predictor=Slow("busi_segmentation"), queue_size=2)
    node.on_processed = lambda p, status: processed.append((p.name, status))
    node.enqueue_timeout = 0.5
    base = pydicom.dcmread(us_file("US1_UNCR.dcm"))

    def instance(uid: str, value: int = 0):
        ds = base.copy()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
        if value:
            ds.PixelData = bytes([value]) * len(ds.PixelData)
        return ds

    def send(aet: str, ds) -> int:
        ae = AE(ae_title=aet)
        ae.add_requested_context(UltrasoundImageStorage, pydicom.uid.ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", node.port, ae_title="TINYUSFM")
        assert assoc.is_established
        status = assoc.send_c_store(ds).Status
        assoc.release()
        return status

    assert send("MODALITY", instance("1.2.3.1")) == 0  # in the worker's hands (held)
    assert send("MODALITY", instance("1.2.3.2")) == 0  # pending: the queue (2) is now full
    assert send("MOD2", instance("1.2.3.3")) == 0xA700, "full: refused, nothing written"
    assert send("MOD2", instance("1.2.3.2")) == 0, "identical resend of a pending instance: duplicate, acknowledged"
    assert send("MOD2", instance("1.2.3.2", value=7)) == 0xA700, "different content, queue full: refused"
    assert sorted(p.name for p in (tmp_path / "spool" / "incoming").glob("*.dcm")) == ["1.2.3.1.dcm", "1.2.3.2.dcm"]
    gate.set()
    assert node.wait_idle(60)
    assert sorted(processed) == [("1.2.3.1.dcm", "processed"), ("1.2.3.2.dcm", "processed")]
    counts = _status(tmp_path / "spool", node)["counts"]
    assert counts["received"] == 2 and counts["duplicates"] == 1 and counts["refused"] == {"queue-full": 2}
    # after the queue drained: the same UID with different content while another copy is pending is kept too
    gate.clear()
    assert send("MODALITY", instance("1.2.3.9")) == 0
    assert send("MOD2", instance("1.2.3.9", value=5)) == 0
    names = sorted(p.name for p in (tmp_path / "spool" / "incoming").glob("1.2.3.9*.dcm"))
    assert len(names) == 2 and "1.2.3.9.dcm" in names
    gate.set()
    assert node.wait_idle(60)


def _node_process(options: dict, predictor: str, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, str(TESTS / "node_process.py"), json.dumps(options), predictor]
    return subprocess.Popen(cmd, stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)


def test_poison_instance_goes_to_failed_after_max_attempts(tmp_path):
    """An instance that kills the node each time (as the OOM killer would) is attempted max_attempts times,
    then moved to failed/ with the reason: no crash loop. The node then processes the rest."""
    spool, output = tmp_path / "spool", tmp_path / "results"
    (spool / "incoming").mkdir(parents=True)
    poison = copy_with(us_file("US1_UNCR.dcm"), tmp_path / "poison.dcm", SOPInstanceUID="1.2.3.666")
    shutil.copy(poison, spool / "incoming" / "1.2.3.666.dcm")  # acknowledged before a crash
    options = {"port": free_port(), "spool": str(spool), "output": str(output), "max_attempts": 3, "allow": "*"}
    crashes = 0
    for _ in range(6):
        proc = _node_process(options, "crash-on-columns:640", tmp_path / "node.log")
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            break  # it stayed up: the poison instance no longer kills it
        assert proc.returncode == -signal.SIGKILL
        crashes += 1
    else:
        pytest.fail("the node is in a crash loop")
    try:
        assert crashes == 3
        _wait_for(lambda: (spool / "failed" / "1.2.3.666.dcm.reason.txt").exists(), 30, "the poison in failed/")
        reason = (spool / "failed" / "1.2.3.666.dcm.reason.txt").read_text()
        assert "gave up after 3 attempts" in reason
        ok = copy_with(us_file("examples_rgb_color.dcm"), tmp_path / "ok.dcm", SOPInstanceUID="1.2.3.7")
        code, out = _send(options["port"], ok, aet="ANY")
        assert code == 0, out
        _wait_for(lambda: any(output.rglob("SEG_*.dcm")), 60, "the next instance processed")
        assert _status(spool)["counts"]["failed"] == {"poison": 1}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def test_allow_option_and_log_escaping():
    """`--allow 1234` (fire passes an int) is the AE title "1234", a float is a clear error, not a TypeError;
    CR/LF and other control characters of an AE title are escaped in log text."""
    from tinyusfm_monai.dicom.node import Peer, parse_peers, safe_text

    assert parse_peers(1234) == [Peer("1234")]
    assert parse_peers(("A", "B@10.0.0.5")) == [Peer("A"), Peer("B", "10.0.0.5")]
    with pytest.raises(ValueError, match="expected calling AE titles as text"):
        parse_peers(12.5)
    assert safe_text("EVIL\r\nFAKE LOG LINE\x1b[31m") == "EVIL\\x0d\\x0aFAKE LOG LINE\\x1b[31m"
    assert "\n" not in safe_text("A" * 100 + "\n") and safe_text("A" * 100).endswith("...")
