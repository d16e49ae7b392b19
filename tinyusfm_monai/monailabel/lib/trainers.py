"""BundleTrainTask for our bundles: classification labels, a non-empty validation set, fine-tune semantics.

* Classification: the stock task passes the `labels/final` *file* as `label`; our classification bundles want
  the class index. `_fetch_datalist` takes each image's `class` label (else its `final` label) and maps it with
  `labels.class_from_label_file` (conventions in labels.py and docs/monailabel.md); images without one are
  skipped. Segmentation trainers skip `final` labels that are class files (.json/.txt).
* Validation: with a handful of labelled images `val_split` can leave the validation list empty, and then
  `BestModelSaver` would never write `models/model.pt`; the training list is reused for validation instead.
* Fine-tuning: MONAI Label already loads the current `models/model.pt` (CheckpointLoader) when `pretrained`.
  The bundle's crash-resume (`resume`, `models/last.pt`) is switched off here, or a finished earlier run would
  be "resumed" at its last epoch and train nothing. `max_epochs` also sets the bundle's top-level
  `max_epochs` (the cosine schedule's length), and the warm-up is shortened to fit.
* Extra request options (also shown in the client's train panel): batch_size, num_workers, learning_rate.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.tasks.train.bundle import BundleTrainTask

from tinyusfm_monai.monailabel.lib.labels import CLASSIFICATION_LABEL_TAGS, NON_IMAGE_LABELS, class_from_label_file

logger = logging.getLogger(__name__)

_EXTRA_OPTIONS: dict[str, type] = {"batch_size": int, "num_workers": int, "learning_rate": float}


class TinyUSFMTrainTask(BundleTrainTask):
    def __init__(self, path: str, conf: dict[str, str], **kwargs: Any) -> None:
        super().__init__(path, conf, **kwargs)
        self.classification = os.path.basename(path).endswith("_classification")
        self.class_names: list[str] = []
        self._request: dict[str, Any] = {}
        if self.valid:
            with open(os.path.join(path, "configs", "metadata.json")) as fp:
                channel_def = json.load(fp)["network_data_format"]["outputs"]["pred"]["channel_def"]
            self.class_names = [channel_def[k] for k in sorted(channel_def, key=int)]

    def config(self) -> dict[str, Any]:
        options = super().config()
        for key in _EXTRA_OPTIONS:
            if key in self.bundle_config.config:
                options[key] = self.bundle_config.config[key]
        return options

    def _fetch_datalist(self, request: dict[str, Any], datastore: Datastore) -> list[dict[str, Any]]:
        if not self.classification:
            datalist = super()._fetch_datalist(request, datastore)
            masks = [d for d in datalist if not d["label"].lower().endswith(NON_IMAGE_LABELS)]
            if len(masks) < len(datalist):
                logger.warning("skipping %d class labels (.json/.txt) for segmentation", len(datalist) - len(masks))
            return masks
        mapped = []
        for image_id in datastore.list_images():
            label_path = None
            for tag in CLASSIFICATION_LABEL_TAGS:
                label_id = datastore.get_label_by_image_id(image_id, tag)
                if label_id:
                    label_path = datastore.get_label_uri(label_id, tag)
                    break
            if not label_path:
                continue
            try:
                index = class_from_label_file(label_path, self.class_names)
            except (OSError, ValueError) as e:
                logger.warning("skipping %s: %s", image_id, e)
                continue
            if index is None:
                logger.warning("skipping %s: its label marks no class (all zero)", image_id)
                continue
            mapped.append({"image": datastore.get_image_uri(image_id), "label": index})
        logger.info("classification datalist: %d labelled images", len(mapped))
        return mapped

    def _partition_datalist(self, datalist: list, request: dict[str, Any], shuffle: bool = False) -> tuple:
        if not datalist:
            raise ValueError("no labelled images in the datastore (labels/final); nothing to train on")
        train, val = super()._partition_datalist(datalist, request, shuffle=shuffle)
        if val is not None and len(val) == 0:
            logger.warning("validation split is empty: validating on the %d training images", len(train))
            val = list(train)
        return train, val

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> Any:
        self._request = dict(request)
        return super().__call__(request, datastore)

    def _update_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        request = self._request
        max_epochs = int(request.get("max_epochs", 50))
        overrides["resume"] = False
        overrides["max_epochs"] = max_epochs
        warmup = int(self.bundle_config.config.get("warmup_epochs", 0))
        overrides["warmup_epochs"] = min(warmup, max(max_epochs - 1, 0))
        for key, cast in _EXTRA_OPTIONS.items():
            if key in request and key in self.bundle_config.config:
                overrides[key] = cast(request[key])
        logger.info("bundle overrides from the request: %s", {k: overrides[k] for k in overrides if "#" not in k})
        return overrides
