"""The README's main job on embedded data (no downloads)."""

from __future__ import annotations

import time

import torch
from PIL import Image


def main(image_size: int = 224) -> None:
    """Profile both backbones and run them on a real vendor ultrasound frame shipped with pydicom."""
    from pydicom import examples

    from tinyusfm_monai.data.transforms import build_preprocessing
    from tinyusfm_monai.networks import USFM, TinyUSFM
    from tinyusfm_monai.networks.profile import profile

    profile(image_size)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/us.png"
        Image.fromarray(examples.rgb_color.pixel_array).save(path)
        x = build_preprocessing(image_size)({"image": path})["image"].as_tensor()[None]
    print(f"\nreal ultrasound frame (pydicom examples.rgb_color) -> tensor {tuple(x.shape)}")
    for cls in (TinyUSFM, USFM):
        model = cls(num_classes=0, img_size=image_size).eval()
        with torch.inference_mode():
            model(x)
            t0 = time.perf_counter()
            feat = model(x)
            dt = time.perf_counter() - t0
        print(f"{cls.__name__:<9} pooled feature {tuple(feat.shape)}  {1000 * dt:.0f} ms/image (CPU, batch 1)")
