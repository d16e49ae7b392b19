"""The contract between a dataset's layout reader and the shared conversion pipeline.

A converter module `tinyusfm_monai/data/converters/<dataset key>.py` exposes
`scan(src: Path) -> Iterable[RawSample]`: it only knows where the publisher put things and how
to read them. Everything else (PNG writing, label checks, splits, datalists, the summary) lives
once in `tinyusfm_monai.data.prepare`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class SampleError(Exception):
    """A problem with one sample; the pipeline reports it with the file name and goes on."""


@dataclass
class RawSample:
    id: str  # unique within the dataset, stable across runs, filesystem-safe
    source: Path  # the file the image comes from; reports name it
    load_image: Callable[[], np.ndarray]  # (H, W) or (H, W, 3), rows = image height
    label: str | None = None  # classification: a class name of the registry task
    load_mask: Callable[[], np.ndarray] | None = None  # (H, W) label map with the registry's values
    mask_source: Path | None = None
    patient: str | None = None  # patient id, where the publisher gives one
    split: str | None = None  # official split ("training" | "validation" | "test"), where one exists
    # A problem the layout reader found while listing (e.g. an annotation file is missing). Set it instead of
    # raising, so one bad file cannot stop the scan; the pipeline reports it with `source` and skips the sample.
    issue: str | None = None
