"""Which image to label next: diversity, uncertainty and hybrid selection over cached backbone features.

Plain Python (NumPy / torch, no monailabel import): the MONAI Label strategies (`strategies.py`) and the
label-efficiency benchmark (`benchmarks/active_learning.py`) run exactly this code, and the unit tests run it
without a server.

What an annotation lead expects, and how it is met (every value a setting of `ActiveLearningSettings`, ours):

* **never label the same thing twice**: ultrasound archives hold cine bursts and frozen runs whose frames are
  near-duplicates. The scoring pass groups them with the coreset's near-duplicate machinery
  (`distillation.coreset.duplicate_groups`: links in the backbone feature space and in a 16 × 16 grey thumbnail,
  inside k-means blocks, connected components). An image is *blocked* when it is labelled, or was proposed to an
  annotator recently (MONAI Label records every proposal's time in the image info), and every member of a blocked
  image's group is blocked with it. No strategy proposes a blocked image, and a batch never holds two members of
  one group.
* **diversity** (k-center greedy, Sener & Savarese 2018): the unblocked image farthest (in the backbone's
  centred, L2-normalised feature space) from every blocked image; a batch updates the distances after each pick.
  With nothing labelled yet, the first pick is the image closest to the pool mean (the most typical one).
* **uncertainty**: the current model's uncertainty per image, highest first, one per duplicate group:
  classification entropy of the softmax (normalised by log C) or margin (1 − (p1 − p2)); segmentation the mean
  pixel entropy of the softmax map.
* **hybrid** (uncertainty within diversity clusters): k-means clusters of the feature space (fitted in the
  scoring pass on one image per duplicate group). The next image comes from the cluster that is most
  under-covered (its share of the distinct pool × (blocked + 1), at least 1, minus its blocked count; largest
  cluster on a tie: so every cluster gets one image before any gets a second beyond its share, as the coreset's
  `min_per_cluster`), and within it the most uncertain unblocked image.

Features and uncertainties are model-dependent, so the cache (`FeatureCache`) is keyed by the image's content hash
(SHA-256 of the file) and the model's weights fingerprint (SHA-256 of models/model.pt): a retrained model makes
every cached row stale, and the next scoring pass recomputes them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tinyusfm_monai.distillation.coreset import (
    CoresetSettings,
    duplicate_groups,
    kmeans,
    nearest_centre,
    prepare_features,
)
from tinyusfm_monai.distillation.features import thumbnail_signature
from tinyusfm_monai.networks import backbone_of
from tinyusfm_monai.utils import atomic_path, atomic_write

logger = logging.getLogger(__name__)

STRATEGIES = ("diversity", "uncertainty", "hybrid")
UNCERTAINTY = ("entropy", "margin")


@dataclass
class ActiveLearningSettings:
    """The active-learning choices (all ours; `--conf al_<name> value` on the server)."""

    uncertainty: str = "entropy"  # classification: entropy | margin (segmentation: mean pixel entropy)
    num_clusters: int = 0  # hybrid clusters; 0 = round(sqrt(distinct images / 2)), at least 2
    dedup: str = "both"  # near-duplicate links: none | teacher (backbone features) | signature | both
    teacher_abs_factor: float = 0.5  # as the coreset: link below this × the median nearest-neighbour distance
    teacher_local_alpha: float = 0.5
    signature_abs_factor: float = 0.3
    signature_local_alpha: float = 0.4
    local_k: int = 10  # neighbours searched per image (must exceed the longest cine burst)
    block_size: int = 1000  # images per kNN block
    proposal_ttl_s: float = 3600.0  # a proposal blocks its image (and its duplicates) this long unless labelled
    seed: int = 0

    def __post_init__(self) -> None:
        if self.uncertainty not in UNCERTAINTY:
            raise ValueError(f"active learning uncertainty {self.uncertainty!r}: choose one of {UNCERTAINTY}")
        if self.dedup not in ("none", "teacher", "signature", "both"):
            raise ValueError(f"active learning dedup {self.dedup!r}: choose none, teacher, signature or both")

    @classmethod
    def from_conf(cls, conf: dict[str, str]) -> ActiveLearningSettings:
        """`al_<field>` entries of a MONAI Label `--conf` dictionary (strings) over the defaults."""
        values: dict[str, Any] = {}
        for name, default in asdict(cls()).items():
            raw = conf.get(f"al_{name}")
            if raw is not None:
                values[name] = type(default)(raw)
        return cls(**values)

    def coreset(self) -> CoresetSettings:
        return CoresetSettings(
            dedup=self.dedup,
            teacher_abs_factor=self.teacher_abs_factor,
            teacher_local_alpha=self.teacher_local_alpha,
            signature_abs_factor=self.signature_abs_factor,
            signature_local_alpha=self.signature_local_alpha,
            local_k=self.local_k,
            block_size=self.block_size,
            quality_gate=0.0,
        )


# ---- uncertainty ------------------------------------------------------------------------------------------------


def entropy_uncertainty(probs: np.ndarray) -> np.ndarray:
    """(N, C) class probabilities → entropy / log C in [0, 1] (1 = uniform)."""
    p = np.clip(np.asarray(probs, np.float64), 1e-12, 1.0)
    return (-(p * np.log(p)).sum(1) / np.log(max(p.shape[1], 2))).astype(np.float32)


def margin_uncertainty(probs: np.ndarray) -> np.ndarray:
    """(N, C) → 1 − (p_top1 − p_top2): 1 when the two best classes tie."""
    p = np.sort(np.asarray(probs, np.float32), axis=1)
    return (1.0 - (p[:, -1] - p[:, -2])).astype(np.float32)


def pixel_entropy_uncertainty(prob_maps: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) softmax maps → mean over pixels of the per-pixel entropy / log C."""
    p = prob_maps.float().clamp_min(1e-12)
    ent = -(p * p.log()).sum(1) / float(np.log(max(p.shape[1], 2)))
    return ent.flatten(1).mean(1)


def classification_uncertainty(probs: np.ndarray, kind: str = "entropy") -> np.ndarray:
    return margin_uncertainty(probs) if kind == "margin" else entropy_uncertainty(probs)


# ---- one pass over a bundle network: backbone features and uncertainty ------------------------------------------


@torch.no_grad()
def features_and_uncertainty(
    network: torch.nn.Module, images: torch.Tensor, classification: bool, kind: str = "entropy"
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled backbone features (B, D) and the model's uncertainty (B,) of a preprocessed batch, in one forward.

    The feature is the backbone's own pooled output (`fc_norm` of the mean patch token, what the classification
    head reads); for the segmenter it is taken from the same backbone pass through a hook on the last block.
    """
    found = backbone_of(network)
    if found is None:
        raise ValueError(f"{type(network).__name__}: no TinyUSFM/USFM backbone to take features from")
    backbone, _ = found
    captured: list[torch.Tensor] = []

    def hook(_module: Any, _inputs: Any, output: Any) -> None:
        captured.append(output[0] if isinstance(output, tuple) else output)

    handle = backbone.blocks[-1].register_forward_hook(hook)
    try:
        out = network(images)
    finally:
        handle.remove()
    feats = backbone.pool(captured[-1]).float().cpu().numpy()
    probs = torch.softmax(out.float(), dim=1)
    if classification:
        unc = classification_uncertainty(probs.cpu().numpy(), kind)
    else:
        unc = pixel_entropy_uncertainty(probs).cpu().numpy()
    return feats, unc.astype(np.float32)


def signatures_of(images: torch.Tensor, size: int = 16) -> np.ndarray:
    """The coreset's grey thumbnail signature (blind to gain) of a batch (B, C, H, W)."""
    return thumbnail_signature(images, size).cpu().numpy().astype(np.float32)


# ---- fingerprints and the cache ---------------------------------------------------------------------------------


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fp:
        while block := fp.read(chunk):
            h.update(block)
    return h.hexdigest()


def weights_fingerprint(path: str | os.PathLike) -> str:
    """The model's identity for the cache: SHA-256 of its weights file (16 hex digits)."""
    return file_sha256(path)[:16]


class ContentHashes:
    """SHA-256 of image files, memoised by (path, size, mtime) in a JSON file: a request hashes nothing new."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.memo: dict[str, list] = {}
        if self.path.is_file():
            try:
                self.memo = json.loads(self.path.read_text())
            except (OSError, ValueError) as e:
                logger.warning("%s: unreadable hash memo (%s); rehashing", self.path, e)
        self.dirty = False

    def __call__(self, file: str) -> str:
        st = os.stat(file)
        key = [st.st_size, st.st_mtime_ns]
        hit = self.memo.get(file)
        if hit is not None and hit[:2] == key:
            return hit[2]
        digest = file_sha256(file)
        self.memo[file] = [*key, digest]
        self.dirty = True
        return digest

    def save(self) -> None:
        if self.dirty:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, json.dumps(self.memo))
            self.dirty = False


@dataclass
class SelectionIndex:
    """What the scoring pass precomputes for one model: per image its content hash, prepared feature,
    uncertainty, near-duplicate group and hybrid cluster, under one weights fingerprint."""

    fingerprint: str
    hashes: list[str]
    features: np.ndarray  # (N, D) float32, centred and L2-normalised
    uncertainty: np.ndarray  # (N,)
    groups: np.ndarray  # (N,) near-duplicate group (smallest member row)
    clusters: np.ndarray  # (N,) hybrid cluster
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.hashes)

    def save(self, path: str | os.PathLike) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as fp:
            np.savez(
                fp,
                fingerprint=np.array(self.fingerprint),
                hashes=np.array(self.hashes),
                features=self.features,
                uncertainty=self.uncertainty,
                groups=self.groups,
                clusters=self.clusters,
                info=np.array(json.dumps(self.info)),
            )

    @classmethod
    def load(cls, path: str | os.PathLike) -> SelectionIndex:
        with np.load(path, allow_pickle=False) as z:
            return cls(
                str(z["fingerprint"]),
                [str(h) for h in z["hashes"]],
                z["features"],
                z["uncertainty"],
                z["groups"],
                z["clusters"],
                json.loads(str(z["info"])),
            )


class FeatureCache:
    """Per-image rows (raw feature, thumbnail signature, uncertainty) of one model, keyed by content hash and
    valid for one weights fingerprint: `rows(fingerprint)` is empty after retraining, and `update` with a new
    fingerprint drops every row of the old weights (one file, `<root>/rows.npz`)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.file = self.root / "rows.npz"

    def rows(self, fingerprint: str) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
        if not self.file.is_file():
            return {}
        with np.load(self.file, allow_pickle=False) as z:
            if str(z["fingerprint"]) != fingerprint:
                return {}
            return {
                str(h): (f, s, float(u)) for h, f, s, u in zip(z["hashes"], z["features"], z["signatures"], z["unc"])
            }

    def update(self, fingerprint: str, rows: dict[str, tuple[np.ndarray, np.ndarray, float]]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        hashes = sorted(rows)
        with atomic_path(self.file) as tmp, open(tmp, "wb") as fp:
            np.savez(
                fp,
                fingerprint=np.array(fingerprint),
                hashes=np.array(hashes),
                features=np.stack([rows[h][0] for h in hashes]) if hashes else np.zeros((0, 0), np.float32),
                signatures=np.stack([rows[h][1] for h in hashes]) if hashes else np.zeros((0, 0), np.float32),
                unc=np.array([rows[h][2] for h in hashes], np.float32),
            )


# ---- the index ----------------------------------------------------------------------------------------------------


def default_num_clusters(distinct: int) -> int:
    return max(2, int(round(np.sqrt(max(distinct, 1) / 2))))


def build_index(
    fingerprint: str,
    hashes: Sequence[str],
    features: np.ndarray,
    signatures: np.ndarray | None,
    uncertainty: np.ndarray,
    settings: ActiveLearningSettings | None = None,
) -> SelectionIndex:
    """Prepare features, find near-duplicate groups (coreset machinery) and fit the hybrid clusters."""
    cfg = settings or ActiveLearningSettings()
    n = len(hashes)
    x = prepare_features(torch.as_tensor(np.asarray(features, np.float32)).clone())
    sig = torch.as_tensor(np.asarray(signatures, np.float32)) if signatures is not None else None
    dedup = cfg.dedup if (sig is not None or cfg.dedup in ("none", "teacher")) else "teacher"
    core = cfg.coreset()
    core.dedup = dedup
    if n >= 3:
        groups, radii = duplicate_groups(x, core, sig, cfg.seed)
    else:
        groups, radii = np.arange(n), {}
    reps = np.unique(groups)
    k = min(cfg.num_clusters or default_num_clusters(len(reps)), max(len(reps), 1))
    if n:
        centres, _, _ = kmeans(x[torch.from_numpy(reps)], k, 20, cfg.seed)
        clusters = nearest_centre(x, centres)[0].numpy()
    else:
        clusters = np.zeros(0, np.int64)
    sizes = np.bincount(groups, minlength=n) if n else np.zeros(0, np.int64)
    info = {
        "images": n,
        "duplicate_groups": int(len(reps)),
        "groups_larger_than_one": int((sizes > 1).sum()),
        "clusters": int(k),
        "link_radius": radii,
    }
    return SelectionIndex(
        fingerprint,
        list(hashes),
        x.numpy(),
        np.asarray(uncertainty, np.float32),
        np.asarray(groups, np.int64),
        np.asarray(clusters, np.int64),
        info,
    )


# ---- selection ----------------------------------------------------------------------------------------------------


def blocked_rows(groups: np.ndarray, taken: np.ndarray) -> np.ndarray:
    """Rows that may not be proposed: `taken` (labelled or recently proposed) and every member of their groups."""
    taken = np.asarray(taken, bool)
    return taken | np.isin(groups, groups[taken])


def _min_distance(x: np.ndarray, centres: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Euclidean distance of every row of `x` to its nearest row of `centres` (unit rows: 2 − 2 cos)."""
    out = np.full(len(x), np.inf, np.float32)
    if len(centres) == 0:
        return out
    xt = torch.from_numpy(np.ascontiguousarray(x, np.float32))
    for s in range(0, len(centres), chunk):
        c = torch.from_numpy(np.ascontiguousarray(centres[s : s + chunk], np.float32))
        d2 = (xt.pow(2).sum(1, keepdim=True) - 2 * xt @ c.T + c.pow(2).sum(1)[None]).clamp_min(0)
        out = np.minimum(out, d2.min(1).values.sqrt().numpy())
    return out


def select(
    index: SelectionIndex,
    strategy: str,
    taken: np.ndarray,
    count: int = 1,
    candidates: np.ndarray | None = None,
) -> list[int]:
    """Up to `count` rows to label next (in pick order), never blocked, never two of one duplicate group.

    Args:
        index: the scoring pass's index.
        strategy: "diversity", "uncertainty" or "hybrid".
        taken: bool (N,), labelled or recently proposed rows (they and their duplicate groups are blocked).
        count: batch size; each pick counts as taken for the next one.
        candidates: optional bool (N,), rows allowed at all (e.g. images still in the datastore); default all.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r}: choose one of {STRATEGIES}")
    n = len(index)
    taken = np.asarray(taken, bool).copy()
    if taken.shape != (n,):
        raise ValueError(f"taken has shape {taken.shape}, the index {n} rows")
    allowed = np.ones(n, bool) if candidates is None else np.asarray(candidates, bool)
    groups, x, unc = index.groups, index.features, index.uncertainty
    blocked = blocked_rows(groups, taken) | ~allowed
    picks: list[int] = []
    if strategy == "diversity":
        empty = not taken.any()
        # nothing to be far from yet: start with the most typical image (closest to the pool mean)
        dist = -_min_distance(x, x.mean(0, keepdims=True)) if empty else _min_distance(x, x[taken])
        for _ in range(count):
            score = np.where(blocked, -np.inf, dist)
            if not np.isfinite(score).any():
                break
            i = int(np.argmax(score))
            picks.append(i)
            blocked |= groups == groups[i]
            d_new = _min_distance(x, x[i : i + 1])
            dist = d_new if empty else np.minimum(dist, d_new)
            empty = False
    elif strategy == "uncertainty":
        order = np.argsort(-unc, kind="stable")
        for i in order:
            if len(picks) >= count:
                break
            if not blocked[i]:
                picks.append(int(i))
                blocked |= groups == groups[i]
    else:
        clusters = index.clusters
        k = int(clusters.max()) + 1 if n else 0
        reps = np.zeros(n, bool)
        reps[np.unique(groups)] = True
        distinct = np.bincount(clusters[reps], minlength=k).astype(np.float64)
        covered = np.bincount(clusters[taken], minlength=k).astype(np.float64)
        for _ in range(count):
            open_rows = ~blocked
            if not open_rows.any():
                break
            has_open = np.bincount(clusters[open_rows], minlength=k) > 0
            target = np.maximum(distinct / distinct.sum() * (covered.sum() + 1), 1.0)  # floor: one per cluster
            deficit = target - covered
            deficit = np.where(has_open, deficit + 1e-9 * distinct, -np.inf)
            c = int(np.argmax(deficit))
            members = np.flatnonzero(open_rows & (clusters == c))
            i = int(members[np.argmax(unc[members])])
            picks.append(i)
            blocked |= groups == groups[i]
            covered[c] += 1
    return picks


def taken_mask(hashes: Sequence[str], taken_hashes: Iterable[str]) -> np.ndarray:
    wanted = set(taken_hashes)
    return np.array([h in wanted for h in hashes], bool)
