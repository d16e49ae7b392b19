"""A task bundle as an in-memory predictor: the one predictor of the project (DICOM batch and node, demo,
benchmarks), and the contract (`Predictor`) the DICOM side is written against.

`BundlePredictor` runs exactly the bundle's own `inference.json`: its `network_def` with the trained
`models/model.pt`, its `preprocessing` (minus the file loader, since the pixels are already in memory), its
`inferer` (so an overlay such as `inference_openvino.json`, chosen by `backend`, changes the runtime here too)
and its `postprocessing` minus the steps that write files (`SaveImaged`, `SaveProbabilitiesd`), the filter
MONAI Label applies as well.
Nothing of the config's pipeline is re-implemented here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from monai.data import MetaTensor, decollate_batch
from monai.transforms import Compose, LoadImaged, SaveImaged

from tinyusfm_monai.data.registry import Task, get_task
from tinyusfm_monai.handlers.weights import TrainedWeightsLoader
from tinyusfm_monai.transforms.io import SaveProbabilitiesd

from .parser import DEFAULT_BACKEND, bundle_parser, resolve_backend

logger = logging.getLogger(__name__)

# postprocessing steps that write files: not part of an in-memory prediction
FILE_WRITERS = (SaveImaged, SaveProbabilitiesd)


@runtime_checkable
class Predictor(Protocol):
    """A model ready to run on one cropped ultrasound frame (what the DICOM side needs).

    - `task`: the registry Task (name, task_type, labels). Segmentation label index == pixel value, 0 = background.
    - `name`, `version`: written into the outputs as the algorithm identification (bundle name and version).
    - `predict(image)`: `image` is (H, W, 3) uint8 RGB, rows = image height, the tissue crop of one frame.
      Classification returns class probabilities of shape (C,) (C = len(task.labels)); segmentation returns an
      (H, W) uint8 label map at the input size.

    The DICOM tests use small deterministic stand-ins with this interface, so they need no trained weights.
    """

    task: Task
    name: str
    version: str

    def predict(self, image: np.ndarray) -> np.ndarray: ...


class BundlePredictor:
    """`predict((H, W, 3) uint8) -> (C,) probabilities | (H, W) uint8 labels` for one task bundle.

    Args:
        bundle_dir: the task bundle folder.
        device: torch device name (default: the config's).
        weights: trained weights (default: `<bundle>/models/model.pt`).
        overrides: config values, as `--key value` on the command line (e.g. {"image_size": 64}).
        overlays: extra config files of the bundle merged over inference.json (e.g. ["inference_onnx.json"]).
        backend: "auto" (default: OpenVINO on CPU, PyTorch on CUDA), "pytorch", "onnx", "onnx-int8", "openvino",
            "openvino-bf16" or "openvino-int8" (`BACKENDS`): the matching overlay and its settings, merged before
            `overlays` and `overrides`. A runtime other than PyTorch is compiled here (one warm-up batch), so the
            first real image does not pay for it.
    """

    def __init__(
        self,
        bundle_dir: str | Path,
        device: str | None = None,
        weights: str | Path | None = None,
        overrides: dict[str, Any] | None = None,
        overlays: Sequence[str] = (),
        backend: str = DEFAULT_BACKEND,
    ) -> None:
        self.bundle_dir = Path(bundle_dir).resolve()
        backend = resolve_backend(backend, device)
        parser = bundle_parser(self.bundle_dir, "inference.json", backend, overrides, overlays)
        meta_file = self.bundle_dir / "configs" / "metadata.json"
        self.metadata = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        if device is not None:
            parser["device"] = f"$torch.device('{device}')"
        self.task: Task = get_task(parser["task"])
        self.name = self.bundle_dir.name
        self.version = str(self.metadata.get("version", "0"))
        self.device = parser.get_parsed_content("device")
        self.network = parser.get_parsed_content("network_def").to(self.device).eval()
        TrainedWeightsLoader(
            str(weights or self.bundle_dir / "models" / "model.pt"), self.network, str(self.bundle_dir)
        ).load()
        pre = parser.get_parsed_content("preprocessing")
        self.preprocessing = Compose([t for t in pre.transforms if not isinstance(t, LoadImaged)])
        self.backend = backend
        self.inferer = parser.get_parsed_content("inferer")
        post = parser.get_parsed_content("postprocessing")
        self.postprocessing = Compose([t for t in post.transforms if not isinstance(t, FILE_WRITERS)])
        if backend != "pytorch":
            self._warm_up(int(parser.get_parsed_content("image_size")))
        logger.info("%s: backend %s", self.name, backend)

    @torch.inference_mode()
    def _warm_up(self, size: int) -> None:
        """One batch through the inferer: OpenVINO compiles (or converts) here, not on the first image."""
        self.inferer(torch.zeros(1, 3, size, size, device=self.device), self.network)

    @torch.inference_mode()
    def predict_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Predict a list of (H, W, 3) or (H, W) images of any sizes; one result per image."""
        items = [self.preprocessing({"image": _as_loaded(img)}) for img in images]
        batch = torch.stack([item["image"] for item in items]).to(self.device)
        logits = self.inferer(batch, self.network)
        results = []
        for item, pred in zip(items, decollate_batch(logits)):
            out = self.postprocessing({**item, "pred": pred})["pred"]
            out = out.as_tensor() if isinstance(out, MetaTensor) else torch.as_tensor(out)
            results.append((out[0] if out.ndim == 3 else out).cpu().numpy())  # a label map drops its channel axis
        return results

    def predict(self, image: np.ndarray) -> np.ndarray:
        return self.predict_batch([image])[0]


def _as_loaded(image: np.ndarray) -> MetaTensor:
    """What `LoadImaged` hands the transforms: a channel-last float array with its metadata."""
    if image.ndim == 2:
        image = image[..., None]
    meta = {"original_channel_dim": -1, "filename_or_obj": "in-memory"}
    return MetaTensor(np.ascontiguousarray(image.astype(np.float32)), meta=meta)


def load_predictor(bundle_dir: str | Path, backend: str = DEFAULT_BACKEND, **kwargs: Any) -> BundlePredictor:
    """The predictor of a task bundle on `backend` (keyword arguments as `BundlePredictor`)."""
    return BundlePredictor(bundle_dir, backend=backend, **kwargs)


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
