"""Teacher features of the whole pool, streamed to memory-mapped shards: resumable and shardable by rank.

A 2.2M-image pool gives 2.2M × 768 features (3.4 GB in float16): never held in RAM, written shard by shard
through `shards.ShardStore` (a crashed job recomputes only unfinished shards; `torchrun` ranks split the shards).
The images come from the pool decoded once to uint8 (`shards.PoolImages`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import numpy as np
import torch

from .shards import PoolImageDataset, PoolImages, ShardStore, normalize_on_device

logger = logging.getLogger(__name__)


class FeatureStore(ShardStore):
    """Sharded (N, D) matrix of teacher features; `read` returns float32."""

    kind = "teacher features"

    def init(self, pool_hash: str, num_samples: int, dim: int, shard_size: int, dtype: str) -> None:  # type: ignore[override]
        super().init(pool_hash, num_samples, (dim,), shard_size, dtype)

    @property
    def dim(self) -> int:
        return int(self.item_shape[0])

    def read(self, start: int, end: int) -> np.ndarray:
        return super().read(start, end).astype(np.float32, copy=False)


def image_batches(
    images: PoolImages, batch_size: int, num_workers: int = 0, pin_memory: bool = False
) -> Callable[[int, int], Iterator[torch.Tensor]]:
    """`(start, end) -> uint8 batches of pool rows [start, end)`, read from the decoded pool in order."""

    def batches(start: int, end: int) -> Iterator[torch.Tensor]:
        dataset = PoolImageDataset(images, range(start, end))
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=pin_memory
        )
        return (b["image"] for b in loader)

    return batches


@torch.no_grad()
def extract_features(
    images: PoolImages,
    embed: Callable[[torch.Tensor], torch.Tensor],
    dim: int,
    store: FeatureStore,
    batch_size: int = 32,
    shard_size: int = 4096,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    dtype: str = "float16",
    amp: bool = False,
    rank: int | None = None,
    world_size: int | None = None,
) -> dict:
    """Compute `embed(images)` for this rank's unfinished shards; returns {"computed": n, "skipped": n, "seconds"}.

    Images come from the decoded pool (uint8); the float conversion and normalisation run on `device`.
    """
    device = torch.device(device)
    store.init(images.meta()["pool_hash"], images.num_samples, dim, shard_size, dtype)

    def compute(batch: torch.Tensor) -> torch.Tensor:
        x = normalize_on_device(batch.to(device, non_blocking=True))
        with torch.autocast(device_type=device.type, enabled=amp and device.type == "cuda"):
            return embed(x).float()

    batches = image_batches(images, batch_size, num_workers, pin_memory=device.type == "cuda")
    return store.fill(batches, compute, "features", rank, world_size)


def pooled_teacher_embedding(teacher) -> Callable[[torch.Tensor], torch.Tensor]:
    """The teacher's pooled feature fc_norm(mean of patch tokens), the feature the paper's Distance Rank clusters.

    A `FrozenTeacher` brings its own (dtype, compile); a bare network is run as it is."""
    if hasattr(teacher, "pooled"):
        return teacher.pooled
    teacher.eval()

    def embed(x: torch.Tensor) -> torch.Tensor:
        final, _, _ = teacher.forward_features(x, [], [])
        return teacher.pool(final)

    return embed
