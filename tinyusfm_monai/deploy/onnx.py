"""ONNX export, ONNX Runtime sessions and ONNX Runtime INT8 dynamic quantisation.

Export uses the TorchScript-based exporter (`dynamo=False`): the networks are written to be
scriptable/traceable, it needs no extra packages, and it exports both backbones and the FPN
segmenter with a dynamic batch axis in seconds. Height and width are fixed at export time (the
position embedding / relative-position tables are built for one grid).

A file written by `tinyusfm-monai export` records in its metadata (`metadata_props`) a fingerprint of the
weights it was made from (`weights_sha256`, as the OpenVINO IR does), so `OnnxInferer` can tell an export that
no longer matches `models/model.pt` (e.g. after MONAI Label retrained the bundle) and never runs it.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
DEFAULT_OPSET = 17
# Dynamic quantisation of MatMul/Gemm only: ConvInteger has no fast CPU kernel in ONNX Runtime and the
# convolutions carry <5 % of a ViT's FLOPs.
INT8_OP_TYPES = ("MatMul", "Gemm")


def export_onnx(
    model: nn.Module, path: str | Path | BinaryIO, image_size: int = 224, in_chans: int = 3, opset: int = DEFAULT_OPSET
) -> Any:
    """Write `model` (eval mode, fp32, CPU) as ONNX with input `image` (B, C, S, S) and output `logits`.

    path: a file (returned as a Path) or a binary buffer (returned as given).
    """
    if not hasattr(path, "write"):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().to("cpu")
    example = torch.zeros(1, in_chans, image_size, image_size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notes
        torch.onnx.export(
            model,
            (example,),
            path if hasattr(path, "write") else str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    return path


def write_onnx_metadata(path: str | Path, meta: dict[str, Any]) -> Path:
    """Add `meta` (str values) to the ONNX file's `metadata_props`, replacing keys already there, atomically."""
    import onnx

    from tinyusfm_monai.utils.atomic import atomic_path

    path = Path(path)
    model = onnx.load(str(path))
    kept = [p for p in model.metadata_props if p.key not in meta]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in meta.items():
        model.metadata_props.add(key=str(key), value=str(value))
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
    return path


def onnx_metadata(session: Any) -> dict[str, str]:
    """What `write_onnx_metadata` recorded in the model a session runs (empty for a file written elsewhere)."""
    return dict(session.get_modelmeta().custom_metadata_map)


def quantize_onnx_int8(src: str | Path, dst: str | Path, op_types: tuple[str, ...] = INT8_OP_TYPES) -> Path:
    """INT8 dynamic quantisation (int8 weights per channel, uint8 activations) of MatMul/Gemm in an ONNX model."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs "consider pre-processing" at WARNING on the root logger
    try:
        quantize_dynamic(
            str(src),
            str(dst),
            op_types_to_quantize=list(op_types),
            per_channel=True,
            weight_type=QuantType.QInt8,
        )
    finally:
        root.setLevel(level)
    return dst


def onnx_session(path: str | Path | bytes, threads: int | None = None, spinning: bool = True) -> Any:
    """A CPU `InferenceSession`, full graph optimisation, `threads` intra-op threads (default: physical cores).

    path: an ONNX file, or the serialised model itself (bytes: an export made in memory).

    spinning: ORT's worker threads busy-wait after each run (its default: lowest latency for back-to-back
    runs). Turn it off when other work (image decoding, postprocessing) runs between inferences in the same
    process, or the idle workers take those cores.
    """
    import onnxruntime as ort

    from .threads import physical_cores

    options = ort.SessionOptions()
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or physical_cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    model = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def run_onnx(session: Any, batch: np.ndarray | torch.Tensor) -> np.ndarray:
    """Logits for a (B, C, H, W) float32 batch."""
    if isinstance(batch, torch.Tensor):
        batch = batch.detach().cpu().numpy()
    return session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)})[0]
