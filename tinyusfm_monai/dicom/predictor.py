"""The contract between the DICOM side and a model: the `Predictor` protocol.

Why a protocol instead of calling a bundle directly: the DICOM code must not know about networks, devices or
MONAI configs, and its tests must run without trained weights. Anything with `.task`, `.name`, `.version` and
`.predict(image)` works: the bundle-backed predictor (`tinyusfm_monai.bundle.predictor.load_predictor`), or a
small deterministic stand-in in the tests.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from tinyusfm_monai.data.registry import Task


@runtime_checkable
class Predictor(Protocol):
    """A model ready to run on one cropped ultrasound frame.

    - `task`: the registry Task (name, task_type, labels). Segmentation label index == pixel value, 0 = background.
    - `name`, `version`: written into the outputs as the algorithm identification (bundle name and version).
    - `predict(image)`: `image` is (H, W, 3) uint8 RGB, rows = image height, the tissue crop of one frame.
      Classification returns class probabilities of shape (C,) (C = len(task.labels)); segmentation returns an
      (H, W) uint8 label map at the input size.
    """

    task: Task
    name: str
    version: str

    def predict(self, image: np.ndarray) -> np.ndarray: ...


def load_predictor(bundle_dir: str | Path) -> Predictor:
    """Build the predictor of a task bundle; imported lazily so the DICOM package works without the model code."""
    try:
        module = importlib.import_module("tinyusfm_monai.bundle.predictor")
    except ImportError as exc:
        raise RuntimeError(
            f"cannot load bundle {bundle_dir}: tinyusfm_monai.bundle.predictor is not available ({exc})"
        ) from exc
    return module.load_predictor(bundle_dir)


def checked_prediction(predictor: Predictor, image: np.ndarray) -> np.ndarray:
    """Run the predictor and validate its output against the task, so a model bug fails loudly, not as bad DICOM."""
    task = predictor.task
    out = np.asarray(predictor.predict(image))
    if task.task_type == "classification":
        out = out.astype(np.float64).reshape(-1)
        if out.shape != (len(task.labels),):
            raise ValueError(f"{predictor.name}: expected {len(task.labels)} probabilities, got shape {out.shape}")
        if not np.all(np.isfinite(out)) or out.min() < 0 or out.max() > 1 + 1e-6:
            raise ValueError(f"{predictor.name}: probabilities must be finite and within [0, 1]")
        return out
    if out.shape != image.shape[:2]:
        raise ValueError(f"{predictor.name}: label map of shape {out.shape}, expected {image.shape[:2]}")
    if out.size and (out.min() < 0 or out.max() >= len(task.labels)):
        raise ValueError(f"{predictor.name}: label values must lie in [0, {len(task.labels) - 1}]")
    return out.astype(np.uint8)
