"""`tinyusfm-monai export`: a task bundle's trained network as ONNX, TorchScript or OpenVINO IR (optionally INT8).

The network is built from the bundle's own `inference.json` (`network_def`) and loaded from its
`models/model.pt`, exactly as `monai.bundle run` would; the exported file is checked against the
eager model on a random input before it is reported as written.

OpenVINO exports also run the accuracy check that a deployment decision needs: the exported model at every
precision this CPU runs (f32, and bf16 where the CPU has it) against eager fp32 on the task's labelled test
split (accuracy or Dice, and agreement with fp32). INT8 is NNCF post-training quantisation calibrated on the
task's own training images through the bundle's preprocessing. The check and the calibration set are printed
and written next to the model as `<model>.export.json`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tinyusfm_monai.bundle.parser import bundle_parser
from tinyusfm_monai.utils.atomic import atomic_write

from .onnx import export_onnx, onnx_session, quantize_onnx_int8, run_onnx, write_onnx_metadata
from .openvino import weights_fingerprint

logger = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript", "openvino")
# fp32 exports must agree tightly; int8 only approximately (what tests/test_export.py also asserts).
FP32_ATOL = 1e-3
CALIBRATION_SIZE = 300  # "a few hundred" training images; all of them when the split is smaller


def load_bundle_network(
    bundle: str | Path, weights: str | Path | None = None, image_size: int | None = None
) -> tuple[nn.Module, int]:
    """The bundle's `network_def` with trained weights, in eval mode on CPU, and its input size."""
    from tinyusfm_monai.handlers.weights import TrainedWeightsLoader

    bundle = Path(bundle).resolve()
    parser = bundle_parser(bundle, overrides=None if image_size is None else {"image_size": int(image_size)})
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
    precision: str = "f32",
    dataset_dir: str = "",
    calibration_size: int = CALIBRATION_SIZE,
    check_size: int = 0,
) -> str:
    """Export a bundle's trained network for CPU deployment.

    Args:
        bundle: the bundle folder (bundles/<task>), with models/model.pt.
        format: "onnx" (ONNX Runtime), "torchscript" or "openvino" (OpenVINO IR, `pip install
            'tinyusfm-monai[openvino]'`).
        int8: INT8. ONNX: ONNX Runtime dynamic quantisation of MatMul/Gemm; TorchScript: torch.ao dynamic
            quantisation; OpenVINO: NNCF post-training quantisation calibrated on the task's training images.
        output: output file (default: <bundle>/models/model[_int8].onnx|.ts|.xml).
        weights: trained weights (default: <bundle>/models/model.pt).
        image_size: input size to export for (default: the bundle's image_size).
        precision: OpenVINO only: the run-time precision the export is checked and recorded for, "f32" or
            "bf16" (the bundle overlay runs `--openvino_precision`, default f32; both are measured).
        dataset_dir: OpenVINO only: the task's prepared dataset (its datalist's training split calibrates INT8,
            its test split is the accuracy check); empty = the embedded phantom of the task.
        calibration_size: OpenVINO INT8: how many training images calibrate (spread evenly over the split).
        check_size: OpenVINO: how many test images the accuracy check uses (0 = the whole test split).
    Returns:
        The path written.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if format != "openvino" and precision != "f32":
        raise ValueError(f"--precision {precision}: only --format openvino runs in another precision than f32")
    suffix = {"onnx": ".onnx", "torchscript": ".ts", "openvino": ".xml"}[format]
    out = Path(output) if output else Path(bundle) / "models" / f"model{'_int8' if int8 else ''}{suffix}"
    check_writable(out.parent)  # before seconds of conversion, not after
    network, size = load_bundle_network(bundle, weights, image_size)
    if format == "openvino":
        return str(
            export_openvino(
                network, size, Path(bundle), out, int8, precision, dataset_dir, calibration_size, check_size
            )
        )
    if format == "onnx":
        fp32 = out if not int8 else out.with_name(out.stem + "_fp32_tmp.onnx")
        export_onnx(network, fp32, image_size=size)
        if int8:
            quantize_onnx_int8(fp32, out)
            fp32.unlink()
        # which weights it was made from: OnnxInferer never runs it for others (as for the OpenVINO IR)
        write_onnx_metadata(out, {"weights_sha256": weights_fingerprint(network), "image_size": size, "int8": int8})
        session = onnx_session(out)
        report = _check(network, lambda x: run_onnx(session, x), size, None if int8 else FP32_ATOL)
    else:
        from .quantise import quantize_linear_dynamic

        model = quantize_linear_dynamic(network) if int8 else network
        with torch.no_grad():
            scripted = torch.jit.script(model) if not int8 else torch.jit.trace(model, torch.zeros(1, 3, size, size))
        out.parent.mkdir(parents=True, exist_ok=True)
        # the weights fingerprint travels with it too (no bundle backend runs TorchScript; a deployment can check)
        scripted.save(str(out), _extra_files={"weights_sha256": weights_fingerprint(network)})
        loaded = torch.jit.load(str(out), map_location="cpu")
        report = _check(network, lambda x: loaded(x).numpy(), size, None if int8 else FP32_ATOL)
    print(
        f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, {format}{' int8' if int8 else ''}, {size}x{size}); "
        f"vs eager: max |Δlogit| {report['max_abs_diff']:.2e}, argmax agreement {report['argmax_agreement']:.0%}"
    )
    return str(out)


def check_writable(folder: Path) -> None:
    """Create `folder` and a probe file in it, or raise PermissionError naming the folder and the cause (a
    read-only bundle is refused before the conversion, whoever runs it: permissions do not stop root, a
    read-only mount does)."""
    import tempfile

    from tinyusfm_monai.utils.atomic import TEMP_PREFIX

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=TEMP_PREFIX):
            pass
    except OSError as exc:
        raise PermissionError(
            f"{folder}: the export cannot be written there ({exc.strerror or type(exc).__name__}); "
            "pass --output to a writable place or copy the bundle"
        ) from None


def report_path(model_file: str | Path) -> Path:
    """Where an OpenVINO export writes its calibration set and accuracy check: `<model>.export.json`."""
    model_file = Path(model_file)
    return model_file.with_name(model_file.stem + ".export.json")


def _logits(run: Any, images: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(run(x)) for x in images])


def export_openvino(
    network: nn.Module,
    size: int,
    bundle: Path,
    out: Path,
    int8: bool,
    precision: str,
    dataset_dir: str,
    calibration_size: int,
    check_size: int,
) -> Path:
    """Convert (and for INT8 calibrate and quantise), write the IR, check it, write `<model>.export.json`."""
    from tinyusfm_monai.data.registry import get_task

    from . import openvino as ovd
    from .accuracy import compare, markdown_table
    from .calibration import calibration_samples, data_source, test_samples

    ovd.check_precision(precision)
    precisions = ovd.cpu_precisions()
    if precision not in precisions:
        raise ValueError(f"--precision {precision}: this CPU runs only {precisions} natively")
    task = get_task(bundle_parser(bundle, overrides=None if size is None else {"image_size": int(size)})["task"])
    started = time.perf_counter()
    model = ovd.convert_network(network, size)
    calibration: dict[str, Any] = {}
    if int8:
        samples = calibration_samples(bundle, dataset_dir, calibration_size, image_size=size)
        model = ovd.quantize_int8(model, [s.image for s in samples], len(samples))
        calibration = {
            "method": "NNCF post-training quantisation (nncf.quantize, ModelType.TRANSFORMER)",
            "datalist": data_source(task.name, dataset_dir),
            "split": "training",
            "preprocessing": "inference.json#preprocessing",
            "images": [s.path for s in samples],
        }
    meta = {
        "task": task.name,
        "image_size": size,
        "int8": int8,
        "checked_precision": precision,
        "weights_sha256": ovd.weights_fingerprint(network),
    }
    ovd.save_ir(ovd.set_metadata(model, meta), out)

    compiled = {p: ovd.compile_openvino(out, p).create_infer_request() for p in precisions}
    parity = _check(network, lambda x: ovd.run_openvino(compiled["f32"], x), size, None if int8 else FP32_ATOL)
    tests = test_samples(bundle, dataset_dir, check_size, image_size=size)
    images = [s.image for s in tests]
    with torch.inference_mode():
        reference = _logits(lambda x: network(torch.from_numpy(x)).numpy(), images)
    kind = "int8" if int8 else "fp32"
    outputs = {
        f"OpenVINO {kind} @ {p}": _logits(lambda x, r=r: ovd.run_openvino(r, x), images) for p, r in compiled.items()
    }
    rows = compare(reference, outputs, [s.label for s in tests], task.task_type)
    table = markdown_table(rows, task.task_type)
    report = {
        "model": out.name,
        "format": "openvino",
        **meta,
        "openvino": ovd.require_openvino().__version__,
        "parity_random_input_f32": parity,
        "accuracy_check": {
            "datalist": data_source(task.name, dataset_dir),
            "split": "test",
            "preprocessing": "train.json#validate#preprocessing",
            "images": len(tests),
            "reference": "fp32 eager (PyTorch)",
            "rows": rows,
        },
        "calibration": calibration,
        "seconds": round(time.perf_counter() - started, 1),
    }
    atomic_write(report_path(out), json.dumps(report, indent=2) + "\n")
    size_mib = (out.stat().st_size + out.with_suffix(".bin").stat().st_size) / 2**20
    checked = rows[f"OpenVINO {kind} @ {precision}"]
    print(
        f"wrote {out} (+ .bin, {size_mib:.1f} MiB, OpenVINO IR {kind}, {size}x{size}"
        + (f", calibrated on {len(calibration['images'])} training images" if int8 else "")
        + f"); vs eager on random input at f32: max |Δlogit| {parity['max_abs_diff']:.2e}\n"
        f"accuracy check on {len(tests)} test images of {task.name} (the export's precision: {precision}, "
        f"agreement with fp32 {checked['agreement']:.2%}):\n{table}\nreport: {report_path(out)}"
    )
    return out
