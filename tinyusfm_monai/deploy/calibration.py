"""The data an export calibrates and checks itself on: the task's own images through the bundle's own pipelines.

INT8 activation ranges are only as good as the images they were measured on, so they come from the task's
training split (a prepared dataset's datalist, or the embedded phantom when no dataset is given), preprocessed by
the bundle's `inference.json` `preprocessing`: exactly the tensors the deployed model will see. The accuracy
check after an export uses the labelled test split, preprocessed by `train.json`'s `validate#preprocessing` (the
deterministic evaluation pipeline, which also brings the label mask to the model's size with nearest
neighbour).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tinyusfm_monai.bundle.parser import bundle_parser
from tinyusfm_monai.data.datalist import resolve_datalist, task_datalist

logger = logging.getLogger(__name__)


@dataclass
class Sample:
    """One preprocessed image: (1, C, S, S) float32, its file, and its label (class index or (S, S) mask)."""

    path: str
    image: np.ndarray
    label: Any = None


def _evenly(items: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """At most `limit` items spread evenly over the list (datalists are often sorted by class or patient)."""
    if limit <= 0 or limit >= len(items):
        return items
    index = np.linspace(0, len(items) - 1, limit).round().astype(int)
    return [items[i] for i in sorted(set(index.tolist()))]


def data_source(task: str, dataset_dir: str) -> str:
    """The datalist file the images come from (the embedded phantom's when `dataset_dir` is empty)."""
    return str(resolve_datalist(task, dataset_dir or None))


def calibration_samples(
    bundle: str | Path, dataset_dir: str = "", limit: int = 300, image_size: int | None = None
) -> list[Sample]:
    """Up to `limit` training images of the bundle's task through its inference preprocessing."""
    bundle = Path(bundle).resolve()
    size = None if image_size is None else {"image_size": int(image_size)}
    parser = bundle_parser(bundle, "inference.json", overrides=size)
    task = parser["task"]
    pre = parser.get_parsed_content("preprocessing")
    items = _evenly(task_datalist(task, dataset_dir or None, "training"), limit)
    samples = []
    for item in items:
        image = pre({"image": item["image"]})["image"]
        samples.append(Sample(str(item["image"]), _batch(image)))
    return samples


def test_samples(
    bundle: str | Path, dataset_dir: str = "", limit: int = 0, image_size: int | None = None
) -> list[Sample]:
    """The labelled test split (up to `limit`, 0 = all) through the bundle's evaluation preprocessing."""
    bundle = Path(bundle).resolve()
    size = None if image_size is None else {"image_size": int(image_size)}
    parser = bundle_parser(bundle, "train.json", overrides=size)
    task = parser["task"]
    pre = parser.get_parsed_content("validate#preprocessing")
    items = _evenly(task_datalist(task, dataset_dir or None, "test"), limit)
    samples = []
    for item in items:
        data = pre(dict(item))
        label = data["label"]
        if isinstance(label, torch.Tensor):
            label = label.detach().cpu().numpy()
        label = np.asarray(label)
        samples.append(Sample(str(item["image"]), _batch(data["image"]), label[0] if label.ndim == 3 else label))
    return samples


def _batch(image: Any) -> np.ndarray:
    array = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)
    return np.ascontiguousarray(array.detach().cpu().numpy()[None], dtype=np.float32)
