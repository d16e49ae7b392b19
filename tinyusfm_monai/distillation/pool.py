"""The unlabelled pool: a manifest of every sample (image file or one frame of a DICOM cine) with a content hash.

Why a manifest: coreset scoring runs for hours on millions of samples and is resumed and sharded by row index,
so the sample order must be fixed and verifiable. The content hash lets a resumed or sharded run detect that the
pool changed under it, and unreadable files are listed (with the reason) instead of crashing a long job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tinyusfm_monai.io import formats
from tinyusfm_monai.utils import atomic_write

logger = logging.getLogger(__name__)

MANIFEST_VERSION = 1


def _file_hash(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _image_samples(path: Path, digest: str) -> list[dict[str, Any]]:
    from PIL import Image

    with Image.open(path) as im:  # header + decode check: truncated files fail here, not in hour 3 of scoring
        im.load()
        if im.width < 1 or im.height < 1:
            raise ValueError("empty image")
    return [{"image": str(path), "frame": -1, "sha256": digest}]


def _dicom_samples(path: Path, digest: str) -> list[dict[str, Any]]:
    from tinyusfm_monai.io.dicom import check_ultrasound, read_dataset

    ds = read_dataset(path, pixels=False)
    check_ultrasound(path, ds)
    n = int(ds.get("NumberOfFrames", 1) or 1)
    # a cine frame is a sample: its hash is the file hash plus the frame index, so it is unique and stable
    return [
        {"image": str(path), "frame": i, "sha256": hashlib.sha256(f"{digest}:{i}".encode()).hexdigest()}
        for i in range(n)
    ]


def _candidate_files(source: Path) -> list[Path]:
    """Every file of a source (datalist JSONs expanded): non-images are kept, to be listed as unreadable."""
    if source.is_file() and source.suffix.lower() == ".json":
        return _datalist_files(source)
    return [p for p in formats.iter_files(source) if p.suffix.lower() != ".json"]


def _datalist_files(datalist: Path) -> list[Path]:
    data = json.loads(datalist.read_text())
    items = data.get("training", data) if isinstance(data, dict) else data
    files = []
    for item in items:
        rel = item["image"] if isinstance(item, Mapping) else item
        p = Path(rel)
        files.append(p if p.is_absolute() else datalist.parent / p)
    return files


def build_manifest(sources: Sequence[str | os.PathLike] | str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Scan folders / files / datalist JSONs and write the pool manifest (JSON) atomically.

    Manifest keys: `training` (one entry per sample: image, frame (-1 for 2D files), sha256), `unreadable`
    (path + reason, skipped), `sources`, `pool_hash` (hash of the ordered sample hashes; identifies the pool).
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    samples: list[dict[str, Any]] = []
    unreadable: list[dict[str, str]] = []
    seen: set[str] = set()
    for source in sources:
        source = Path(source)
        if not source.exists():
            raise FileNotFoundError(f"pool source {source} does not exist")
        for path in _candidate_files(source):
            key = str(path.resolve())
            if key in seen:
                continue
            seen.add(key)
            try:
                digest = _file_hash(path)
                samples.extend(_dicom_samples(path, digest) if formats.is_dicom(path) else _image_samples(path, digest))
            except Exception as exc:  # any decoder error: list and skip, never abort a pool scan
                reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                unreadable.append({"path": str(path), "reason": reason})
    if unreadable:
        logger.warning(
            "pool: %d unreadable files skipped (listed in the manifest), e.g. %s", len(unreadable), unreadable[0]
        )
    pool_hash = hashlib.sha256("".join(s["sha256"] for s in samples).encode()).hexdigest()
    manifest = {
        "version": MANIFEST_VERSION,
        "sources": [str(Path(s)) for s in sources],
        "num_samples": len(samples),
        "pool_hash": pool_hash,
        "training": samples,
        "unreadable": unreadable,
    }
    out = atomic_write(out_path, json.dumps(manifest, indent=1))
    logger.info("pool manifest %s: %d samples, %d unreadable", out, len(samples), len(unreadable))
    return out


def load_manifest(path: str | os.PathLike) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def ensure_manifest(sources: Sequence[str | os.PathLike] | str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Reuse an existing manifest built from the same sources (scanning millions of files is not free)."""
    out = Path(out_path)
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    if out.is_file():
        try:
            if load_manifest(out).get("sources") == [str(Path(s)) for s in sources]:
                return out
        except (json.JSONDecodeError, OSError):
            pass
    return build_manifest(sources, out)


def prepare_pool(
    dataset_dir: str | os.PathLike,
    manifest_path: str | os.PathLike,
    phantom_pool_size: int = 0,
    phantom_image_size: int = 224,
    seed: int = 0,
    phantom_junk: bool | dict | None = None,
) -> Path:
    """Pool for the bundles; returns the manifest path.

    `phantom_pool_size > 0`: the embedded ultrasound phantom pool, generated once and cached under
    `dataset_dir` (so the bundle runs with no data at all); `phantom_junk` (true or a dict of rates) adds archive
    junk to it (`data.phantom_junk`; ground truth beside it, read only by the diagnostics).
    `phantom_pool_size = 0`: `dataset_dir` is the real pool (folders of PNG/JPG, ultrasound DICOM incl. cine, or a
    datalist JSON file).
    """
    if phantom_pool_size > 0:
        from tinyusfm_monai.data.phantom import ensure_pool

        source = ensure_pool(
            cache_dir=dataset_dir, junk=phantom_junk, n=phantom_pool_size, image_size=phantom_image_size, seed=seed
        )
        logger.info("pool: embedded ultrasound phantom, %d images (%s)", phantom_pool_size, source)
    else:
        source = Path(dataset_dir)
    return ensure_manifest([source], manifest_path)


def manifest_datalist(manifest_path: str | os.PathLike, datalist: str | os.PathLike | None = None) -> list[dict]:
    """Training items: the whole pool, or a coreset datalist (as written by `coreset.select`) when given."""
    if datalist:
        data = json.loads(Path(datalist).read_text())
        items = data["training"] if isinstance(data, dict) else data
    else:
        items = load_manifest(manifest_path)["training"]
    return [{"image": it["image"], "frame": int(it.get("frame", -1))} for it in items]


def pool_indices(manifest_path: str | os.PathLike, datalist: str | os.PathLike | None = None) -> list[int] | None:
    """Manifest rows of a coreset datalist (`coreset.write_outputs`), or None (the whole pool) without one.

    Entries carry their row as "index"; entries without it are matched by (image, frame)."""
    if not datalist:
        return None
    data = json.loads(Path(datalist).read_text())
    items = data["training"] if isinstance(data, dict) else data
    if all("index" in it for it in items):
        return [int(it["index"]) for it in items]
    rows = {(s["image"], int(s.get("frame", -1))): i for i, s in enumerate(load_manifest(manifest_path)["training"])}
    missing = [it["image"] for it in items if (it["image"], int(it.get("frame", -1))) not in rows]
    if missing:
        raise ValueError(f"{datalist}: {len(missing)} entries are not in the pool {manifest_path}, e.g. {missing[0]}")
    return [rows[(it["image"], int(it.get("frame", -1)))] for it in items]
