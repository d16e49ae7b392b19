"""SEG / TID 1500 SR / Secondary Capture outputs: content, references, read-back and dciodvfy validation."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
import pytest
from dicom_fixtures import IntensityClassifier, ThresholdSegmenter, dciodvfy_errors, us_file
from pydicom.sr.codedict import codes

from tinyusfm_monai.data.registry import TASKS
from tinyusfm_monai.dicom import write
from tinyusfm_monai.dicom.concepts import GENERIC_SEGMENT_CONCEPT, class_concept, segment_concept
from tinyusfm_monai.dicom.process import process_file
from tinyusfm_monai.io.dicom import read_ultrasound


def _save(ds, path):
    ds.save_as(path, enforce_file_format=True)
    return path


def _full_map(image, predictor, i=0):
    return image.crop_box.paste(predictor.predict(image.cropped(i)), image.rows, image.columns)


def test_registry_labels_have_concepts():
    known = {"lesion", "nodule", "tumour", "kidney capsule", "brachial plexus", "fetal head", "myocardium"}
    for task in TASKS.values():
        for label in task.labels[1:] if task.task_type == "segmentation" else task.labels:
            concept = segment_concept(label) if task.task_type == "segmentation" else (class_concept(label),)
            assert all(c.value and c.scheme_designator and c.meaning for c in concept), label
            if label in known:
                assert concept != GENERIC_SEGMENT_CONCEPT, label
    assert segment_concept("something new") == GENERIC_SEGMENT_CONCEPT
    assert class_concept("malignant") == codes.SCT.Malignant
    private = class_concept("high grade serous cystadenocarcinoma")
    assert private.scheme_designator == "99TUSFM" and len(private.value) <= 16


@pytest.mark.parametrize("name", ["examples_palette.dcm", "US1_UNCR.dcm"])
def test_seg_single_frame(tmp_path, name):
    image = read_ultrasound(us_file(name))
    predictor = ThresholdSegmenter("fhpsaop_segmentation")  # two foreground labels
    label_map = _full_map(image, predictor)
    assert set(np.unique(label_map)) >= {1, 2}
    path = _save(write.segmentation_seg(image, label_map, predictor), tmp_path / "seg.dcm")
    assert dciodvfy_errors(path) == []
    seg = hd.seg.segread(path)
    src = image.dataset
    assert seg.StudyInstanceUID == src.StudyInstanceUID and seg.SeriesInstanceUID != src.SeriesInstanceUID
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert (seg.Rows, seg.Columns) == (image.rows, image.columns)
    descriptions = seg.SegmentSequence
    assert [d.SegmentLabel for d in descriptions] == ["pubic symphysis", "fetal head"]
    assert descriptions[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == codes.SCT.SymphysisPubis.value
    algo = descriptions[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algo.AlgorithmName == predictor.name and algo.AlgorithmVersion == predictor.version
    for number in (1, 2):
        mask = seg.get_pixels_by_source_instance(
            [src.SOPInstanceUID], segment_numbers=[number], combine_segments=False
        )[0, :, :, 0]
        assert np.array_equal(mask.astype(bool), label_map == number)
    # outside the crop box nothing can be labelled: results are in the source grid
    box = image.crop_box
    assert label_map[: box.y0].sum() == 0 and label_map[:, : box.x0].sum() == 0


def test_seg_empty_result_is_valid(tmp_path):
    image = read_ultrasound(us_file("US1_UNCR.dcm"))
    predictor = ThresholdSegmenter("busi_segmentation")
    path = _save(
        write.segmentation_seg(image, np.zeros((image.rows, image.columns), np.uint8), predictor), tmp_path / "e.dcm"
    )
    assert dciodvfy_errors(path) == []
    assert hd.seg.segread(path).NumberOfFrames == 1


def test_uids_are_deterministic():
    image = read_ultrasound(us_file("US1_UNCR.dcm"))
    predictor = ThresholdSegmenter("busi_segmentation")
    a = write.output_ids(image.dataset, predictor, "SEG")
    assert a == write.output_ids(image.dataset, predictor, "SEG")
    assert a != write.output_ids(image.dataset, ThresholdSegmenter("busi_segmentation", version="0.2.0"), "SEG")


def _content_items(ds):
    for item in ds.get("ContentSequence", []):
        yield item
        yield from _content_items(item)


@pytest.mark.parametrize("name,frames", [("US1_J2KR.dcm", "all"), ("examples_ybr_color.dcm", "every:10")])
def test_classification_sr(tmp_path, name, frames):
    image = read_ultrasound(us_file(name), frames)
    predictor = IntensityClassifier("busi_classification")
    probabilities = [predictor.predict(image.cropped(i)) for i in range(len(image.frame_numbers))]
    path = _save(write.classification_sr(image, probabilities, predictor), tmp_path / "sr.dcm")
    assert dciodvfy_errors(path) == []
    sr = hd.sr.srread(path)
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert sr.StudyInstanceUID == image.dataset.StudyInstanceUID
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == image.dataset.SOPInstanceUID
    items = list(_content_items(sr))
    findings = [i for i in items if i.ValueType == "CODE" and i.ConceptNameCodeSequence[0].CodeValue == "278201002"]
    assert len(findings) == len(image.frame_numbers)
    best = predictor.task.labels[int(np.argmax(probabilities[0]))]
    assert findings[0].ConceptCodeSequence[0].CodeMeaning.lower() == class_concept(best).meaning.lower()
    probs = [
        float(i.MeasuredValueSequence[0].NumericValue)
        for i in items
        if i.ValueType == "NUM" and i.ConceptNameCodeSequence[0].CodeValue == codes.DCM.Probability.value
    ]
    n_classes = len(predictor.task.labels)
    assert len(probs) == len(image.frame_numbers) * (n_classes + 1)
    assert np.allclose(probs[1 : 1 + n_classes], probabilities[0], atol=1e-6)
    names = {i.TextValue for i in items if i.ValueType == "TEXT"} | {
        i.ConceptCodeSequence[0].CodeMeaning for i in items if i.ValueType == "CODE"
    }
    assert predictor.name in names and predictor.version in names  # algorithm name + version
    if image.number_of_frames > 1:
        refs = [i for i in items if i.ValueType == "IMAGE"]
        assert {int(r.ReferencedSOPSequence[0].ReferencedFrameNumber) for r in refs} == set(image.frame_numbers)


def test_cine_segmentation_sr_fallback(tmp_path):
    image = read_ultrasound(us_file("examples_ybr_color.dcm"), "every:10")
    predictor = ThresholdSegmenter("busi_segmentation")
    maps = [_full_map(image, predictor, i) for i in range(len(image.frame_numbers))]
    with pytest.raises(ValueError):  # highdicom cannot: multi-frame US without a Frame of Reference
        write.segmentation_seg(image, maps[0], predictor)
    path = _save(write.segmentation_sr(image, maps, predictor), tmp_path / "cine.dcm")
    assert dciodvfy_errors(path) == []
    sr = hd.sr.srread(path)
    items = list(_content_items(sr))
    polylines = [i for i in items if i.ValueType == "SCOORD"]
    assert polylines and all(i.GraphicType == "POLYLINE" for i in polylines)
    first = np.asarray(polylines[0].GraphicData, dtype=float).reshape(-1, 2)
    assert np.allclose(first[0], first[-1])  # closed
    box = image.crop_box
    assert first[:, 0].min() >= box.x0 and first[:, 0].max() <= box.x1 and first[:, 1].max() <= box.y1
    frames = {int(i.ContentSequence[0].ReferencedSOPSequence[0].ReferencedFrameNumber) for i in polylines}
    assert frames <= set(image.frame_numbers) and frames
    areas = [i for i in items if i.ValueType == "NUM" and i.ConceptNameCodeSequence[0].CodeValue == "42798000"]
    assert areas and areas[0].MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue == "mm2"


def test_secondary_capture_overlay(tmp_path):
    image = read_ultrasound(us_file("examples_palette.dcm"))
    predictor = ThresholdSegmenter("busi_segmentation")
    label_map = _full_map(image, predictor)
    path = _save(write.overlay_sc(image, 0, label_map, predictor), tmp_path / "sc.dcm")
    assert dciodvfy_errors(path) == []
    sc = pydicom.dcmread(path)
    assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and sc.BurnedInAnnotation == "YES"
    assert sc.StudyInstanceUID == image.dataset.StudyInstanceUID
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == image.dataset.SOPInstanceUID
    pixels = sc.pixel_array
    assert pixels.shape == (image.rows, image.columns, 3)
    assert not np.array_equal(pixels, image.frames[0])


def test_process_file_writes_per_study(tmp_path):
    predictor = ThresholdSegmenter("busi_segmentation")
    result = process_file(predictor, us_file("US1_UNCR.dcm"), tmp_path, secondary_capture=True)
    study = pydicom.dcmread(us_file("US1_UNCR.dcm"), stop_before_pixels=True).StudyInstanceUID
    assert sorted(p.name.split("_")[0] for p in result.outputs) == ["SC", "SEG"]
    assert all(p.parent == tmp_path / study for p in result.outputs)


def test_labelmap_seg_option(tmp_path):
    """Label Map SEG (66.7) on request; dicom3tools 2022 predates it, so only read-back is checked."""
    image = read_ultrasound(us_file("US1_UNCR.dcm"))
    predictor = ThresholdSegmenter("fhpsaop_segmentation")
    label_map = _full_map(image, predictor)
    path = _save(write.segmentation_seg(image, label_map, predictor, seg_type="labelmap"), tmp_path / "lm.dcm")
    seg = hd.seg.segread(path)
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.7"
    assert np.array_equal(seg.pixel_array.reshape(label_map.shape), label_map)


@pytest.mark.parametrize("kind", ["SEG", "SR"])
def test_a_corrected_source_gets_a_new_uid_naming_the_replaced_result(tmp_path, kind):
    """Processing the same instance again writes the same object (same UID, same file); the same SOP Instance UID
    with changed pixels (a corrected re-send) gets a new UID in the same series, next to the replaced object,
    and an SR names the replaced SR as its predecessor; a second re-send of the correction changes nothing."""
    predictor = ThresholdSegmenter("busi_segmentation") if kind == "SEG" else IntensityClassifier("busi_classification")
    src = us_file("US1_UNCR.dcm")
    first = process_file(predictor, src, tmp_path / "out").outputs[0]
    again = process_file(predictor, src, tmp_path / "out").outputs[0]
    assert again == first and len(list((tmp_path / "out").rglob("*.dcm"))) == 1
    ds = pydicom.dcmread(src)
    pixels = ds.pixel_array.copy()
    pixels[: pixels.shape[0] // 2] = 255 - pixels[: pixels.shape[0] // 2]  # the "corrected" image
    ds.PixelData = pixels.tobytes()
    ds.save_as(tmp_path / "corrected.dcm", enforce_file_format=True)
    corrected = process_file(predictor, tmp_path / "corrected.dcm", tmp_path / "out").outputs[0]
    old, new = pydicom.dcmread(first), pydicom.dcmread(corrected)
    assert corrected != first and first.is_file()
    assert new.SOPInstanceUID != old.SOPInstanceUID and new.SeriesInstanceUID == old.SeriesInstanceUID
    assert new.SOPInstanceUID in corrected.name and new.file_meta.MediaStorageSOPInstanceUID == new.SOPInstanceUID
    if kind == "SR":
        predecessor = new.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
        assert predecessor.ReferencedSOPInstanceUID == old.SOPInstanceUID
    assert dciodvfy_errors(corrected) == []
    assert process_file(predictor, tmp_path / "corrected.dcm", tmp_path / "out").outputs[0] == corrected
    assert len(list((tmp_path / "out").rglob("*.dcm"))) == 2
