"""Writing predictions: label maps as PNG in the orientation they were read, probabilities as CSV.

The bundles read PNGs with `reverse_indexing=False` (rows = image height, as PIL and the official
code); MONAI's PILWriter transposes by default, which would write masks rotated relative to their
images. This writer keeps rows as rows and never rescales label values.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection, PathLike
from monai.data import PILWriter
from monai.transforms import MapTransform


class LabelPNGWriter(PILWriter):
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
            writer.writerow(row)
        self._started = True
