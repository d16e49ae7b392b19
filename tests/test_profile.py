"""Parameter and FLOP counts under the paper's convention (backbone parameters; FLOPs of one 224 x 224 pass)."""

import subprocess
import sys

import pytest
import torch

from tinyusfm_monai.networks import TinyUSFM
from tinyusfm_monai.networks.profile import count_flops, measure


def test_counts_match_the_paper_convention():
    rows = measure(224)
    tiny, usfm = rows["TinyUSFM"], rows["USFM"]
    assert tiny["params"] == 5_524_416
    assert usfm["params"] == 85_761_984
    assert tiny["gflops"] == pytest.approx(2.149, abs=0.002)
    assert usfm["gflops"] == pytest.approx(33.70, abs=0.01)
    assert tiny["gflops"] / usfm["gflops"] == pytest.approx(0.0638, abs=0.0005)


def test_flop_counter_counts_linear_and_conv_only():
    # one Linear(4 -> 3) on 5 tokens: 2 * 5 * 4 * 3 FLOPs; a conv 2->6, 3x3 on 8x8: 2 * 64 * 6 * 2 * 9
    lin = torch.nn.Sequential(torch.nn.Linear(4, 3))
    assert count_flops(_Tokens(lin), image_size=1) == 2 * 5 * 4 * 3
    conv = torch.nn.Conv2d(2, 6, 3, padding=1)
    assert count_flops(conv, image_size=8, in_chans=2) == 2 * 64 * 6 * 2 * 9


class _Tokens(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(torch.zeros(5, 4))


def test_tiny_head_adds_only_its_own_flops():
    assert (
        count_flops(TinyUSFM(num_classes=10, img_size=64), 64) - count_flops(TinyUSFM(img_size=64), 64) == 2 * 192 * 10
    )


def test_profile_command_prints_table():
    out = subprocess.run(
        [sys.executable, "-m", "tinyusfm_monai.cli", "profile"], capture_output=True, text=True, check=True
    ).stdout
    assert "5,524,416" in out and "2.149" in out and "6.38%" in out
