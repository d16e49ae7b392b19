"""Inference inputs: one reader per file format (no silent fallback), mixed-format batches, bad files skipped."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

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


def test_bit_depths_are_scaled_by_their_real_range(tmp_path):
    """A 16-bit PNG was scaled as if 8-bit (everything above 255 white: 68 % foreground instead of 12 %). Every
    rendering of the same image must reach the model as the same 0..255 values."""
    import itk

    rng = np.random.default_rng(0)
    img8 = (rng.random((40, 56)) * 255).astype(np.uint8)
    Image.fromarray(img8).save(tmp_path / "a8.png")
    Image.fromarray(img8.astype(np.uint16) * 257).save(tmp_path / "a16.png")  # 16-bit PNG, mode I;16
    Image.fromarray(img8.astype(np.float32) / 255.0).save(tmp_path / "a01.tiff")  # float 0..1
    itk.imwrite(itk.image_from_array(img8.astype(np.uint16) * 257), str(tmp_path / "a16.mha"))
    itk.imwrite(itk.image_from_array(img8), str(tmp_path / "a8.nrrd"))
    itk.imwrite(itk.image_from_array(img8.astype(np.float32) * 4 - 100), str(tmp_path / "shifted.mha"))
    reference = np.asarray(load(tmp_path / "a8.png"), dtype=np.float32)
    assert Image.open(tmp_path / "a16.png").mode == "I;16"
    for name in ("a16.png", "a01.tiff", "a16.mha", "a8.nrrd"):
        np.testing.assert_allclose(np.asarray(load(tmp_path / name)), reference, atol=0.51, err_msg=name)
    stretched = np.asarray(load(tmp_path / "shifted.mha"))  # no known range: min..max
    assert stretched.min() == 0 and stretched.max() == pytest.approx(255, abs=1e-3)
    assert np.corrcoef(stretched.ravel(), reference.ravel())[0, 1] > 0.999
    # and the whole preprocessing gives the model the same tensor
    pre = build_preprocessing(32, ANY_FORMAT)
    a, b = pre({"image": str(tmp_path / "a8.png")})["image"], pre({"image": str(tmp_path / "a16.png")})["image"]
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-2)


def test_3d_volumes_and_tiny_images_are_named_not_read(tmp_path, caplog):
    import itk

    volume = (np.random.default_rng(1).random((4, 30, 40)) * 255).astype(np.uint8)
    itk.imwrite(itk.image_from_array(volume), str(tmp_path / "volume.mha"))
    itk.imwrite(itk.image_from_array(volume[:1]), str(tmp_path / "slab.nrrd"))  # 1 x 30 x 40: a 2D image
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(tmp_path / "dot.png")
    assert tuple(load(tmp_path / "slab.nrrd").shape) == (30, 40)
    data = [{"image": str(tmp_path / n)} for n in ("volume.mha", "dot.png", "slab.nrrd")]
    with caplog.at_level(logging.ERROR, logger="tinyusfm_monai.data.skipping_dataset"):
        loaded = list(SkipUnreadableDataset(data, build_preprocessing(32, ANY_FORMAT)))
    assert len(loaded) == 1
    messages = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped")]
    assert "skipped #1 volume.mha: ValueError: 3D image of 4 x 30 x 40 voxels" in messages[0]
    assert "skipped #2 dot.png: ValueError: image of 1 x 1 pixels, smaller than 8 x 8" in messages[1]


def test_inference_datalist_names_what_it_leaves_out(tmp_path, caplog):
    import os

    Image.fromarray(np.zeros((30, 40), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "a.raw").write_bytes(b"\0" * 100)  # the data file of a .mhd header
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    os.mkfifo(tmp_path / "pipe.png")
    from tinyusfm_monai.data.datalist import inference_datalist

    with caplog.at_level(logging.WARNING, logger="tinyusfm_monai.data.datalist"):
        items = inference_datalist("busi_segmentation", str(tmp_path))
    assert [i["image"] for i in items] == [str(tmp_path / "a.png")]
    text = caplog.text
    assert "left out a.raw: not an image format" in text and "left out loop: symbolic link loop" in text
    assert "left out pipe.png: FIFO (named pipe), not a regular file" in text


def test_a_failing_postprocessing_step_skips_the_item_not_the_run(caplog):
    """MONAI's evaluator runs postprocessing per item; one exception there ended the whole run."""
    from monai.data import MetaTensor
    from monai.transforms import Lambdad

    from tinyusfm_monai.transforms.utility import SkipOnErrorCompose

    def explode(x):
        if x.shape[-1] == 1:
            raise RuntimeError("SaveImage cannot find a suitable writer for /data/Smith_John/dot_seg.png")
        return x + 1

    post = SkipOnErrorCompose([Lambdad("pred", explode)])
    good = {"image": MetaTensor(np.zeros((3, 4, 4)), meta={"filename_or_obj": "/data/Smith_John/a.png"})}
    bad = {"image": MetaTensor(np.zeros((3, 1, 1)), meta={"filename_or_obj": "/data/Smith_John/dot.png"})}
    with caplog.at_level(logging.ERROR, logger="tinyusfm_monai.transforms.utility"):
        out_good = post({**good, "pred": np.zeros((1, 4, 4))})
        out_bad = post({**bad, "pred": np.zeros((1, 1, 1))})
    assert float(out_good["pred"].max()) == 1 and float(out_bad["pred"].max()) == 0 and post.skipped == 1
    assert [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()][0] == (
        "skipped dot.png: postprocessing failed: RuntimeError: SaveImage cannot find a suitable writer for dot_seg.png"
    )
    assert "Smith" not in caplog.text


def test_output_names_are_unique_within_a_folder(tmp_path):
    """Stem twins (a.png, a.dcm, a without suffix, a.nii.gz) each get their own name; a lone file keeps MONAI's."""
    from monai.data.utils import create_file_basename

    from tinyusfm_monai.data.datalist import inference_root
    from tinyusfm_monai.transforms.io import unique_output_name

    for name in ("a.png", "a.dcm", "a", "a.nii.gz", "b.png"):
        (tmp_path / name).write_bytes(b"x")
    names = {}
    for name in ("a.png", "a.dcm", "a", "a.nii.gz", "b.png"):
        subject = unique_output_name({"filename_or_obj": str(tmp_path / name)}, None)["subject"]
        names[name] = Path(create_file_basename("seg", subject, "/out", makedirs=False)).name
    assert names == {
        "a.png": "a_png_seg",
        "a.dcm": "a_dcm_seg",
        "a": "a_noext_seg",
        "a.nii.gz": "a_nii_gz_seg",
        "b.png": "b_seg",
    }
    assert inference_root(str(tmp_path)) == str(tmp_path)
    assert inference_root(str(tmp_path / "a.png")) == "" and inference_root("") == ""
