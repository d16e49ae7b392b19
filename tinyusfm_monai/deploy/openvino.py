"""OpenVINO on CPU: IR conversion, compiled models with an explicit precision, NNCF INT8, per-layer counters.

Why OpenVINO: on the 2-core AVX-512 development machine it ran TinyUSFM faster than ONNX Runtime and eager
PyTorch in fp32, and it uses the CPU's bf16 (AVX-512 BF16) and int8 (VNNI) instructions
(benchmarks/RESULTS.md). It is an optional dependency (`pip install 'tinyusfm-monai[openvino]'`): every
function that needs it imports it when called, and `openvino_available()` tells the callers that fall back
to PyTorch.

Precision is always set explicitly: OpenVINO's CPU plugin runs in bf16 by default on CPUs that have it
(`INFERENCE_PRECISION_HINT`), which changes the outputs (~1e-2 on logits). `compile_openvino` therefore
requires "f32" or "bf16" and never leaves the hint to the plugin.

An IR written here records, in its runtime info, a fingerprint of the weights it was made from
(`weights_fingerprint`, sha256 over the state dict), the input size and whether it is INT8, so a runtime can
tell an IR that no longer matches `models/model.pt` (e.g. after MONAI Label retrained the bundle).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tinyusfm_monai.utils.atomic import TEMP_PREFIX, atomic_path

logger = logging.getLogger(__name__)

PRECISIONS = ("f32", "bf16")
INSTALL_HINT = "pip install 'tinyusfm-monai[openvino]'"
# keys of the IR's runtime info written by `save_ir`
META_SECTION = "tinyusfm"
INPUT_NAME = "image"


@functools.lru_cache(maxsize=1)
def openvino_available() -> bool:
    """True when `import openvino` works here (it is an optional dependency)."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def version() -> str:
    """OpenVINO's version, short form (e.g. 2026.4.1)."""
    return str(require_openvino().__version__).split("-")[0]


def require_openvino() -> Any:
    """The `openvino` module, or an ImportError that says how to install it."""
    try:
        import openvino
    except ImportError as e:
        raise ImportError(f"OpenVINO is not installed ({e}); {INSTALL_HINT}") from None
    return openvino


@functools.lru_cache(maxsize=1)
def core() -> Any:
    """One `openvino.Core` per process (creating it loads the CPU plugin)."""
    return require_openvino().Core()


def cpu_precisions() -> list[str]:
    """The precisions this CPU runs natively, of `PRECISIONS` ("bf16" needs AVX-512 BF16 or AMX)."""
    caps = set(core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    return ["f32"] + (["bf16"] if "BF16" in caps else [])


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"OpenVINO precision must be one of {PRECISIONS} (set explicitly), got {precision!r}")
    return precision


def weights_fingerprint(network: nn.Module) -> str:
    """sha256 over the network's state dict (names, dtypes, shapes, values): which weights an IR was made from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(network.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def convert_network(network: nn.Module, image_size: int, in_chans: int = 3, route: str = "torch") -> Any:
    """An fp32 `openvino.Model` of `network` (eval mode, CPU) with input `image` (batch, C, S, S), dynamic batch.

    route "torch" (default): OpenVINO's PyTorch frontend. It maps `scaled_dot_product_attention` to one
    ScaledDotProductAttention op with the scale folded in; the ONNX graph (opset 17 has no attention op) adds a
    Multiply and a Transpose per block (TinyUSFM: 49 vs 25 Transposes). route "onnx": through the ONNX export
    (in memory), for comparison in benchmarks/profile_layers.py.
    """
    import warnings

    ov = require_openvino()
    network = network.eval().to("cpu")
    example = torch.zeros(1, in_chans, image_size, image_size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about python values in the graph
        if route == "onnx":
            from .onnx import export_onnx

            buffer = io.BytesIO()
            export_onnx(network, buffer, image_size=image_size, in_chans=in_chans)
            model = ov.convert_model(io.BytesIO(buffer.getvalue()))
        elif route == "torch":
            model = ov.convert_model(network, example_input=example, input=[(-1, in_chans, image_size, image_size)])
        else:
            raise ValueError(f"route must be 'torch' or 'onnx', got {route!r}")
    model.inputs[0].get_tensor().set_names({INPUT_NAME})
    return model


def set_metadata(model: Any, meta: dict[str, Any]) -> Any:
    for key, value in meta.items():
        model.set_rt_info(str(value), [META_SECTION, key])
    return model


def metadata(model: Any) -> dict[str, str]:
    """What `set_metadata` recorded (empty for an IR written elsewhere)."""
    info = model.get_rt_info()
    if META_SECTION not in info:
        return {}
    return {key: str(value.astype(str)) for key, value in dict(info[META_SECTION]).items()}


def save_ir(model: Any, path: str | Path) -> Path:
    """Write `model` as OpenVINO IR (`path` .xml + .bin), weights kept fp32 (no fp16 compression), atomically:
    the .bin then the .xml replace the old files, each in one rename."""
    ov = require_openvino()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=TEMP_PREFIX) as tmp:
        ov.save_model(model, str(Path(tmp) / "model.xml"), compress_to_fp16=False)
        with atomic_path(path.with_suffix(".bin")) as bin_tmp:
            os.replace(Path(tmp) / "model.bin", bin_tmp)
        with atomic_path(path) as xml_tmp:
            os.replace(Path(tmp) / "model.xml", xml_tmp)
    return path


def read_ir(path: str | Path) -> Any:
    return core().read_model(str(path))


def compile_openvino(
    model: Any,
    precision: str,
    threads: int | None = None,
    perf_count: bool = False,
    pinning: bool = False,
    batch: int | None = None,
) -> Any:
    """A CPU `CompiledModel` for batch-latency inference with the precision set explicitly.

    threads: `INFERENCE_NUM_THREADS` (default: physical cores). One stream, latency hint.
    pinning: OpenVINO pins its threads to cores by default; off here because on a shared cart or workstation
        a pinned thread cannot move away from a core that another process is using.
    perf_count: per-layer timing (`request.profiling_info`), for `benchmarks/` only.
    batch: compile for this fixed batch size (the IR's batch axis is dynamic). A static shape was 4-7 % faster
        than the dynamic one for TinyUSFM on the development machine, so runtimes compile per batch size.
    """
    from .threads import physical_cores

    check_precision(precision)
    if isinstance(model, (str, Path)):
        model = read_ir(model)
    if batch is not None:
        shape = model.inputs[0].get_partial_shape()
        model = model.clone()
        model.reshape([int(batch), *(shape[i].get_length() for i in range(1, shape.rank.get_length()))])
    config = {
        "INFERENCE_PRECISION_HINT": precision,
        "INFERENCE_NUM_THREADS": int(threads or physical_cores()),
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
        "ENABLE_CPU_PINNING": bool(pinning),
        "PERF_COUNT": bool(perf_count),
    }
    return core().compile_model(model, "CPU", config)


def run_openvino(request: Any, batch: np.ndarray | torch.Tensor) -> np.ndarray:
    """Logits for a (B, C, H, W) float32 batch; `request` is an `InferRequest` (reused: no allocation per call)."""
    if isinstance(batch, torch.Tensor):
        batch = batch.detach().cpu().numpy()
    result = request.infer([np.ascontiguousarray(batch, dtype=np.float32)])
    return np.array(result[0], copy=True)  # the request owns that buffer and overwrites it on the next call


def quantize_int8(model: Any, calibration: Iterable[np.ndarray], subset_size: int) -> Any:
    """NNCF post-training INT8 quantisation (weights per channel, activations per tensor, calibrated ranges).

    `calibration` yields preprocessed (1, C, S, S) float32 images of the task's own training data; every one
    of them (up to `subset_size`) is used to set the activation ranges. `ModelType.TRANSFORMER` keeps the
    ops NNCF knows to be sensitive in a ViT (LayerNorm, softmax, GELU inputs) in floating point.
    """
    import nncf

    data = list(calibration)
    if not data:
        raise ValueError("INT8 calibration needs at least one image")
    quiet = logging.getLogger("nncf")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # NNCF logs its statistics at INFO
    try:
        # its progress bars (rich) go to stdout whatever the log level; the export prints its own summary
        with contextlib.redirect_stdout(io.StringIO()):
            return nncf.quantize(
                model,
                nncf.Dataset(data),
                model_type=nncf.ModelType.TRANSFORMER,
                subset_size=min(subset_size, len(data)),
            )
    finally:
        quiet.setLevel(level)


def layer_times(compiled: Any, batch: np.ndarray, runs: int = 20, warmup: int = 5) -> list[dict[str, Any]]:
    """Per-layer-type time (ms per inference, mean over `runs`) from OpenVINO's PERF_COUNT counters, slowest first.

    `compiled` must be compiled with `perf_count=True`. Rows: node type (Subgraph = a fused snippet, e.g.
    the attention), the kernel that ran (e.g. brgemm_avx512_bf16), how many nodes, ms and share of the total.
    """
    request = compiled.create_infer_request()
    for _ in range(warmup):
        request.infer([batch])
    totals: dict[tuple[str, str], float] = {}
    counts: dict[tuple[str, str], int] = {}
    for _ in range(runs):
        request.infer([batch])
        seen: dict[tuple[str, str], int] = {}
        for info in request.profiling_info:
            if info.status != info.Status.EXECUTED:
                continue
            key = (info.node_type, info.exec_type)
            totals[key] = totals.get(key, 0.0) + info.real_time.total_seconds() * 1e3 / runs
            seen[key] = seen.get(key, 0) + 1
        counts = seen
    total = sum(totals.values()) or 1.0
    rows = [
        {"node_type": k[0], "kernel": k[1], "nodes": counts.get(k, 0), "ms": v, "share": v / total}
        for k, v in totals.items()
    ]
    return sorted(rows, key=lambda r: -r["ms"])
