"""Teacher features of the whole pool, streamed to memory-mapped shards: resumable and shardable by rank.

A 2.2M-image pool gives 2.2M × 768 features (3.4 GB in float16): never held in RAM, written shard by shard
(`shard_00012.npy` + `shard_00012.done`), so a crashed job recomputes only unfinished shards and `torchrun`
ranks split the shards (shard i belongs to rank i mod world size) with no communication at all.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from tinyusfm_monai.utils import atomic_path, atomic_write, rank_and_world_size

logger = logging.getLogger(__name__)

DTYPES = {"float16": np.float16, "float32": np.float32}


def shard_ranges(num_samples: int, shard_size: int) -> list[tuple[int, int]]:
    return [(s, min(s + shard_size, num_samples)) for s in range(0, num_samples, shard_size)]


class FeatureStore:
    """Sharded (N, D) matrix on disk. `meta.json` names the pool it belongs to (pool hash), so features of another
    pool are never silently mixed in on resume."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    @property
    def meta_path(self) -> Path:
        return self.root / "meta.json"

    def meta(self) -> dict:
        return json.loads(self.meta_path.read_text())

    def init(self, pool_hash: str, num_samples: int, dim: int, shard_size: int, dtype: str) -> None:
        """Create or validate the store (every rank may call it; the content is identical)."""
        self.root.mkdir(parents=True, exist_ok=True)
        meta = {
            "pool_hash": pool_hash,
            "num_samples": num_samples,
            "dim": dim,
            "shard_size": shard_size,
            "dtype": dtype,
        }
        if self.meta_path.is_file():
            old = self.meta()
            if old != meta:
                raise ValueError(
                    f"{self.root} holds features of another pool or setting ({old}); remove it or "
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
    def dim(self) -> int:
        return int(self.meta()["dim"])

    def read(self, start: int, end: int) -> np.ndarray:
        """Rows [start, end) as float32 (copied; the memory maps are closed again so RSS stays small)."""
        out = np.empty((end - start, self.dim), dtype=np.float32)
        for i, (s, e) in enumerate(self.ranges()):
            lo, hi = max(s, start), min(e, end)
            if lo >= hi:
                continue
            mm = np.load(self.shard_path(i), mmap_mode="r")
            out[lo - start : hi - start] = mm[lo - s : hi - s]
            del mm
        return out

    def iter_chunks(self, chunk_rows: int = 65536) -> Iterator[tuple[int, np.ndarray]]:
        n = self.num_samples
        for start in range(0, n, chunk_rows):
            yield start, self.read(start, min(start + chunk_rows, n))


def _loader(items: Sequence[dict], transform: Callable, batch_size: int, num_workers: int):
    from monai.data import DataLoader, Dataset

    return DataLoader(Dataset(list(items), transform), batch_size=batch_size, shuffle=False, num_workers=num_workers)


@torch.no_grad()
def extract_features(
    items: Sequence[dict],
    pool_hash: str,
    embed: Callable[[torch.Tensor], torch.Tensor],
    dim: int,
    store: FeatureStore,
    transform: Callable,
    batch_size: int = 32,
    shard_size: int = 4096,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    dtype: str = "float16",
    amp: bool = False,
    rank: int | None = None,
    world_size: int | None = None,
) -> dict:
    """Compute `embed(images)` for this rank's unfinished shards; returns {"computed": n, "skipped": n, "seconds"}."""
    rank, world_size = rank_and_world_size(rank, world_size)
    device = torch.device(device)
    store.init(pool_hash, len(items), dim, shard_size, dtype)
    ranges = store.ranges()
    computed = skipped = 0
    t0 = time.time()
    for index, (s, e) in enumerate(ranges):
        if index % world_size != rank:
            continue
        if store.done_path(index).is_file():
            skipped += e - s
            continue
        with atomic_path(store.shard_path(index)) as partial:
            out = np.lib.format.open_memmap(partial, mode="w+", dtype=DTYPES[dtype], shape=(e - s, dim))
            row = 0
            for batch in _loader(items[s:e], transform, batch_size, num_workers):
                x = batch["image"]
                x = (x.as_tensor() if hasattr(x, "as_tensor") else x).to(device)
                with torch.autocast(device_type=device.type, enabled=amp and device.type == "cuda"):
                    f = embed(x)
                out[row : row + f.shape[0]] = f.float().cpu().numpy()
                row += f.shape[0]
            out.flush()
            del out
        atomic_write(store.done_path(index), json.dumps({"rows": e - s, "rank": rank}))
        computed += e - s
        logger.info("features: shard %d/%d done (%d samples)", index + 1, len(ranges), e - s)
    seconds = time.time() - t0
    logger.info(
        "features: rank %d/%d computed %d, reused %d samples in %.1fs (%.1f samples/s)",
        rank,
        world_size,
        computed,
        skipped,
        seconds,
        computed / max(seconds, 1e-9),
    )
    return {"computed": computed, "skipped": skipped, "seconds": seconds}


def pooled_teacher_embedding(teacher) -> Callable[[torch.Tensor], torch.Tensor]:
    """The teacher's pooled feature fc_norm(mean of patch tokens), the feature the paper's Distance Rank clusters."""
    network = teacher.network if hasattr(teacher, "network") else teacher
    network.eval()

    def embed(x: torch.Tensor) -> torch.Tensor:
        final, _, _ = network.forward_features(x, [], [])
        return network.pool(final)

    return embed


def num_shards(num_samples: int, shard_size: int) -> int:
    return math.ceil(num_samples / shard_size)
