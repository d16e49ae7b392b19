"""`tinyusfm-monai dicom infer`: run a bundle over a folder of studies, write DICOM results and a report.

Why these rules: hospital IT runs this on exports they must not damage and will rerun after a model update.
So inputs are only ever opened for reading, one bad file never stops the batch, output UIDs are derived from
the source UIDs and the bundle name/version (a rerun overwrites the same files; a new version gets a new
series), and every input gets a report row saying processed / skipped / failed / ignored and why.

Nothing hangs and nothing is written outside `--output`: the type of every entry is checked with lstat/stat
before it is opened (a FIFO would block forever, a symlink loop raises), symbolic links are followed only to
regular files, and output paths are built from validated UIDs only. An output folder that cannot be written is
refused before any input is read. The command's exit status says how the run went (`EXIT_CODES`).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tinyusfm_monai.bundle.parser import DEFAULT_BACKEND
from tinyusfm_monai.bundle.predictor import Predictor, load_predictor
from tinyusfm_monai.dicom.privacy import quiet_third_party_output, redact
from tinyusfm_monai.dicom.process import process_file
from tinyusfm_monai.io.dicom import DEFAULT_LIMITS, NOT_REGULAR_FILE, DicomInputError, InputLimits, read_dataset
from tinyusfm_monai.io.formats import Entry, iter_entries
from tinyusfm_monai.utils import atomic_write, remove_stale_temporaries
from tinyusfm_monai.utils.csvsafe import safe_record
from tinyusfm_monai.utils.names import scrub

log = logging.getLogger("tinyusfm_monai.dicom.batch")

#: exit status of `tinyusfm-monai dicom infer`, one per outcome, so a scheduler can tell them apart
EXIT_ALL_PROCESSED = 0
EXIT_CANNOT_START = 2  # input missing, output not writable, bad option: nothing was processed
EXIT_SOME_SKIPPED = 3  # at least one input skipped (not processable), none failed
EXIT_SOME_FAILED = 4  # at least one input failed (model or writer error); others may be skipped too
EXIT_CODES = {
    EXIT_ALL_PROCESSED: "every input processed (ignored entries such as hidden files do not count)",
    EXIT_CANNOT_START: "the batch could not start: input missing, output not writable or a bad option",
    EXIT_SOME_SKIPPED: "some inputs skipped (not processable: see report reason), none failed",
    EXIT_SOME_FAILED: "some inputs failed (model or writer error: see report detail)",
}


class BatchSummary(str):
    """The one-line summary the command prints, carrying the exit status (`exit_code`) the CLI exits with."""

    exit_code: int = EXIT_ALL_PROCESSED

    def __new__(cls, text: str, exit_code: int) -> BatchSummary:
        obj = super().__new__(cls, text)
        obj.exit_code = exit_code
        return obj


class OutputNotWritableError(PermissionError):
    """The output folder cannot be created or written: refused before any input is read."""


REPORT_FIELDS = (
    "input",
    "status",
    "reason",
    "detail",
    "sop_instance_uid",
    "study_instance_uid",
    "frames",
    "summary",
    "outputs",
    "crop",
)


@dataclass
class ReportRow:
    """One input file. status: processed | skipped (input not processable) | failed (model or writer error) |
    ignored (hidden files and folders, DICOMDIR: not inputs, listed so that nothing disappears silently)."""

    input: str
    status: str
    reason: str = ""
    detail: str = ""
    sop_instance_uid: str = ""
    study_instance_uid: str = ""
    frames: str = ""
    summary: str = ""
    outputs: list[str] = field(default_factory=list)
    crop: str = ""


def _inputs(input_dir: Path, output_dir: Path) -> list[Entry]:
    """Everything below input_dir, minus the output folder when it lies inside the input (no self-feeding);
    entries that are not regular files carry the reason they are not read."""
    out_resolved = output_dir.resolve()
    entries = []
    for entry in iter_entries(input_dir, exclude=output_dir):
        try:
            entry.path.resolve().relative_to(out_resolved)
            continue  # a symbolic link into the output folder
        except (ValueError, OSError, RuntimeError):  # RuntimeError: a symbolic link loop
            entries.append(entry)
    return entries


def check_output_writable(output_dir: Path) -> None:
    """Create the output folder and write (then remove) a probe file in it, or raise OutputNotWritableError."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = atomic_write(output_dir / ".tinyusfm-write-check", b"", durable=False)
        probe.unlink()
    except OSError as exc:
        cause = exc.strerror or type(exc).__name__
        raise OutputNotWritableError(f"output folder {output_dir} cannot be written ({cause})") from None


def _ignored(entry: Entry) -> str:
    """Why a well-formed entry is not an input at all ('' if it is one)."""
    if entry.problem.startswith("hidden"):
        return entry.problem
    if not entry.problem and entry.path.name.upper() == "DICOMDIR":
        return "DICOMDIR (a media index, not an image)"
    return ""


def run_batch(
    predictor: Predictor,
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    frames: str | int = "all",
    secondary_capture: bool = False,
    seg_type: str = "binary",
    limits: InputLimits | None = None,
) -> list[ReportRow]:
    """Process every file under input_dir with `predictor`; write outputs and report.{csv,json} to output_dir.

    limits: what one instance may cost, checked from its header before decoding (default `InputLimits()`).
    Raises FileNotFoundError (no input) or OutputNotWritableError before any input is read."""
    quiet_third_party_output()
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    limits = limits or DEFAULT_LIMITS
    if not input_dir.exists() and not input_dir.is_symlink():
        raise FileNotFoundError(f"input folder {input_dir} does not exist")
    check_output_writable(output_dir)
    for stale in remove_stale_temporaries(output_dir, recursive=True):
        log.info("removed a stale temporary file left by an interrupted run: %s", stale.name)
    entries = _inputs(input_dir, output_dir)
    rows: list[ReportRow] = []
    started = time.time()
    total = len(entries)
    for n, entry in enumerate(entries, start=1):
        path = entry.path
        rel = str(path.relative_to(input_dir)) if path != input_dir else path.name
        if _ignored(entry):
            rows.append(ReportRow(rel, "ignored", "not-an-input", _ignored(entry)))
            continue
        if entry.problem:
            rows.append(ReportRow(rel, "skipped", NOT_REGULAR_FILE, entry.problem))
            log.info("[%d/%d] skipped: %s (%s)", n, total, NOT_REGULAR_FILE, entry.problem)
            continue
        rows.append(
            _process_one(predictor, path, rel, output_dir, frames, secondary_capture, seg_type, limits, n, total)
        )
    write_report(rows, output_dir, predictor, frames, time.time() - started)
    return rows


def _process_one(
    predictor: Predictor,
    path: Path,
    rel: str,
    output_dir: Path,
    frames: str | int,
    secondary_capture: bool,
    seg_type: str,
    limits: InputLimits,
    n: int,
    total: int,
) -> ReportRow:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = process_file(predictor, path, output_dir, frames, secondary_capture, seg_type, limits)
    except DicomInputError as exc:
        sop, study, ds = _identify(path)
        log.info("[%d/%d] skipped: %s (SOP %s)", n, total, exc.reason, sop or "unknown")
        return ReportRow(rel, "skipped", exc.reason, scrub(redact(exc.detail, ds), path), sop, study)
    except Exception as exc:  # one bad file never stops the batch
        sop, study, ds = _identify(path)
        detail = scrub(redact(f"{type(exc).__name__}: {exc}", ds), path)
        log.error("[%d/%d] failed: SOP %s: %s", n, total, sop or "unknown", detail)
        return ReportRow(rel, "failed", "processing-error", detail, sop, study)
    outputs = [str(p.relative_to(output_dir.resolve())) for p in result.outputs]
    log.info("[%d/%d] processed SOP %s -> %d object(s)", n, total, result.sop_instance_uid, len(outputs))
    return ReportRow(
        rel,
        "processed",
        detail="; ".join(result.notes),
        sop_instance_uid=result.sop_instance_uid,
        study_instance_uid=result.study_instance_uid,
        frames=",".join(map(str, result.frame_numbers)),
        summary=result.summary,
        outputs=outputs,
        crop=result.crop,
    )


def _identify(path: Path) -> tuple[str, str, object]:
    """SOP/Study UIDs for the report of a skipped or failed file (best effort, header only; invalid UIDs are
    not repeated: they may be anything a sender chose)."""
    from tinyusfm_monai.io.dicom import is_valid_uid

    try:
        ds = read_dataset(path, pixels=False)
    except DicomInputError:
        return "", "", None
    sop, study = str(ds.get("SOPInstanceUID", "")), str(ds.get("StudyInstanceUID", ""))
    return (sop if is_valid_uid(sop) else ""), (study if is_valid_uid(study) else ""), ds


def exit_code(rows: list[ReportRow]) -> int:
    """EXIT_SOME_FAILED if any input failed, else EXIT_SOME_SKIPPED if any was skipped, else 0."""
    statuses = {r.status for r in rows}
    if "failed" in statuses:
        return EXIT_SOME_FAILED
    if "skipped" in statuses:
        return EXIT_SOME_SKIPPED
    return EXIT_ALL_PROCESSED


def write_report(rows: list[ReportRow], output_dir: Path, predictor: Predictor, frames: object, seconds: float) -> None:
    """report.csv (one row per input) and report.json (same rows plus run metadata and counts), atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=REPORT_FIELDS)
    writer.writeheader()
    for row in rows:
        record = asdict(row)
        record["outputs"] = ";".join(row.outputs)
        writer.writerow(safe_record(record))  # a file named "=HYPERLINK(...)" stays text in a spreadsheet
    atomic_write(output_dir / "report.csv", buffer.getvalue())
    counts: dict[str, int] = {}
    for row in rows:
        key = row.status if row.status == "processed" else f"{row.status}:{row.reason}"
        counts[key] = counts.get(key, 0) + 1
    report = {
        "bundle": predictor.name,
        "version": predictor.version,
        "task": predictor.task.name,
        "frames": str(frames),
        "seconds": round(seconds, 2),
        "counts": counts,
        "exit_code": exit_code(rows),
        "inputs": [asdict(r) for r in rows],
    }
    atomic_write(output_dir / "report.json", json.dumps(report, indent=2))


def infer(
    bundle: str,
    input: str,  # noqa: A002 - the CLI flag is --input
    output: str,
    frames: str = "all",
    secondary_capture: bool = False,
    seg_type: str = "binary",
    predictor: Predictor | None = None,
    max_frame_pixels: int = DEFAULT_LIMITS.max_frame_pixels,
    max_frames: int = DEFAULT_LIMITS.max_frames,
    max_file_mb: float = DEFAULT_LIMITS.max_file_bytes / 2**20,
    backend: str = DEFAULT_BACKEND,
) -> str:
    """Run bundle `bundle` on every ultrasound instance under `input`; results and report.{csv,json} in `output`.

    frames: all | middle | first | every:N (multi-frame policy). secondary_capture: also write an overlay
    Secondary Capture per processed frame. seg_type: binary (default, widest PACS support) | labelmap.
    max_frame_pixels / max_frames / max_file_mb: per-instance limits checked from the header before decoding
    (larger instances are skipped as too-large).
    backend: auto (OpenVINO on CPU, PyTorch on CUDA) | pytorch | onnx | onnx-int8 | openvino | openvino-bf16 |
    openvino-int8 (the bundle's overlays; OpenVINO falls back to PyTorch with one log line when not installed).
    Exit status: 0 all processed, 3 some skipped, 4 some failed, 2 could not start (docs/hospital_it.md).
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        limits = InputLimits(int(max_frame_pixels), int(max_frames), int(float(max_file_mb) * 2**20))
        if not Path(input).exists() and not Path(input).is_symlink():
            raise FileNotFoundError(f"input folder {input} does not exist")
        check_output_writable(Path(output))
    except (OSError, ValueError) as exc:
        print(f"tinyusfm-monai dicom infer: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CANNOT_START) from None
    model = predictor if predictor is not None else load_predictor(bundle, backend=backend)
    rows = run_batch(model, input, output, frames, secondary_capture, seg_type, limits)
    inputs = [r for r in rows if r.status != "ignored"]
    processed = sum(r.status == "processed" for r in inputs)
    code = exit_code(rows)
    counts = ", ".join(f"{n} {s}" for s in ("skipped", "failed", "ignored") if (n := sum(r.status == s for r in rows)))
    text = f"{processed}/{len(inputs)} input(s) processed{f' ({counts})' if counts else ''}; report: "
    return BatchSummary(text + str(Path(output) / "report.csv"), code)
