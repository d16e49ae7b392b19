"""Decoding real ultrasound DICOM files: every photometric interpretation and transfer syntax that the node accepts."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from dicom_fixtures import (
    NON_US_FILES,
    REAL_US_FILES,
    UNSUPPORTED_US_FILE,
    copy_with,
    make_jpegls,
    make_monochrome,
    make_no_pixel_data,
    make_short_pixel_data,
    make_truncated,
    us_file,
)
from pydicom.pixels import get_decoder

from tinyusfm_monai.io.dicom import (
    US_IMAGE_STORAGE_RETIRED,
    US_MULTIFRAME_IMAGE_STORAGE_RETIRED,
    CropBox,
    DicomInputError,
    parse_frame_policy,
    read_ultrasound,
    tissue_region,
)


@pytest.mark.parametrize("name,photometric,syntax", REAL_US_FILES)
def test_real_files_decode_to_rgb(name, photometric, syntax):
    path = us_file(name)
    header = pydicom.dcmread(path, stop_before_pixels=True)
    assert header.PhotometricInterpretation == photometric  # the fixture table says what is covered
    assert header.file_meta.TransferSyntaxUID == getattr(pydicom.uid, syntax)
    image = read_ultrasound(path, frames="middle")
    assert image.frames.dtype == np.uint8
    assert image.frames.shape == (1, header.Rows, header.Columns, 3)
    crop = image.cropped(0)
    assert crop.shape == (image.crop_box.height, image.crop_box.width, 3)
    assert 2 < crop.mean() < 250 and crop.std() > 5, "decoded image looks blank or saturated"


def test_coverage_of_spec_section_7():
    photometric = {p for _, p, _ in REAL_US_FILES} | {"MONOCHROME1", "MONOCHROME2"}  # + transcoded below
    assert photometric >= {"RGB", "YBR_FULL_422", "YBR_RCT", "YBR_ICT", "MONOCHROME1", "MONOCHROME2", "PALETTE COLOR"}
    syntaxes = {s for _, _, s in REAL_US_FILES} | {"JPEGLSLossless"}
    assert syntaxes >= {"ExplicitVRLittleEndian", "RLELossless", "JPEGBaseline8Bit", "JPEGLSLossless", "JPEG2000"}
    assert {name for name, _, _ in REAL_US_FILES} >= {"gdcm-US-ALOKA-16.dcm", "OBXXXX1A.dcm"}  # palette 16 + 8 bit


def test_lossless_encodings_agree():
    reference = read_ultrasound(us_file("US1_UNCR.dcm")).frames
    assert np.array_equal(read_ultrasound(us_file("US1_J2KR.dcm")).frames, reference)
    lossy = read_ultrasound(us_file("US1_J2KI.dcm")).frames.astype(int)
    assert np.abs(lossy - reference).mean() < 3
    palette = read_ultrasound(us_file("OBXXXX1A.dcm")).frames
    for variant in ("OBXXXX1A_expb.dcm", "OBXXXX1A_rle.dcm"):
        assert np.array_equal(read_ultrasound(us_file(variant)).frames, palette)


def test_jpegls_transcoded(tmp_path):
    path = make_jpegls(tmp_path / "jls.dcm")
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == pydicom.uid.JPEGLSLossless
    assert np.array_equal(read_ultrasound(path).frames, read_ultrasound(us_file("US1_UNCR.dcm")).frames)


def test_monochrome1_and_2_transcoded(tmp_path):
    mono2 = read_ultrasound(make_monochrome(tmp_path / "m2.dcm", "MONOCHROME2")).frames
    mono1 = read_ultrasound(make_monochrome(tmp_path / "m1.dcm", "MONOCHROME1")).frames
    assert np.array_equal(mono1, mono2), "MONOCHROME1 must be inverted back"
    assert np.array_equal(mono2[..., 0], mono2[..., 2])
    rgb = read_ultrasound(us_file("US1_UNCR.dcm")).frames.astype(float)
    assert np.abs(rgb.mean(axis=-1) - mono2[..., 0]).mean() < 10


def test_palette_16_bit_is_scaled():
    image = read_ultrasound(us_file("gdcm-US-ALOKA-16.dcm"))
    assert image.frames.max() > 200  # 16-bit LUT entries scaled to 8 bits, not clipped or zeroed


def test_multiframe_policies():
    path = us_file("examples_ybr_color.dcm")  # 30 frames
    assert read_ultrasound(path, "all").frame_numbers == list(range(1, 31))
    assert read_ultrasound(path, "middle").frame_numbers == [15]
    assert read_ultrasound(path, "every:10").frame_numbers == [1, 11, 21]
    image = read_ultrasound(path, 7)
    assert image.frame_numbers == [1, 8, 15, 22, 29] and image.is_multiframe
    assert not np.array_equal(image.frames[0], image.frames[2])
    with pytest.raises(ValueError):
        parse_frame_policy("sometimes")


def test_regions_clamped_and_largest_chosen():
    ybr = pydicom.dcmread(us_file("examples_ybr_color.dcm"), stop_before_pixels=True)
    assert ybr.SequenceOfUltrasoundRegions[0].RegionLocationMaxX1 > ybr.Columns  # the vendor overshoot
    box, _ = tissue_region(ybr)
    assert box == CropBox(84, 31, 320, 240)
    palette = pydicom.dcmread(us_file("examples_palette.dcm"), stop_before_pixels=True)
    assert len(palette.SequenceOfUltrasoundRegions) == 2
    box, region = tissue_region(palette)  # the 2D tissue region, not the spectral (Doppler) strip below
    assert box == CropBox(120, 60, 800, 350) and region.RegionDataType == 1
    aloka = read_ultrasound(us_file("gdcm-US-ALOKA-16.dcm"))  # dual view: two equal regions -> the first
    assert aloka.crop_box == CropBox(32, 24, 336, 416)
    assert aloka.spacing is not None and abs(aloka.spacing.x_mm - 0.3827) < 1e-3
    full = read_ultrasound(us_file("US1_UNCR.dcm"))  # no regions -> whole frame
    assert full.crop_box == CropBox(0, 0, 640, 480) and full.spacing is None


def test_crop_box_paste_roundtrip():
    box = CropBox(2, 1, 6, 4)
    values = np.arange(12, dtype=np.uint8).reshape(3, 4)
    full = box.paste(values, 5, 8)
    assert full.shape == (5, 8) and np.array_equal(box.crop(full), values) and full.sum() == values.sum()


@pytest.mark.parametrize("sop_class", [US_IMAGE_STORAGE_RETIRED, US_MULTIFRAME_IMAGE_STORAGE_RETIRED])
def test_retired_sop_classes_accepted(tmp_path, sop_class):
    path = copy_with(us_file("US1_UNCR.dcm"), tmp_path / "retired.dcm", SOPClassUID=sop_class)
    path_ds = pydicom.dcmread(path)
    path_ds.file_meta.MediaStorageSOPClassUID = sop_class
    path_ds.save_as(path, enforce_file_format=True)
    assert read_ultrasound(path).frames.shape == (1, 480, 640, 3)


@pytest.mark.parametrize("name", NON_US_FILES)
def test_non_ultrasound_rejected(name):
    with pytest.raises(DicomInputError) as err:
        read_ultrasound(us_file(name))
    assert err.value.reason == "not-ultrasound"
    assert name in str(err.value)


def test_unsupported_syntax_named():
    path = us_file(UNSUPPORTED_US_FILE)
    syntax = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    if get_decoder(syntax).is_available:
        pytest.skip("a JPEG Lossless plugin is installed here")
    with pytest.raises(DicomInputError) as err:
        read_ultrasound(path)
    assert err.value.reason == "unsupported-syntax" and "JPEG Lossless" in err.value.detail


def test_unknown_syntax(tmp_path):
    data = us_file("US1_UNCR.dcm").read_bytes()
    explicit_le = b"1.2.840.10008.1.2.1\x00"
    assert data[:1024].count(explicit_le) == 1
    (tmp_path / "x.dcm").write_bytes(data.replace(explicit_le, b"1.2.840.10008.1.2.99", 1))  # same length
    with pytest.raises(DicomInputError) as err:
        read_ultrasound(tmp_path / "x.dcm")
    assert err.value.reason == "unsupported-syntax" and "1.2.840.10008.1.2.99" in err.value.detail


def test_truncated_files_are_corrupt(tmp_path):
    for name, maker in (("cut.dcm", make_truncated), ("short.dcm", make_short_pixel_data)):
        path = maker(tmp_path / name)
        with pytest.raises(DicomInputError) as err:
            read_ultrasound(path)
        assert err.value.reason == "corrupt", err.value
        assert str(path) in str(err.value)
    header_cut = make_truncated(tmp_path / "head.dcm", keep=0.001)
    with pytest.raises(DicomInputError) as err:
        read_ultrasound(header_cut)
    assert err.value.reason == "corrupt", err.value


def test_no_pixel_data_and_not_dicom(tmp_path):
    with pytest.raises(DicomInputError) as err:
        read_ultrasound(make_no_pixel_data(tmp_path / "nopix.dcm"))
    assert err.value.reason == "no-pixel-data"
    text = tmp_path / "notes.txt"
    text.write_text("not an image\n" * 50)
    with pytest.raises(DicomInputError) as err:
        read_ultrasound(text)
    assert err.value.reason == "not-dicom"


def test_bare_dataset_without_preamble_is_decoded_from_its_file(tmp_path):
    ds = pydicom.dcmread(us_file("US1_UNCR.dcm"))
    ds.preamble = None
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.save_as(tmp_path / "bare", enforce_file_format=False, implicit_vr=False, little_endian=True)
    image = read_ultrasound(tmp_path / "bare")
    assert np.array_equal(image.frames, read_ultrasound(us_file("US1_UNCR.dcm")).frames)


def test_modality_uids_and_sizes_are_checked_from_the_header(tmp_path):
    from tinyusfm_monai.io.dicom import InputLimits, check_identity, is_valid_uid, open_ultrasound

    ct = copy_with(us_file("US1_UNCR.dcm"), tmp_path / "ct.dcm", Modality="CT")
    with pytest.raises(DicomInputError, match="but Modality is CT") as err:
        read_ultrasound(ct)
    assert err.value.reason == "not-ultrasound"
    assert is_valid_uid("1.2.840.10008.5.1.4.1.1.6.1") and is_valid_uid("1.02.3")  # leading zeros tolerated
    for bad in ("../../tmp/x", "/tmp/x", "1..2", "1.2.", ".1", "1.2.a", "1 2", "1." + "2" * 63, ""):
        assert not is_valid_uid(bad), bad
    header = pydicom.dcmread(us_file("US1_UNCR.dcm"), stop_before_pixels=True)
    header.StudyInstanceUID = "1.2.3/../4"
    with pytest.raises(DicomInputError, match="StudyInstanceUID is not a valid UID") as err:
        check_identity("x.dcm", header)
    assert err.value.reason == "invalid-uid"
    with pytest.raises(DicomInputError, match=r"480 x 640 = 307,200 pixels per frame, over the limit of 1,000"):
        open_ultrasound(us_file("US1_UNCR.dcm"), limits=InputLimits(max_frame_pixels=1000))
    with pytest.raises(DicomInputError, match="30 frames, over the limit of 10"):
        open_ultrasound(us_file("examples_ybr_color.dcm"), limits=InputLimits(max_frames=10))
    with pytest.raises(DicomInputError, match="bytes, over the limit of 1,024"):
        open_ultrasound(us_file("US1_UNCR.dcm"), limits=InputLimits(max_file_bytes=1024))
    image = open_ultrasound(us_file("examples_ybr_color.dcm"), "every:10")
    assert image.frames is None  # nothing decoded yet: frames come one at a time
    assert [i for i, _ in image.iter_frames()] == [0, 1, 2]
