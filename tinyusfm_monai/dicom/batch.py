"""`tinyusfm-monai dicom infer`: run a bundle over a folder of studies, write DICOM results and a report.

Why these rules: hospital IT runs this on exports they must not damage and will rerun after a model update.
So inputs are only ever opened for reading, one bad file never stops the batch, output UIDs are derived from
the source UIDs and the bundle name/version (a rerun overwrites the same files; a new version gets a new
series), and every input gets a report row saying processed / skipped / failed and why.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tinyusfm_monai.bundle.predictor import DEFAULT_BACKEND, Predictor, load_predictor
from tinyusfm_monai.dicom.privacy import quiet_third_party_output, redact
from tinyusfm_monai.dicom.process import process_file
from tinyusfm_monai.io.dicom import DicomInputError, read_dataset
from tinyusfm_monai.io.formats import iter_files

log = logging.getLogger("tinyusfm_monai.dicom.batch")

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
)


@dataclass
class ReportRow:
    """One input file. status: processed | skipped (input not processable) | failed (model or writer error)."""

    input: str
    status: str
    reason: str = ""
    detail: str = ""
    sop_instance_uid: str = ""
    study_instance_uid: str = ""
    frames: str = ""
    summary: str = ""
    outputs: list[str] = field(default_factory=list)


def _inputs(input_dir: Path, output_dir: Path) -> list[Path]:
    """All files below input_dir, minus the output folder when it lies inside the input (no self-feeding)."""
    out_resolved = output_dir.resolve()
    files = []
    for f in iter_files(input_dir):
        try:
            f.resolve().relative_to(out_resolved)
            continue
        except ValueError:
            files.append(f)
    return files


def _identify(path: Path) -> tuple[str, str, object]:
    """SOP/Study UIDs for the report of a skipped or failed file (best effort, header only)."""
    try:
        ds = read_dataset(path, pixels=False)
        return str(ds.get("SOPInstanceUID", "")), str(ds.get("StudyInstanceUID", "")), ds
    except DicomInputError:
        return "", "", None


def run_batch(
    predictor: Predictor,
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    frames: str | int = "all",
    secondary_capture: bool = False,
    seg_type: str = "binary",
) -> list[ReportRow]:
    """Process every file under input_dir with `predictor`; write outputs and report.{csv,json} to output_dir."""
    quiet_third_party_output()
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.exists():
        raise FileNotFoundError(f"input folder {input_dir} does not exist")
    output_dir.mkdir(parents=True, exist_ok=True)
    files = _inputs(input_dir, output_dir)
    rows: list[ReportRow] = []
    started = time.time()
    for n, path in enumerate(files, start=1):
        rel = str(path.relative_to(input_dir)) if path != input_dir else path.name
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = process_file(predictor, path, output_dir, frames, secondary_capture, seg_type)
        except DicomInputError as exc:
            sop, study, ds = _identify(path)
            rows.append(ReportRow(rel, "skipped", exc.reason, redact(exc.detail, ds), sop, study))
            log.info("[%d/%d] skipped: %s (SOP %s)", n, len(files), exc.reason, sop or "unknown")
            continue
        except Exception as exc:  # one bad file never stops the batch
            sop, study, ds = _identify(path)
            detail = redact(f"{type(exc).__name__}: {exc}", ds)
            rows.append(ReportRow(rel, "failed", "processing-error", detail, sop, study))
            log.error("[%d/%d] failed: SOP %s: %s", n, len(files), sop or "unknown", detail)
            continue
        outputs = [str(p.relative_to(output_dir)) for p in result.outputs]
        rows.append(
            ReportRow(
                rel,
                "processed",
                sop_instance_uid=result.sop_instance_uid,
                study_instance_uid=result.study_instance_uid,
                frames=",".join(map(str, result.frame_numbers)),
                summary=result.summary,
                outputs=outputs,
            )
        )
        log.info("[%d/%d] processed SOP %s -> %d object(s)", n, len(files), result.sop_instance_uid, len(outputs))
    write_report(rows, output_dir, predictor, frames, time.time() - started)
    return rows


def write_report(rows: list[ReportRow], output_dir: Path, predictor: Predictor, frames: object, seconds: float) -> None:
    """report.csv (one row per input) and report.json (same rows plus run metadata and counts)."""
    with open(output_dir / "report.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=REPORT_FIELDS)
        writer.writeheader()
        for row in rows:
            record = asdict(row)
            record["outputs"] = ";".join(row.outputs)
            writer.writerow(record)
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
        "inputs": [asdict(r) for r in rows],
    }
    (output_dir / "report.json").write_text(json.dumps(report, indent=2))


def infer(
    bundle: str,
    input: str,  # noqa: A002 - the CLI flag is --input
    output: str,
    frames: str = "all",
    secondary_capture: bool = False,
    seg_type: str = "binary",
    predictor: Predictor | None = None,
    backend: str = DEFAULT_BACKEND,
) -> str:
    """Run bundle `bundle` on every ultrasound instance under `input`; results and report.{csv,json} in `output`.

    frames: all | middle | first | every:N (multi-frame policy). secondary_capture: also write an overlay
    Secondary Capture per processed frame. seg_type: binary (default, widest PACS support) | labelmap.
    backend: auto (OpenVINO on CPU, PyTorch on CUDA) | pytorch | onnx | onnx-int8 | openvino | openvino-bf16 |
    openvino-int8 (the bundle's overlays; OpenVINO falls back to PyTorch with one log line when not installed).
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model = predictor if predictor is not None else load_predictor(bundle, backend=backend)
    rows = run_batch(model, input, output, frames, secondary_capture, seg_type)
    processed = sum(r.status == "processed" for r in rows)
    return f"{processed}/{len(rows)} input(s) processed; report: {Path(output) / 'report.csv'}"
