"""TinyUSFM / USFM backbones, the segmentation network, and safe checkpoint loading."""

from .checkpoint import (
    CheckpointError,
    LoadReport,
    convert_official_segmentation,
    load_pretrained,
    read_state_dict,
    save_official,
)
from .models import BACKBONES, USFM, TinyUSFM, backbone_of, build_backbone
from .segmentation import ViTSegmenter
from .vit import VisionTransformer

__all__ = [
    "BACKBONES",
    "CheckpointError",
    "LoadReport",
    "TinyUSFM",
    "USFM",
    "ViTSegmenter",
    "VisionTransformer",
    "backbone_of",
    "convert_official_segmentation",
    "build_backbone",
    "load_pretrained",
    "read_state_dict",
    "save_official",
]
