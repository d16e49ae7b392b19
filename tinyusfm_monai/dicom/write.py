"""Model results as standard DICOM objects: SEG, TID 1500 SR and an optional Secondary Capture overlay.

Which object for which result (the reasons are in docs/hospital_it.md):

- segmentation of a single-frame source -> DICOM SEG (highdicom, BINARY, Segmentation Storage
  1.2.840.10008.5.1.4.1.1.66.4) in the source pixel grid: the crop-size label map is pasted back into the full frame.
  BINARY rather than LABELMAP because Label Map Segmentation Storage (66.7, 2024) is unknown to most PACS,
  to dcmtk's storescp defaults and to the dicom3tools validator; `seg_type="labelmap"` is available.
- segmentation of a multi-frame (cine) source -> Comprehensive SR, TID 1500. highdicom cannot write SEG for a
  multi-frame source without a Frame of Reference (every real US cine), so each label region of each processed
  frame becomes a TID 1410 planar ROI: a closed SCOORD POLYLINE on the referenced *frame of the original instance*,
  finding type = the label's coded concept, area in mm2 when the ultrasound region is calibrated.
- classification -> Comprehensive SR, TID 1500: per processed frame one group with the predicted class
  (SCT 278201002 "Classification" = class concept) and its probability, plus one group per class (finding
  type = class concept) with the class probability (DCM 122157 "Probability", unit "1").
- optional Secondary Capture: the frame with the result drawn on it, for viewers without SEG/SR support.

Every output is in the source Study, in a new Series per (source series, bundle, version, kind), with UIDs derived
deterministically from the source UIDs and the bundle name/version: a rerun rewrites the same instances instead
of adding duplicates, and a new model version gets a new series.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw
from pydicom import valuerep
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from tinyusfm_monai.dicom.concepts import class_concept, segment_concept
from tinyusfm_monai.dicom.contours import outer_polygons
from tinyusfm_monai.io.dicom import (
    US_IMAGE_STORAGE,
    US_IMAGE_STORAGE_RETIRED,
    US_MULTIFRAME_IMAGE_STORAGE,
    US_MULTIFRAME_IMAGE_STORAGE_RETIRED,
    UltrasoundImage,
)

if TYPE_CHECKING:
    from tinyusfm_monai.bundle.predictor import Predictor

MANUFACTURER = "tinyusfm-monai"
SERIES_NUMBERS = {"SEG": 9101, "SR": 9102, "SC": 9103}
MAX_REGIONS_PER_LABEL = 20  # per frame, largest first: keeps a noisy cine SR bounded
# concept name of the predicted class (the per-class groups carry their class as finding type, DCM 121071)
PREDICTED_CLASS = codes.SCT.Classification
RESULT_COLOURS = ((0, 0, 0), (255, 64, 64), (64, 200, 255), (255, 220, 0), (120, 255, 120), (255, 128, 255))


#: retired ultrasound SOP classes -> their current equivalents. highdicom's IOD tables only know the current
#: ones (KeyError on the retired UID), so an output is built against the current class and every reference
#: is then set back to the class the source really has.
RETIRED_SOP_CLASSES = {
    US_IMAGE_STORAGE_RETIRED: US_IMAGE_STORAGE,
    US_MULTIFRAME_IMAGE_STORAGE_RETIRED: US_MULTIFRAME_IMAGE_STORAGE,
}


@contextmanager
def _known_sop_class(source: Dataset) -> Iterator[tuple[str, str] | None]:
    original = str(source.get("SOPClassUID", ""))
    current = RETIRED_SOP_CLASSES.get(original)
    if current is None:
        yield None
        return
    source.SOPClassUID = current
    try:
        yield current, original
    finally:
        source.SOPClassUID = original


def _restore_references(out: Dataset, current: str, original: str) -> None:
    for element in out.iterall():
        if element.keyword == "ReferencedSOPClassUID" and str(element.value) == current:
            element.value = original


def _writer(func):
    """Around every writer: highdicom's person-name check warns with the Patient's Name in the message (kept
    out of logs); missing Type 2 attributes are completed (`complete_type2`); retired SOP classes are handled
    (`RETIRED_SOP_CLASSES`)."""

    @functools.wraps(func)
    def wrapper(image: UltrasoundImage, *args, **kwargs):
        complete_type2(image.dataset)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            with _known_sop_class(image.dataset) as swapped:
                out = func(image, *args, **kwargs)
        if swapped is not None:
            _restore_references(out, *swapped)
        return out

    return wrapper


@dataclass(frozen=True)
class OutputIds:
    """Deterministic UIDs of one output object."""

    series_uid: str
    sop_uid: str


def output_ids(source: Dataset, predictor: Predictor, kind: str, *extra: object) -> OutputIds:
    """UIDs from (source UIDs, bundle name, bundle version, output kind): stable across reruns and restarts."""
    base = [str(source.SeriesInstanceUID), predictor.name, predictor.version, kind]
    series = generate_uid(entropy_srcs=["series", *base])
    sop = generate_uid(entropy_srcs=["instance", *base, str(source.SOPInstanceUID), *map(str, extra)])
    return OutputIds(series, sop)


def _software_version(predictor: Predictor) -> str:
    return str(predictor.version)[:64] or "unknown"


def _series_description(predictor: Predictor, kind: str) -> str:
    return f"AI {kind} {predictor.name} {predictor.version}"[:64]


def _instance_number(source: Dataset) -> int:
    try:
        return max(1, int(source.get("InstanceNumber") or 1))
    except (TypeError, ValueError):
        return 1


def _sr_algorithm(predictor: Predictor) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(name=predictor.name, version=_software_version(predictor))


def _observation_context(predictor: Predictor) -> hd.sr.ObservationContext:
    device_uid = generate_uid(entropy_srcs=["device", predictor.name, predictor.version])
    observer = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=device_uid, name=predictor.name[:64], manufacturer_name=MANUFACTURER, model_name=predictor.name[:64]
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=observer
        )
    )


def _source_group(image: UltrasoundImage, frame_number: int) -> hd.sr.SourceImageForMeasurementGroup:
    frames = [frame_number] if image.is_multiframe else None
    return hd.sr.SourceImageForMeasurementGroup.from_source_image(image.dataset, referenced_frame_numbers=frames)


def _tracking(source: Dataset, predictor: Predictor, text: str) -> hd.sr.TrackingIdentifier:
    uid = generate_uid(entropy_srcs=["tracking", str(source.SOPInstanceUID), predictor.name, predictor.version, text])
    return hd.sr.TrackingIdentifier(uid=uid, identifier=text[:64])


def _comprehensive_sr(
    image: UltrasoundImage, predictor: Predictor, groups: list, kind: str, title_extra: str
) -> hd.sr.ComprehensiveSR:
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(predictor),
        procedure_reported=codes.SCT.Ultrasonography,
        imaging_measurements=groups,
    )
    ids = output_ids(image.dataset, predictor, kind)
    return hd.sr.ComprehensiveSR(
        evidence=[image.dataset],
        content=report[0],
        series_instance_uid=ids.series_uid,
        series_number=SERIES_NUMBERS["SR"],
        sop_instance_uid=ids.sop_uid,
        instance_number=_instance_number(image.dataset),
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description=_series_description(predictor, title_extra),
        manufacturer_model_name=predictor.name[:64],
        software_versions=_software_version(predictor),
    )


# ---------------------------------------------------------------------------------------------------------
# segmentation


def segment_descriptions(predictor: Predictor) -> list[hd.seg.SegmentDescription]:
    """One description per non-background registry label (segment number == pixel value)."""
    algorithm = hd.AlgorithmIdentificationSequence(
        name=predictor.name[:64],
        family=codes.DCM.ArtificialIntelligence,
        version=_software_version(predictor),
        source=MANUFACTURER,
    )
    out = []
    for number, label in enumerate(predictor.task.labels[1:], start=1):
        category, prop_type = segment_concept(label)
        colour = RESULT_COLOURS[number % len(RESULT_COLOURS)]
        out.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=label[:64],
                segmented_property_category=category,
                segmented_property_type=prop_type,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
                tracking_uid=generate_uid(entropy_srcs=["segment", predictor.name, predictor.version, label]),
                tracking_id=label[:64],
                display_color=hd.color.CIELabColor.from_rgb(*colour),
            )
        )
    return out


#: Type 2 attributes of the Patient and General Study modules that every output copies from its source; some
#: vendor files (e.g. pydicom's color-pl.dcm) omit them, and highdicom then fails on the missing attribute
TYPE2_COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def complete_type2(source: Dataset) -> None:
    """Add the Type 2 attributes the source omits, empty (Type 2 means 'present, may be empty'), to the source
    header in memory (the file is never changed), so the outputs carry them as the standard requires. A date or
    time that is not in DICOM format (e.g. ACR-NEMA '11:20:00') is emptied as well: highdicom refuses it, and an
    output must not carry a value no reader can parse."""
    for keyword in TYPE2_COPIED:
        if keyword not in source:
            setattr(source, keyword, None)
            continue
        parser = {"DA": valuerep.DA, "TM": valuerep.TM}.get(source[keyword].VR)
        value = source[keyword].value
        if parser is not None and value not in (None, ""):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error")
                    parser(value)
            except (ValueError, TypeError, UserWarning):
                setattr(source, keyword, None)


@_writer
def segmentation_seg(
    image: UltrasoundImage, label_map: np.ndarray, predictor: Predictor, seg_type: str = "binary"
) -> hd.seg.Segmentation:
    """DICOM SEG of a single-frame source; `label_map` is full-frame (Rows, Columns) uint8, 0 = background."""
    if image.is_multiframe:
        raise ValueError("SEG needs a single-frame source (SOP class); use segmentation_sr for cine")
    if label_map.shape != (image.rows, image.columns):
        raise ValueError(f"label map {label_map.shape} is not in the source grid ({image.rows}, {image.columns})")
    complete_type2(image.dataset)
    ids = output_ids(image.dataset, predictor, "SEG")
    seg = hd.seg.Segmentation(
        source_images=[image.dataset],
        pixel_array=label_map.astype(np.uint8),
        segmentation_type=seg_type.upper(),
        segment_descriptions=segment_descriptions(predictor),
        series_instance_uid=ids.series_uid,
        series_number=SERIES_NUMBERS["SEG"],
        sop_instance_uid=ids.sop_uid,
        instance_number=_instance_number(image.dataset),
        manufacturer=MANUFACTURER,
        manufacturer_model_name=predictor.name[:64],
        software_versions=_software_version(predictor),
        device_serial_number="0",
        content_label="AI_SEGMENTATION",
        content_description=f"{predictor.name} {predictor.version}"[:64],
        series_description=_series_description(predictor, "segmentation"),
        omit_empty_frames=False,  # an empty result is a result: keep one (empty) frame per segment
    )
    _fill_type2c(seg, image.dataset)
    return seg


def _fill_type2c(out: Dataset, source: Dataset, laterality: bool = False) -> None:
    """Type 2C attributes that apply to US-derived objects without a Frame of Reference (dciodvfy checks them):
    Patient Orientation (no Image Orientation (Patient)) and, for Secondary Capture, Laterality (its condition
    cannot be decided without a body part). Copied from the source when known, otherwise present and empty,
    which is what Type 2 means by 'unknown'. SEG must not carry an empty Laterality (dciodvfy error)."""
    if "PatientOrientation" not in out or len(out.PatientOrientation or ()) != 2:
        orientation = source.get("PatientOrientation")
        out.PatientOrientation = orientation if orientation and len(orientation) == 2 else None
    if laterality and "Laterality" not in out:
        out.Laterality = source.get("Laterality") or source.get("ImageLaterality") or None


@dataclass
class FrameRegions:
    """What the cine SR keeps of one frame's label map: per foreground label whether it is present and its
    largest regions as closed polygons in source-frame coordinates (with their pixel counts).

    Why not the label map itself: a 900-frame cine of 2 Mpx frames would hold 1.8 GB of label maps until the
    SR is written; this is a few kB per frame, computed as each frame is predicted."""

    frame_number: int
    present: list[bool]
    polygons: list[list[tuple[np.ndarray, int]]]


def frame_regions(
    label_map: np.ndarray, num_labels: int, frame_number: int, offset: tuple[int, int] = (0, 0)
) -> FrameRegions:
    """The regions of a label map (0 = background); `offset` (x, y) moves crop coordinates to the source frame."""
    present, polygons = [], []
    shift = np.asarray(offset, dtype=np.float32)
    for value in range(1, num_labels):
        mask = label_map == value
        present.append(bool(mask.any()))
        found = sorted(outer_polygons(mask), key=lambda item: -item[1])[:MAX_REGIONS_PER_LABEL] if mask.any() else []
        polygons.append([(polygon + shift, pixels) for polygon, pixels in found])
    return FrameRegions(frame_number, present, polygons)


@_writer
def segmentation_sr(
    image: UltrasoundImage, label_maps: list[np.ndarray], predictor: Predictor
) -> hd.sr.ComprehensiveSR:
    """Cine fallback: TID 1500 with per-frame presence of each label and one planar ROI polygon per region;
    `label_maps` are full-frame maps of the selected frames."""
    n = len(predictor.task.labels)
    regions = [frame_regions(m, n, f) for f, m in zip(image.frame_numbers, label_maps)]
    return segmentation_sr_from_regions(image, regions, predictor)


@_writer
def segmentation_sr_from_regions(
    image: UltrasoundImage, frames: list[FrameRegions], predictor: Predictor
) -> hd.sr.ComprehensiveSR:
    """The cine SR from per-frame regions (`frame_regions`), so the label maps need not be kept."""
    complete_type2(image.dataset)
    labels = predictor.task.labels
    algorithm = _sr_algorithm(predictor)
    source = image.dataset
    groups: list = []
    for regions in frames:
        frame_number = regions.frame_number
        presence = []
        rois = []
        for value, label in enumerate(labels[1:], start=1):
            category, prop_type = segment_concept(label)
            presence.append(
                hd.sr.QualitativeEvaluation(
                    name=prop_type, value=codes.SCT.Present if regions.present[value - 1] else codes.SCT.Absent
                )
            )
            for k, (polygon, pixels) in enumerate(regions.polygons[value - 1], start=1):
                measurements = []
                if image.spacing is not None:
                    area = pixels * image.spacing.x_mm * image.spacing.y_mm
                    measurements.append(
                        hd.sr.Measurement(name=codes.SCT.Area, value=round(area, 4), unit=codes.UCUM.SquareMillimeter)
                    )
                region = hd.sr.ImageRegion(
                    graphic_type=hd.sr.GraphicTypeValues.POLYLINE,  # closed: 2D SCOORD has no POLYGON
                    graphic_data=polygon,
                    source_image=hd.sr.SourceImageForRegion(
                        referenced_sop_class_uid=source.SOPClassUID,
                        referenced_sop_instance_uid=source.SOPInstanceUID,
                        referenced_frame_numbers=[frame_number] if image.is_multiframe else None,
                    ),
                )
                rois.append(
                    hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                        tracking_identifier=_tracking(source, predictor, f"frame {frame_number} {label} {k}"),
                        referenced_region=region,
                        finding_type=prop_type,
                        finding_category=category,
                        algorithm_id=algorithm,
                        measurements=measurements or None,
                    )
                )
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=_tracking(source, predictor, f"frame {frame_number} summary"),
                algorithm_id=algorithm,
                source_images=[_source_group(image, frame_number)],
                qualitative_evaluations=presence,
            )
        )
        groups.extend(rois)
    return _comprehensive_sr(image, predictor, groups, "SR-SEG", "segmentation")


# ---------------------------------------------------------------------------------------------------------
# classification


@_writer
def classification_sr(
    image: UltrasoundImage, probabilities: list[np.ndarray], predictor: Predictor
) -> hd.sr.ComprehensiveSR:
    """TID 1500: per processed frame the predicted class with its probability, and every class probability."""
    complete_type2(image.dataset)
    labels = predictor.task.labels
    algorithm = _sr_algorithm(predictor)
    source = image.dataset
    groups: list = []
    for frame_number, probs in zip(image.frame_numbers, probabilities):
        best = int(np.argmax(probs))
        prefix = f"frame {frame_number} " if image.is_multiframe else ""
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=_tracking(source, predictor, f"{prefix}prediction"),
                algorithm_id=algorithm,
                source_images=[_source_group(image, frame_number)],
                qualitative_evaluations=[
                    hd.sr.QualitativeEvaluation(name=PREDICTED_CLASS, value=class_concept(labels[best]))
                ],
                measurements=[
                    hd.sr.Measurement(
                        name=codes.DCM.Probability, value=round(float(probs[best]), 6), unit=codes.UCUM.NoUnits
                    )
                ],
            )
        )
        for index, label in enumerate(labels):
            groups.append(
                hd.sr.MeasurementsAndQualitativeEvaluations(
                    tracking_identifier=_tracking(source, predictor, f"{prefix}class {label}"),
                    finding_type=class_concept(label),
                    algorithm_id=algorithm,
                    source_images=[_source_group(image, frame_number)],
                    measurements=[
                        hd.sr.Measurement(
                            name=codes.DCM.Probability, value=round(float(probs[index]), 6), unit=codes.UCUM.NoUnits
                        )
                    ],
                )
            )
    return _comprehensive_sr(image, predictor, groups, "SR-CLS", "classification")


# ---------------------------------------------------------------------------------------------------------
# secondary capture overlay


def draw_overlay(
    image: UltrasoundImage, index: int, result: np.ndarray, predictor: Predictor, frame: np.ndarray | None = None
) -> np.ndarray:
    """Full frame with the crop box, the label map (tinted, full-frame) or the predicted class drawn on it.
    `frame` is the decoded frame when the caller has it (otherwise it is decoded again)."""
    rgb = (image.frame(index) if frame is None else frame).astype(np.float32)
    if predictor.task.task_type == "segmentation":
        for value in range(1, len(predictor.task.labels)):
            mask = result == value
            if mask.any():
                colour = np.asarray(RESULT_COLOURS[value % len(RESULT_COLOURS)], np.float32)
                rgb[mask] = 0.55 * rgb[mask] + 0.45 * colour
    canvas = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    box = image.crop_box
    draw.rectangle([box.x0, box.y0, box.x1 - 1, box.y1 - 1], outline=(255, 255, 0))
    if predictor.task.task_type == "classification":
        best = int(np.argmax(result))
        text = f"{predictor.task.labels[best]} p={float(result[best]):.2f}"
    else:
        present = [label for v, label in enumerate(predictor.task.labels) if v and (result == v).any()]
        text = ", ".join(present) or "no finding"
    draw.text((box.x0 + 4, box.y0 + 4), f"AI {predictor.name} {predictor.version}: {text}", fill=(255, 255, 0))
    return np.asarray(canvas)


@_writer
def overlay_sc(
    image: UltrasoundImage, index: int, result: np.ndarray, predictor: Predictor, frame: np.ndarray | None = None
) -> hd.sc.SCImage:
    """Secondary Capture of one frame with the result burned in (BurnedInAnnotation YES)."""
    complete_type2(image.dataset)
    source = image.dataset
    frame_number = image.frame_numbers[index]
    ids = output_ids(source, predictor, "SC", frame_number)
    orientation = tuple(source.get("PatientOrientation") or ())
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=draw_overlay(image, index, result, predictor, frame),
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=ids.series_uid,
        series_number=SERIES_NUMBERS["SC"],
        sop_instance_uid=ids.sop_uid,
        instance_number=frame_number,
        manufacturer=MANUFACTURER,
        # highdicom insists on an orientation for PATIENT; US has none, so a placeholder is replaced below
        patient_orientation=orientation if len(orientation) == 2 else ("A", "F"),
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        series_description=_series_description(predictor, "overlay"),
    )
    _fill_type2c(sc, source, laterality=True)
    sc.BurnedInAnnotation = "YES"
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.DerivationDescription = f"{predictor.name} {predictor.version} result drawn on frame {frame_number}"[:1024]
    ref = Dataset()
    ref.ReferencedSOPClassUID = source.SOPClassUID
    ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
    if image.is_multiframe:
        ref.ReferencedFrameNumber = frame_number
    sc.SourceImageSequence = [ref]
    return sc
