"""The nine segmentation-source converters, on fixture trees that mirror each publisher's layout."""

from __future__ import annotations

import importlib
import json
import shutil

import numpy as np
import pytest
from fixtures_seg import BUILDERS, H, W, build_ddti_original, build_kidneyus, heart, write_itk
from monai.data import load_decathlon_datalist
from PIL import Image

from tinyusfm_monai.data.converters.base import SampleError
from tinyusfm_monai.data.registry import get_dataset, tasks_of

KEYS = sorted(BUILDERS)


def _scan(key: str, root) -> dict:
    converter = importlib.import_module(f"tinyusfm_monai.data.converters.{key}")
    samples = list(converter.scan(root))
    ids = [s.id for s in samples]
    assert len(ids) == len(set(ids)), f"duplicate ids: {ids}"
    return {s.id: s for s in samples}


@pytest.fixture(params=KEYS)
def built(request, tmp_path):
    key = request.param
    return key, BUILDERS[key](tmp_path / "raw")


def _registry_values(key: str) -> set[int]:
    (task,) = [t for t in tasks_of(key) if t.task_type == "segmentation"]
    return set(range(task.num_classes))


def test_scan_lists_exactly_the_publisher_samples(built):
    key, fx = built
    samples = _scan(key, fx.root)
    assert set(samples) == set(fx.samples) | {fx.broken_id} | fx.issues
    flagged = {i for i, s in samples.items() if s.issue}
    assert flagged == fx.issues


def test_images_and_masks_load_with_rows_as_image_height(built):
    key, fx = built
    samples = _scan(key, fx.root)
    for sample_id, expected in fx.samples.items():
        sample = samples[sample_id]
        image, mask = sample.load_image(), sample.load_mask()
        assert image.dtype == np.uint8 and image.shape[:2] == (H, W), (sample_id, image.shape)
        assert mask.shape == (H, W), (sample_id, mask.shape)
        if expected.image is not None:  # lossless formats: exact pixels, so no flip or transpose either
            np.testing.assert_array_equal(image, expected.image, err_msg=sample_id)
        np.testing.assert_array_equal(mask, expected.mask, err_msg=sample_id)
        assert set(np.unique(mask).tolist()) <= _registry_values(key)


def test_mask_values_cover_every_registry_label(built):
    key, fx = built
    samples = _scan(key, fx.root)
    seen = set()
    for sample_id in fx.samples:
        seen |= set(np.unique(samples[sample_id].load_mask()).tolist())
    assert seen == _registry_values(key)


def test_patients_and_official_splits_are_picked_up(built):
    key, fx = built
    samples = _scan(key, fx.root)
    for sample_id, expected in fx.samples.items():
        assert samples[sample_id].patient == expected.patient, sample_id
        assert samples[sample_id].split == expected.split, sample_id
    assert get_dataset(key).has_patient_ids == any(e.patient for e in fx.samples.values())
    assert (get_dataset(key).official_split is not None) == any(e.split for e in fx.samples.values())


def test_a_damaged_file_raises_sample_error_naming_it_and_the_rest_load(built):
    key, fx = built
    samples = _scan(key, fx.root)
    broken = samples[fx.broken_id]
    with pytest.raises(SampleError, match=fx.broken_file.replace(".", r"\.")):
        broken.load_image()
        broken.load_mask()
    for sample_id in fx.samples:
        samples[sample_id].load_image()
        samples[sample_id].load_mask()


# ---- dataset specifics --------------------------------------------------------------------------------------


def test_kidneyus_falls_back_to_the_via_csv_polygons(tmp_path):
    fx = build_kidneyus(tmp_path / "raw", with_mask_pngs=False)
    samples = _scan("kidneyus", fx.root)
    assert "kidneyUSlogo" not in samples
    for sample_id, expected in fx.samples.items():
        np.testing.assert_array_equal(samples[sample_id].load_mask(), expected.mask, err_msg=sample_id)


def test_kidneyus_prefers_the_shipped_capsule_masks_over_the_csv(tmp_path):
    fx = build_kidneyus(tmp_path / "raw")
    (fx.root / "labels" / "reviewed_labels_1.csv").write_text("filename,region_shape_attributes\n")
    samples = _scan("kidneyus", fx.root)
    for sample_id, expected in fx.samples.items():
        np.testing.assert_array_equal(samples[sample_id].load_mask(), expected.mask)


def test_ddti_original_xml_layout_with_a_truncated_outline(tmp_path):
    fx = build_ddti_original(tmp_path / "raw")
    samples = _scan("ddti", fx.root)
    assert set(samples) == {"1_1", "1_2", "2_1", "3_1"}
    for sample_id, expected in fx.samples.items():
        assert samples[sample_id].patient == expected.patient
        assert samples[sample_id].load_image().shape == (H, W, 3)
        np.testing.assert_array_equal(samples[sample_id].load_mask(), expected.mask, err_msg=sample_id)
    with pytest.raises(SampleError, match=r"3\.xml"):
        samples["3_1"].load_mask()


def test_busbra_patient_comes_from_the_case_column(tmp_path):
    fx = BUILDERS["busbra"](tmp_path / "raw")
    table = fx.root / "BUSBRA" / "bus_data.csv"
    table.write_text(table.read_text().replace("bus_0002-l,2,", "bus_0002-l,0042,"))
    assert _scan("busbra", fx.root)["bus_0002-l"].patient == "42"
    table.unlink()  # without the table the case number in the name groups the images the same way
    assert _scan("busbra", fx.root)["bus_0002-l"].patient == "2"


def test_camus_frames_match_nibabels_reading_transposed(tmp_path):
    """NIfTI stores x fastest; nibabel returns (x, y, t). Our frame must be its transpose: rows = y."""
    import nibabel

    fx = BUILDERS["camus"](tmp_path / "raw")
    samples = _scan("camus", fx.root)
    path = fx.root / "CAMUS_public" / "database_nifti" / "patient0001" / "patient0001_2CH_half_sequence.nii.gz"
    volume = np.asarray(nibabel.load(path).dataobj)
    for t in range(volume.shape[2]):
        np.testing.assert_array_equal(samples[f"patient0001_2CH_f{t + 1:02d}"].load_image(), volume[:, :, t].T)


def test_camus_falls_back_to_ed_es_where_a_view_has_no_half_sequence(tmp_path):
    fx = BUILDERS["camus"](tmp_path / "raw")
    folder = fx.root / "CAMUS_public" / "database_nifti" / "patient0002"
    for suffix in ("", "_gt"):
        (folder / f"patient0002_2CH_half_sequence{suffix}.nii.gz").unlink()
        write_itk(heart(1)[None], folder / f"patient0002_2CH_ES{suffix}.nii.gz")
    samples = _scan("camus", fx.root)
    assert {i for i in samples if i.startswith("patient0002")} == {"patient0002_2CH_ED", "patient0002_2CH_ES"}
    np.testing.assert_array_equal(samples["patient0002_2CH_ES"].load_mask(), heart(1))
    assert samples["patient0002_2CH_ED"].load_image().shape == (H, W)
    assert samples["patient0002_2CH_ED"].split == "validation"


def test_camus_reads_each_volume_once_per_frame_pair(tmp_path, monkeypatch):
    import itk

    fx = BUILDERS["camus"](tmp_path / "raw")
    calls = []
    real = itk.imread
    monkeypatch.setattr(itk, "imread", lambda path, *a, **k: calls.append(path) or real(path, *a, **k))
    from tinyusfm_monai.data.converters import common

    common.read_itk.cache_clear()
    samples = _scan("camus", fx.root)
    for sample_id in sorted(fx.samples):
        samples[sample_id].load_image()
        samples[sample_id].load_mask()
    assert len(calls) == 2 * 4  # 4 sequences (image + ground truth), not one read per frame


def test_nerveseg_ignores_the_unlabelled_test_folder(tmp_path):
    fx = BUILDERS["nerveseg"](tmp_path / "raw")
    samples = _scan("nerveseg", fx.root)
    assert all(s.source.parent.name == "train" for s in samples.values())


def test_luss_also_pairs_masks_named_like_the_image_with_a_mask_suffix(tmp_path):
    fx = BUILDERS["luss"](tmp_path / "raw")
    base = fx.root / "LUSS_phantom"
    for mask in (base / "masks").glob("*.png"):
        mask.rename(base / "images" / f"{mask.stem}_mask.png")
    samples = _scan("luss", fx.root)
    assert set(samples) == set(fx.samples) | {fx.broken_id}
    for sample_id, expected in fx.samples.items():
        np.testing.assert_array_equal(samples[sample_id].load_mask(), expected.mask)


def test_luminous_unites_the_two_muscle_masks(tmp_path):
    fx = BUILDERS["luminous"](tmp_path / "raw")
    mask = _scan("luminous", fx.root)["1002_prone"].load_mask()
    assert mask[10, 10] == 1 and mask[10, 50] == 1 and mask[40, 30] == 0


def test_sources_are_never_modified(built, tmp_path):
    key, fx = built
    before = {p: p.stat().st_mtime_ns for p in fx.root.rglob("*") if p.is_file()}
    for sample in _scan(key, fx.root).values():
        for load in (sample.load_image, sample.load_mask) if not sample.issue else ():
            try:
                load()
            except SampleError:
                pass
    after = {p: p.stat().st_mtime_ns for p in fx.root.rglob("*") if p.is_file()}
    assert before == after


# ---- end to end through the shared pipeline ---------------------------------------------------------------


def test_prepare_writes_datalists_monai_loads(built, tmp_path):
    from tinyusfm_monai.data.prepare import prepare

    key, fx = built
    out = tmp_path / "out"
    prepare(key, str(fx.root), str(out), splits_dir=str(tmp_path / "splits"), progress=False)
    (task,) = [t for t in tasks_of(key) if t.task_type == "segmentation"]
    folder = out / task.name
    converted = {}
    datalist = json.loads((folder / "datalist.json").read_text())
    for split in ("training", "validation", "test"):
        if not datalist[split]:
            continue  # MONAI 1.6 fails on an empty "test" list; tiny fixtures can leave a split empty
        entries = load_decathlon_datalist(folder / "datalist.json", is_segmentation=True, data_list_key=split)
        for entry in entries:
            converted[entry["id"]] = (split, entry)
    assert set(converted) == set(fx.samples)
    for sample_id, (split, entry) in converted.items():
        expected = fx.samples[sample_id]
        mask = np.asarray(Image.open(entry["label"]))
        np.testing.assert_array_equal(mask, expected.mask, err_msg=sample_id)
        assert np.asarray(Image.open(entry["image"])).shape[:2] == (H, W)
        if expected.split:
            assert split == expected.split
    report = json.loads((folder / "conversion_report.json").read_text())
    assert fx.broken_file in json.dumps(report)
    if any(e.patient for e in fx.samples.values()):  # no patient in two splits
        by_patient = {}
        for sample_id, (split, _) in converted.items():
            by_patient.setdefault(fx.samples[sample_id].patient, set()).add(split)
        assert all(len(splits) == 1 for splits in by_patient.values()), by_patient
    shutil.rmtree(out)
