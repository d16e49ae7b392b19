"""Reading a task bundle's config: the one place that turns (bundle, config, backend, overrides) into a MONAI
`ConfigParser`. The predictor, the export and its calibration data, the MONAI Label app and the benchmarks all
call `bundle_parser`, so a backend's overlay and `bundle_root` are set the same way everywhere.

A backend is a name for a runtime (`BACKENDS`): the bundle overlay merged over `inference.json` and the config
values it sets. "pytorch" is `inference.json` alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser

# The one backend setting of every entry point (predictor, DICOM batch and node, MONAI Label app, benchmarks):
# a name -> the bundle overlay merged over inference.json and the config values it sets. "pytorch" is
# inference.json alone. The OpenVINO overlay runs PyTorch (with one log line) where OpenVINO is not installed.
BACKENDS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "pytorch": ((), {}),
    "onnx": (("inference_onnx.json",), {}),
    "onnx-int8": (("inference_onnx.json",), {"onnx_file": "$@bundle_root + '/models/model_int8.onnx'"}),
    "openvino": (("inference_openvino.json",), {"openvino_precision": "f32"}),
    "openvino-bf16": (("inference_openvino.json",), {"openvino_precision": "bf16"}),
    "openvino-int8": (
        ("inference_openvino.json",),
        {"openvino_file": "$@bundle_root + '/models/model_int8.xml'", "openvino_precision": "f32"},
    ),
}
# "auto": OpenVINO f32 on CPU (the fastest runtime measured on the development CPU, results within 1e-4 of
# PyTorch; benchmarks/RESULTS.md), PyTorch on a CUDA device. Without OpenVINO installed the OpenVINO overlay runs
# PyTorch and says so in one log line.
DEFAULT_BACKEND = "auto"


def resolve_backend(backend: str, device: Any = None) -> str:
    """The `BACKENDS` name `backend` stands for ("auto" depends on the device: CUDA -> pytorch, else openvino)."""
    if backend != "auto":
        backend_configs(backend)
        return backend
    cuda = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
    return "pytorch" if cuda else "openvino"


def backend_configs(backend: str) -> tuple[tuple[str, ...], dict[str, Any]]:
    """(overlay files, config overrides) of a backend name (see `BACKENDS`; "auto" as `resolve_backend`)."""
    if backend == "auto":
        backend = resolve_backend(backend)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {sorted(BACKENDS)}, got {backend!r}")
    overlays, overrides = BACKENDS[backend]
    return overlays, dict(overrides)


def config_files(bundle_dir: Path, config: str | Path = "inference.json", overlays: Sequence[str] = ()) -> list[str]:
    """`config` (a file name under `configs/`, or a path) and the named overlays of `configs/`, checked to exist."""
    first = Path(config) if Path(config).is_absolute() else bundle_dir / "configs" / config
    files = [first, *(bundle_dir / "configs" / name for name in overlays)]
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"{f}: missing; {bundle_dir} is not a tinyusfm-monai task bundle")
    return [str(f) for f in files]


def bundle_parser(
    bundle: str | Path,
    config: str | Path = "inference.json",
    backend: str = "pytorch",
    overrides: Mapping[str, Any] | None = None,
    overlays: Sequence[str] = (),
) -> ConfigParser:
    """A bundle's config read for `backend`, with `bundle_root` set and `overrides` applied.

    Args:
        bundle: the bundle folder.
        config: the config file under `configs/` (or a path to it); the backend's overlay is merged over it.
        backend: a `BACKENDS` name or "auto" (default "pytorch": the config alone).
        overrides: config values, as `--key value` on the command line; they win over the backend's settings.
        overlays: further files of `configs/` merged after the backend's overlay.

    Raises:
        FileNotFoundError: a config file is missing (the folder is not a task bundle).
        ValueError: an unknown backend name.
    """
    bundle = Path(bundle).resolve()
    backend_overlays, backend_overrides = backend_configs(backend)
    parser = ConfigParser()
    parser.read_config(config_files(bundle, config, [*backend_overlays, *overlays]))
    parser["bundle_root"] = str(bundle)
    for key, value in {**backend_overrides, **(overrides or {})}.items():
        parser[key] = value
    return parser
