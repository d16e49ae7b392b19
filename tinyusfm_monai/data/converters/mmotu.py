"""MMOTU OTU_2d (Zhao et al., arXiv:2207.06799) as the MMOTU_DS2Net release ships it.

    OTU_2d/
      images/1.JPG ...                 annotations/1.PNG, 1_binary.PNG ...
      train.txt, val.txt               one image name per line, no extension (1,000 / 469)
      train_cls.txt, val_cls.txt       "1.JPG  3": image name and class index 0..7

The class index order of `*_cls.txt` is the registry's label order (chocolate cyst, serous cystadenoma,
teratoma, theca cell tumour, simple cyst, normal ovary, mucinous cystadenoma, high-grade serous). The
publisher's `val` list is its held-out set, so it becomes our test split; validation is carved from `train`.

Layout source: UltraBench's MMOTU processing script (adamtupper/ultrabench) and the MMOTU_DS2Net README.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

from tinyusfm_monai.data.converters.base import RawSample
from tinyusfm_monai.data.raw_io import child, find_root, image_files, read_image, read_text_lines, safe_id
from tinyusfm_monai.data.registry import get_task

LISTS = (("train", "training"), ("val", "test"))


def _is_root(d: Path) -> bool:
    return child(d, "images") is not None and (child(d, "train.txt") is not None or child(d, "train_cls.txt"))


def _class_indices(path: Path | None) -> dict[str, int]:
    result: dict[str, int] = {}
    if path is None:
        return result
    for line in read_text_lines(path):
        parts = line.split()
        if len(parts) >= 2 and parts[-1].lstrip("-").isdigit():
            result[Path(" ".join(parts[:-1])).stem] = int(parts[-1])
    return result


def scan(src: Path) -> Iterator[RawSample]:
    root = find_root(Path(src), _is_root, "MMOTU OTU_2d folder with images/ and train.txt")
    class_names = get_task("mmotu_classification").labels
    images = {f.stem: f for f in image_files(child(root, "images"))}
    listed: set[str] = set()
    for prefix, split in LISTS:
        names_file = child(root, f"{prefix}.txt")
        classes = _class_indices(child(root, f"{prefix}_cls.txt"))
        names = [Path(n).stem for n in read_text_lines(names_file)] if names_file else sorted(classes)
        for name in names:
            listed.add(name)
            path = images.get(name)
            index = classes.get(name)
            issue = None
            if path is None:
                issue = f"listed in {prefix}.txt but images/{name}.JPG is missing"
            label = class_names[index] if index is not None and 0 <= index < len(class_names) else None
            if index is not None and label is None:
                label = f"class index {index}"  # reported as an unknown class
            source = path or root / "images" / f"{name}.JPG"
            yield RawSample(
                id=safe_id(name),
                source=source,
                load_image=partial(read_image, source),
                label=label,
                split=split,
                issue=issue,
            )
    for name, path in images.items():
        if name not in listed:  # the pipeline reports these as outside the official split
            yield RawSample(id=safe_id(name), source=path, load_image=partial(read_image, path))
