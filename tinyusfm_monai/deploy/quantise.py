"""INT8 dynamic quantisation of the Linear layers in PyTorch (eager mode).

A ViT spends >95 % of its FLOPs in Linear layers (qkv, proj, MLP), and dynamic quantisation needs
no calibration data: weights are stored as int8 per output channel, activations are quantised on
the fly per batch. Convolutions (patch embedding, segmentation decoder) stay fp32.

`torch.ao.quantization` is deprecated in recent PyTorch (its successor is torchao, not installed
here); ONNX Runtime's `quantize_dynamic` (`tinyusfm_monai.deploy.onnx`) is the maintained path and
the one `tinyusfm-monai export --int8` writes. This one is kept for in-process use and comparison.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn


def quantize_linear_dynamic(model: nn.Module, inplace: bool = False) -> nn.Module:
    """A copy of `model` (eval mode) whose nn.Linear layers run as int8 dynamic-quantised kernels."""
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*(torch\.ao\.quantization|quantize_per_|quint8|qint8).*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
