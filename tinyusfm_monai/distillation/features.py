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

from .shards import PoolImageDataset, PoolImages, ShardStore, fill_stores, normalize_on_device

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


class SignatureStore(FeatureStore):
    """Sharded (N, S·S) grey thumbnails (zero mean, unit norm), made in the feature pass (`thumbnail_signature`)."""

    kind = "thumbnail signatures"


def thumbnail_signature(images: torch.Tensor, size: int = 16) -> torch.Tensor:
    """uint8 (or float) (B, C, H, W) → (B, size²) grey thumbnails, zero mean and unit norm (blind to gain).

    Why: near-duplicates are a pixel-level notion (a frozen frame is a byte copy, a cine burst differs by a
    sub-pixel shift and a little gain), and a teacher's features can spread exactly those apart; an average pool of
    the input the teacher already reads costs nothing in the same pass (256 numbers per image).
    """
    grey = images.float().mean(1, keepdim=True)
    t = torch.nn.functional.adaptive_avg_pool2d(grey, size).flatten(1)
    t = t - t.mean(1, keepdim=True)
    return t / (t.norm(dim=1, keepdim=True) + 1e-6)


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
    signatures: SignatureStore | None = None,
    signature_size: int = 16,
) -> dict:
    """Compute `embed(images)` (and, with `signatures`, the thumbnail signatures in the same pass) for this rank's
    unfinished shards; returns {"computed": n, "skipped": n, "seconds"}.

    Images come from the decoded pool (uint8); the float conversion and normalisation run on `device`.
    """
    device = torch.device(device)
    pool_hash = images.meta()["pool_hash"]
    store.init(pool_hash, images.num_samples, dim, shard_size, dtype)
    stores: list[ShardStore] = [store]
    if signatures is not None:
        signatures.init(pool_hash, images.num_samples, signature_size * signature_size, shard_size, "float16")
        stores.append(signatures)

    def compute(batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raw = batch.to(device, non_blocking=True)
        x = normalize_on_device(raw)
        with torch.autocast(device_type=device.type, enabled=amp and device.type == "cuda"):
            feats = embed(x).float()
        if signatures is None:
            return (feats,)
        return feats, thumbnail_signature(raw, signature_size)

    batches = image_batches(images, batch_size, num_workers, pin_memory=device.type == "cuda")
    return fill_stores(stores, batches, compute, "features", rank, world_size)


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
