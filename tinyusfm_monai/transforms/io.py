"""Loading inputs and saving predictions as MONAI dictionary transforms.

Loading: `LoadUltrasoundImaged` (any inference input, one reader per format: `io.readers`) and `LoadPoolImaged`
(a distillation pool sample: an image file or one frame of a DICOM cine).

Saving: label maps as PNG in the orientation they were read, probabilities as CSV. The bundles read PNGs with
`reverse_indexing=False` (rows = image height, as PIL and the official code); MONAI's PILWriter transposes by
default, which would write masks rotated relative to their images. `LabelPNGWriter` keeps rows as rows and never
rescales label values.
"""

from __future__ import annotations

import csv
import functools
import os
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, PathLike
from monai.data import ImageReader, PILWriter
from monai.transforms import LoadImaged, MapTransform

from tinyusfm_monai.io.readers import UltrasoundImageReader, read_rgb
from tinyusfm_monai.utils.csvsafe import safe_row


class LoadUltrasoundImaged(LoadImaged):
    """`LoadImaged` that reads with `UltrasoundImageReader` only, so its error (file + cause) is the error.

    Args:
        keys: keys of the image paths.
        image_only: return MetaTensors (True, as the bundles) or (image, meta dict).
        allow_missing_keys: do not raise when a key is missing.
        reader_kwargs: for the DICOM reader (frame, crop) and `reverse_indexing` (default False: rows first).
    """

    def __init__(
        self, keys: KeysCollection, image_only: bool = True, allow_missing_keys: bool = False, **reader_kwargs: Any
    ):
        super().__init__(keys, image_only=image_only, allow_missing_keys=allow_missing_keys)
        self.ultrasound_reader = UltrasoundImageReader(**reader_kwargs)

    def __call__(self, data: Any, reader: ImageReader | None = None) -> Any:
        return super().__call__(data, reader or self.ultrasound_reader)


class LoadPoolImaged(MapTransform):
    """Load a pool sample (`image` path + `frame`) as a (3, H, W) float array in [0, 255].

    The rest of the pool pipeline is the shared one (`pipelines.pool_transform_config`: [0, 1], resize, ImageNet
    normalisation).

    Args:
        keys: keys of the sample paths.
        frame_key: key of the 0-based frame index of a DICOM cine (-1: a 2D file, or the middle frame).
        allow_missing_keys: do not raise when a key is missing.
    """

    def __init__(self, keys: KeysCollection = "image", frame_key: str = "frame", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.frame_key = frame_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        frame = int(d.get(self.frame_key, -1))
        for key in self.key_iterator(d):
            d[key] = read_rgb(str(d[key]), frame).astype(np.float32)
        return d


def _stem_and_suffix(name: str) -> tuple[str, str]:
    """Split a file name as MONAI's `create_file_basename` does (one suffix; `.nii.gz` counts as one)."""
    stem, suffix = os.path.splitext(name)
    if suffix == ".gz":
        stem, inner = os.path.splitext(stem)
        suffix = inner + suffix
    return stem, suffix


@functools.lru_cache(maxsize=64)
def _stem_counts(folder: str, mtime_ns: int) -> Counter[str]:
    """How many entries of `folder` share each stem; cached per folder state (one listing per folder and run, not
    one per image: a folder of 10,000 inputs would otherwise be listed 10,000 times)."""
    return Counter(_stem_and_suffix(name)[0] for name in os.listdir(folder))


def unique_output_name(metadict: Mapping[str, Any] | None, saver: Any) -> dict[str, Any]:
    """`SaveImaged` `output_name_formatter`: MONAI's default name, unless another entry of the input's folder has
    the same stem (`a.png` and `a.dcm`): then the input's extension joins the name (`a_png_seg.png`,
    `a_dcm_seg.png`), so that no prediction overwrites another. A file without a stem twin keeps the usual
    `<stem>_seg.png`. Inputs in different sub-folders are kept apart by `data_root_dir`
    (`data.datalist.inference_root`).
    """
    metadict = metadict or {}
    subject = str(metadict.get("filename_or_obj", ""))
    index = metadict.get("patch_index")
    path = Path(subject)
    stem, suffix = _stem_and_suffix(path.name)
    try:
        twins = _stem_counts(str(path.parent), path.parent.stat().st_mtime_ns)[stem] > 1
    except OSError:
        twins = False
    if twins:
        tag = suffix.lstrip(".").replace(".", "_") or "noext"
        subject = str(path.with_name(f"{stem}_{tag}{suffix or '.x'}"))
    return {"subject": subject, "idx": index}


class LabelPNGWriter(PILWriter):
    """`PILWriter` that writes rows as rows (`reverse_indexing=False`), the layout the bundles read."""

    def write(self, filename: PathLike, verbose: bool = False, **kwargs) -> None:
        kwargs.setdefault("reverse_indexing", False)
        super().write(filename, verbose=verbose, **kwargs)


class SaveProbabilitiesd(MapTransform):
    """Append one CSV row per image: file, predicted class, and the probability of every class.

    MONAI's SaveClassificationd writes no header and needs a `*_meta_dict` that `image_only`
    loading does not produce; this writer names the classes and takes the file name from the
    image's MetaTensor. The file is rewritten on the first row of each run, so reruns never
    mix results.
    """

    def __init__(
        self,
        keys: KeysCollection,
        class_names: Sequence[str],
        output_dir: PathLike,
        filename: str = "predictions.csv",
        image_key: str = "image",
    ) -> None:
        super().__init__(keys)
        self.class_names = list(class_names)
        self.path = Path(output_dir) / filename
        self.image_key = image_key
        self._started = False

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        meta = getattr(d.get(self.image_key), "meta", {}) or {}
        name = meta.get("filename_or_obj", "")
        for key in self.key_iterator(d):
            probs = torch.as_tensor(d[key]).detach().cpu().float().reshape(-1).tolist()
            if len(probs) != len(self.class_names):
                raise ValueError(f"{name}: {len(probs)} probabilities for {len(self.class_names)} classes")
            self._write([str(name), self.class_names[int(torch.tensor(probs).argmax())]] + [f"{p:.6f}" for p in probs])
        return d

    def _write(self, row: list[str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        mode = "a" if self._started else "w"
        with open(self.path, mode, newline="") as f:
            writer = csv.writer(f)
            if not self._started:
                writer.writerow(["image", "pred"] + [f"p_{c}" for c in self.class_names])
            writer.writerow(safe_row(row))  # the image's file name may begin with "=" (a formula to a spreadsheet)
        self._started = True
