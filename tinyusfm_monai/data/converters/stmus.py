"""STMUS_NDA (Marzola et al., Comput Biol Med 2021) as Mendeley Data 3jykz7wz8d ships it.

    Polito-Radboud-DeepLearningUS/
      BB/Healthy/Images/*.png        BB/Healthy/Masks/*.png
      BB/Pathological/Images/*.png   BB/Pathological/Masks/*.png
      GM/...   TA/...
      Segmentation_models/...        (the authors' code and a re-split copy of the same images: ignored)

Label = muscle (BB biceps brachii, GM gastrocnemius medialis, TA tibialis anterior); see the registry's
label_note for why not Healthy/Pathological. File names carry no confirmed subject id, so the split is
image-level (stated in datasets/stmus/README.md).

Layout source: torch_em's MuscleUS loader and UltraSam's STMUS_NDA converter (muscle / group / Images, Masks).
The archive holds 3,917 labelled images; UniUS-Bench counts 5,312, which this layout does not explain.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

from tinyusfm_monai.data.converters.base import RawSample
from tinyusfm_monai.data.raw_io import child, find_root, image_files, read_image, safe_id

MUSCLES = {"BB": "biceps brachii", "GM": "gastrocnemius medialis", "TA": "tibialis anterior"}


def _is_root(d: Path) -> bool:
    return sum(child(d, m) is not None for m in MUSCLES) >= 2


def scan(src: Path) -> Iterator[RawSample]:
    root = find_root(Path(src), _is_root, "STMUS muscle folders BB/ GM/ TA/")
    for code, muscle in MUSCLES.items():
        muscle_dir = child(root, code)
        if muscle_dir is None:
            continue
        for condition_dir in sorted(p for p in muscle_dir.iterdir() if p.is_dir()):
            image_dir = child(condition_dir, "Images")
            for f in image_files(image_dir) if image_dir else []:
                yield RawSample(
                    id=safe_id(code, condition_dir.name, f.stem),
                    source=f,
                    load_image=partial(read_image, f),
                    label=muscle,
                )
