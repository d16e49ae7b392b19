"""`tinyusfm-monai dicom serve`: a DICOM node (pynetdicom) that runs a bundle on received ultrasound instances.

What it guarantees, and how (docs/hospital_it.md says it for hospital IT):

1. **Who may talk to it.** Associations are checked when requested (`_on_requested`): the called AE title must
   be the node's, the calling AE title (and optionally the address) must be on the allowlist, and no peer may
   hold more than `max_per_peer` associations, nor all of them more than `max_associations`; anything else is
   rejected with the standard A-ASSOCIATE-RJ reason, a count and a log line. Before that, `dicom/admission.py`
   bounds every connection in time and number whatever it sends or withholds (TLS handshake off the accept
   loop, a total deadline to the A-ASSOCIATE-RQ and per PDU, `max_per_address`, the oldest unfinished
   connection dropped for a newcomer), so silent or dribbling sockets cannot lock others out. Idle associations
   are dropped after `idle_timeout` seconds. DICOM TLS is available.
2. **What it accepts.** A C-STORE is received straight to a temporary file (pynetdicom's chunked receive: the
   dataset is never held in memory), then its header is judged before anything is acknowledged: ultrasound
   SOP class *and* Modality US, valid SOP/Series/Study Instance UIDs (they become file names), within the size
   limits. A refused instance gets an error status with the reason (the sender keeps it) and is counted.
3. **Acknowledged means on disk.** An accepted instance is moved into `SPOOL/incoming/` (fsync, atomic rename)
   *before* the success status goes back. An acknowledged file is never deleted or overwritten by a receive:
   when the same SOP Instance UID arrives while it is still pending, identical bytes are acknowledged as a
   duplicate, different bytes are spooled next to it under a content-hash name. When too many instances are
   pending the node answers 0xA700 (Out of Resources) *without writing anything*, and the sender retries. A full
   disk is waited out (`dicom/diskfull.py`): 0xA700 to senders, acknowledged instances kept and retried.
4. **Processed or failed with a reason, never looping.** One worker processes the spool in arrival order. The
   attempt counter of each instance (`SPOOL/attempts/`) is raised *before* processing, so an instance that
   kills the process (out of memory, decoder crash) is moved to `failed/` with its reason after `max_attempts`
   starts instead of crashing the node forever. Frames are decoded and predicted one at a time.
5. **Delivered exactly once after the destination comes back.** Results are written under `--output`, then an
   entry naming them goes to `SPOOL/outbox/` (atomic) before the input is removed. A sender thread delivers the
   outbox by C-STORE, removing each object from its entry as the destination confirms it; when the
   destination is down or busy it retries with exponential backoff (2 s doubling to 5 min), for ever; an
   object the destination refuses with an error status, or takes no presentation context for, and a damaged
   result file move *their own* entry to `failed/` with the reason. Output UIDs are deterministic, so the one
   case where an object can be sent twice (a crash between the destination's storing it and the outbox update:
   the destination's response time) gives the PACS the same instance again, not a duplicate.
6. **Observable.** `SPOOL/status.json` (atomic, updated every second): queue depths, counts per outcome and
   reason, destination state, last error, peak memory; `tinyusfm-monai dicom status --spool SPOOL` prints it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import re
import shutil
import signal
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, _config, evt
from pynetdicom.sop_class import Verification

from tinyusfm_monai.bundle.parser import DEFAULT_BACKEND
from tinyusfm_monai.bundle.predictor import Predictor, load_predictor
from tinyusfm_monai.dicom.admission import ConnectionGuard, start_guarded_server
from tinyusfm_monai.dicom.dicomweb import DicomWebDestination, deliver_entries
from tinyusfm_monai.dicom.diskfull import is_disk_full, receive_failed, tolerate_full_disk_on_receive
from tinyusfm_monai.dicom.privacy import quiet_third_party_output
from tinyusfm_monai.dicom.process import SEG_TYPES, process_file
from tinyusfm_monai.io.dicom import (
    CORRUPT,
    DEFAULT_LIMITS,
    INVALID_UID,
    NOT_ULTRASOUND,
    ULTRASOUND_SOP_CLASSES,
    DicomInputError,
    InputLimits,
    check_identity,
    check_limits,
    check_ultrasound,
    is_valid_uid,
    read_dataset,
)
from tinyusfm_monai.utils import TEMP_PREFIX, atomic_write, peak_rss_mib, remove_stale_temporaries
from tinyusfm_monai.utils.atomic import DEFAULT_MODE, fsync_dir

log = logging.getLogger("tinyusfm_monai.dicom.node")

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_DATASET_MISMATCH = 0xA900  # "Data Set does not match SOP Class": e.g. Modality CT in a US SOP class
STATUS_CANNOT_UNDERSTAND = 0xC000
#: A-ASSOCIATE-RJ (result, source, diagnostic) per rejection reason (PS3.8 9.3.4)
REJECT_CALLING_AE = (0x01, 0x01, 0x03)  # permanent, service user, calling AE title not recognised
REJECT_CALLED_AE = (0x01, 0x01, 0x07)  # permanent, service user, called AE title not recognised
REJECT_PEER_LIMIT = (0x02, 0x03, 0x02)  # transient, service provider (presentation), local limit exceeded
DISK_RETRY_S = 5.0  # how often the worker tries again while the disk is full
REJECT_LOG_INTERVAL_S = 10.0  # one log line per (address, reason) at most this often; every rejection is counted
BACKOFF_START_S = 2.0
BACKOFF_MAX_S = 300.0
SEND_BATCH = 16  # outbox entries per association


@dataclass(frozen=True)
class Destination:
    """Where results go by C-STORE."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination | DicomWebDestination:
        """'AE_TITLE@host:port' (C-STORE), or a DICOMweb service root 'http(s)://...' (STOW-RS, `dicomweb.py`)."""
        if re.match(r"\s*https?://", text, re.IGNORECASE):
            return DicomWebDestination.parse(text)
        match = re.fullmatch(r"\s*([^@]{1,16})@([^:]+):(\d+)\s*", text)
        if not match:
            raise ValueError(f"destination {text!r}: expected AE_TITLE@host:port or http(s)://DICOMweb-root")
        return cls(match.group(1), match.group(2), int(match.group(3)))

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class Peer:
    """One allowlist entry: a calling AE title, optionally bound to an address ('AE' or 'AE@address')."""

    ae_title: str
    address: str | None = None

    @classmethod
    def parse(cls, text: str) -> Peer:
        ae, _, address = str(text).strip().partition("@")
        if not ae or len(ae) > 16:
            raise ValueError(f"allowed peer {text!r}: expected AE_TITLE or AE_TITLE@address (AE title 1-16 chars)")
        return cls(ae, address or None)

    def admits(self, ae_title: str, address: str) -> bool:
        return self.ae_title == ae_title and (self.address is None or self.address == address)


def parse_peers(allow: str | Sequence[str] | None) -> list[Peer] | None:
    """'A,B@10.0.0.5' (or a list) -> peers; None or '*' -> None (any calling AE title)."""
    if allow is None:
        return None
    if isinstance(allow, (bool, float)) or not isinstance(allow, (str, int, Sequence)):
        raise ValueError(
            f"--allow {allow!r}: expected calling AE titles as text, e.g. --allow 'MODALITY,US1@10.0.0.5' "
            "(quote an AE title that the command line would read as a number)"
        )
    items = [str(allow)] if isinstance(allow, (str, int)) else list(allow)
    texts = [t.strip() for item in items for t in str(item).split(",") if t.strip()]
    if texts == ["*"]:
        return None
    return [Peer.parse(t) for t in texts]


def server_tls_context(cert: str, key: str, ca: str | None = None) -> ssl.SSLContext:
    """TLS 1.2+ server context (DICOM TLS, PS3.15 B.1); with `ca`, clients must present a certificate it signed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if ca:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(ca)
    return context


def safe_text(text: object, limit: int = 64) -> str:
    """`text` fit for one log line: control characters (CR, LF, ESC...) and anything outside printable ASCII
    escaped as \\xNN, cut at `limit` characters. AE titles and addresses come from the network: a CR/LF in one
    must not forge a log line."""
    out = "".join(c if " " <= c <= "~" and c != "\\" else f"\\x{ord(c):02x}" for c in str(text)[:limit])
    return out + ("..." if len(str(text)) > limit else "")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class UltrasoundNode:
    """The storage SCP + worker + sender; `start()` returns at once, `stop()` shuts everything down."""

    def __init__(
        self,
        predictor: Predictor,
        ae_title: str = "TINYUSFM",
        port: int = 11112,
        host: str = "127.0.0.1",
        spool_dir: str | os.PathLike = "dicom-spool",
        output_dir: str | os.PathLike = "dicom-results",
        destination: Destination | DicomWebDestination | None = None,
        queue_size: int = 64,
        max_associations: int = 10,
        frames: str | int = "all",
        secondary_capture: bool = False,
        seg_type: str = "binary",
        keep_done: bool = False,
        enqueue_timeout: float = 10.0,
        network_timeout: float = 30.0,
        on_processed: Callable[[Path, str], None] | None = None,
        allowed_peers: Sequence[Peer] | None = None,
        max_per_peer: int = 4,
        limits: InputLimits | None = None,
        max_attempts: int = 3,
        tls_context: ssl.SSLContext | None = None,
        status_interval: float = 1.0,
        backoff_max: float = BACKOFF_MAX_S,
        handshake_timeout: float = 10.0,
        max_per_address: int = 4,
        max_connecting: int | None = None,
        max_association_s: float | None = 3600.0,
    ) -> None:
        if seg_type not in SEG_TYPES:
            raise ValueError(f"seg_type must be one of {SEG_TYPES}")
        if not 1 <= len(ae_title.strip()) <= 16:
            raise ValueError("ae_title must be 1-16 characters")
        self.predictor = predictor
        self.ae_title = ae_title.strip()
        self.host, self.port = host, int(port)
        self.spool = Path(spool_dir)
        self.incoming, self.failed, self.done = self.spool / "incoming", self.spool / "failed", self.spool / "done"
        self.attempts_dir, self.outbox = self.spool / "attempts", self.spool / "outbox"
        self.status_path = self.spool / "status.json"
        self.output_dir = Path(output_dir)
        self.destination = destination
        self.queue_size = max(1, int(queue_size))
        self.queue: queue.Queue[Path | None] = queue.Queue()
        self.max_associations = max_associations
        self.frames, self.secondary_capture, self.seg_type = frames, secondary_capture, seg_type
        self.keep_done = keep_done
        self.enqueue_timeout = enqueue_timeout
        self.network_timeout = network_timeout
        self.on_processed = on_processed
        self.allowed_peers = list(allowed_peers) if allowed_peers is not None else None
        self.max_per_peer = max(1, int(max_per_peer))
        self.limits = limits or DEFAULT_LIMITS
        self.max_attempts = max(1, int(max_attempts))
        self.tls_context = tls_context
        self.status_interval = status_interval
        self.backoff_max = backoff_max
        self.handshake_timeout = float(handshake_timeout)
        self.max_per_address = max(1, int(max_per_address))
        self.max_connecting = max(1, int(max_connecting or max_associations))
        self.max_association_s = max_association_s
        self._guard: ConnectionGuard | None = None
        self._reject_logged: dict[tuple[str, str], tuple[float, int]] = {}
        self._server = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._outbox_ready = threading.Event()
        self._lock = threading.Lock()  # spool names, pending set, counters
        self._space = threading.Condition(self._lock)
        self._pending: set[str] = set()
        self._lock_fd: int | None = None
        self._started = ""
        self.counts: dict[str, object] = {
            "received": 0,
            "duplicates": 0,
            "refused": {},
            "rejected_associations": {},
            "processed": 0,
            "failed": {},
            "delivered_instances": 0,
            "delivered_objects": 0,
            "delivery_failed": 0,
            "delivery_retries": 0,
        }
        self.destination_state = {"state": "none" if destination is None else "ok", "consecutive_failures": 0}
        self._next_send = 0.0
        self.last_error: dict[str, str] | None = None
        self.disk_state: dict[str, object] = {"state": "ok"}

    # ---- lifecycle ---------------------------------------------------------------------------------------

    def _make_ae(self) -> AE:
        ae = AE(ae_title=self.ae_title)
        # the limit on associations is the node's own (`_on_requested`: only connections that sent an
        # A-ASSOCIATE-RQ count); pynetdicom's counts silent and just-dropped connections too, so it is set well
        # above what the guard admits, a backstop only (its rejections are still counted: `_on_rejected`)
        ae.maximum_associations = 4 * (self.max_associations + self.max_connecting)
        # idle peers are dropped: no held association can lock the others out for longer than this
        ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = self.network_timeout
        ae.require_called_aet = True
        ae.add_supported_context(Verification)
        for uid in ULTRASOUND_SOP_CLASSES:
            # every syntax is accepted for storage; one we cannot decode is refused with the reason
            ae.add_supported_context(uid, ALL_TRANSFER_SYNTAXES)
        return ae

    def start(self) -> UltrasoundNode:
        quiet_third_party_output()
        # receive datasets straight to a file: nothing of a large instance is held in memory
        _config.STORE_RECV_CHUNKED_DATASET = True
        tolerate_full_disk_on_receive()  # a full disk during a receive is answered 0xA700, not an abort
        for d in (self.incoming, self.failed, self.output_dir, self.attempts_dir, self.outbox):
            d.mkdir(parents=True, exist_ok=True)
        if self.keep_done:
            self.done.mkdir(parents=True, exist_ok=True)
        self._take_spool_lock()
        self._started = _now()
        self._clean_temporaries()
        leftovers = self._spooled()
        with self._lock:
            self._pending.update(p.name for p in leftovers)
        if leftovers:
            log.info("recovering %d unprocessed instance(s) from the spool", len(leftovers))
        for path in leftovers:
            self.queue.put(path)
        outbox = len(self._outbox_entries())
        if outbox:
            log.info("%d result set(s) waiting in the outbox for delivery", outbox)
        self._threads = [threading.Thread(target=self._work, name="tinyusfm-dicom-worker", daemon=True)]
        if self.destination is not None:
            self._threads.append(threading.Thread(target=self._send_loop, name="tinyusfm-dicom-sender", daemon=True))
        self._threads.append(threading.Thread(target=self._status_loop, name="tinyusfm-dicom-status", daemon=True))
        for t in self._threads:
            t.start()
        handlers = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
        ]
        self._guard = ConnectionGuard(
            self.handshake_timeout,
            self.max_per_address,
            self.max_connecting,
            self._reject_connection,
            max_lifetime=self.max_association_s,
        ).start()
        self._server = start_guarded_server(
            self._make_ae(),
            (self.host, self.port),
            self._guard,
            self._reject_connection,
            handlers,
            ssl_context=self.tls_context,
        )
        access = (
            "any calling AE title"
            if self.allowed_peers is None
            else ", ".join(p.ae_title + (f"@{p.address}" if p.address else "") for p in self.allowed_peers)
        )
        log.info(
            "listening as %s on %s:%d (TLS %s); calling AE titles allowed: %s; at most %d association(s) per peer, "
            "%d connection(s) per address, %d association(s) in all; association request due %g s after connecting",
            self.ae_title,
            self.host,
            self.port,
            "on" if self.tls_context else "off",
            access,
            self.max_per_peer,
            self.max_per_address,
            self.max_associations,
            self.handshake_timeout,
        )
        if self.allowed_peers is None:
            log.warning("no allowlist (--allow): any calling AE title is accepted; set --allow for production use")
        if self.host in ("0.0.0.0", "::", ""):
            log.warning("bound to all network interfaces (%s)", self.host or "all")
        self.write_status()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop accepting, let the worker finish the instance in hand; what is still queued stays in the spool."""
        self._stopping.set()
        self._outbox_ready.set()
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._guard is not None:
            self._guard.stop()
        self.queue.put(None)
        for t in self._threads:
            t.join(timeout)
        self.write_status(state="stopped")
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        log.info("stopped")

    def _take_spool_lock(self) -> None:
        """One node per spool: a second one would process and deliver the same instances twice."""
        import fcntl

        fd = os.open(self.spool / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise RuntimeError(f"spool {self.spool} is in use by another node") from None
        self._lock_fd = fd

    def _clean_temporaries(self) -> None:
        """With the spool lock held no write is in progress in the spool: every temporary file there is a
        leftover of a killed node (never acknowledged). Results folders may be shared with a batch run, so
        only temporaries older than an hour are removed there."""
        removed = []
        for folder in (self.incoming, self.outbox, self.attempts_dir, self.failed, self.spool):
            removed += remove_stale_temporaries(folder, older_than_s=0)
        receiving = self.spool / "receiving"  # pynetdicom's receive files when `serve` points it here
        if receiving.is_dir():
            for partial in receiving.glob("tmp*"):
                partial.unlink(missing_ok=True)
                removed.append(partial)
        removed += remove_stale_temporaries(self.output_dir, recursive=True)
        if removed:
            log.info("removed %d stale temporary file(s) left by an interrupted run", len(removed))

    def _spooled(self) -> list[Path]:
        files = [p for p in self.incoming.glob("*.dcm") if not p.name.startswith(TEMP_PREFIX)]
        return sorted(files, key=lambda p: (p.stat().st_mtime, p.name))

    def wait_idle(self, timeout: float) -> bool:
        """True once every spooled instance is processed or failed (tests, and a graceful shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._pending and self.queue.unfinished_tasks == 0:
                    return True
            time.sleep(0.05)
        return False

    def _outbox_entries(self) -> list[Path]:
        """The outbox's entries, never the temporary file of one being written (pathlib's glob matches dot files):
        sending it and then the renamed entry would deliver the same results twice."""
        return [e for e in self.outbox.glob("*.json") if not e.name.startswith(TEMP_PREFIX)]

    def wait_delivered(self, timeout: float) -> bool:
        """True once the outbox is empty (every result delivered or failed with a reason)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._outbox_entries():
                return True
            self._outbox_ready.set()
            time.sleep(0.05)
        return False

    # ---- counters, errors, status ------------------------------------------------------------------------

    def _count(self, key: str, reason: str | None = None, n: int = 1) -> None:
        with self._lock:
            if reason is None:
                self.counts[key] = int(self.counts[key]) + n  # type: ignore[call-overload]
            else:
                bucket = self.counts[key]
                assert isinstance(bucket, dict)
                bucket[reason] = bucket.get(reason, 0) + n

    def _error(self, message: str) -> None:
        with self._lock:
            self.last_error = {"time": _now(), "message": message}

    def _disk_full(self, where: str) -> None:
        """Logged once per episode (the state goes to status.json): a full disk is waited out, never a failure."""
        with self._lock:
            first = self.disk_state.get("state") != "full"
            if first:
                self.disk_state = {"state": "full", "since": _now(), "where": where, "_t0": time.monotonic()}
        if first:
            message = (
                f"disk full ({where}): acknowledged instances wait in the spool, new C-STOREs are answered 0xA700 "
                f"(the sender keeps and retries them); resuming by itself when space returns"
            )
            log.error(message)
            self._error(message)

    def _space_back(self) -> None:
        with self._lock:
            if self.disk_state.get("state") != "full":
                return
            seconds = time.monotonic() - float(self.disk_state.get("_t0", time.monotonic()))  # type: ignore[arg-type]
            self.disk_state = {"state": "ok", "last_full": f"{seconds:.0f} s until {_now()}"}
        log.info("disk space is back after %.0f s: processing resumed", seconds)

    def status(self, state: str = "running") -> dict:
        """The node's state as written to status.json."""
        with self._lock:
            counts = json.loads(json.dumps(self.counts))
            pending = len(self._pending)
            destination = dict(self.destination_state)
            last_error = dict(self.last_error) if self.last_error else None
            next_send = self._next_send
            disk = {k: v for k, v in self.disk_state.items() if not k.startswith("_")}
        outbox = [_mtime_and_name(p)[0] for p in self._outbox_entries()]
        outbox = [t for t in outbox if t]
        if self.destination is not None:
            destination["ae"] = str(self.destination)
            destination["next_attempt_in_s"] = round(max(0.0, next_send - time.monotonic()), 1)
        return {
            "state": state,
            "pid": os.getpid(),
            "started": self._started,
            "updated": _now(),
            "updated_epoch": time.time(),
            "status_interval_s": self.status_interval,
            "node": {
                "ae_title": self.ae_title,
                "host": self.host,
                "port": self.port,
                "tls": self.tls_context is not None,
                "allowed_peers": "any"
                if self.allowed_peers is None
                else [p.ae_title + (f"@{p.address}" if p.address else "") for p in self.allowed_peers],
                "max_per_peer": self.max_per_peer,
                "max_per_address": self.max_per_address,
                "max_associations": self.max_associations,
                "handshake_timeout_s": self.handshake_timeout,
                "idle_timeout_s": self.network_timeout,
                "connections": self._guard.counts() if self._guard is not None else {},
            },
            "limits": {
                "max_frame_pixels": self.limits.max_frame_pixels,
                "max_frames": self.limits.max_frames,
                "max_file_bytes": self.limits.max_file_bytes,
                "max_attempts": self.max_attempts,
                "queue_size": self.queue_size,
            },
            "queue": {
                "pending": pending,
                "outbox": len(outbox),
                "outbox_oldest_s": round(time.time() - min(outbox), 1) if outbox else 0.0,
                "failed": sum(1 for _ in self.failed.glob("*.reason.txt")),
            },
            "counts": counts,
            "destination": destination,
            "disk": disk,
            "last_error": last_error,
            "peak_rss_mb": round(peak_rss_mib(), 1),
        }

    def write_status(self, state: str = "running") -> None:
        try:
            atomic_write(self.status_path, json.dumps(self.status(state), indent=2), durable=False)
        except OSError as exc:  # a full disk must not stop the node; the log says it (once per episode)
            if is_disk_full(exc):
                self._disk_full(f"writing {self.status_path.name}, which goes stale until space returns")
            else:
                log.error("cannot write %s: %s", self.status_path.name, exc.strerror)

    def _status_loop(self) -> None:
        while not self._stopping.wait(self.status_interval):
            self.write_status()

    # ---- association control -----------------------------------------------------------------------------

    def _on_requested(self, event: evt.Event) -> None:
        """Reject, before negotiation, peers that are not on the allowlist, a wrong called AE title, a peer that
        already holds `max_per_peer` associations, and any request beyond `max_associations`."""
        assoc = event.assoc
        # the A-ASSOCIATE-RQ is in: from here the ACSE timeout is the idle timeout again (the guard shortened it)
        assoc.acse_timeout = self.network_timeout
        request = assoc.requestor.primitive
        calling = str(request.calling_ae_title).strip()
        called = str(request.called_ae_title).strip()
        address = assoc.requestor.address
        reason, rsd = "", ()
        if called != self.ae_title:
            reason, rsd = "called-ae-title", REJECT_CALLED_AE
        elif self.allowed_peers is not None and not any(p.admits(calling, address) for p in self.allowed_peers):
            reason, rsd = "unknown-peer", REJECT_CALLING_AE
        else:
            others = [
                other
                for other in list(assoc.ae.active_associations)
                if other is not assoc
                and other.is_acceptor
                and other.requestor.primitive is not None
                and not (other.is_rejected or other.is_aborted or other.is_released)
            ]
            held = sum(
                1
                for other in others
                if other.is_established
                and str(other.requestor.ae_title).strip() == calling
                and other.requestor.address == address
            )
            if held >= self.max_per_peer:
                reason, rsd = "peer-limit", REJECT_PEER_LIMIT
            elif len(others) >= self.max_associations:
                reason, rsd = "association-limit", REJECT_PEER_LIMIT
        if not reason:
            return
        self._reject_connection(
            address, reason, f"association from {safe_text(calling) or '?'} (called {safe_text(called) or '?'})"
        )
        assoc.acse.send_reject(*rsd)
        assoc.kill()

    def _on_rejected(self, event: evt.Event) -> None:
        """pynetdicom's own A-ASSOCIATE-RJ (its global association limit): counted and logged as the node's."""
        self._reject_connection(event.assoc.requestor.address, "association-limit", "rejected by pynetdicom's limit")

    def _reject_connection(self, address: str, reason: str, detail: str) -> None:
        """Every refused or dropped connection: counted under `rejected_associations`, logged once per
        (address, reason) every REJECT_LOG_INTERVAL_S with the number of repeats (a flood cannot flood the log)."""
        self._count("rejected_associations", reason)
        now = time.monotonic()
        key = (str(address), reason)
        with self._lock:
            last, suppressed = self._reject_logged.get(key, (-REJECT_LOG_INTERVAL_S, 0))
            due = now - last >= REJECT_LOG_INTERVAL_S
            self._reject_logged[key] = (now, 0) if due else (last, suppressed + 1)
            if len(self._reject_logged) > 4096:  # addresses seen long ago
                self._reject_logged = {k: v for k, v in self._reject_logged.items() if now - v[0] < 60}
        message = f"connection from {safe_text(address)} refused or dropped: {reason}: {safe_text(detail, 200)}"
        if due:
            more = f" (and {suppressed} more like it in the last {REJECT_LOG_INTERVAL_S:g} s)" if suppressed else ""
            log.warning(message + more)
        self._error(message)

    # ---- SCP handlers ------------------------------------------------------------------------------------

    def _on_echo(self, event: evt.Event) -> int:
        return STATUS_SUCCESS

    def _refuse(self, event: evt.Event, status: int, reason: str, detail: str, sop: str = "") -> Dataset:
        peer = f"{safe_text(str(event.assoc.requestor.ae_title).strip())}@{safe_text(event.assoc.requestor.address)}"
        self._count("refused", reason)
        message = f"C-STORE from {peer} refused{f' (SOP {sop})' if sop else ''}: {reason}: {detail}"
        log.warning(message)
        self._error(message)
        rsp = Dataset()
        rsp.Status = status
        rsp.ErrorComment = f"{reason}: {detail}"[:64]
        return rsp

    def _on_store(self, event: evt.Event) -> int | Dataset:
        try:
            return self._store(event)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            return self._refuse_disk_full(event, "receiving")

    def _refuse_disk_full(self, event: evt.Event, where: str) -> Dataset:
        """0xA700: the sender keeps the instance and sends it again later (counted, logged once per episode)."""
        self._count("refused", "disk-full")
        self._disk_full(where)
        rsp = Dataset()
        rsp.Status = STATUS_OUT_OF_RESOURCES
        rsp.ErrorComment = "disk full: send again later"
        return rsp

    def _store(self, event: evt.Event) -> int | Dataset:
        sop_uid = str(event.request.AffectedSOPInstanceUID or "")
        chunked = getattr(event.request, "_dataset_path", None)  # pynetdicom's receive file (STORE_RECV_CHUNKED)
        if chunked is not None and receive_failed(chunked[0] if isinstance(chunked, tuple) else chunked):
            return self._refuse_disk_full(event, "receiving")
        if not is_valid_uid(sop_uid):
            return self._refuse(event, STATUS_CANNOT_UNDERSTAND, INVALID_UID, "Affected SOP Instance UID")
        received = self._received_file(event)
        try:
            try:
                self._admit(received, sop_uid)
            except DicomInputError as exc:
                status = STATUS_DATASET_MISMATCH if exc.reason == NOT_ULTRASOUND else STATUS_CANNOT_UNDERSTAND
                return self._refuse(event, status, exc.reason, exc.detail, sop_uid)
            if self._is_pending_duplicate(received, sop_uid):
                self._count("duplicates")
                log.info("received SOP %s again while still pending: identical, acknowledged once", sop_uid)
                return STATUS_SUCCESS
            if not self._wait_for_space():
                self._count("refused", "queue-full")
                log.warning("C-STORE SOP %s refused: %d instances pending (queue full)", sop_uid, self.queue_size)
                return STATUS_OUT_OF_RESOURCES  # nothing was kept: the sender still holds it and retries
            try:
                path, duplicate = self._persist(received, sop_uid)
            except OSError as exc:
                if is_disk_full(exc):
                    return self._refuse_disk_full(event, "spooling")
                self._error(f"cannot persist SOP {sop_uid}: {exc.strerror or type(exc).__name__}")
                log.error("C-STORE SOP %s: cannot persist (%s)", sop_uid, exc.strerror or type(exc).__name__)
                return STATUS_OUT_OF_RESOURCES
        finally:
            received.unlink(missing_ok=True)  # the temporary copy; an accepted instance was renamed away
        if duplicate:
            self._count("duplicates")
            log.info("received SOP %s again while still pending: identical, acknowledged once", sop_uid)
            return STATUS_SUCCESS
        self._count("received")
        self.queue.put(path)
        log.info("received SOP %s", sop_uid)
        return STATUS_SUCCESS

    def _is_pending_duplicate(self, received: Path, sop_uid: str) -> bool:
        with self._lock:
            pending = [n for n in self._pending if n == f"{sop_uid}.dcm" or n.startswith(f"{sop_uid}.")]
        return any(_same_content(self.incoming / n, received) for n in pending)

    def _wait_for_space(self) -> bool:
        deadline = time.monotonic() + self.enqueue_timeout
        with self._space:
            while len(self._pending) >= self.queue_size:
                left = deadline - time.monotonic()
                if left <= 0 or self._stopping.is_set():
                    return False
                self._space.wait(min(left, 0.5))
        return True

    def _received_file(self, event: evt.Event) -> Path:
        """The received dataset as a file in the spool's file system (pynetdicom wrote it to a temporary file;
        without chunked receive it is written from memory)."""
        try:
            source = Path(event.dataset_path)
        except AttributeError:
            source = None
        tmp = self.incoming / f"{TEMP_PREFIX}{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}.dcm"
        try:
            if source is None:
                tmp.write_bytes(event.encoded_dataset(include_meta=True))
                return tmp
            try:
                os.replace(source, tmp)  # same file system: a rename
            except OSError:
                shutil.copyfile(source, tmp)  # /tmp on another file system: copied once
        except OSError:
            tmp.unlink(missing_ok=True)  # e.g. a full disk: no partial copy stays behind
            raise
        return tmp

    def _admit(self, path: Path, sop_uid: str) -> None:
        """Judge the received instance by its header; raises DicomInputError with the reason."""
        size = path.stat().st_size
        try:
            ds = read_dataset(path, pixels=False)
            check_ultrasound(path, ds)
            check_limits(path, ds, self.limits, size)
            check_identity(path, ds)
        except DicomInputError:
            raise
        except Exception as exc:  # anything a hostile header can provoke is a refusal, never a crash
            raise DicomInputError(path, CORRUPT, f"header cannot be read: {type(exc).__name__}") from None
        if str(ds.SOPInstanceUID) != sop_uid:
            raise DicomInputError(path, INVALID_UID, "dataset SOP Instance UID differs from the C-STORE request")

    def _persist(self, received: Path, sop_uid: str) -> tuple[Path, bool]:
        """fsync the received file and rename it into incoming/; (path, is_duplicate). Never replaces a pending
        (acknowledged) file: identical content is a duplicate, different content gets its own name."""
        fd = os.open(received, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(received, DEFAULT_MODE)
        with self._lock:
            name = f"{sop_uid}.dcm"
            target = self.incoming / name
            if target.exists():
                if _same_content(target, received):
                    return target, True
                name = f"{sop_uid}.{_digest(received)[:12]}.dcm"
                target = self.incoming / name
                if target.exists():
                    return target, True
                log.warning("SOP %s received with different content while pending: kept both", sop_uid)
            os.replace(received, target)
            fsync_dir(self.incoming)
            self._pending.add(name)
        return target, False

    # ---- worker ------------------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            path = self.queue.get()
            try:
                if path is None or self._stopping.is_set():  # when stopping it stays in incoming/
                    if path is None:
                        return
                    continue
                self._process_until_space(path)
            except Exception as exc:  # never let the worker die
                log.exception("worker error on %s", path.name if path else "?")
                self._error(f"worker error: {type(exc).__name__}")
            finally:
                self.queue.task_done()

    def _process_until_space(self, path: Path) -> None:
        """A full disk is no reason to fail an instance: it stays in incoming/ (acknowledged, pending, its attempt
        not counted) and is tried again every DISK_RETRY_S until space returns; on stop it waits for the next
        start."""
        while True:
            try:
                self._process(path)
            except Exception as exc:
                if not is_disk_full(exc):
                    raise
                self._disk_full("processing")
                if self._stopping.wait(DISK_RETRY_S):
                    return
                continue
            self._space_back()
            return

    def _done_with(self, path: Path) -> None:
        (self.attempts_dir / f"{path.name}.json").unlink(missing_ok=True)
        with self._space:
            self._pending.discard(path.name)
            self._space.notify_all()

    def _count_attempt(self, path: Path) -> int:
        """Raise and persist the attempt counter before processing; returns the previous count."""
        record = self.attempts_dir / f"{path.name}.json"
        try:
            previous = int(json.loads(record.read_text()).get("attempts", 0))
        except (OSError, ValueError, AttributeError):
            previous = 0
        if previous < self.max_attempts:
            atomic_write(record, json.dumps({"attempts": previous + 1, "last_started": _now()}))
        return previous

    def _process(self, path: Path) -> None:
        if not path.exists():
            self._done_with(path)
            return
        sop = path.name.split(".dcm")[0]
        previous = self._count_attempt(path)
        try:
            self._process_counted(path, sop, previous)
        except Exception as exc:
            if is_disk_full(exc):
                self._undo_attempt(path, previous)
            raise

    def _undo_attempt(self, path: Path, previous: int) -> None:
        """A full disk is not the instance's fault: its attempt counter goes back (removing the record needs no
        space; rewriting it may not be possible while the disk is full)."""
        record = self.attempts_dir / f"{path.name}.json"
        try:
            if previous == 0:
                record.unlink(missing_ok=True)
            else:
                atomic_write(record, json.dumps({"attempts": previous, "last_started": _now()}))
        except OSError:
            pass

    def _process_counted(self, path: Path, sop: str, previous: int) -> None:
        if previous >= self.max_attempts:
            reason = (
                f"gave up after {previous} attempts: the node stopped or crashed while processing it each time "
                f"(e.g. out of memory or a decoder crash)"
            )
            log.error("SOP %s moved to failed/: %s", sop, reason)
            self._fail(path, "poison", reason)
            return
        try:
            result = process_file(
                self.predictor,
                path,
                self.output_dir,
                self.frames,
                self.secondary_capture,
                self.seg_type,
                self.limits,
            )
        except DicomInputError as exc:
            self._fail(path, exc.reason, f"skipped: {exc.reason}: {exc.detail}")
            log.warning("SOP %s not processed: %s", sop, exc.reason)
            return
        except Exception as exc:
            if is_disk_full(exc):
                raise
            self._fail(path, "processing-error", f"processing error: {type(exc).__name__}")
            log.error("SOP %s processing failed: %s", sop, type(exc).__name__)
            return
        if self.destination is not None:
            self._queue_delivery(path.name, result.outputs)
        if self.keep_done:
            os.replace(path, self.done / path.name)
        else:
            path.unlink(missing_ok=True)
        self._done_with(path)
        self._count("processed")
        log.info("SOP %s processed: %d object(s)", sop, len(result.outputs))
        if self.on_processed is not None:
            self.on_processed(path, "processed")

    def _fail(self, path: Path, reason: str, detail: str) -> None:
        target = self.failed / path.name
        atomic_write(target.with_name(target.name + ".reason.txt"), detail + "\n")
        os.replace(path, target)
        self._done_with(path)
        self._count("failed", reason)
        self._error(f"SOP {path.name.split('.dcm')[0]}: {detail}")
        if self.on_processed is not None:
            self.on_processed(path, "failed")

    # ---- delivery ----------------------------------------------------------------------------------------

    def _queue_delivery(self, name: str, outputs: list[Path]) -> None:
        """The outbox entry is durable before the input leaves the spool: results are never lost between."""
        root = self.output_dir.resolve()
        files = [str(Path(p).resolve().relative_to(root)) for p in outputs]
        entry = {"instance": name, "files": files, "created": _now()}
        atomic_write(self.outbox / f"{name}.json", json.dumps(entry))
        self._outbox_ready.set()

    def _send_loop(self) -> None:
        while not self._stopping.is_set():
            wait = self._next_send - time.monotonic()
            if wait > 0:
                self._outbox_ready.clear()
                self._outbox_ready.wait(min(wait, 1.0))
                continue
            entries = sorted(self._outbox_entries(), key=_mtime_and_name)
            if not entries:
                self._outbox_ready.clear()
                self._outbox_ready.wait(1.0)
                continue
            try:
                self._deliver(entries[:SEND_BATCH])
            except Exception as exc:  # never let the sender die; the entries stay in the outbox
                log.exception("sender error")
                self._error(f"sender error: {type(exc).__name__}")
                self._next_send = time.monotonic() + BACKOFF_START_S

    def _deliver(self, entries: list[Path]) -> None:
        """Send a batch of outbox entries over one association; backoff on a transient failure."""
        loaded = []
        for entry in entries:
            try:
                record = json.loads(entry.read_text())
            except FileNotFoundError:
                continue  # delivered meanwhile (entries are replaced by rename, never seen half-written)
            except (OSError, ValueError):
                record = None
            if not _is_outbox_record(record):
                self._delivery_failed(entry, "the outbox entry is damaged (not the JSON the node writes)")
                continue
            loaded.append((entry, record))
        error = self._send_entries(loaded)
        with self._lock:
            if error:
                failures = int(self.destination_state["consecutive_failures"]) + 1
                delay = min(self.backoff_max, BACKOFF_START_S * 2 ** (failures - 1))
                self.destination_state.update(
                    state="retrying", consecutive_failures=failures, last_error=error, retry_in_s=delay
                )
                self._next_send = time.monotonic() + delay
                self.counts["delivery_retries"] = int(self.counts["delivery_retries"]) + 1  # type: ignore[call-overload]
            else:
                self.destination_state.update(state="ok", consecutive_failures=0)
                self._next_send = 0.0
        if error:
            log.warning("destination: %s; next attempt in %.0f s", error, self.destination_state["retry_in_s"])
            self._error(f"destination: {error}")

    def _send_entries(self, loaded: list[tuple[Path, dict]]) -> str:
        """'' when the batch went through (entries delivered or failed permanently), else the transient error."""
        dest = self.destination
        assert dest is not None
        if isinstance(dest, DicomWebDestination):
            return deliver_entries(self, loaded)
        root = self.output_dir
        classes: set[str] = set()
        for entry, record in list(loaded):
            try:
                classes.update(_sop_classes(root, record["files"]))
            except ResultFileError as exc:  # this entry fails alone; the others are sent
                self._delivery_failed(entry, str(exc))
                loaded.remove((entry, record))
        if not loaded:
            return ""
        ae = AE(ae_title=self.ae_title)
        ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = self.network_timeout
        # only what we send: Label Map SEG (66.7) is not among pynetdicom's default storage contexts
        for sop_class in sorted(classes):
            ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        try:
            assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title)
        except Exception as exc:  # name resolution and socket errors
            return f"association with {dest.ae_title}@{dest.host}:{dest.port} failed ({type(exc).__name__})"
        if not assoc.is_established:
            if assoc.rejected_contexts and not assoc.accepted_contexts:
                # it answered, but takes none of what we send: no retry will change that (docs/hospital_it.md)
                names = ", ".join(sorted(UID(c).name for c in classes))
                for entry, _ in loaded:
                    self._delivery_failed(entry, f"destination accepts no presentation context for {names}")
                return ""
            return f"association with {dest.ae_title}@{dest.host}:{dest.port} not established"
        try:
            for entry, record in loaded:
                error = self._send_entry(assoc, entry, record)
                if error:
                    return error
        except Exception as exc:  # the association broke in a way pynetdicom reports by raising
            if is_disk_full(exc):
                return "the local disk is full (the outbox cannot be updated)"
            return f"sending failed ({type(exc).__name__})"
        finally:
            if assoc.is_established:
                assoc.release()
        return ""

    def _send_entry(self, assoc, entry: Path, record: dict) -> str:
        remaining = list(record["files"])
        while remaining:
            try:
                dataset = dcmread(self.output_dir / remaining[0])
            except Exception as exc:  # damaged since it was written: this entry fails alone
                self._delivery_failed(entry, f"result file {remaining[0]} cannot be read ({type(exc).__name__})")
                return ""
            try:
                status = assoc.send_c_store(dataset)
            except ValueError:  # the destination accepted no presentation context for this SOP class
                self._delivery_failed(entry, f"destination accepts no {dataset.SOPClassUID.name} ({remaining[0]})")
                return ""
            code = getattr(status, "Status", None)
            if code is None:
                return "no C-STORE response (timeout or aborted)"
            if 0xA700 <= code <= 0xA7FF:
                return f"destination out of resources (C-STORE status 0x{code:04X})"
            if code != 0 and not (0xB000 <= code <= 0xBFFF):  # warnings count as stored
                self._delivery_failed(entry, f"destination refused {remaining[0]} (C-STORE status 0x{code:04X})")
                return ""
            remaining.pop(0)
            self._count("delivered_objects")
            if remaining:  # what the destination confirmed is never sent again, even after a crash
                atomic_write(entry, json.dumps({**record, "files": remaining}))
        entry.unlink(missing_ok=True)
        fsync_dir(self.outbox)
        self._count("delivered_instances")
        log.info("results of SOP %s delivered", record["instance"].split(".dcm")[0])
        return ""

    def _delivery_failed(self, entry: Path, reason: str) -> None:
        with self._lock:
            self.destination_state["last_delivery_failure"] = {"time": _now(), "reason": reason}
        target = self.failed / f"{entry.stem}.delivery.json"
        atomic_write(target.with_name(target.name + ".reason.txt"), f"delivery failed: {reason}\n")
        os.replace(entry, target)
        self._count("delivery_failed")
        message = f"results of SOP {entry.stem.split('.dcm')[0]} not delivered: {reason} (kept in the output folder)"
        log.error(message)
        self._error(message)

    def send(self, files: list[Path]) -> str:
        """C-STORE `files` to the destination now; returns '' on success or a short reason (no identifiers)."""
        if not files:
            return ""
        root = self.output_dir.resolve()
        record = {"instance": "manual", "files": [str(Path(f).resolve().relative_to(root)) for f in files]}
        with tempfile.TemporaryDirectory() as tmp:
            entry = Path(tmp) / "manual.json"
            entry.write_text(json.dumps(record))
            return self._send_entries([(entry, record)])


def _is_outbox_record(record: object) -> bool:
    return (
        isinstance(record, dict)
        and isinstance(record.get("instance"), str)
        and isinstance(record.get("files"), list)
        and all(isinstance(f, str) for f in record["files"])
    )


class ResultFileError(Exception):
    """A result file named by an outbox entry is missing or unreadable: that entry cannot be delivered."""


def _sop_classes(root: Path, files: list[str]) -> set[str]:
    """The SOP classes of an entry's result files (header only); ResultFileError names the first bad file."""
    classes = set()
    for f in files:
        if not (root / f).is_file():
            raise ResultFileError(f"result file {f} is missing from the output folder")
        try:
            classes.add(str(dcmread(root / f, stop_before_pixels=True, specific_tags=["SOPClassUID"]).SOPClassUID))
        except Exception as exc:
            raise ResultFileError(f"result file {f} cannot be read ({type(exc).__name__})") from None
    return classes


def _mtime_and_name(path: Path) -> tuple[float, str]:
    try:
        return path.stat().st_mtime, path.name
    except OSError:
        return 0.0, path.name


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _same_content(a: Path, b: Path) -> bool:
    try:
        return a.stat().st_size == b.stat().st_size and _digest(a) == _digest(b)
    except OSError:
        return False


def serve(
    bundle: str,
    ae_title: str = "TINYUSFM",
    port: int = 11112,
    dest: str | None = None,
    host: str = "127.0.0.1",
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
    allow: str | Sequence[str] | None = None,
    max_per_peer: int = 4,
    idle_timeout: float = 30.0,
    max_frame_pixels: int = DEFAULT_LIMITS.max_frame_pixels,
    max_frames: int = DEFAULT_LIMITS.max_frames,
    max_file_mb: float = DEFAULT_LIMITS.max_file_bytes / 2**20,
    max_attempts: int = 3,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    tls_ca: str | None = None,
    backoff_max: float = BACKOFF_MAX_S,
    queue_wait: float = 10.0,
    backend: str = DEFAULT_BACKEND,
    handshake_timeout: float = 10.0,
    max_per_address: int = 4,
    max_association_s: float = 3600.0,
) -> UltrasoundNode | None:
    """Run the DICOM node for bundle `bundle` until SIGINT/SIGTERM.

    host: the address to listen on (default 127.0.0.1; give the imaging-network address explicitly).
    dest: AE_TITLE@host:port of the node that receives the results (PACS), or a DICOMweb service root
    http(s)://host/path (STOW-RS; credentials and CA from the environment, see dicomweb.py); none -> results
    stay in `output`.
    allow: calling AE titles allowed to send, comma-separated, each optionally AE@address; '*' = any (logged).
    max_per_peer: associations one calling AE title + address may hold at once. idle_timeout: seconds an
    association may stay silent before it is dropped, and the longest one PDU may take to arrive.
    handshake_timeout: seconds from TCP connect to a complete A-ASSOCIATE-RQ, TLS handshake included (a total, not
    per read). max_per_address: connections one source address may hold at once, whatever its AE titles.
    max_association_s: the longest any association may last. max_associations: associations at once in all
    (connections still before their association request are capped at the same number; at that cap the oldest
    unfinished one is dropped for a newcomer). max_frame_pixels / max_frames / max_file_mb: per-instance
    limits, checked from the header before acknowledging. max_attempts: processing starts before an instance
    that keeps crashing the node is moved to failed/. tls_cert / tls_key (and tls_ca to require client
    certificates): DICOM TLS. spool: where received instances, attempts and the outbox live; survives restarts.
    frames: all | middle | first | every:N. queue_size: instances pending at most; a C-STORE arriving when it is
    reached waits up to queue_wait seconds for room, then gets 0xA700 (the sender retries). backoff_max: the
    longest wait between delivery attempts to an unreachable destination. Status:
    `tinyusfm-monai dicom status --spool SPOOL`.
    backend: auto (OpenVINO on CPU, PyTorch on CUDA) | pytorch | onnx | onnx-int8 | openvino | openvino-bf16 |
    openvino-int8 (the bundle's overlays; OpenVINO falls back to PyTorch with one log line when not installed).
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    limits = InputLimits(int(max_frame_pixels), int(max_frames), int(float(max_file_mb) * 2**20))
    if bool(tls_cert) != bool(tls_key):
        raise ValueError("DICOM TLS needs both --tls_cert and --tls_key")
    tls = server_tls_context(tls_cert, tls_key, tls_ca) if tls_cert and tls_key else None
    if block:
        # a dedicated process: let pynetdicom receive into the spool's file system, so accepting is a rename
        receiving = Path(spool) / "receiving"
        receiving.mkdir(parents=True, exist_ok=True)
        tempfile.tempdir = str(receiving)
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
        network_timeout=float(idle_timeout),
        allowed_peers=parse_peers(allow),
        max_per_peer=max_per_peer,
        limits=limits,
        max_attempts=max_attempts,
        tls_context=tls,
        backoff_max=float(backoff_max),
        enqueue_timeout=float(queue_wait),
        handshake_timeout=float(handshake_timeout),
        max_per_address=int(max_per_address),
        max_association_s=float(max_association_s) if max_association_s else None,
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
