"""A corrected result gets a new SOP Instance UID, and (SR) names the object it replaces.

Output UIDs are derived from the source UIDs, the bundle name and version (`write.output_ids`), so processing
the same instance again writes the same object: a PACS that receives it twice stores it once. When a source
instance comes back *changed* under the same SOP Instance UID (a modality re-sending a corrected image), its
result differs; sent under the first UID it would reach the PACS as a second, different object with the same
SOP Instance UID, which PACS handle inconsistently (refused as a duplicate, first one kept silently, or
overwritten). So the result is compared with the object already written under that UID in the output folder
(by content: SEG segments and pixel data, SR content tree; never timestamps):

- identical: written again under the same UID (nothing new for the PACS);
- different: a new SOP Instance UID, derived from the replaced UID and the new content (so a second re-send of
  the same corrected image gives the same new UID again), in the same series, written next to the replaced
  object (which stays). An SR also lists the replaced SR in its Predecessor Documents Sequence, the SR Document
  General module's attribute for a document whose content supersedes another. The SEG IOD has no such
  attribute: the replacement is logged with both UIDs.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

log = logging.getLogger(__name__)

# what a result *is*; everything else (creation date and time, ...) may differ between two runs of the same result
_CONTENT = ("SegmentSequence", "PixelData", "NumberOfFrames", "ContentSequence", "ConceptNameCodeSequence")


def content_digest(ds: Dataset) -> str:
    """sha256 over the result's content attributes, as stored (values, not timestamps)."""
    h = hashlib.sha256()
    for keyword in _CONTENT:
        if keyword in ds:
            element = ds[keyword]
            value = element.value
            if isinstance(value, Sequence):
                value = str([str(item) for item in value])  # repr of every nested element (tag, VR, value)
            h.update(f"{keyword}=".encode() + (value if isinstance(value, bytes) else str(value).encode()))
    return h.hexdigest()


def resolve_correction(ds: Dataset, path: Path) -> tuple[Dataset, Path]:
    """(dataset, path) to write: unchanged when nothing (or the same result) is at `path`, else a corrected
    object under a new SOP Instance UID and file name, with a reference to the replaced one (SR)."""
    if not path.is_file():
        return ds, path
    try:
        previous = dcmread(path)
    except Exception:  # an unreadable earlier result is replaced in place: nothing valid to refer to
        return ds, path
    new, old = content_digest(ds), content_digest(previous)
    if new == old:
        return ds, path
    replaced = str(previous.SOPInstanceUID)
    ds.SOPInstanceUID = generate_uid(entropy_srcs=["correction", replaced, new])
    if getattr(ds, "file_meta", None) is not None and "MediaStorageSOPInstanceUID" in ds.file_meta:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if "ContentSequence" in ds:  # SR: the replaced document is its predecessor
        ref = Dataset()
        ref.ReferencedSOPClassUID = previous.SOPClassUID
        ref.ReferencedSOPInstanceUID = replaced
        series = Dataset()
        series.SeriesInstanceUID = previous.SeriesInstanceUID
        series.ReferencedSOPSequence = Sequence([ref])
        study = Dataset()
        study.StudyInstanceUID = previous.StudyInstanceUID
        study.ReferencedSeriesSequence = Sequence([series])
        ds.PredecessorDocumentsSequence = Sequence([study])
    target = path.with_name(path.name.replace(replaced, str(ds.SOPInstanceUID)))
    log.warning(
        "the result differs from the one written before for the same source instance: written as a correction, "
        "SOP Instance UID %s (replaces %s)",
        ds.SOPInstanceUID,
        replaced,
    )
    return ds, target
