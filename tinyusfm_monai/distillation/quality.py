"""Quality Rank on the teacher's cached features: each sample's gradient over a few short proxy epochs.

The paper's figure ranks samples by their gradient over epochs ("high and stable first, oscillating or low
last") but publishes no proxy. Ours works on the features the coreset already cached (no image pass: at 2.2M
images a proxy that retrains a student over the pool cannot fit in minutes, one on cached features can):

* proxy task: a small MLP (input dropout, so it cannot memorise a sample in one visit) classifies each feature
  into its pseudo-class, a k-means of the features (`pseudo_classes`);
* the "gradient" is the per-sample norm of the cross-entropy's gradient with respect to the last layer,
  ||softmax − onehot|| · sqrt(||h||² + 1) (exact for a linear layer);
* **snapshot records**: after each epoch *every* sample is scored by the same frozen proxy, so the position of
  a sample in the visiting order cannot enter its score (the previous image-level proxy recorded gradients
  before each update: Spearman −0.85 between score and position);
* several initialisations (`inits`), each with its own shuffle and its own pseudo-label clustering, are
  averaged; each record becomes a percentile within its own visit (per-visit normalisation), so the proxy's
  learning progress does not count as instability;
* score = mean percentile − `oscillation_weight` · mean |change between consecutive epochs|.

Samples the proxy fits at once (dense blobs of near-identical frames: blank, air, saturated, frozen runs) get
low gradients, hence low quality; samples that carry information it has to work for get high, stable ones.
Everything runs on `device` over the feature matrix; random numbers come from a `torch.Generator` on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .settings import OURS, setting

RECORDS = ("snapshot", "online")
NORMALISATIONS = ("rank", "median", "none")


@dataclass
class QualitySettings:
    """The Quality Rank proxy (config section `coreset#quality`)."""

    pseudo_classes: int = setting(32, OURS, "pseudo-classes of the proxy task (k-means of the features)")
    hidden: int = setting(256, OURS, "width of the proxy MLP's hidden layer (0 = linear proxy)")
    epochs: int = setting(6, OURS, "proxy epochs per initialisation (each gives one record per sample)")
    inits: int = setting(5, OURS, "proxy initialisations averaged (own shuffle and own pseudo-labels each)")
    batch_size: int = setting(128, OURS, "proxy minibatch (grown on big pools, see max_steps_per_epoch)")
    max_steps_per_epoch: int = setting(
        100, OURS, "a bigger pool gets a bigger batch so an epoch is at most this many steps (2.2M: 22K rows a step)"
    )
    lr: float = setting(2e-3, OURS, "proxy AdamW learning rate")
    weight_decay: float = setting(1e-4, OURS, "proxy AdamW weight decay")
    input_dropout: float = setting(0.3, OURS, "dropout on the proxy's input features")
    record: str = setting("snapshot", OURS, "snapshot: all samples scored after each epoch (order-free) | online")
    normalise: str = setting("rank", OURS, "per-visit normalisation of each record: rank | median | none")
    oscillation_weight: float = setting(1.0, OURS, "score = mean − this × mean epoch-to-epoch change")

    def __post_init__(self) -> None:
        if self.record not in RECORDS:
            raise ValueError(f"quality record {self.record!r}: choose one of {RECORDS}")
        if self.normalise not in NORMALISATIONS:
            raise ValueError(f"quality normalise {self.normalise!r}: choose one of {NORMALISATIONS}")


@dataclass
class QualityResult:
    score: np.ndarray  # (N,) high = keep
    level: np.ndarray  # (N,) mean normalised record
    oscillation: np.ndarray  # (N,) mean |change between consecutive epochs|
    first_visit_position: np.ndarray  # (N,) position of each sample in the first epoch's order (diagnostics)


class ProxyHead(nn.Module):
    """Features → hidden (GELU) → pseudo-class logits; input dropout drawn from an explicit generator."""

    def __init__(self, dim: int, classes: int, hidden: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(dim, hidden), nn.GELU()) if hidden > 0 else nn.Identity()
        self.last = nn.Linear(hidden if hidden > 0 else dim, classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return h, self.last(h)


def last_layer_grad_norm(h: torch.Tensor, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """||∂CE_i/∂(W, b)|| of the last linear layer per sample: ||softmax − onehot|| · sqrt(||h||² + 1)."""
    err = logits.float().softmax(-1) - F.one_hot(target, logits.shape[-1]).float()
    return err.norm(dim=-1) * torch.sqrt(h.float().pow(2).sum(-1) + 1.0)


def normalise_visit(g: torch.Tensor, how: str) -> torch.Tensor:
    """One visit's records → comparable values: percentile ("rank"), ratio to the median, or unchanged."""
    if how == "rank":
        out = torch.empty_like(g, dtype=torch.float32)
        out[g.argsort(stable=True)] = torch.arange(len(g), device=g.device, dtype=torch.float32) / max(len(g) - 1, 1)
        return out
    if how == "median":
        return g.float() / g.float().median().clamp_min(1e-12)
    return g.float()


def _snapshot(model: ProxyHead, x: torch.Tensor, y: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    model.eval()
    out = torch.empty(len(x), device=x.device)
    with torch.no_grad():
        for s in range(0, len(x), chunk):
            h, logits = model(x[s : s + chunk].float())
            out[s : s + chunk] = last_layer_grad_norm(h, logits, y[s : s + chunk])
    return out


def quality_scores(
    x: torch.Tensor,
    settings: QualitySettings | None = None,
    seed: int = 0,
    kmeans_fn=None,
) -> QualityResult:
    """Quality Rank of the prepared features `x` (N, D) on their device (see the module docstring).

    `kmeans_fn(x, k, seed) -> labels` makes the pseudo-labels (the coreset's streaming k-means by default).
    """
    from .coreset import kmeans_labels

    cfg = settings or QualitySettings()
    kmeans_fn = kmeans_fn or kmeans_labels
    n, d = x.shape
    device = x.device
    batch = max(cfg.batch_size, -(-n // max(cfg.max_steps_per_epoch, 1)))
    level = torch.zeros(n, device=device)
    osc = torch.zeros(n, device=device)
    first_position = torch.zeros(n, dtype=torch.long, device=device)
    for m in range(cfg.inits):
        init_seed = seed * 1000 + m
        y = kmeans_fn(x, cfg.pseudo_classes, init_seed + 17)
        gen = torch.Generator(device=device).manual_seed(init_seed)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(init_seed)
            model = ProxyHead(d, cfg.pseudo_classes, cfg.hidden).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        previous = None
        for e in range(cfg.epochs):
            order = torch.randperm(n, generator=gen, device=device)
            if m == 0 and e == 0:
                first_position[order] = torch.arange(n, device=device)
            online = torch.empty(n, device=device) if cfg.record == "online" else None
            model.train()
            for s in range(0, n, batch):
                idx = order[s : s + batch]
                xb = x[idx].float()
                if cfg.input_dropout > 0:
                    keep = torch.rand(xb.shape, generator=gen, device=device) >= cfg.input_dropout
                    xb = xb * keep / (1 - cfg.input_dropout)
                h, logits = model(xb)
                if online is not None:
                    online[idx] = last_layer_grad_norm(h.detach(), logits.detach(), y[idx])
                loss = F.cross_entropy(logits, y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            record = _snapshot(model, x, y) if online is None else online
            visit = normalise_visit(record, cfg.normalise)
            level += visit
            if previous is not None:
                osc += (visit - previous).abs()
            previous = visit
    level /= cfg.inits * cfg.epochs
    osc /= max(cfg.inits * (cfg.epochs - 1), 1)
    score = level - cfg.oscillation_weight * osc
    return QualityResult(
        score.cpu().numpy().astype(np.float32),
        level.cpu().numpy().astype(np.float32),
        osc.cpu().numpy().astype(np.float32),
        first_position.cpu().numpy(),
    )
