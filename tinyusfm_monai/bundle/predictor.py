"""A task bundle as an in-memory predictor (DICOM batch and node, benchmarks, the demo).

It runs exactly the bundle's own `inference.json`: the same network_def, the same preprocessing
transforms (minus the file loader, since the pixels are already in memory) and the trained
`models/model.pt`. Only the last step differs from the config's postprocessing: the segmentation
probabilities are resized back to the input size with the same bilinear interpolation that the
config's `Invertd` applies.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Compose, LoadImaged

from tinyusfm_monai.data.argmax import channel_argmax
from tinyusfm_monai.bundle.handlers import TrainedWeightsLoader
from tinyusfm_monai.data.registry import Task, get_task

logger = logging.getLogger(__name__)


class BundlePredictor:
    """`predict((H, W, 3) uint8) -> (C,) probabilities | (H, W) uint8 labels` for one task bundle."""

    def __init__(
        self,
        bundle_dir: str | Path,
        device: str | None = None,
        weights: str | Path | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> None:
        self.bundle_dir = Path(bundle_dir).resolve()
        meta_file = self.bundle_dir / "configs" / "metadata.json"
        config_file = self.bundle_dir / "configs" / "inference.json"
        for f in (meta_file, config_file):
            if not f.is_file():
                raise FileNotFoundError(f"{f}: missing; {self.bundle_dir} is not a tinyusfm-monai task bundle")
        self.metadata = json.loads(meta_file.read_text())
        parser = ConfigParser()
        parser.read_config(str(config_file))
        parser["bundle_root"] = str(self.bundle_dir)
        for key, value in (overrides or {}).items():  # e.g. {"image_size": 64}, as `--image_size 64` on the CLI
            parser[key] = value
        if device is not None:
            parser["device"] = f"$torch.device('{device}')"
        self.task: Task = get_task(parser["task"])
        self.name = self.bundle_dir.name
        self.version = str(self.metadata.get("version", "0"))
        self.device = parser.get_parsed_content("device")
        self.network = parser.get_parsed_content("network_def").to(self.device).eval()
        TrainedWeightsLoader(str(weights or self.bundle_dir / "models" / "model.pt"), self.network, str(self.bundle_dir)).load()
        pre = parser.get_parsed_content("preprocessing")
        self.preprocessing = Compose([t for t in pre.transforms if not isinstance(t, LoadImaged)])

    @torch.inference_mode()
    def predict_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        tensors = [self._prepare(img) for img in images]
        logits = self.network(torch.stack(tensors).to(self.device)).float()
        probs = torch.softmax(logits, dim=1)
        if self.task.task_type == "classification":
            return [p.cpu().numpy() for p in probs]
        out = []
        for img, p in zip(images, probs):
            full = F.interpolate(p[None], size=img.shape[:2], mode="bilinear", align_corners=False)[0]
            out.append(channel_argmax(full)[0].to(torch.uint8).cpu().numpy())
        return out

    def predict(self, image: np.ndarray) -> np.ndarray:
        return self.predict_batch([image])[0]

    def _prepare(self, image: np.ndarray) -> torch.Tensor:
        if image.ndim == 2:
            image = image[..., None]
        image = image.astype(np.float32)  # what LoadImaged hands the transforms
        meta = {"original_channel_dim": -1, "filename_or_obj": "in-memory"}
        return self.preprocessing({"image": MetaTensor(np.ascontiguousarray(image), meta=meta)})["image"].as_tensor()


def load_predictor(bundle_dir: str | Path) -> BundlePredictor:
    return BundlePredictor(bundle_dir)
