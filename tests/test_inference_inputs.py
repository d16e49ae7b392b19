"""Inference inputs: one reader per file format (no silent fallback), mixed-format batches, bad files skipped."""

from __future__ import annotations

import logging
import shutil

import nibabel as nib
import numpy as np
import pytest
from dicom_fixtures import make_truncated, us_file
from monai.data import DataLoader
from PIL import Image

from tinyusfm_monai.data.skipping_dataset import SkipUnreadableDataset
from tinyusfm_monai.io.dicom import DicomInputError
from tinyusfm_monai.transforms.io import LoadUltrasoundImaged
from tinyusfm_monai.transforms.pipelines import ANY_FORMAT, build_preprocessing


def load(path):
    return LoadUltrasoundImaged("image")({"image": str(path)})["image"]


def test_dual_tiff_dicom_file_is_read_as_dicom(tmp_path):
    """US1_UNCR.dcm carries a TIFF header in its preamble: PIL decodes it, but without DICOM metadata."""
    src = us_file("US1_UNCR.dcm")
    assert Image.open(src).size == (640, 480)  # the trap: PIL does open it
    img = load(src)
    assert tuple(img.shape) == (480, 640, 3)
    assert img.meta["dicom_sop_instance_uid"] and img.meta["dicom_rows_first"]


def test_nifti_is_rows_first_like_png(tmp_path):
    rng = np.random.default_rng(0)
    rows_cols = (rng.random((40, 56)) * 255).astype(np.uint8)
    Image.fromarray(rows_cols).save(tmp_path / "a.png")
    nib.save(nib.Nifti1Image(rows_cols.T.copy(), np.eye(4)), tmp_path / "a.nii.gz")  # NIfTI: first axis is x
    png, nii = load(tmp_path / "a.png"), load(tmp_path / "a.nii.gz")
    assert tuple(png.shape) == tuple(nii.shape) == (40, 56)
    np.testing.assert_array_equal(np.asarray(png), np.asarray(nii))


def test_non_ultrasound_dicom_is_refused_not_read_by_a_fallback_reader():
    ct = us_file("CT_small.dcm")
    with pytest.raises(Exception) as info:
        load(ct)
    causes = [info.value, info.value.__cause__]
    assert any(isinstance(c, DicomInputError) and "not-ultrasound" in str(c) and "CT_small" in str(c) for c in causes)


def test_a_batch_can_mix_png_dicom_and_nifti(tmp_path):
    Image.fromarray(np.zeros((30, 50), np.uint8)).save(tmp_path / "a.png")
    nib.save(nib.Nifti1Image(np.zeros((50, 30), np.float32), np.eye(4)), tmp_path / "b.nii.gz")
    shutil.copy(us_file("examples_palette.dcm"), tmp_path / "c.dcm")
    data = [{"image": str(tmp_path / n)} for n in ("a.png", "b.nii.gz", "c.dcm")]
    loader = DataLoader(SkipUnreadableDataset(data, build_preprocessing(32, ANY_FORMAT)), batch_size=3)
    (batch,) = list(loader)
    assert tuple(batch["image"].shape) == (3, 3, 32, 32)
    assert tuple(batch["image"].affine.shape) == (3, 4, 4)
    # DICOM only: one file calibrated (Sequence of Ultrasound Regions), one not, keep their metadata
    data = [{"image": str(us_file(n))} for n in ("US1_UNCR.dcm", "examples_palette.dcm")]
    (batch,) = list(DataLoader(SkipUnreadableDataset(data, build_preprocessing(32, ANY_FORMAT)), batch_size=2))
    spacing = np.asarray([np.asarray(v) for v in batch["image"].meta["dicom_pixel_spacing_mm"]]).T
    assert np.isnan(spacing[0]).all() and spacing[1] == pytest.approx([0.2623, 0.2623], abs=1e-4)


def test_unreadable_files_are_named_and_skipped(tmp_path, caplog):
    good_png = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40), dtype=np.uint8)).save(good_png)
    (tmp_path / "truncated.png").write_bytes(good_png.read_bytes()[:400])  # of ~1.3 kB
    (tmp_path / "text.jpg").write_text("not an image")
    make_truncated(tmp_path / "truncated.dcm")
    shutil.copy(us_file("CT_small.dcm"), tmp_path / "ct.dcm")
    shutil.copy(us_file("examples_rgb_color.dcm"), tmp_path / "good.dcm")
    names = ["truncated.png", "good.png", "text.jpg", "truncated.dcm", "ct.dcm", "good.dcm"]
    data = [{"image": str(tmp_path / n)} for n in names]
    with caplog.at_level(logging.ERROR, logger="tinyusfm_monai.data.skipping_dataset"):
        batches = list(DataLoader(SkipUnreadableDataset(data, build_preprocessing(32, ANY_FORMAT)), batch_size=2))
    loaded = [m for b in batches for m in b["image"].meta["filename_or_obj"]]
    assert [p.split("/")[-1] for p in loaded] == ["good.png", "good.dcm"]
    errors = {r.getMessage().split(":")[0].split(" ")[-1]: r.getMessage() for r in caplog.records}
    assert set(errors) == {"truncated.png", "text.jpg", "truncated.dcm", "ct.dcm"}
    assert errors["ct.dcm"].startswith("skipped #5 ct.dcm:")  # position in the datalist + file name
    assert "truncated" in errors["truncated.png"] and "not-ultrasound" in errors["ct.dcm"]
    assert all("applying transform" not in message for message in errors.values())
    assert all(str(tmp_path) not in message for message in errors.values()), "full paths must not be logged"


def test_nothing_readable_is_an_error(tmp_path):
    (tmp_path / "a.png").write_text("no")
    with pytest.raises(RuntimeError, match="none of the 1 inputs"):
        list(SkipUnreadableDataset([{"image": str(tmp_path / "a.png")}], build_preprocessing(32, ANY_FORMAT)))


def test_channel_argmax_is_monai_argmax_and_keeps_metadata():
    import torch
    from monai.data import MetaTensor
    from monai.transforms import AsDiscrete

    from tinyusfm_monai.transforms.post import ChannelArgmaxd

    scores = torch.rand(3, 20, 30)
    scores[:, :5] = 0.5  # ties: the first maximum wins in both
    meta = MetaTensor(scores, meta={"filename_or_obj": "x.png"})
    out = ChannelArgmaxd("pred")({"pred": meta})["pred"]
    assert torch.equal(out.as_tensor().to(torch.float32), AsDiscrete(argmax=True)(scores))
    assert out.shape == (1, 20, 30) and out.meta["filename_or_obj"] == "x.png"
