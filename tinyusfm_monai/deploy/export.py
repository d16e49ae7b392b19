"""`tinyusfm-monai export`: a task bundle's trained network as ONNX (optionally INT8) or TorchScript.

The network is built from the bundle's own `inference.json` (`network_def`) and loaded from its
`models/model.pt`, exactly as `monai.bundle run` would; the exported file is checked against the
eager model on a random input before it is reported as written.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .onnx import export_onnx, onnx_session, quantize_onnx_int8, run_onnx

logger = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript")
# fp32 exports must agree tightly; int8 only approximately (what tests/test_export.py also asserts).
FP32_ATOL = 1e-3


def load_bundle_network(
    bundle: str | Path, weights: str | Path | None = None, image_size: int | None = None
) -> tuple[nn.Module, int]:
    """The bundle's `network_def` with trained weights, in eval mode on CPU, and its input size."""
    from monai.bundle import ConfigParser

    from tinyusfm_monai.handlers.weights import TrainedWeightsLoader

    bundle = Path(bundle).resolve()
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    if image_size is not None:
        parser["image_size"] = int(image_size)
    network = parser.get_parsed_content("network_def").eval()
    TrainedWeightsLoader(str(weights or bundle / "models" / "model.pt"), network, str(bundle)).load()
    return network, int(parser.get_parsed_content("image_size"))


def _check(reference: nn.Module, run: Any, image_size: int, atol: float | None) -> dict[str, float]:
    x = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = reference(x).numpy()
        out = np.asarray(run(x))
    err = float(np.abs(out - ref).max())
    agree = float((out.argmax(1) == ref.argmax(1)).mean())
    if atol is not None and err > atol:
        raise RuntimeError(f"exported model disagrees with the eager one: max |Δ| = {err:.3g} > {atol}")
    return {"max_abs_diff": err, "argmax_agreement": agree}


def export(
    bundle: str,
    format: str = "onnx",  # noqa: A002 - the CLI flag is --format
    int8: bool = False,
    output: str | None = None,
    weights: str | None = None,
    image_size: int | None = None,
) -> str:
    """Export a bundle's trained network for CPU deployment.

    Args:
        bundle: the bundle folder (bundles/<task>), with models/model.pt.
        format: "onnx" (ONNX Runtime, recommended on CPU) or "torchscript".
        int8: INT8 dynamic quantisation of the Linear/MatMul layers (ONNX: ONNX Runtime quantize_dynamic;
            TorchScript: torch.ao dynamic quantisation). Measure accuracy before using it clinically.
        output: output file (default: <bundle>/models/model[_int8].onnx|.ts).
        weights: trained weights (default: <bundle>/models/model.pt).
        image_size: input size to export for (default: the bundle's image_size).
    Returns:
        The path written.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    network, size = load_bundle_network(bundle, weights, image_size)
    suffix = ".onnx" if format == "onnx" else ".ts"
    out = Path(output) if output else Path(bundle) / "models" / f"model{'_int8' if int8 else ''}{suffix}"
    if format == "onnx":
        fp32 = out if not int8 else out.with_name(out.stem + "_fp32_tmp.onnx")
        export_onnx(network, fp32, image_size=size)
        if int8:
            quantize_onnx_int8(fp32, out)
            fp32.unlink()
        session = onnx_session(out)
        report = _check(network, lambda x: run_onnx(session, x), size, None if int8 else FP32_ATOL)
    else:
        from .quantise import quantize_linear_dynamic

        model = quantize_linear_dynamic(network) if int8 else network
        with torch.no_grad():
            scripted = torch.jit.script(model) if not int8 else torch.jit.trace(model, torch.zeros(1, 3, size, size))
        out.parent.mkdir(parents=True, exist_ok=True)
        scripted.save(str(out))
        loaded = torch.jit.load(str(out), map_location="cpu")
        report = _check(network, lambda x: loaded(x).numpy(), size, None if int8 else FP32_ATOL)
    print(
        f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, {format}{' int8' if int8 else ''}, {size}x{size}); "
        f"vs eager: max |Δlogit| {report['max_abs_diff']:.2e}, argmax agreement {report['argmax_agreement']:.0%}"
    )
    return str(out)
