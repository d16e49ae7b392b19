"""The MONAI reader: what a bundle's LoadImaged sees when pointed at a folder of DICOM files."""

from __future__ import annotations

import shutil

import numpy as np
from dicom_fixtures import make_truncated, us_file
from monai.data import Dataset
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

from tinyusfm_monai.io.dicom import read_ultrasound
from tinyusfm_monai.io.readers import UltrasoundDicomReader, dicom_datalist


def _study(tmp_path):
    folder = tmp_path / "study"
    folder.mkdir()
    for name in ("examples_palette.dcm", "examples_ybr_color.dcm", "US1_UNCR.dcm", "CT_small.dcm"):
        shutil.copy(us_file(name), folder / name.replace(".dcm", ""))  # DICOM files often have no suffix
    make_truncated(folder / "broken.dcm")
    return folder


def test_datalist_lists_only_ultrasound(tmp_path):
    folder = _study(tmp_path)
    names = sorted(item["image"].rsplit("/", 1)[-1] for item in dicom_datalist(folder))
    assert names == ["US1_UNCR", "examples_palette", "examples_ybr_color"]


def test_load_imaged_with_reader_by_name(tmp_path):
    folder = _study(tmp_path)
    load = Compose(
        [
            LoadImaged(keys="image", reader="tinyusfm_monai.io.readers.UltrasoundDicomReader", image_only=False),
            EnsureChannelFirstd(keys="image"),
        ]
    )
    data = Dataset(dicom_datalist(folder), transform=load)
    by_name = {item["image"].meta["filename_or_obj"].rsplit("/", 1)[-1]: item for item in data}
    palette = by_name["examples_palette"]["image"]
    assert tuple(palette.shape) == (3, 290, 680)  # channel-first, rows = height of the tissue crop
    meta = palette.meta
    assert meta["dicom_crop_box"] == [120, 60, 800, 350]
    assert meta["dicom_frame_number"] == 1 and meta["dicom_source_shape"] == [350, 800]
    expected = read_ultrasound(us_file("examples_palette.dcm")).cropped(0)
    assert np.array_equal(palette.numpy().transpose(1, 2, 0), expected)
    cine = by_name["examples_ybr_color"]["image"]
    assert cine.meta["dicom_frame_number"] == 15 and cine.meta["dicom_number_of_frames"] == 30
    assert cine.meta["dicom_sop_instance_uid"] and cine.meta["dicom_study_instance_uid"]
    assert np.allclose(np.diag(cine.affine)[:2], 0.5105, atol=1e-3)  # mm from the ultrasound region calibration


def test_reader_options():
    reader = UltrasoundDicomReader(frame=3, crop=False, reverse_indexing=True)
    array, meta = reader.get_data(reader.read(str(us_file("examples_ybr_color.dcm"))))
    assert array.shape == (320, 240, 3) and meta["dicom_frame_number"] == 4
    assert reader.verify_suffix("x.dcm") and reader.verify_suffix(str(us_file("US1_UNCR.dcm")))
