"""Evaluation on held-out phantom tasks, shared by the distillation benchmarks: frozen pooled features read by a
linear probe and by kNN, a short few-label fine-tune, and bootstrap confidence intervals of paired differences.

Held-out tasks (`PROBE_TASKS`: aul, stmus, uf1990, cubs) are phantom classification tasks that neither the
stand-in teacher (mmotu, fetal planes, tn3k) nor the demo (busi) trains on. Every `probe_seed` renders fresh
images of each task (80 train / 100 test by default), in memory.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from tinyusfm_monai.distillation.shards import normalize_on_device
from tinyusfm_monai.distillation.standin import phantom_task_images

PROBE_TASKS = ("aul_classification", "stmus_classification", "uf1990_classification", "cubs_classification")
METRICS = ("linear_probe", "knn", "few_label_finetune")


def fix_threads(n: int) -> int:
    """A fixed thread count (the machine is shared; results must not depend on how busy it is)."""
    os.environ["OMP_NUM_THREADS"] = str(n)
    torch.set_num_threads(n)
    return n


def probe_suite(image_size: int, seed: int, n_train: int = 80, n_test: int = 100, tasks=PROBE_TASKS) -> list:
    """[(task, (x_train uint8, y_train, x_test uint8, y_test))] rendered with `seed`."""
    suite = []
    for t in tasks:
        xtr, ytr = phantom_task_images(t, n_train, image_size, seed, "training")
        xte, yte = phantom_task_images(t, n_test, image_size, seed, "test")
        suite.append((t, (xtr, ytr, xte, yte)))
    return suite


@torch.no_grad()
def embed(model: torch.nn.Module, x: torch.Tensor, batch: int = 128) -> torch.Tensor:
    """Pooled feature fc_norm(mean of patch tokens) of uint8 images."""
    model.eval()
    return torch.cat([model(normalize_on_device(x[i : i + batch])) for i in range(0, len(x), batch)])


def linear_probe(f_tr: torch.Tensor, y_tr: torch.Tensor, f_te: torch.Tensor, y_te: torch.Tensor) -> float:
    """Multinomial logistic regression (L-BFGS, L2 1e-3) on standardised features; test accuracy."""
    mu, sd = f_tr.mean(0), f_tr.std(0) + 1e-6
    a, b = (f_tr - mu) / sd, (f_te - mu) / sd
    k = int(max(y_tr.max(), y_te.max())) + 1
    w = torch.zeros(a.shape[1], k, requires_grad=True)
    bias = torch.zeros(k, requires_grad=True)
    opt = torch.optim.LBFGS([w, bias], lr=0.5, max_iter=300)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(a @ w + bias, y_tr) + 1e-3 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return float(((b @ w + bias).argmax(1) == y_te).float().mean())


def knn(f_tr: torch.Tensor, y_tr: torch.Tensor, f_te: torch.Tensor, y_te: torch.Tensor, k: int = 10) -> float:
    """Cosine kNN (majority of the k nearest training features, standardised); test accuracy."""
    mu, sd = f_tr.mean(0), f_tr.std(0) + 1e-6
    a = F.normalize((f_tr - mu) / sd, dim=1)
    b = F.normalize((f_te - mu) / sd, dim=1)
    nearest = (b @ a.T).topk(k, dim=1).indices
    votes = F.one_hot(y_tr[nearest], int(y_tr.max()) + 1).sum(1)
    return float((votes.argmax(1) == y_te).float().mean())


def few_label_finetune(
    backbone: torch.nn.Module,
    x_tr: torch.Tensor,
    y_tr: torch.Tensor,
    x_te: torch.Tensor,
    y_te: torch.Tensor,
    per_class: int = 8,
    steps: int = 40,
    seed: int = 0,
) -> float:
    """Fine-tune a copy of the backbone and a linear head on `per_class` labelled images per class (AdamW, lr 1e-4
    backbone / 1e-3 head, batch 16, flips); test accuracy."""
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.choice(np.flatnonzero(y_tr == c), per_class, replace=False) for c in y_tr.unique()])
    x, y = x_tr[idx], y_tr[idx]
    torch.manual_seed(seed)
    model = copy.deepcopy(backbone).train()
    head = torch.nn.Linear(model.embed_dim, int(y_tr.max()) + 1)
    opt = torch.optim.AdamW(
        [{"params": model.parameters(), "lr": 1e-4}, {"params": head.parameters(), "lr": 1e-3}], weight_decay=0.05
    )
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        b = torch.randint(len(x), (16,), generator=gen)
        xb = normalize_on_device(x[b])
        loss = F.cross_entropy(head(model(xb.flip(-1) if step % 2 else xb)), y[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = torch.cat([head(model(normalize_on_device(x_te[i : i + 128]))) for i in range(0, len(x_te), 128)])
    return float((pred.argmax(1) == y_te).float().mean())


def evaluate(model: torch.nn.Module, suite: list, metrics: Sequence[str] = METRICS, seed: int = 0) -> dict:
    """{metric: {task: accuracy, "mean": ...}} of one frozen backbone on one probe suite."""
    out: dict[str, dict[str, float]] = {m: {} for m in metrics}
    for task, (xtr, ytr, xte, yte) in suite:
        if "linear_probe" in metrics or "knn" in metrics:
            ftr, fte = embed(model, xtr), embed(model, xte)
            if "linear_probe" in metrics:
                out["linear_probe"][task] = linear_probe(ftr, ytr, fte, yte)
            if "knn" in metrics:
                out["knn"][task] = knn(ftr, ytr, fte, yte)
        if "few_label_finetune" in metrics:
            out["few_label_finetune"][task] = few_label_finetune(model, xtr, ytr, xte, yte, seed=seed)
    for m in metrics:
        out[m]["mean"] = float(np.mean([v for k, v in out[m].items() if k != "mean"]))
    return out


def paired_ci(a: Sequence[float], b: Sequence[float], resamples: int = 5000, seed: int = 0) -> dict[str, float]:
    """Mean paired difference a − b and its 95 % percentile-bootstrap interval over the paired units."""
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    rng = np.random.default_rng(seed)
    boot = diff[rng.integers(len(diff), size=(resamples, len(diff)))].mean(1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"diff": float(diff.mean()), "lo": float(lo), "hi": float(hi), "n": int(len(diff))}


def paired_t(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Mean paired difference a − b, its 95 % t-interval and two-sided p over the paired units (a percentile
    bootstrap of 5 units covers ~0.84, not 0.95; the t-interval is exact for normal differences). nan below 2."""
    from scipy import stats

    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    n, mean = len(diff), float(diff.mean())
    if n < 2:
        return {"diff": mean, "lo": float("nan"), "hi": float("nan"), "n": n, "p": float("nan")}
    se = float(diff.std(ddof=1) / np.sqrt(n))
    half = float(stats.t.ppf(0.975, n - 1)) * se
    p = float(stats.ttest_1samp(diff, 0.0).pvalue) if se > 0 else (1.0 if mean == 0 else 0.0)
    return {"diff": mean, "lo": mean - half, "hi": mean + half, "n": n, "p": p}


def holm(p: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values of a family of comparisons (nan stays nan and does not count)."""
    idx = [i for i in np.argsort(p) if not np.isnan(p[i])]
    out, running = [float("nan")] * len(p), 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (len(idx) - rank) * p[i]))
        out[i] = running
    return out


def fmt_ci(ci: dict[str, float]) -> str:
    mark = " *" if ci["lo"] > 0 or ci["hi"] < 0 else ""
    return f"{ci['diff']:+.3f} [{ci['lo']:+.3f}, {ci['hi']:+.3f}]{mark}"
