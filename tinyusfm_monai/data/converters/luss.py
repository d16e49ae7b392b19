"""LUSS phantom (University of Leeds Research Data Repository, record 1263): lung ultrasound phantom images
with label masks.

    <record>/…/<name>.png          images
    <record>/…/masks/<name>.png    label masks, same file name (any folder whose name contains "mask";
                                   `<name>_mask.png` next to the image is accepted too)

Label decision: the masks carry five structures, 1 rib, 2 pleural line, 3 A-line, 4 B-line, 5 B-line confluence,
and all are kept with these values (the registry task has six labels). No source says UniUS-Bench merged them;
a binary variant would be a one-line change of the registry and this reader. A phantom has no patients:
image-level split.

Layout source: UltraSam's LUSS_phantom converter (PNG images and masks paired by file stem, masks under a
`masks` path, categories rib / pleural_line / A_line / B_line / B_line_confluence with ids 1-5). Assumed, not
confirmed: the folder names above (the record's page could not be read here), grey masks whose values are the
ids, and the licence.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

from tinyusfm_monai.data.converters.base import RawSample
from tinyusfm_monai.data.converters.common import files_with_suffix, label_mask, read_image, safe_id


def _mask_key(path: Path, src: Path) -> str | None:
    """The image stem a mask belongs to, or None for an image: masks live under a `mask` folder or end in `_mask`."""
    if any("mask" in part.lower() for part in path.relative_to(src).parts[:-1]):
        return path.stem
    if path.stem.lower().endswith("_mask"):
        return path.stem[: -len("_mask")]
    return None


def scan(src: Path) -> Iterator[RawSample]:
    src = Path(src)
    masks: dict[str, Path] = {}
    images: list[Path] = []
    for png in files_with_suffix(src, (".png",), recursive=True):
        key = _mask_key(png, src)
        if key is not None:
            masks.setdefault(key, png)
        else:
            images.append(png)
    if not images:
        raise FileNotFoundError(f"no phantom PNG images under {src}")
    for image in images:
        mask = masks.get(image.stem)
        yield RawSample(
            id=safe_id(image.stem),
            source=image,
            load_image=partial(read_image, image),
            load_mask=partial(label_mask, mask),
            mask_source=mask,
            issue=None if mask else f"no mask PNG named {image.name} in a masks folder",
        )
