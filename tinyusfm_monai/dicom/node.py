"""`tinyusfm-monai dicom serve`: a DICOM node (pynetdicom) that runs a bundle on received ultrasound instances.

Flow and the reasons behind it:

1. C-STORE arrives (any number of concurrent associations, each in its own pynetdicom thread). The encoded
   dataset is written to `SPOOL/incoming/<SOPInstanceUID>.dcm` (temp file, fsync, rename) *before* the status
   is returned, so an acknowledged instance survives a crash.
2. The path goes into a bounded queue. When the queue stays full for `enqueue_timeout` seconds the node answers
   0xA700 (Out of Resources) and drops its copy: the sender still owns the instance and retries later. That is
   the back-pressure a PACS understands, instead of unbounded memory or disk growth.
3. One worker thread processes the queue (models are not thread-safe and one CPU model saturates the cores):
   read, predict, write SEG/SR (and optional Secondary Capture) under OUTPUT/<StudyInstanceUID>/, then C-STORE
   them to the destination. Success deletes the spool file (or moves it to `done/` with keep_done=True); any
   failure moves it to `failed/` with a `<file>.reason.txt`, and logs without patient identifiers.
4. On start, everything left in `incoming/` (received but not finished before a stop or crash) is queued again.
   Output UIDs are deterministic, so re-processing never creates duplicate results at the destination.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.sop_class import Verification

from tinyusfm_monai.bundle.predictor import DEFAULT_BACKEND, Predictor, load_predictor
from tinyusfm_monai.dicom.privacy import quiet_third_party_output
from tinyusfm_monai.dicom.process import SEG_TYPES, process_file
from tinyusfm_monai.io.dicom import ULTRASOUND_SOP_CLASSES, DicomInputError
from tinyusfm_monai.utils import TEMP_PREFIX, atomic_write

log = logging.getLogger("tinyusfm_monai.dicom.node")

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000


@dataclass(frozen=True)
class Destination:
    """Where results go by C-STORE."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        """'AE_TITLE@host:port'."""
        match = re.fullmatch(r"\s*([^@]{1,16})@([^:]+):(\d+)\s*", text)
        if not match:
            raise ValueError(f"destination {text!r}: expected AE_TITLE@host:port")
        return cls(match.group(1), match.group(2), int(match.group(3)))


class UltrasoundNode:
    """The storage SCP + worker; `start()` returns at once, `stop()` shuts everything down."""

    def __init__(
        self,
        predictor: Predictor,
        ae_title: str = "TINYUSFM",
        port: int = 11112,
        host: str = "0.0.0.0",
        spool_dir: str | os.PathLike = "dicom-spool",
        output_dir: str | os.PathLike = "dicom-results",
        destination: Destination | None = None,
        queue_size: int = 64,
        max_associations: int = 10,
        frames: str | int = "all",
        secondary_capture: bool = False,
        seg_type: str = "binary",
        keep_done: bool = False,
        enqueue_timeout: float = 10.0,
        network_timeout: float = 30.0,
        on_processed: Callable[[Path, str], None] | None = None,
    ) -> None:
        if seg_type not in SEG_TYPES:
            raise ValueError(f"seg_type must be one of {SEG_TYPES}")
        self.predictor = predictor
        self.ae_title = ae_title
        self.host, self.port = host, int(port)
        self.spool = Path(spool_dir)
        self.incoming, self.failed, self.done = self.spool / "incoming", self.spool / "failed", self.spool / "done"
        self.output_dir = Path(output_dir)
        self.destination = destination
        self.queue: queue.Queue[Path | None] = queue.Queue(maxsize=max(1, int(queue_size)))
        self.max_associations = max_associations
        self.frames, self.secondary_capture, self.seg_type = frames, secondary_capture, seg_type
        self.keep_done = keep_done
        self.enqueue_timeout = enqueue_timeout
        self.network_timeout = network_timeout
        self.on_processed = on_processed
        self._server = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    # ---- lifecycle ---------------------------------------------------------------------------------------

    def _make_ae(self) -> AE:
        ae = AE(ae_title=self.ae_title)
        ae.maximum_associations = self.max_associations
        ae.network_timeout = self.network_timeout
        ae.add_supported_context(Verification)
        for uid in ULTRASOUND_SOP_CLASSES:
            # every syntax is accepted for storage; one we cannot decode ends in failed/ with the reason
            ae.add_supported_context(uid, ALL_TRANSFER_SYNTAXES)
        return ae

    def start(self) -> UltrasoundNode:
        quiet_third_party_output()
        for d in (self.incoming, self.failed, self.output_dir):
            d.mkdir(parents=True, exist_ok=True)
        if self.keep_done:
            self.done.mkdir(parents=True, exist_ok=True)
        leftovers = sorted(
            (p for p in self.incoming.glob("*.dcm") if not p.name.startswith(TEMP_PREFIX)),
            key=lambda p: p.stat().st_mtime,
        )
        if leftovers:
            log.info("recovering %d unprocessed instance(s) from the spool", len(leftovers))
        worker = threading.Thread(target=self._work, name="tinyusfm-dicom-worker", daemon=True)
        feeder = threading.Thread(target=self._feed, args=(leftovers,), name="tinyusfm-dicom-recover", daemon=True)
        self._threads = [worker, feeder]
        worker.start()
        feeder.start()
        handlers = [(evt.EVT_C_ECHO, self._on_echo), (evt.EVT_C_STORE, self._on_store)]
        self._server = self._make_ae().start_server((self.host, self.port), block=False, evt_handlers=handlers)
        log.info("listening as %s on %s:%d", self.ae_title, self.host, self.port)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop accepting, let the worker finish the instance in hand; what is still queued stays in the spool."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        try:
            self.queue.put_nowait(None)
        except queue.Full:
            pass
        for t in self._threads:
            t.join(timeout)
        log.info("stopped")

    def wait_idle(self, timeout: float) -> bool:
        """True once the queue is drained and processed (tests, and a graceful shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.queue.unfinished_tasks == 0:
                return True
            time.sleep(0.05)
        return False

    # ---- SCP handlers ------------------------------------------------------------------------------------

    def _on_echo(self, event: evt.Event) -> int:
        return STATUS_SUCCESS

    def _on_store(self, event: evt.Event) -> int:
        sop_uid = str(event.request.AffectedSOPInstanceUID or "")
        if not _UID.match(sop_uid) or len(sop_uid) > 64:
            log.warning("C-STORE refused: invalid Affected SOP Instance UID")
            return STATUS_CANNOT_UNDERSTAND
        path = self.incoming / f"{sop_uid}.dcm"
        try:
            atomic_write(path, event.encoded_dataset(include_meta=True))
        except Exception as exc:
            log.error("C-STORE SOP %s: cannot persist (%s)", sop_uid, type(exc).__name__)
            return STATUS_OUT_OF_RESOURCES
        try:
            self.queue.put(path, timeout=self.enqueue_timeout)
        except queue.Full:
            path.unlink(missing_ok=True)
            log.warning("C-STORE SOP %s refused: processing queue full", sop_uid)
            return STATUS_OUT_OF_RESOURCES
        log.info("received SOP %s", sop_uid)
        return STATUS_SUCCESS

    # ---- worker ------------------------------------------------------------------------------------------

    def _feed(self, paths: list[Path]) -> None:
        for path in paths:
            while not self._stopping.is_set():
                try:
                    self.queue.put(path, timeout=0.5)
                    break
                except queue.Full:
                    continue

    def _work(self) -> None:
        while True:
            try:
                path = self.queue.get(timeout=0.2)
            except queue.Empty:
                if self._stopping.is_set():
                    return
                continue
            try:
                if path is not None and not self._stopping.is_set():  # when stopping it stays in incoming/
                    self._process(path)
            except Exception:  # never let the worker die
                log.exception("worker error on %s", path.name if path else "?")
            finally:
                self.queue.task_done()

    def _process(self, path: Path) -> None:
        if not path.exists():
            return  # a duplicate queue entry already handled
        name = path.name
        try:
            result = process_file(
                self.predictor, path, self.output_dir, self.frames, self.secondary_capture, self.seg_type
            )
        except DicomInputError as exc:
            self._fail(path, f"skipped: {exc.reason}: {exc.detail}")
            log.warning("SOP %s not processed: %s", path.stem, exc.reason)
            return
        except Exception as exc:
            self._fail(path, f"processing error: {type(exc).__name__}")
            log.error("SOP %s processing failed: %s", path.stem, type(exc).__name__)
            return
        if self.destination is not None:
            failure = self.send(result.outputs)
            if failure:
                self._fail(path, f"send failed: {failure}")
                log.error("SOP %s results not delivered: %s (results kept in %s)", path.stem, failure, self.output_dir)
                return
        if self.keep_done:
            os.replace(path, self.done / name)
        else:
            path.unlink(missing_ok=True)
        log.info(
            "SOP %s processed: %d object(s)%s",
            path.stem,
            len(result.outputs),
            " sent" if self.destination is not None else "",
        )
        if self.on_processed is not None:
            self.on_processed(path, "processed")

    def _fail(self, path: Path, reason: str) -> None:
        target = self.failed / path.name
        os.replace(path, target)
        target.with_name(target.name + ".reason.txt").write_text(reason + "\n")
        if self.on_processed is not None:
            self.on_processed(path, "failed")

    def send(self, files: list[Path]) -> str:
        """C-STORE `files` to the destination; returns '' on success or a short reason (no identifiers)."""
        if not files:
            return ""
        dest = self.destination
        assert dest is not None
        datasets = [dcmread(f) for f in files]
        ae = AE(ae_title=self.ae_title)
        ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = self.network_timeout
        # only what we send: Label Map SEG (66.7) is not among pynetdicom's default storage contexts
        for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
            ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title)
        if not assoc.is_established:
            return f"association with {dest.ae_title}@{dest.host}:{dest.port} not established"
        try:
            for ds in datasets:
                status = assoc.send_c_store(ds)
                code = getattr(status, "Status", None)
                if code is None:
                    return "no C-STORE response (timeout or aborted)"
                if code != 0 and not (0xB000 <= code <= 0xBFFF):  # warnings count as stored
                    return f"C-STORE status 0x{code:04X}"
        finally:
            if assoc.is_established:
                assoc.release()
        return ""


def serve(
    bundle: str,
    ae_title: str = "TINYUSFM",
    port: int = 11112,
    dest: str | None = None,
    host: str = "0.0.0.0",
    spool: str = "dicom-spool",
    output: str = "dicom-results",
    queue_size: int = 64,
    max_associations: int = 10,
    frames: str = "all",
    secondary_capture: bool = False,
    seg_type: str = "binary",
    keep_done: bool = False,
    predictor: Predictor | None = None,
    block: bool = True,
    backend: str = DEFAULT_BACKEND,
) -> UltrasoundNode | None:
    """Run the DICOM node for bundle `bundle` until SIGINT/SIGTERM.

    dest: AE_TITLE@host:port of the node that receives the results (PACS); none -> results stay in `output`.
    spool: where received instances wait; survives restarts. frames: all | middle | first | every:N.
    backend: auto (OpenVINO on CPU, PyTorch on CUDA) | pytorch | onnx | onnx-int8 | openvino | openvino-bf16 |
    openvino-int8 (the bundle's overlays; OpenVINO falls back to PyTorch with one log line when not installed).
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model = predictor if predictor is not None else load_predictor(bundle, backend=backend)
    node = UltrasoundNode(
        model,
        ae_title=ae_title,
        port=port,
        host=host,
        spool_dir=spool,
        output_dir=output,
        destination=Destination.parse(dest) if dest else None,
        queue_size=queue_size,
        max_associations=max_associations,
        frames=frames,
        secondary_capture=secondary_capture,
        seg_type=seg_type,
        keep_done=keep_done,
    ).start()
    if not block:
        return node
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    finally:
        node.stop()
    return None
