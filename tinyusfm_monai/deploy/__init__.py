"""Deployment on CPU: ONNX / TorchScript export, INT8 dynamic quantisation, thread settings.

`tinyusfm-monai export --bundle bundles/<task> --format onnx --int8` is the command-line entry
(`tinyusfm_monai.deploy.export:export`).
"""

from .onnx import export_onnx, onnx_session, quantize_onnx_int8
from .quantise import quantize_linear_dynamic
from .threads import configure_inference_threads, configure_threads, inference_threads, physical_cores

__all__ = [
    "configure_inference_threads",
    "configure_threads",
    "export_onnx",
    "inference_threads",
    "onnx_session",
    "physical_cores",
    "quantize_linear_dynamic",
    "quantize_onnx_int8",
]
