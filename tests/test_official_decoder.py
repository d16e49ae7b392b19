"""The official segmentation decoder option: its size, its key layout and the strict converter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tinyusfm_monai.networks import CheckpointError, ViTSegmenter, convert_official_segmentation, load_pretrained

KEYS = Path(__file__).resolve().parent / "data" / "official-segmentation-keys-tinyusfm.json"


def _official_state(num_classes: int) -> dict[str, torch.Tensor]:
    """A synthetic state dict in the official layout (random values, the official names and shapes)."""
    layout = json.loads(KEYS.read_text())[f"num_classes_{num_classes}"]
    gen = torch.Generator().manual_seed(num_classes)
    return {
        k: (torch.tensor(7) if k.endswith("num_batches_tracked") else torch.rand(shape, generator=gen))
        for k, shape in layout.items()
    }


def test_official_decoder_has_the_official_parameter_count():
    """6,179,073 parameters for a binary task (the issue's 6.18 M; ours is 7.21 M), 1 output channel."""
    model = ViTSegmenter(num_classes=2, decoder="official")
    assert sum(p.numel() for p in model.parameters()) == 6_179_073
    ours = ViTSegmenter(num_classes=2)
    assert round(sum(p.numel() for p in ours.parameters()) / 1e6, 2) == 7.21
    small = ViTSegmenter(num_classes=2, decoder="official", img_size=64).eval()
    assert small(torch.zeros(1, 3, 64, 64)).shape == (1, 1, 64, 64)
    assert ViTSegmenter(num_classes=4, decoder="official", img_size=64).eval()(torch.zeros(1, 3, 64, 64)).shape[1] == 4


@pytest.mark.parametrize("num_classes", [2, 4])
def test_official_state_dict_loads_strictly(tmp_path, num_classes):
    """Every tensor of an official fine-tuned model lands in the segmenter, and outputs follow the weights."""
    state = _official_state(num_classes)
    path = tmp_path / "official_seg.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, path)  # DataParallel wrapping is removed too
    model = ViTSegmenter(num_classes=num_classes, decoder="official")
    report = load_pretrained(model, path)
    assert len(report.loaded) == len(state)
    own = model.state_dict()
    converted = convert_official_segmentation(state)
    assert set(own) == set(converted)
    for k, v in converted.items():
        assert torch.equal(own[k], v), k
    assert torch.equal(own["backbone.fc_norm.weight"], state["backbone.norm.weight"])


def test_official_checkpoint_refused_by_our_decoder_and_on_a_class_mismatch(tmp_path):
    path = tmp_path / "official_seg.pth"
    torch.save(_official_state(2), path)
    with pytest.raises(CheckpointError, match="decoder='official'"):
        load_pretrained(ViTSegmenter(num_classes=2), path)
    with pytest.raises(CheckpointError, match="official_seg.pth.*conv_seg"):
        load_pretrained(ViTSegmenter(num_classes=4, decoder="official"), path)
