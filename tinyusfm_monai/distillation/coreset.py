"""Feature-gradient coreset selection: Distance Rank, Quality Rank, Dual Rank fusion, and the baselines.

Distance Rank (paper figure): teacher features are clustered; within its cluster each sample is ranked by its
distance to the centre (closest first, as drawn). Cluster quotas split the budget proportionally to cluster size
with a floor (`min_per_cluster`), so small clusters (rare organs, probes) are never dropped.
Quality Rank: `quality.quality_scores` of the proxy-epoch gradient records (high and stable first).
Dual Rank: per-sample fused score w · distance percentile + (1 − w) · quality percentile (lower = better), taken
within each cluster's quota.
Strategies: random | distance | quality | dual (`--coreset#strategy random` is the random-subset ablation).
Everything streams over the memory-mapped feature store; only O(N) scalars live in RAM.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tinyusfm_monai.utils import atomic_write, rank_and_world_size

from .features import FeatureStore, extract_features, pooled_teacher_embedding
from .pool import load_manifest
from .quality import QualityScorer, quality_scores
from .settings import OURS, PAPER, from_mapping, setting
from .shards import PoolImages

logger = logging.getLogger(__name__)

STRATEGIES = ("random", "distance", "quality", "dual")


# ---- clustering -----------------------------------------------------------------------------------------------


def _prep(x: np.ndarray, normalize: bool, device: torch.device) -> torch.Tensor:
    t = torch.from_numpy(x).to(device)
    return torch.nn.functional.normalize(t, dim=1) if normalize else t


def _nearest(x: torch.Tensor, centers: torch.Tensor, c_sq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    d = (x.pow(2).sum(1, keepdim=True) - 2 * x @ centers.T + c_sq[None]).clamp_min(0)
    dist, idx = d.min(1)
    return idx, dist.sqrt()


def kmeans(
    store: FeatureStore,
    k: int,
    iters: int = 10,
    seed: int = 0,
    normalize: bool = True,
    init_sample: int = 20000,
    chunk_rows: int = 65536,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Streaming Lloyd k-means (k-means++ initialisation on a random sample); returns centres (k, D) float32."""
    device = torch.device(device)
    n = store.num_samples
    k = max(1, min(k, n))
    rng = np.random.default_rng(seed)
    sample_idx = np.sort(rng.choice(n, size=min(init_sample, n), replace=False))
    sample = _read_rows(store, sample_idx, chunk_rows)
    xs = _prep(sample, normalize, device)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    centers = [xs[int(torch.randint(len(xs), (1,), generator=gen))]]
    d2 = (xs - centers[0]).pow(2).sum(1)
    for _ in range(1, k):
        probs = (d2 / d2.sum().clamp_min(1e-12)).cpu()
        i = (
            int(torch.multinomial(probs, 1, generator=gen))
            if float(probs.sum()) > 0
            else int(torch.randint(len(xs), (1,), generator=gen))
        )
        centers.append(xs[i])
        d2 = torch.minimum(d2, (xs - xs[i]).pow(2).sum(1))
    c = torch.stack(centers)
    for _ in range(iters):
        sums = torch.zeros_like(c)
        counts = torch.zeros(len(c), device=device)
        c_sq = c.pow(2).sum(1)
        for _, chunk in store.iter_chunks(chunk_rows):
            x = _prep(chunk, normalize, device)
            idx, _ = _nearest(x, c, c_sq)
            sums.index_add_(0, idx, x)
            counts += torch.bincount(idx, minlength=len(c)).to(counts.dtype)
        empty = counts == 0
        new = sums / counts.clamp_min(1)[:, None]
        new[empty] = c[empty]  # keep an empty cluster's centre rather than collapsing it
        shift = float((new - c).norm(dim=1).max())
        c = new
        if shift < 1e-6:
            break
    return c.cpu().numpy().astype(np.float32)


def _read_rows(store: FeatureStore, rows: np.ndarray, chunk_rows: int) -> np.ndarray:
    out = np.empty((len(rows), store.dim), dtype=np.float32)
    pos = 0
    for start, chunk in store.iter_chunks(chunk_rows):
        sel = rows[(rows >= start) & (rows < start + len(chunk))]
        out[pos : pos + len(sel)] = chunk[sel - start]
        pos += len(sel)
    return out


def assign(
    store: FeatureStore,
    centers: np.ndarray,
    normalize: bool = True,
    chunk_rows: int = 65536,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """(cluster id (N,) int32, distance to its centre (N,) float32), streamed."""
    device = torch.device(device)
    c = torch.from_numpy(centers).to(device)
    c_sq = c.pow(2).sum(1)
    labels = np.empty(store.num_samples, dtype=np.int32)
    dists = np.empty(store.num_samples, dtype=np.float32)
    for start, chunk in store.iter_chunks(chunk_rows):
        idx, d = _nearest(_prep(chunk, normalize, device), c, c_sq)
        labels[start : start + len(chunk)] = idx.cpu().numpy()
        dists[start : start + len(chunk)] = d.cpu().numpy()
    return labels, dists


# ---- ranks and selection ------------------------------------------------------------------------------------


def percentile_rank(score: np.ndarray, groups: np.ndarray | None = None, ascending: bool = True) -> np.ndarray:
    """Rank in [0, 1) (0 = best) globally or within each group; `ascending` = smaller score is better."""
    key = score if ascending else -score
    out = np.empty(len(score), dtype=np.float32)
    if groups is None:
        order = np.argsort(key, kind="stable")
        out[order] = np.arange(len(score)) / max(len(score), 1)
        return out
    order = np.lexsort((key, groups))
    sorted_groups = groups[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_groups)) + 1]
    sizes = np.diff(np.r_[starts, len(order)])
    pos = np.arange(len(order)) - np.repeat(starts, sizes)
    out[order] = pos / np.repeat(sizes, sizes)
    return out


def cluster_quotas(sizes: np.ndarray, budget: int, min_per_cluster: int = 1) -> np.ndarray:
    """Per-cluster counts summing to `budget`: proportional to size (largest remainder), floor `min_per_cluster`."""
    sizes = np.asarray(sizes, dtype=np.int64)
    budget = int(min(budget, sizes.sum()))
    floor = np.minimum(sizes, min_per_cluster)
    if floor.sum() >= budget:  # more clusters than budget: one from each of the largest
        quota = np.zeros_like(sizes)
        quota[np.argsort(-sizes, kind="stable")[:budget]] = 1
        return np.minimum(quota, sizes)
    rest = budget - floor.sum()
    room = sizes - floor
    share = rest * room / max(room.sum(), 1)
    quota = floor + np.floor(share).astype(np.int64)
    remainder = budget - quota.sum()
    order = np.argsort(-(share - np.floor(share)), kind="stable")
    for i in order:
        if remainder <= 0:
            break
        if quota[i] < sizes[i]:
            quota[i] += 1
            remainder -= 1
    while remainder > 0:  # any leftover goes to clusters with room
        for i in np.argsort(-(sizes - quota), kind="stable"):
            if remainder <= 0:
                break
            if quota[i] < sizes[i]:
                quota[i] += 1
                remainder -= 1
    return quota


def take_per_cluster(score: np.ndarray, labels: np.ndarray, quotas: np.ndarray) -> np.ndarray:
    """Indices of the `quotas[c]` best (lowest score) samples of each cluster c."""
    order = np.lexsort((score, labels))
    sorted_labels = labels[order]
    starts = np.searchsorted(sorted_labels, np.arange(len(quotas)))
    chosen = [order[s : s + q] for s, q in zip(starts, quotas) if q > 0]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def resolve_budget(budget: float, n: int) -> int:
    """A fraction (0 < budget <= 1) of the pool, or a count (> 1)."""
    if budget <= 0:
        raise ValueError(f"coreset budget must be positive, got {budget}")
    count = int(round(budget * n)) if budget <= 1 else int(budget)
    return max(1, min(count, n))


@dataclass
class Selection:
    strategy: str
    budget: int
    selected: np.ndarray  # sorted indices
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # per-sample scores and ranks


def select(
    strategy: str,
    n: int,
    budget: float,
    labels: np.ndarray | None = None,
    distances: np.ndarray | None = None,
    quality: np.ndarray | None = None,
    dual_weight: float = 0.5,
    min_per_cluster: int = 1,
    distance_order: str = "closest_first",
    quality_quotas: bool = False,
    seed: int = 0,
) -> Selection:
    """Pick the coreset. `distance_order`: "closest_first" (paper figure) or "farthest_first" (diversity)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"coreset strategy {strategy!r}: choose one of {STRATEGIES}")
    count = resolve_budget(budget, n)
    cols: dict[str, np.ndarray] = {}
    if labels is not None and distances is not None:
        cols["cluster"] = labels
        cols["distance"] = distances
        cols["distance_pct"] = percentile_rank(distances, labels, ascending=distance_order == "closest_first")
    if quality is not None:
        cols["quality"] = quality
        cols["quality_pct"] = percentile_rank(quality, None, ascending=False)
    if "distance_pct" in cols and "quality_pct" in cols:
        cols["dual"] = dual_weight * cols["distance_pct"] + (1 - dual_weight) * cols["quality_pct"]
    if strategy == "random":
        chosen = np.sort(np.random.default_rng(seed).choice(n, size=count, replace=False))
        return Selection(strategy, count, chosen, cols)
    need = {"distance": ("distance_pct",), "quality": ("quality_pct",), "dual": ("dual",)}[strategy]
    missing = [c for c in need if c not in cols]
    if missing:
        raise ValueError(f"strategy {strategy!r} needs {missing}")
    score = cols[need[0]]
    if strategy == "quality" and not quality_quotas:
        chosen = np.sort(np.argsort(score, kind="stable")[:count])
    else:
        assert labels is not None
        sizes = np.bincount(labels, minlength=int(labels.max()) + 1)
        chosen = take_per_cluster(score, labels, cluster_quotas(sizes, count, min_per_cluster))
    return Selection(strategy, count, chosen, cols)


# ---- outputs ---------------------------------------------------------------------------------------------------


def write_outputs(out_dir: str | os.PathLike, selection: Selection, samples: Sequence[dict], extra: dict) -> dict:
    """coreset_datalist.json (selected samples), scores.csv (every sample), score_distributions.png."""
    from .plot import plot_score_distributions

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mask = np.zeros(len(samples), dtype=bool)
    mask[selection.selected] = True
    datalist = {
        "strategy": selection.strategy,
        "budget": selection.budget,
        "pool_size": len(samples),
        **extra,
        "training": [{**samples[i], "index": int(i)} for i in selection.selected],
    }
    dl_path = atomic_write(out / "coreset_datalist.json", json.dumps(datalist, indent=1))
    cols = selection.columns
    names = [c for c in ("cluster", "distance", "distance_pct", "quality", "quality_pct", "dual") if c in cols]
    csv_path = out / "scores.csv"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["index", "image", "frame", *names, "selected"])
        for i, s in enumerate(samples):
            writer.writerow([i, s["image"], s.get("frame", -1), *(_fmt(cols[c][i]) for c in names), int(mask[i])])
    panels = [(f"{c}", cols[c]) for c in ("distance", "quality", "dual") if c in cols]
    if not panels:
        panels = [("index (random strategy: no scores)", np.arange(len(samples), dtype=np.float64))]
    png = plot_score_distributions(
        out / "score_distributions.png",
        panels,
        mask,
        f"{selection.strategy}: {selection.budget}/{len(samples)} selected",
    )
    return {"datalist": str(dl_path), "csv": str(csv_path), "plot": str(png)}


def _fmt(v: Any) -> Any:
    return int(v) if isinstance(v, (np.integer,)) else round(float(v), 6)


# ---- the whole coreset step -------------------------------------------------------------------------------------


@dataclass
class CoresetSettings:
    """The coreset step's choices (config section `coreset` of coreset.json)."""

    strategy: str = setting("dual", PAPER, "random | distance | quality | dual (random = the random-subset ablation)")
    budget: float = setting(0.1, PAPER, "fraction (<= 1) or count (> 1) of the pool to keep (paper: down to 10 %)")
    num_clusters: int = setting(4, OURS, "k-means clusters of the teacher's pooled features (~100 for millions)")
    kmeans_iters: int = setting(10, OURS, "Lloyd iterations (k-means++ initialisation)")
    normalize: bool = setting(True, OURS, "cluster L2-normalised features")
    min_per_cluster: int = setting(1, OURS, "floor of each cluster's quota (quotas proportional to cluster size)")
    distance_order: str = setting(
        "closest_first", PAPER, "closest_first (the figure ranks the closest 1st) | farthest_first"
    )
    dual_weight: float = setting(0.5, OURS, "Dual Rank: weight of the distance percentile (rest: quality)")
    quality_quotas: bool = setting(False, OURS, "quality strategy picks within cluster quotas")
    proxy_epochs: int = setting(3, OURS, "proxy-distillation epochs whose per-sample gradients make the Quality Rank")
    proxy_lr: float = setting(1e-4, OURS, "AdamW learning rate of the proxy")
    oscillation_weight: float = setting(
        1.0, OURS, "quality = mean normalised gradient − this × mean epoch-to-epoch change"
    )
    batch_size: int = setting(8, OURS, "batch of the feature and proxy passes")
    shard_size: int = setting(4096, OURS, "samples per feature shard (the unit of resume and of rank sharding)")
    num_workers: int = setting(0, OURS, "DataLoader workers")
    feature_dtype: str = setting("float16", OURS, "storage of the teacher features (float16: 3.4 GB for 2.2M)")


class CoresetPipeline:
    """configs/coreset.json `run`: teacher features → clusters → proxy gradients → ranks → selection → files.

    Every stage is skipped when the chosen strategy does not need it (random needs none) and resumes from what is
    on disk. Under torchrun (WORLD_SIZE > 1) the process group is initialised here (NCCL on GPU, Gloo on CPU),
    ranks split the shards, and rank 0 writes the selection.

    Args:
        manifest: the pool manifest (`pool.prepare_pool`).
        output_dir: where features, gradient records and the selection go.
        teacher: the frozen teacher (its pooled features are clustered).
        images: the pool decoded to uint8 (`shards.ensure_pool_images`), in manifest order.
        proxy_backbone: the proxy student of the Quality Rank.
        settings: the `coreset` config section (`CoresetSettings`).
        device, amp, seed: where and how to run.
    """

    def __init__(
        self,
        manifest: str,
        output_dir: str,
        teacher: Any,
        images: PoolImages,
        proxy_backbone: Any = None,
        settings: Mapping[str, Any] | CoresetSettings | None = None,
        device: str | torch.device = "cpu",
        amp: bool = False,
        seed: int = 0,
    ) -> None:
        self.manifest = manifest
        self.output_dir = Path(output_dir)
        self.teacher = teacher
        self.images = images
        self.proxy_backbone = proxy_backbone
        self.settings = from_mapping(CoresetSettings, settings)
        if self.settings.strategy not in STRATEGIES:
            raise ValueError(f"coreset strategy {self.settings.strategy!r}: choose one of {STRATEGIES}")
        self.device = torch.device(device)
        self.amp = amp
        self.seed = seed

    def _maybe_init_dist(self) -> None:
        import torch.distributed as dist

        if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")

    def run(self) -> dict | None:
        import torch.distributed as dist

        cfg = self.settings

        self._maybe_init_dist()
        rank, world = rank_and_world_size()
        manifest = load_manifest(self.manifest)
        samples = manifest["training"]
        n = len(samples)
        if n == 0:
            raise ValueError(f"{self.manifest}: the pool is empty")
        t0 = time.time()
        timings: dict[str, float] = {}
        labels = dists = quality = None
        store = FeatureStore(self.output_dir / "features")
        if cfg.strategy != "random":
            t = time.time()
            extract_features(
                self.images,
                pooled_teacher_embedding(self.teacher),
                self.teacher.embed_dim,
                store,
                cfg.batch_size,
                cfg.shard_size,
                cfg.num_workers,
                self.device,
                cfg.feature_dtype,
                self.amp,
            )
            if dist.is_initialized():
                dist.barrier()
            store.wait_complete()
            timings["features_s"] = time.time() - t
        if cfg.strategy in ("quality", "dual"):
            t = time.time()
            if self.proxy_backbone is None:
                raise ValueError("quality/dual strategies need a proxy_backbone (the proxy student)")
            scorer = QualityScorer(
                self.output_dir / "quality",
                self.proxy_backbone,
                cfg.proxy_epochs,
                cfg.proxy_lr,
                batch_size=cfg.batch_size,
                num_workers=cfg.num_workers,
                device=self.device,
                seed=self.seed,
            )
            scorer.run(self.images, store)
            quality = quality_scores(scorer.gradients(store), cfg.oscillation_weight)
            timings["quality_s"] = time.time() - t
        if rank != 0:
            return None
        if cfg.strategy in ("distance", "dual"):
            t = time.time()
            centers = kmeans(store, cfg.num_clusters, cfg.kmeans_iters, self.seed, cfg.normalize, device=self.device)
            labels, dists = assign(store, centers, cfg.normalize, device=self.device)
            np.save(self.output_dir / "cluster_centres.npy", centers)
            timings["clustering_s"] = time.time() - t
        selection = select(
            cfg.strategy,
            n,
            cfg.budget,
            labels,
            dists,
            quality,
            cfg.dual_weight,
            cfg.min_per_cluster,
            cfg.distance_order,
            cfg.quality_quotas,
            self.seed,
        )
        extra = {
            "pool_hash": manifest["pool_hash"],
            "num_clusters": cfg.num_clusters,
            "teacher_pretrained": bool(getattr(self.teacher, "pretrained", False)),
        }
        files = write_outputs(self.output_dir, selection, samples, extra)
        timings["total_s"] = time.time() - t0
        logger.info(
            "coreset (%s): %d of %d samples selected -> %s (%s)",
            cfg.strategy,
            selection.budget,
            n,
            files["datalist"],
            ", ".join(f"{k} {v:.1f}" for k, v in timings.items()),
        )
        return {**files, "selected": int(selection.budget), "timings": timings}
