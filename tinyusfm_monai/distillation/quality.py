"""Quality Rank signal: each sample's gradient over a few short proxy-distillation epochs.

Definition (our choice; the paper only shows gradient-vs-epoch curves): a proxy student (TinyUSFM + a linear
projection to the teacher width) is trained for `epochs` passes over the pool to regress the teacher's pooled
feature (read from the feature store, so the teacher is not run again). Before each update, every sample's
gradient norm of its own loss with respect to the projection layer is recorded:

    g_i = ||∂L_i/∂W||_F = ||∂L_i/∂y_i|| · sqrt(||h_i||² + 1)        (exact for a linear layer; GraNd-style)

The per-epoch records form the curves of the paper's figure; `quality_scores` turns them into "high and stable
first, oscillating or low last". Records are written per (epoch, shard) with done markers and the proxy state is
checkpointed after every round of shards, so a crash resumes without recomputing finished shards. Under torchrun
the ranks split each round's shards and average gradients (all-reduce), i.e. data-parallel proxy training.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from tinyusfm_monai.utils import atomic_path, rank_and_world_size

from .features import FeatureStore, image_batches
from .shards import PoolImages, normalize_on_device

logger = logging.getLogger(__name__)


class ProxyStudent(nn.Module):
    def __init__(self, backbone: nn.Module, teacher_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.embed_dim, teacher_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.backbone(x)  # pooled (B, D_s)
        return h, self.head(h)


def per_sample_head_grad_norm(h: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """||∂L_i/∂(W, b)|| for L_i = mean_d (y_i - t_i)², y = W h + b:
    ||2 (y_i - t_i) / D|| · sqrt(||h_i||² + 1)."""
    dy = 2.0 * (y - target) / y.shape[-1]
    return dy.norm(dim=-1) * torch.sqrt(h.pow(2).sum(-1) + 1.0)


def _normalise_target(t: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(t, t.shape[-1:])


class QualityScorer:
    """Runs the proxy epochs and writes `grad_epoch{e}_shard{s}.npy` records under `root`."""

    def __init__(
        self,
        root: str | os.PathLike,
        backbone: nn.Module,
        epochs: int = 3,
        lr: float = 1e-4,
        weight_decay: float = 0.05,
        batch_size: int = 32,
        num_workers: int = 0,
        device: str | torch.device = "cpu",
        seed: int = 0,
    ) -> None:
        self.root = Path(root)
        self.backbone = backbone
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.device = torch.device(device)
        self.seed = seed

    def record_path(self, epoch: int, shard: int) -> Path:
        return self.root / f"grad_epoch{epoch:03d}_shard{shard:05d}.npy"

    @property
    def state_path(self) -> Path:
        return self.root / "proxy_state.pt"

    def missing(self, n_shards: int) -> list[tuple[int, int]]:
        return [(e, s) for e in range(self.epochs) for s in range(n_shards) if not self.record_path(e, s).is_file()]

    def _round_order(self, epoch: int, n_shards: int) -> list[int]:
        """Shard visiting order of an epoch (deterministic shuffle, so a resumed run continues the same order)."""
        return np.random.default_rng(self.seed + 7919 * epoch).permutation(n_shards).tolist()

    def run(
        self,
        images: PoolImages,
        store: FeatureStore,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> dict:
        rank, world_size = rank_and_world_size(rank, world_size)
        distributed = world_size > 1 and dist.is_available() and dist.is_initialized()
        if world_size > 1 and not distributed:
            raise RuntimeError("quality scoring with several ranks needs an initialised process group (torchrun)")
        self.root.mkdir(parents=True, exist_ok=True)
        ranges = store.ranges()
        n_shards = len(ranges)
        torch.manual_seed(self.seed)
        model = ProxyStudent(self.backbone, store.dim).to(self.device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=self.lr, betas=(0.9, 0.95), weight_decay=self.weight_decay)
        start_epoch, start_round = 0, 0
        if self.state_path.is_file():
            state = torch.load(self.state_path, map_location="cpu", weights_only=True)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            start_epoch, start_round = int(state["epoch"]), int(state["round"])
            logger.info("quality: resuming proxy at epoch %d, round %d", start_epoch, start_round)
        rounds = math.ceil(n_shards / world_size)
        t0, scored = time.time(), 0
        for epoch in range(start_epoch, self.epochs):
            order = self._round_order(epoch, n_shards)
            for rnd in range(start_round if epoch == start_epoch else 0, rounds):
                round_shards = order[rnd * world_size : (rnd + 1) * world_size]
                mine = round_shards[rank] if rank < len(round_shards) else None
                scored += self._train_round(
                    model, optimizer, images, store, epoch, mine, round_shards, ranges, distributed
                )
                if rank == 0:
                    next_epoch, next_round = (epoch, rnd + 1) if rnd + 1 < rounds else (epoch + 1, 0)
                    state = {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "epoch": next_epoch,
                        "round": next_round,
                    }
                    with atomic_path(self.state_path) as tmp:
                        torch.save(state, tmp)
                if distributed:
                    dist.barrier()
            logger.info("quality: proxy epoch %d/%d done", epoch + 1, self.epochs)
        seconds = time.time() - t0
        return {"scored": scored, "seconds": seconds}

    def _train_round(self, model, optimizer, images, store, epoch, mine, round_shards, ranges, distributed) -> int:
        bs = self.batch_size
        n_batches = max(math.ceil((ranges[s][1] - ranges[s][0]) / bs) for s in round_shards)
        batches = iter(())
        grads_out: list[np.ndarray] = []
        if mine is not None:
            s, e = ranges[mine]
            batches = iter(image_batches(images, bs, self.num_workers)(s, e))
            targets_all = torch.from_numpy(store.read(s, e))
        offset = 0
        model.train()
        for _ in range(n_batches):
            batch = next(batches, None)
            optimizer.zero_grad(set_to_none=False)
            count = torch.zeros((), device=self.device)
            if batch is not None:
                x = normalize_on_device(batch.to(self.device))
                t = _normalise_target(targets_all[offset : offset + x.shape[0]].to(self.device))
                offset += x.shape[0]
                h, y = model(x)
                with torch.no_grad():
                    grads_out.append(per_sample_head_grad_norm(h, y, t).cpu().numpy())
                loss = (y - t).pow(2).mean(-1).sum()
                loss.backward()
                count = count + x.shape[0]
            if distributed:
                for p in model.parameters():
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                    dist.all_reduce(p.grad)
                dist.all_reduce(count)
            for p in model.parameters():
                if p.grad is not None:
                    p.grad /= count.clamp_min(1.0)
            if count.item() > 0:
                optimizer.step()
        if mine is not None:
            path = self.record_path(epoch, mine)
            with atomic_path(path) as tmp:
                np.save(tmp, np.concatenate(grads_out).astype(np.float32))
            return ranges[mine][1] - ranges[mine][0]
        return 0

    def gradients(self, store: FeatureStore) -> np.ndarray:
        """(N, epochs) per-sample gradient records (small: 2.2M × 3 float32 = 26 MB)."""
        ranges = store.ranges()
        out = np.zeros((store.num_samples, self.epochs), dtype=np.float32)
        for e in range(self.epochs):
            for i, (s, t) in enumerate(ranges):
                out[s:t, e] = np.load(self.record_path(e, i))
        return out


def quality_scores(grads: np.ndarray, oscillation_weight: float = 1.0) -> np.ndarray:
    """High and stable first, oscillating or low last: score = mean_e(ĝ) − λ · mean_e |ĝ_e − ĝ_{e−1}|.

    ĝ is each epoch's record divided by that epoch's pool median, so the natural decay of gradients during the
    proxy training does not count as instability.
    """
    med = np.median(grads, axis=0, keepdims=True)
    g = grads / np.maximum(med, 1e-12)
    osc = np.abs(np.diff(g, axis=1)).mean(axis=1) if g.shape[1] > 1 else np.zeros(g.shape[0], dtype=g.dtype)
    return (g.mean(axis=1) - oscillation_weight * osc).astype(np.float32)
