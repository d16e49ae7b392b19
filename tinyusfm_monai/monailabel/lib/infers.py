"""BundleInferTask for our 2D bundles: what the stock monaibundle app gets wrong for them.

* Classification: the stock task appends `Restored(pred, ref_image=image)`, which breaks on a 1-D `pred`
  ("operands could not be broadcast together"), so it runs with `add_post_restore=False` (as MONAI Label's own
  endoscopy app does) and MONAI Label's ClassificationWriter returns `{"prediction": [{idx, label, score}]}`.
  Our `SaveProbabilitiesd` is filtered out like `SaveImaged`: MONAI Label answers with JSON, and a CSV written
  into the bundle folder on every request would only be clutter.
* Segmentation: the bundle postprocessing already restores the source size (Invertd of the resize) and casts to
  uint8, so MONAI Label's `Restored` is not appended either: on a 2-D map it treats the first axis as channels
  and resizes (80, 96) to (80, 80) as float32, which ITK then refuses to write as PNG. A `SqueezeDimd` drops the
  channel axis instead, and MONAI Label writes a uint8 label of the source size with the registry's values.
  MONAI Label's ITK writer transposes 2-D arrays (it expects MONAI's default (x, y) indexing, PILReader's
  `reverse_indexing=True`); our bundles load (row, column) (`reverse_indexing=False`), so the map is transposed
  once more here, or a W×H image would get an H×W label.
* No trained weights: the stock task would run the freshly built network with random weights. Like the bundle's
  TrainedWeightsLoader, this refuses, and says how to get weights.
* Backend (`--conf backend openvino`, the names of `bundle.parser.BACKENDS`): the stock task reads
  inference.json alone; this one merges the backend's overlay (e.g. inference_openvino.json) and its settings, the
  same setting as `tinyusfm-monai dicom infer --backend` and `load_predictor(backend=...)`. The OpenVINO inferer
  follows retraining: MONAI Label reloads the network when /train rewrites models/model.pt, and the inferer
  converts the new weights instead of running an exported IR made from the old ones.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from monai.bundle import ConfigParser
from monai.transforms import SaveImaged, SqueezeDimd, Transposed
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.bundle import BundleInferTask

from tinyusfm_monai.bundle.parser import DEFAULT_BACKEND, bundle_parser, resolve_backend
from tinyusfm_monai.transforms.io import SaveProbabilitiesd

logger = logging.getLogger(__name__)


def bundle_type(path: str) -> str:
    """MONAI Label's convention: the task type comes from the bundle folder name."""
    return InferType.CLASSIFICATION if os.path.basename(path).endswith("_classification") else InferType.SEGMENTATION


class TinyUSFMInferTask(BundleInferTask):
    def __init__(self, path: str, conf: dict[str, str], **kwargs: Any) -> None:
        # an unknown name fails at start-up, not at the first request
        self.backend = resolve_backend(conf.get("backend") or DEFAULT_BACKEND)
        kind = bundle_type(path)
        super().__init__(
            path,
            conf,
            type=kind,
            add_post_restore=False,
            post_filter=[SaveImaged, SaveProbabilitiesd],
            load_strict=True,
            **kwargs,
        )

    def _load_bundle_config(self, path: str, config: str) -> ConfigParser:
        """inference.json merged with the backend's overlay and settings (the stock task reads inference.json only)."""
        parser = bundle_parser(path, os.path.abspath(config), self.backend)
        logger.info("%s: backend %s", os.path.basename(path), self.backend)
        return parser

    def post_transforms(self, data: Any = None) -> Sequence[Callable]:
        post = list(super().post_transforms(data))
        if self.type != InferType.CLASSIFICATION:
            post += [SqueezeDimd(keys=self.key_pred, dim=0), Transposed(keys=self.key_pred, indices=(1, 0))]
        return post

    def _get_network(self, device: Any, data: Any) -> Any:
        if not self.get_path():
            raise MONAILabelException(
                MONAILabelError.INFERENCE_ERROR,
                f"{self.bundle_path}/models/model.pt: no trained weights, refusing to predict with random ones; "
                f"train first (POST /train/{os.path.basename(self.bundle_path)}) or copy a fine-tuned model.pt there",
            )
        return super()._get_network(device, data)
