"""Image preprocessing that reproduces the official TinyUSFM input tensor with MONAI transforms.

The official pipeline is PIL `convert("RGB")` → resize 224 → `ToTensor` → ImageNet mean/std, with
rows = image height. Pretrained weights only transfer when our tensor matches it, so two MONAI
defaults are overridden on purpose: PILReader's `reverse_indexing` (MONAI returns x-first arrays by
default) and the single-channel output of grayscale images (ultrasound PNGs are often grayscale,
the model wants three identical channels).

The transform lists are written as config dicts because they are the single source for the bundle
JSON files (`tinyusfm_monai.bundle`), the tests and the Python API alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


Size = int | str  # a number, or a config reference such as "@image_size"


ANY_FORMAT = "ultrasound"  # load_config reader for inference: DICOM, PNG/JPG/TIFF, NIfTI (io/readers.py)


def load_config(keys: Sequence[str], reader: Any = "PILReader") -> list[dict[str, Any]]:
    """Read 2D images with rows = height, channel first (as stored: 1 to 4 channels, values 0-255).

    reader: a MONAI reader for `LoadImaged` (training data are PNG), or `ANY_FORMAT` for inference inputs.
    """
    if reader == ANY_FORMAT:
        load = {"_target_": "tinyusfm_monai.transforms.io.LoadUltrasoundImaged", "keys": list(keys), "image_only": True}
    else:
        load = {
            "_target_": "LoadImaged",
            "keys": list(keys),
            "reader": reader,
            "reverse_indexing": False,
            "image_only": True,
        }
    return [load, {"_target_": "EnsureChannelFirstd", "keys": list(keys)}]


def rgb_unit_config() -> list[dict[str, Any]]:
    """The image becomes three channels (grey repeated, alpha dropped) in [0, 1].

    In the bundles these come after the resize, where the image is 224 x 224 instead of a scanner frame: both are
    per-pixel maps (a channel copy and an affine scale) that commute with the resize (its weights sum to one), so
    the result is the same tensor (to float rounding) for a fraction of the memory passes (a 768 x 1024 RGB frame
    is 2.4 M values, the resized one 0.15 M; a grey frame is resized once instead of three times).
    """
    return [
        {"_target_": "tinyusfm_monai.transforms.utility.EnsureRGBd", "keys": "image"},
        {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": 0.0, "a_max": 255.0, "b_min": 0.0, "b_max": 1.0},
    ]


def resize_config(size: Size, with_label: bool = False) -> dict[str, Any]:
    """Resize to the model's input; label maps with nearest neighbour so no new values appear.

    `AntialiasResized` is MONAI's `Resized` with PIL-style anti-aliasing for the image (as the official
    PIL resize, and ~5x faster than MONAI's Gaussian pre-filter on scanner-size frames).
    """
    if with_label:
        return {
            "_target_": "tinyusfm_monai.transforms.spatial.AntialiasResized",
            "keys": ["image", "label"],
            "spatial_size": [size, size],
            "mode": ["bilinear", "nearest"],
            "anti_aliasing": [True, False],
        }
    return {
        "_target_": "tinyusfm_monai.transforms.spatial.AntialiasResized",
        "keys": "image",
        "spatial_size": [size, size],
        "mode": "bilinear",
        "anti_aliasing": True,
    }


def normalise_config() -> list[dict[str, Any]]:
    """ImageNet mean/std per channel, as `torchvision.transforms.Normalize` in the official code."""
    return [
        {
            "_target_": "NormalizeIntensityd",
            "keys": "image",
            "subtrahend": list(IMAGENET_MEAN),
            "divisor": list(IMAGENET_STD),
            "channel_wise": True,
        },
        {"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32"},
    ]


def preprocessing_config(image_size: Size = 224, reader: Any = "PILReader") -> list[dict[str, Any]]:
    """The inference preprocessing of every bundle: load → resize → RGB, [0, 1] → ImageNet norm."""
    return load_config(["image"], reader) + [resize_config(image_size)] + rgb_unit_config() + normalise_config()


def build_preprocessing(image_size: int = 224, reader: Any = "PILReader"):
    """Instantiate `preprocessing_config` as a MONAI Compose (for Python users and tests)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser({"pre": {"_target_": "Compose", "transforms": preprocessing_config(image_size, reader)}})
    return parser.get_parsed_content("pre")


def pool_transform_config(image_size: Size = 224, key: str = "image", normalize: bool = True) -> list[dict[str, Any]]:
    """Deterministic distillation-pool preprocessing: the pool sample loader, then the shared pipeline above
    (RGB, resize, [0, 1], ImageNet normalisation) minus its file reader.

    `normalize=False` stops after the resize and keeps the 0..255 range: the pool decoded once to uint8
    (`distillation.shards`), whose [0, 1] scaling and ImageNet normalisation then run on the training device.
    """
    rgb, unit = rgb_unit_config()
    return (
        [{"_target_": "tinyusfm_monai.transforms.io.LoadPoolImaged", "keys": key}]
        + [rgb, resize_config(image_size)]
        + ([unit, *normalise_config()] if normalize else [])
    )


def build_pool_transform(image_size: int = 224, key: str = "image", normalize: bool = True):
    """Instantiate `pool_transform_config` as a MONAI Compose (the config files name the same components)."""
    from monai.bundle import ConfigParser

    transforms = pool_transform_config(image_size, key, normalize)
    parser = ConfigParser({"t": {"_target_": "Compose", "transforms": transforms}})
    return parser.get_parsed_content("t")
