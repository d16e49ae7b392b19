"""Sharded arrays on disk, one row per pool sample: the pool decoded to uint8 images, and the teacher's features.

A distillation pool has millions of samples, so nothing per-sample is held in RAM: an (N, *item_shape) array is
written shard by shard (`shard_00012.npy` + `shard_00012.done`, each written atomically), read back through
memory maps. A crashed job recomputes only unfinished shards, and `torchrun` ranks split the shards (shard i
belongs to rank i mod world size) with no communication. `meta.json` names the pool (its content hash) and the
layout, so shards of another pool or setting are never silently mixed in on resume.

`PoolImages` is the pool decoded once to uint8 at the training size (a 224² RGB sample is 150 KB: 30 GB for
200K samples, 330 GB for 2.2M): training and the coreset's feature pass then read contiguous memory-mapped bytes
instead of decoding PNG/JPEG/DICOM every epoch, and the float conversion and ImageNet normalisation happen on
the training device (`normalize_on_device`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tinyusfm_monai.handlers.training_state import preserved_rng
from tinyusfm_monai.transforms.pipelines import IMAGENET_MEAN, IMAGENET_STD
from tinyusfm_monai.utils import atomic_path, atomic_write, rank_and_world_size

logger = logging.getLogger(__name__)

DTYPES = {"float16": np.float16, "float32": np.float32, "uint8": np.uint8}


def shard_ranges(num_samples: int, shard_size: int) -> list[tuple[int, int]]:
    return [(s, min(s + shard_size, num_samples)) for s in range(0, num_samples, shard_size)]


class ShardStore:
    """An (N, *item_shape) array stored as shards; `init` creates or validates it."""

    kind = "array"

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self._maps: dict[int, np.ndarray] = {}

    @property
    def meta_path(self) -> Path:
        return self.root / "meta.json"

    def meta(self) -> dict:
        return json.loads(self.meta_path.read_text())

    def init(self, pool_hash: str, num_samples: int, item_shape: Sequence[int], shard_size: int, dtype: str) -> None:
        """Create or validate the store (every rank may call it; the content is identical)."""
        self.root.mkdir(parents=True, exist_ok=True)
        meta = {
            "kind": self.kind,
            "pool_hash": pool_hash,
            "num_samples": int(num_samples),
            "item_shape": [int(v) for v in item_shape],
            "shard_size": int(shard_size),
            "dtype": dtype,
        }
        if self.meta_path.is_file():
            old = self.meta()
            if old != meta:
                raise ValueError(
                    f"{self.root} holds {old.get('kind', 'data')} of another pool or setting ({old}); remove it or "
                    f"use another output folder (wanted {meta})"
                )
            return
        atomic_write(self.meta_path, json.dumps(meta, indent=1))

    def shard_path(self, index: int) -> Path:
        return self.root / f"shard_{index:05d}.npy"

    def done_path(self, index: int) -> Path:
        return self.root / f"shard_{index:05d}.done"

    def ranges(self) -> list[tuple[int, int]]:
        m = self.meta()
        return shard_ranges(m["num_samples"], m["shard_size"])

    def missing(self) -> list[int]:
        return [i for i in range(len(self.ranges())) if not self.done_path(i).is_file()]

    def wait_complete(self, timeout_s: float = 24 * 3600, poll_s: float = 2.0) -> None:
        """Block until every shard is done (other ranks may still be writing)."""
        start = time.time()
        while self.missing():
            if time.time() - start > timeout_s:
                raise TimeoutError(f"{self.root}: shards {self.missing()[:10]} not finished after {timeout_s}s")
            time.sleep(poll_s)

    @property
    def num_samples(self) -> int:
        return int(self.meta()["num_samples"])

    @property
    def item_shape(self) -> tuple[int, ...]:
        return tuple(self.meta()["item_shape"])

    def __len__(self) -> int:
        return self.num_samples

    def read(self, start: int, end: int) -> np.ndarray:
        """Rows [start, end) in the stored dtype (copied; the memory maps are closed again so RSS stays small)."""
        m = self.meta()
        out = np.empty((end - start, *m["item_shape"]), dtype=DTYPES[m["dtype"]])
        for i, (s, e) in enumerate(shard_ranges(m["num_samples"], m["shard_size"])):
            lo, hi = max(s, start), min(e, end)
            if lo >= hi:
                continue
            mm = np.load(self.shard_path(i), mmap_mode="r")
            out[lo - start : hi - start] = mm[lo - s : hi - s]
            del mm
        return out

    def row(self, index: int) -> np.ndarray:
        """One row through a memory map kept open in this process (random access, e.g. a DataLoader worker)."""
        shard, offset = divmod(index, int(self.meta_cached()["shard_size"]))
        if shard not in self._maps:
            self._maps[shard] = np.load(self.shard_path(shard), mmap_mode="r")
        return np.array(self._maps[shard][offset])

    def meta_cached(self) -> dict:
        if not hasattr(self, "_meta"):
            self._meta = self.meta()
        return self._meta

    def iter_chunks(self, chunk_rows: int = 65536) -> Iterator[tuple[int, np.ndarray]]:
        n = self.num_samples
        for start in range(0, n, chunk_rows):
            yield start, self.read(start, min(start + chunk_rows, n))

    def __getstate__(self) -> dict:  # DataLoader workers open their own memory maps
        return {"root": self.root, "_maps": {}}

    def fill(
        self,
        batches: Callable[[int, int], Iterator[torch.Tensor | np.ndarray]],
        compute: Callable[[Any], torch.Tensor | np.ndarray],
        name: str,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> dict:
        """Write this rank's unfinished shards: `compute(batch)` for every batch of `batches(start, end)`.

        Returns {"computed": n, "skipped": n, "seconds": s}; logs progress per shard.
        """
        return fill_stores([self], batches, lambda b: (compute(b),), name, rank, world_size)


def fill_stores(
    stores: Sequence[ShardStore],
    batches: Callable[[int, int], Iterator[Any]],
    compute: Callable[[Any], Sequence[torch.Tensor | np.ndarray]],
    name: str,
    rank: int | None = None,
    world_size: int | None = None,
) -> dict:
    """Fill several stores of the same rows in one pass over the data (e.g. teacher features and thumbnail
    signatures from one read of the decoded pool): `compute(batch)` returns one array per store. A shard counts as
    done when every store has it; this rank's unfinished shards are (re)written in all stores.
    """
    rank, world_size = rank_and_world_size(rank, world_size)
    metas = [s.meta() for s in stores]
    ranges = shard_ranges(metas[0]["num_samples"], metas[0]["shard_size"])
    for store, meta in zip(stores, metas):
        if shard_ranges(meta["num_samples"], meta["shard_size"]) != ranges:
            raise ValueError(f"{store.root}: shard layout differs from {stores[0].root}")
    computed = skipped = 0
    t0 = time.time()
    for index, (s, e) in enumerate(ranges):
        if index % world_size != rank:
            continue
        if all(store.done_path(index).is_file() for store in stores):
            skipped += e - s
            continue
        with contextlib.ExitStack() as stack:
            outs = []
            for store, meta in zip(stores, metas):
                partial = stack.enter_context(atomic_path(store.shard_path(index)))
                outs.append(
                    np.lib.format.open_memmap(
                        partial, mode="w+", dtype=DTYPES[meta["dtype"]], shape=(e - s, *meta["item_shape"])
                    )
                )
            row = 0
            for batch in batches(s, e):
                values = compute(batch)
                for out, v in zip(outs, values):
                    v = v.cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
                    out[row : row + len(v)] = v
                row += len(values[0])
            if row != e - s:
                raise RuntimeError(f"{stores[0].root}: shard {index} got {row} rows, expected {e - s}")
            for out in outs:
                out.flush()
            del outs, out
        for store in stores:
            atomic_write(store.done_path(index), json.dumps({"rows": e - s, "rank": rank}))
        computed += e - s
        logger.info("%s: shard %d/%d done (%d samples)", name, index + 1, len(ranges), e - s)
    seconds = time.time() - t0
    logger.info(
        "%s: rank %d/%d computed %d, reused %d samples in %.1fs (%.1f samples/s)",
        name,
        rank,
        world_size,
        computed,
        skipped,
        seconds,
        computed / max(seconds, 1e-9),
    )
    return {"computed": computed, "skipped": skipped, "seconds": seconds}


class PoolImages(ShardStore):
    """The pool decoded to (N, 3, S, S) uint8 at the training size S (rows = image height)."""

    kind = "pool images"


def _decode_loader(items: Sequence[dict], transform: Callable, batch_size: int, num_workers: int):
    from monai.data import DataLoader, Dataset

    return DataLoader(Dataset(list(items), transform), batch_size=batch_size, shuffle=False, num_workers=num_workers)


def ensure_pool_images(
    manifest_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    image_size: int = 224,
    shard_size: int = 4096,
    batch_size: int = 64,
    num_workers: int = 0,
) -> PoolImages:
    """The pool of `manifest_path` decoded once to uint8 shards under `out_dir/<pool hash>-<size>/` (reused when
    complete; resumable; split across torchrun ranks, every rank waiting for all shards)."""
    from monai.transforms import Compose

    from tinyusfm_monai.transforms.pipelines import build_pool_transform

    from .pool import load_manifest

    manifest = load_manifest(manifest_path)
    samples = manifest["training"]
    if not samples:
        raise ValueError(f"{manifest_path}: the pool is empty")
    digest = hashlib.sha256(f"{manifest['pool_hash']}:{image_size}".encode()).hexdigest()[:12]
    store = PoolImages(Path(out_dir) / f"{digest}-{image_size}px")
    store.init(manifest["pool_hash"], len(samples), (3, image_size, image_size), shard_size, "uint8")
    if store.missing():
        decode = Compose(build_pool_transform(image_size, normalize=False).transforms)
        items = [{"image": s["image"], "frame": int(s.get("frame", -1))} for s in samples]
        with preserved_rng():  # the first run decodes, a resumed one does not: neither may shift the RNG
            store.fill(
                lambda s, e: (b["image"] for b in _decode_loader(items[s:e], decode, batch_size, num_workers)),
                lambda x: torch.as_tensor(x).round().clamp(0, 255).to(torch.uint8),
                "pool images",
            )
        store.wait_complete()
    return store


class PoolImageDataset(torch.utils.data.Dataset):
    """Samples of `PoolImages` as {"image": (3, S, S) uint8 tensor, "index": pool row}.

    Args:
        store: the decoded pool.
        indices: pool rows to use (a coreset); None = the whole pool.
    """

    def __init__(self, store: PoolImages, indices: Sequence[int] | None = None) -> None:
        self.store = store
        self.indices = np.arange(store.num_samples) if indices is None else np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = int(self.indices[i])
        return {"image": torch.from_numpy(self.store.row(row)), "index": row}


def normalize_on_device(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) on any device → float32 in [0, 1] → ImageNet mean/std: the pool pipeline's last steps,
    done where the batch is (the GPU), so the DataLoader only moves bytes. Float input is returned unchanged
    (already normalised)."""
    if x.dtype != torch.uint8:
        return x
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, -1, 1, 1)
    return (x.float().div_(255.0) - mean) / std
