"""DICOMweb in and out: STOW-RS as a delivery transport of the node, and a QIDO-RS / WADO-RS pull of new studies.

Why the standard library (`urllib`, `ssl`) and not a DICOMweb client package: the node needs three requests
(QIDO-RS search, WADO-RS instance retrieve, STOW-RS store) and must control exactly when a result counts as
stored; `urllib` does that with no new dependency, and its TLS goes through `ssl.create_default_context`
(certificate and host name verification on, system CA store, `TINYUSFM_DICOMWEB_CA` for a private CA).

Credentials never appear on a command line (where `ps` and shell history show them) or in a URL: they come from
the environment, set by the service manager (systemd `EnvironmentFile=` / `LoadCredential=`):

* `TINYUSFM_DICOMWEB_TOKEN`: a bearer token, or
* `TINYUSFM_DICOMWEB_USER` and `TINYUSFM_DICOMWEB_PASSWORD`: HTTP basic authentication, or
* `TINYUSFM_DICOMWEB_AUTH_FILE`: a file (mode 0600) holding `Bearer <token>` or `Basic <user>:<password>`.

Delivery semantics (the node's outbox, `node.py`): one STOW-RS request per outbox entry (the results of one
source instance). The entry is removed only after the server confirmed every object of it (each SOP Instance
UID in the response's Referenced SOP Sequence); network errors, timeouts, 5xx, 408/429 and authentication
refusals (401/403: credentials can be fixed without losing results) are retried with the node's backoff;
other 4xx answers and objects the server lists as failed move the entry to `failed/` with the reason. Output
UIDs are deterministic, so a resend after a crash gives the server the same SOP Instance UID again: PACS keep
one copy (Orthanc answers it as already stored).

Pull (`tinyusfm-monai dicom pull`): QIDO-RS finds studies with ultrasound (`ModalitiesInStudy=US`), WADO-RS
retrieves their ultrasound instances one at a time (never a whole study in memory), the bundle runs on each
(`process.process_file`, the same objects and UIDs as the node and the batch), and the results go back by
STOW-RS. A state file records, per study, each instance's outcome and marks the study done after all of them:
a rerun (or `--watch` polling) skips done studies and resumes a half-done one where it stopped.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import ssl
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread

from tinyusfm_monai.bundle.parser import DEFAULT_BACKEND
from tinyusfm_monai.bundle.predictor import Predictor, load_predictor
from tinyusfm_monai.dicom.privacy import quiet_third_party_output
from tinyusfm_monai.dicom.process import SEG_TYPES, process_file
from tinyusfm_monai.io.dicom import (
    DEFAULT_LIMITS,
    ULTRASOUND_SOP_CLASSES,
    DicomInputError,
    InputLimits,
    is_valid_uid,
)
from tinyusfm_monai.utils import atomic_write
from tinyusfm_monai.utils.atomic import fsync_dir

log = logging.getLogger("tinyusfm_monai.dicom.dicomweb")

ENV_TOKEN = "TINYUSFM_DICOMWEB_TOKEN"
ENV_USER = "TINYUSFM_DICOMWEB_USER"
ENV_PASSWORD = "TINYUSFM_DICOMWEB_PASSWORD"
ENV_AUTH_FILE = "TINYUSFM_DICOMWEB_AUTH_FILE"
ENV_CA = "TINYUSFM_DICOMWEB_CA"
#: HTTP answers worth retrying: the server is busy, restarting, or the credentials are being fixed
RETRY_HTTP = {401, 403, 408, 425, 429, 500, 502, 503, 504}
DICOM_MEDIA = "application/dicom"
# DICOM JSON tags (PS3.18 F.2): the ones the STOW-RS response and QIDO-RS results are read through
TAG_STUDY_UID, TAG_SERIES_UID, TAG_SOP_UID, TAG_SOP_CLASS = "0020000D", "0020000E", "00080018", "00080016"
TAG_FAILED_SOP_SEQ, TAG_REFERENCED_SOP_SEQ = "00081198", "00081199"
TAG_REF_SOP_UID, TAG_FAILURE_REASON, TAG_WARNING_REASON = "00081155", "00081197", "00081196"
QIDO_PAGE = 100


class DicomWebError(Exception):
    """A DICOMweb request failed. `transient`: worth retrying later (network, server busy, credentials)."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


def auth_header_from_env(env: dict[str, str] | None = None) -> str | None:
    """The Authorization header value from the environment (module docstring), or None for no authentication."""
    env = dict(os.environ if env is None else env)
    if env.get(ENV_AUTH_FILE):
        path = Path(env[ENV_AUTH_FILE])
        try:
            text = path.read_text().strip()
        except OSError as exc:
            raise ValueError(f"{ENV_AUTH_FILE}={path}: cannot read ({exc.strerror})") from None
        scheme, _, secret = text.partition(" ")
        if scheme.lower() == "bearer" and secret.strip():
            return f"Bearer {secret.strip()}"
        if scheme.lower() == "basic" and ":" in secret:
            return "Basic " + base64.b64encode(secret.strip().encode()).decode()
        raise ValueError(f"{ENV_AUTH_FILE}={path}: expected 'Bearer <token>' or 'Basic <user>:<password>'")
    if env.get(ENV_TOKEN):
        return f"Bearer {env[ENV_TOKEN].strip()}"
    if env.get(ENV_USER):
        pair = f"{env[ENV_USER]}:{env.get(ENV_PASSWORD, '')}"
        return "Basic " + base64.b64encode(pair.encode()).decode()
    return None


@dataclass(frozen=True)
class DicomWebDestination:
    """A DICOMweb service root (e.g. `https://pacs.example.org/dicom-web`): where results go by STOW-RS."""

    url: str
    timeout: float = 60.0
    ca_file: str | None = None
    authorization: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, text: str, env: dict[str, str] | None = None, timeout: float = 60.0) -> DicomWebDestination:
        """'http(s)://host[:port]/path' -> destination; authentication and CA from the environment."""
        url = text.strip().rstrip("/")
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"DICOMweb destination {text!r}: expected http(s)://host[:port]/path")
        if parts.username or parts.password:
            raise ValueError(
                "DICOMweb destination: credentials in the URL would show in logs and process lists; "
                f"set {ENV_TOKEN}, {ENV_USER}/{ENV_PASSWORD} or {ENV_AUTH_FILE} instead"
            )
        if parts.query or parts.fragment:
            raise ValueError(f"DICOMweb destination {url!r}: the service root takes no query or fragment")
        environ = dict(os.environ if env is None else env)
        authorization = auth_header_from_env(environ)
        if authorization and parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            log.warning("DICOMweb credentials are sent over plain http to %s; use https", parts.hostname)
        return cls(url, timeout, environ.get(ENV_CA) or None, authorization)

    def __str__(self) -> str:
        return self.url

    # ---- HTTP --------------------------------------------------------------------------------------------

    def _context(self) -> ssl.SSLContext | None:
        if not self.url.startswith("https:"):
            return None
        context = ssl.create_default_context(cafile=self.ca_file)  # verification and host name check on
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        limit: int | None = None,
    ) -> tuple[dict[str, str], bytes]:
        """(response headers, body); raises DicomWebError naming the request (never credentials). A body longer
        than `limit` bytes is refused after reading limit + 1 bytes (a server cannot make us hold more)."""
        url = self.url + path
        request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
        if self.authorization:
            request.add_unredirected_header("Authorization", self.authorization)
        where = f"{method} {urllib.parse.urlsplit(url).path}"
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self._context()) as response:
                data = response.read() if limit is None else response.read(limit + 1)
                if limit is not None and len(data) > limit:
                    raise DicomWebError(f"{where}: response over the {limit} byte limit", transient=False)
                return {k.lower(): v for k, v in response.headers.items()}, data
        except urllib.error.HTTPError as exc:
            detail = exc.read(300).decode("utf-8", "replace").strip().replace("\n", " ")
            message = f"{where}: HTTP {exc.code} {exc.reason}" + (f" ({detail[:200]})" if detail else "")
            raise DicomWebError(message, transient=exc.code in RETRY_HTTP) from None
        except ssl.SSLError as exc:
            raise DicomWebError(f"{where}: TLS error ({exc.reason or type(exc).__name__})", transient=True) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DicomWebError(f"{where}: {type(reason).__name__}: {reason}", transient=True) from None

    def get_json(self, path: str) -> list[dict]:
        headers, body = self.request("GET", path, headers={"Accept": "application/dicom+json"})
        if not body.strip():
            return []  # some servers answer 204 (no match) with an empty body
        return json.loads(body)

    # ---- STOW-RS -----------------------------------------------------------------------------------------

    def store(self, files: list[Path]) -> list[str]:
        """STOW-RS `files` in one request; returns the server's warnings. Raises DicomWebError unless every
        object is confirmed (listed in the Referenced SOP Sequence)."""
        boundary = f"tinyusfm-{uuid.uuid4().hex}"
        parts, expected = [], []
        for path in files:
            ds = dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
            expected.append(str(ds.SOPInstanceUID))
            parts.append(
                f"--{boundary}\r\nContent-Type: {DICOM_MEDIA}\r\n\r\n".encode() + Path(path).read_bytes() + b"\r\n"
            )
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        content_type = f'multipart/related; type="{DICOM_MEDIA}"; boundary={boundary}'
        headers = {"Content-Type": content_type, "Accept": "application/dicom+json"}
        try:
            _, answer = self.request("POST", "/studies", body, headers)
        except DicomWebError as exc:
            if "HTTP 409" in str(exc):  # every instance failed: the reason is in the body, permanent
                raise DicomWebError(f"server refused the objects: {exc}", transient=False) from None
            raise
        try:
            response = json.loads(answer) if answer.strip() else {}
        except ValueError:
            raise DicomWebError("STOW-RS response is not DICOM JSON", transient=True) from None
        if isinstance(response, list):  # some servers wrap the response dataset in a list
            response = response[0] if response else {}
        stored = {
            _value(item, TAG_REF_SOP_UID): item for item in response.get(TAG_REFERENCED_SOP_SEQ, {}).get("Value", [])
        }
        failed = {
            _value(item, TAG_REF_SOP_UID): _value(item, TAG_FAILURE_REASON)
            for item in response.get(TAG_FAILED_SOP_SEQ, {}).get("Value", [])
        }
        for sop in expected:
            if sop in failed:
                code = failed[sop]
                reason = f"0x{int(code):04X}" if str(code).isdigit() else str(code)
                raise DicomWebError(f"server refused SOP {sop} (failure reason {reason})", transient=False)
            if sop not in stored:
                raise DicomWebError(f"server did not confirm SOP {sop}", transient=True)
        warnings = []
        for sop in expected:
            code = _value(stored[sop], TAG_WARNING_REASON)
            if code not in (None, ""):
                warnings.append(f"SOP {sop}: warning 0x{int(code):04X}" if str(code).isdigit() else f"SOP {sop}")
        return warnings

    # ---- QIDO-RS / WADO-RS -------------------------------------------------------------------------------

    def search_studies(self, modality: str = "US") -> Iterator[str]:
        """Study Instance UIDs of studies holding `modality`, page by page."""
        offset = 0
        while True:
            query = urllib.parse.urlencode({"ModalitiesInStudy": modality, "limit": QIDO_PAGE, "offset": offset})
            page = self.get_json(f"/studies?{query}")
            for item in page:
                uid = _value(item, TAG_STUDY_UID)
                if uid:
                    yield str(uid)
            if len(page) < QIDO_PAGE:
                return
            offset += len(page)

    def search_instances(self, study: str) -> list[tuple[str, str, str]]:
        """(series, SOP instance, SOP class) of every instance of `study`."""
        if not is_valid_uid(study):
            raise DicomWebError(f"server returned an invalid Study Instance UID {study[:70]!r}", transient=False)
        rows = []  # Series Instance UID and SOP Class UID are among the instance level's default attributes
        for item in self.get_json(f"/studies/{study}/instances"):
            rows.append(
                (
                    str(_value(item, TAG_SERIES_UID) or ""),
                    str(_value(item, TAG_SOP_UID) or ""),
                    str(_value(item, TAG_SOP_CLASS) or ""),
                )
            )
        return rows

    def retrieve_instance(self, study: str, series: str, sop: str, target: Path, max_bytes: int) -> Path:
        """WADO-RS one instance (any transfer syntax, as stored) to `target`; refuses one over `max_bytes`."""
        for uid in (study, series, sop):
            if not is_valid_uid(uid):
                raise DicomWebError(f"invalid UID {uid[:70]!r} from the server", transient=False)
        accept = f'multipart/related; type="{DICOM_MEDIA}"; transfer-syntax=*'
        headers, body = self.request(
            "GET",
            f"/studies/{study}/series/{series}/instances/{sop}",
            headers={"Accept": accept},
            limit=max_bytes + 65536,  # the instance plus its multipart framing
        )
        parts = multipart_parts(headers.get("content-type", ""), body)
        if len(parts) != 1:
            raise DicomWebError(f"WADO-RS of SOP {sop}: expected 1 part, got {len(parts)}", transient=False)
        if len(parts[0]) > max_bytes:
            raise DicomWebError(f"SOP {sop}: {len(parts[0])} bytes, over the {max_bytes} byte limit", False)
        atomic_write(target, parts[0])
        return target


def _value(item: dict, tag: str):
    values = item.get(tag, {}).get("Value") or [None]
    return values[0]


def multipart_parts(content_type: str, body: bytes) -> list[bytes]:
    """The bodies of a multipart/related message (RFC 2387), headers dropped."""
    params = {}
    for piece in content_type.split(";")[1:]:
        key, _, value = piece.strip().partition("=")
        params[key.lower()] = value.strip().strip('"')
    boundary = params.get("boundary")
    if not content_type.lower().startswith("multipart/") or not boundary:
        raise DicomWebError(f"expected a multipart response, got {content_type[:80]!r}", transient=False)
    delimiter = b"--" + boundary.encode()
    parts = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            continue
        parts.append(data[:-2] if data.endswith(b"\r\n") else data)
    return parts


# ---- the node's outbox over STOW-RS ---------------------------------------------------------------------


def deliver_entries(node, loaded: list[tuple[Path, dict]]) -> str:
    """Deliver outbox entries of `node` (a `node.UltrasoundNode`) by STOW-RS, one request per entry.

    Returns '' when the batch went through (entries delivered or failed permanently), else the transient error
    that makes the node back off (the entry stays in the outbox)."""
    dest: DicomWebDestination = node.destination
    root = node.output_dir
    for entry, record in loaded:
        missing = [f for f in record["files"] if not (root / f).is_file()]
        if missing:
            node._delivery_failed(entry, f"result file {missing[0]} is missing from the output folder")
            continue
        try:
            warnings = dest.store([root / f for f in record["files"]])
        except DicomWebError as exc:
            if exc.transient:
                return f"STOW-RS to {dest.url}: {exc}"
            node._delivery_failed(entry, f"STOW-RS: {exc}")
            continue
        for warning in warnings:
            log.warning("STOW-RS stored with a warning: %s", warning)
        node._count("delivered_objects", n=len(record["files"]))
        entry.unlink(missing_ok=True)
        fsync_dir(node.outbox)
        node._count("delivered_instances")
        log.info("results of SOP %s delivered (STOW-RS)", record["instance"].split(".dcm")[0])
    return ""


# ---- pull: new ultrasound studies from a DICOMweb server ------------------------------------------------


class PullState:
    """The per-study progress file: {"studies": {study: {"done": bool, "instances": {sop: outcome}}}}.

    Written atomically after every instance, so a killed pull resumes with what it had finished."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.data = json.loads(path.read_text())
        except FileNotFoundError:
            self.data = {"studies": {}}
        except ValueError:
            raise ValueError(f"state file {path} is not valid JSON; move it away to start over") from None

    def study(self, uid: str) -> dict:
        return self.data["studies"].setdefault(uid, {"done": False, "instances": {}})

    def is_done(self, uid: str) -> bool:
        return bool(self.data["studies"].get(uid, {}).get("done"))

    def save(self) -> None:
        atomic_write(self.path, json.dumps(self.data, indent=1, sort_keys=True))


@dataclass
class PullCounts:
    studies_done: int = 0
    instances_processed: int = 0
    instances_skipped: int = 0
    instances_failed: int = 0
    objects_stored: int = 0

    def line(self) -> str:
        return (
            f"{self.studies_done} study(ies) done, {self.instances_processed} instance(s) processed, "
            f"{self.instances_skipped} skipped, {self.instances_failed} failed, "
            f"{self.objects_stored} result object(s) stored"
        )


def pull_once(
    predictor: Predictor,
    source: DicomWebDestination,
    dest: DicomWebDestination,
    output: Path,
    state: PullState,
    frames: str | int = "all",
    seg_type: str = "binary",
    limits: InputLimits = DEFAULT_LIMITS,
    stop: threading.Event | None = None,
) -> PullCounts:
    """One pass: every study with ultrasound on `source` not yet done. Raises DicomWebError on a transient
    failure (the state keeps what was finished; the next pass resumes)."""
    counts = PullCounts()
    work = output / ".pull"
    work.mkdir(parents=True, exist_ok=True)
    for study in list(source.search_studies("US")):
        if stop is not None and stop.is_set():
            break
        if state.is_done(study):
            continue
        record = state.study(study)
        instances = [row for row in source.search_instances(study) if row[2] in ULTRASOUND_SOP_CLASSES]
        log.info("study %s: %d ultrasound instance(s)", study, len(instances))
        for series, sop, _ in instances:
            if sop in record["instances"]:
                continue  # finished in an earlier (interrupted) pass
            if stop is not None and stop.is_set():
                return counts
            record["instances"][sop] = _pull_instance(
                predictor, source, dest, output, work, study, series, sop, frames, seg_type, limits, counts
            )
            state.save()
        record["done"] = True
        record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        state.save()
        counts.studies_done += 1
    return counts


def _pull_instance(predictor, source, dest, output, work, study, series, sop, frames, seg_type, limits, counts):
    """Retrieve, process and STOW one instance; the outcome recorded in the state file."""
    fd, name = tempfile.mkstemp(prefix=".tmp-pull-", suffix=".dcm", dir=work)
    os.close(fd)
    local = Path(name)
    try:
        try:
            source.retrieve_instance(study, series, sop, local, limits.max_file_bytes)
        except DicomWebError as exc:
            if exc.transient:
                raise
            counts.instances_failed += 1
            log.error("SOP %s not retrieved: %s", sop, exc)
            return f"failed: {exc}"
        try:
            result = process_file(predictor, local, output, frames, False, seg_type, limits)
        except DicomInputError as exc:
            counts.instances_skipped += 1
            log.warning("SOP %s skipped: %s", sop, exc.reason)
            return f"skipped: {exc.reason}: {exc.detail}"
        except Exception as exc:  # a model or writer error: recorded, the rest of the study goes on
            counts.instances_failed += 1
            log.error("SOP %s processing failed: %s", sop, type(exc).__name__)
            return f"failed: processing error: {type(exc).__name__}"
        try:
            for warning in dest.store(result.outputs):
                log.warning("STOW-RS stored with a warning: %s", warning)
        except DicomWebError as exc:
            if exc.transient:
                raise
            counts.instances_failed += 1
            log.error("results of SOP %s refused: %s", sop, exc)
            return f"failed: STOW-RS: {exc}"
        counts.instances_processed += 1
        counts.objects_stored += len(result.outputs)
        log.info("SOP %s processed: %s; %d object(s) stored", sop, result.summary, len(result.outputs))
        return "stored: " + ",".join(p.name for p in result.outputs)
    finally:
        local.unlink(missing_ok=True)


def pull(
    bundle: str,
    url: str,
    output: str = "dicom-results",
    state: str | None = None,
    dest: str | None = None,
    watch: float = 0.0,
    frames: str = "all",
    seg_type: str = "binary",
    max_frame_pixels: int = DEFAULT_LIMITS.max_frame_pixels,
    max_frames: int = DEFAULT_LIMITS.max_frames,
    max_file_mb: float = DEFAULT_LIMITS.max_file_bytes / 2**20,
    timeout: float = 60.0,
    backend: str = DEFAULT_BACKEND,
    predictor: Predictor | None = None,
) -> str:
    """Find new ultrasound studies on DICOMweb server `url` (QIDO-RS), retrieve them (WADO-RS), run bundle
    `bundle`, and store the results back by STOW-RS (to `dest`, default `url`).

    state: the progress file (default OUTPUT/dicomweb-pull-state.json): done studies are skipped, a half-done
    one resumes. watch: poll every `watch` seconds until SIGINT/SIGTERM (0: one pass). A transient failure
    (server down) ends a one-pass run with exit status 75 (EX_TEMPFAIL); in watch mode it is retried next poll.
    Authentication and CA from the environment: TINYUSFM_DICOMWEB_TOKEN, or TINYUSFM_DICOMWEB_USER and
    TINYUSFM_DICOMWEB_PASSWORD, or TINYUSFM_DICOMWEB_AUTH_FILE; TINYUSFM_DICOMWEB_CA (docs/hospital_it.md).
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_third_party_output()
    if seg_type not in SEG_TYPES:
        raise ValueError(f"seg_type must be one of {SEG_TYPES}")
    limits = InputLimits(int(max_frame_pixels), int(max_frames), int(float(max_file_mb) * 2**20))
    source = DicomWebDestination.parse(url, timeout=timeout)
    target = DicomWebDestination.parse(dest, timeout=timeout) if dest else source
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    progress = PullState(Path(state) if state else out / "dicomweb-pull-state.json")
    model = predictor if predictor is not None else load_predictor(bundle, backend=backend)
    stop = threading.Event()
    if watch and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    total = PullCounts()
    while True:
        try:
            counts = pull_once(model, source, target, out, progress, frames, seg_type, limits, stop)
        except DicomWebError as exc:
            log.warning("pull interrupted: %s (resumes on the next %s)", exc, "poll" if watch else "run")
            if not watch:
                print(f"tinyusfm-monai dicom pull: {exc}; rerun to resume")
                raise SystemExit(75) from None
            counts = PullCounts()
        for key in total.__dataclass_fields__:
            setattr(total, key, getattr(total, key) + getattr(counts, key))
        if not watch or stop.wait(float(watch)):
            break
    fsync_dir(out)
    return total.line()
