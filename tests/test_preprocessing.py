"""Input parity: our MONAI preprocessing gives the official PIL/ToTensor tensor."""

import numpy as np
import pytest
import torch
from PIL import Image
from pydicom import examples

from tinyusfm_monai.transforms.pipelines import IMAGENET_MEAN, IMAGENET_STD, build_preprocessing


def official_tensor(path, size: int) -> torch.Tensor:
    """PIL RGB → resize → ToTensor → ImageNet normalisation, as the official pipeline does it."""
    img = Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)
    t = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)  # ToTensor: C, H, W
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (t - mean) / std


@pytest.fixture
def ultrasound_png(tmp_path):
    """A real vendor ultrasound frame (pydicom's RGB example, 240 x 320), as a PNG."""
    rgb = examples.rgb_color.pixel_array  # (240, 320, 3) uint8
    path = tmp_path / "us.png"
    Image.fromarray(rgb).save(path)
    return path, rgb


def test_exact_parity_without_resize(ultrasound_png, tmp_path):
    _, rgb = ultrasound_png
    path = tmp_path / "sq.png"
    Image.fromarray(rgb[40:104, 100:164]).save(path)  # already at the model size: no resize on either side
    ours = build_preprocessing(image_size=64)({"image": str(path)})["image"].as_tensor()
    torch.testing.assert_close(ours, official_tensor(path, 64), rtol=0, atol=1e-5)


def test_parity_with_resize_orientation_and_channels(ultrasound_png):
    path, _ = ultrasound_png
    ours = build_preprocessing(image_size=224)({"image": str(path)})["image"].as_tensor()
    ref = official_tensor(path, 224)
    assert ours.shape == ref.shape == (3, 224, 224)
    # the resize kernels differ (PIL bilinear vs. MONAI anti-aliased bilinear): only that may differ
    assert (ours - ref).abs().mean() < 0.05
    assert torch.corrcoef(torch.stack([ours.flatten(), ref.flatten()]))[0, 1] > 0.99
    # the same comparison against a transposed or channel-swapped tensor fails clearly
    assert (ours - ref.transpose(1, 2)).abs().mean() > 0.2
    assert (ours - ref.flip(0)).abs().mean() > 3 * (ours - ref).abs().mean()


def test_grayscale_png_becomes_three_identical_channels(ultrasound_png, tmp_path):
    _, rgb = ultrasound_png
    path = tmp_path / "grey.png"
    Image.fromarray(rgb[..., 0]).save(path)
    ours = build_preprocessing(image_size=224)({"image": str(path)})["image"].as_tensor()
    ref = official_tensor(path, 224)
    assert ours.shape == (3, 224, 224)
    assert (ours - ref).abs().mean() < 0.05
    # ImageNet normalisation is per channel, so equal raw channels differ by exactly mean/std
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    raw = ours * std + mean
    torch.testing.assert_close(raw[0], raw[1], rtol=0, atol=1e-5)


def test_rgba_png_drops_alpha(ultrasound_png, tmp_path):
    _, rgb = ultrasound_png
    rgba = np.concatenate([rgb[:64, :64], np.full((64, 64, 1), 7, np.uint8)], axis=-1)
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    ours = build_preprocessing(image_size=64)({"image": str(path)})["image"].as_tensor()
    torch.testing.assert_close(ours, official_tensor(path, 64), rtol=0, atol=1e-5)
