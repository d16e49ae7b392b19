"""Parameter and FLOP counts under the paper's convention (backbone parameters; FLOPs of one 224 x 224 pass).

GFLOPs = 2 × multiply-adds of linear and convolution layers at the given input size; the two
attention matrix products (q·kᵀ, attn·v) are excluded, as layer-hook counters such as thop and
ptflops do. This is what reproduces the published 2.16 GFLOPs / 6.40 %.
"""

from __future__ import annotations

import torch
from torch import nn

from .models import USFM, TinyUSFM


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, image_size: int = 224, in_chans: int = 3) -> int:
    """2 × MACs of every Linear / Conv / ConvTranspose call in one forward pass of a (1, C, S, S) input."""
    macs = 0

    def linear_hook(m: nn.Linear, _inp, out: torch.Tensor) -> None:
        nonlocal macs
        macs += out.numel() * m.in_features

    def conv_hook(m: nn.Conv2d, _inp, out: torch.Tensor) -> None:
        nonlocal macs
        k = m.kernel_size[0] * m.kernel_size[1]
        macs += out.numel() * (m.in_channels // m.groups) * k

    def deconv_hook(m: nn.ConvTranspose2d, inp: tuple[torch.Tensor, ...], _out) -> None:
        nonlocal macs
        k = m.kernel_size[0] * m.kernel_size[1]
        macs += inp[0].numel() * (m.out_channels // m.groups) * k

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
        elif isinstance(m, nn.ConvTranspose2d):
            hooks.append(m.register_forward_hook(deconv_hook))
        elif isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_chans, image_size, image_size))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return 2 * macs


def measure(image_size: int = 224) -> dict[str, dict[str, float]]:
    """Parameters and GFLOPs of the TinyUSFM and USFM backbones (no head)."""
    rows: dict[str, dict[str, float]] = {}
    for name, cls in (("TinyUSFM", TinyUSFM), ("USFM", USFM)):
        model = cls(num_classes=0, img_size=image_size)
        rows[name] = {"params": count_parameters(model), "gflops": count_flops(model, image_size) / 1e9}
    return rows


def profile(image_size: int = 224) -> None:
    """Print parameters and GFLOPs of TinyUSFM and USFM (backbones, no head) and their ratios."""
    rows = measure(image_size)
    tiny, usfm = rows["TinyUSFM"], rows["USFM"]
    print(f"{'model':<10} {'parameters':>12} {'GFLOPs':>8}   (input {image_size}x{image_size}, no head)")
    for name, r in rows.items():
        print(f"{name:<10} {int(r['params']):>12,} {r['gflops']:>8.3f}")
    print(
        f"{'ratio':<10} {100 * tiny['params'] / usfm['params']:>11.2f}% {100 * tiny['gflops'] / usfm['gflops']:>7.2f}%"
    )
    print("GFLOPs = 2 x multiply-adds of linear and convolution layers; attention matrix products excluded.")
