"""UniUS-Bench metrics, computed with MONAI's metric functions where MONAI has them.

Classification: accuracy, precision, recall, F1 (binary: positive = class 1; >2 classes: macro),
AUC (binary, or one-vs-rest macro), MCC (Gorodkin's multi-class form, equal to the binary MCC for two
classes), balanced accuracy. Segmentation, per image and foreground class: Dice, IoU, HD95,
sensitivity, specificity.

Empty masks (NerveSeg): when reference and prediction are both empty, our Dice/IoU is 1 (the
prediction is right) and HD95 is 0; when exactly one is empty, HD95 is the image's larger side.
These are our rules.

The official TinyUSFM evaluation (`utils/evaluate.py` of the MacDunno/TinyUSFM repository, with medpy 0.4.0) has
other rules; `official_image_scores` / `OfficialSegmentationScores` reproduce them so that the `paper` preset
selects and reports by them, beside ours:

* binary task (one sigmoid channel, > 0.5): per image Dice = medpy `dc`, which is 0 when both masks are empty
  (with the numpy the official requirements pin, 2.1.2; under numpy >= 2.4 medpy 0.4.0 returns NaN there instead,
  which makes the official mean Dice NaN: the pinned behaviour is the one reproduced);
  HD95 = medpy `hd95` (both surfaces' distances pooled, 95th percentile) when both are non-empty, 0 when both are
  empty, 224 when exactly one is; IoU 1 when both are empty; sensitivity = medpy `recall`; mean over images.
* more classes (argmax), per image and class (background included in the bookkeeping): a class absent from both
  masks has Dice 1 and IoU 1 and NaN sensitivity, specificity and HD95 (skipped by the means); HD95 = 224 when
  exactly one mask has the class. Reported value = mean over foreground classes of the NaN-skipping mean over
  images.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from monai.metrics import (
    compute_confusion_matrix_metric,
    compute_dice,
    compute_hausdorff_distance,
    compute_iou,
    compute_roc_auc,
    get_confusion_matrix,
)
from monai.networks.utils import one_hot


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) counts, rows = reference class, columns = predicted class."""
    idx = labels.astype(np.int64) * num_classes + preds.astype(np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a, dtype=np.float64), where=b != 0)


def mcc(cm: np.ndarray) -> float:
    t = cm.sum(axis=1).astype(np.float64)  # true counts per class
    p = cm.sum(axis=0).astype(np.float64)  # predicted counts per class
    c, s = float(np.trace(cm)), float(cm.sum())
    denom = np.sqrt((s * s - p @ p) * (s * s - t @ t))
    return float((c * s - t @ p) / denom) if denom > 0 else 0.0


def classification_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Metrics from class probabilities (N, C) and integer labels (N,)."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    n, c = probs.shape
    preds = probs.argmax(axis=1)
    cm = confusion_matrix(labels, preds, c)
    tp = np.diag(cm).astype(np.float64)
    precision = _safe_div(tp, cm.sum(axis=0))
    recall = _safe_div(tp, cm.sum(axis=1))
    f1 = _safe_div(2 * precision * recall, precision + recall)
    present = cm.sum(axis=1) > 0
    if c == 2:
        prec, rec, f = precision[1], recall[1], f1[1]
    else:
        prec, rec, f = precision.mean(), recall.mean(), f1.mean()
    y = torch.as_tensor(labels)
    if c == 2:
        auc = compute_roc_auc(torch.as_tensor(probs[:, 1]), y) if 0 < labels.sum() < n else float("nan")
    else:
        onehot = one_hot(y[:, None], num_classes=c, dim=1)
        auc = compute_roc_auc(torch.as_tensor(probs), onehot, average="macro") if present.all() else float("nan")
    return {
        "accuracy": float(tp.sum() / max(n, 1)),
        "precision": float(prec),
        "recall": float(rec),
        "f1": float(f),
        "auc": float(auc),
        "mcc": mcc(cm),
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
    }


class SegmentationScorer:
    """Per-image, per-foreground-class scores from label maps, with the empty-mask rules above."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes

    def __call__(self, pred: np.ndarray | torch.Tensor, label: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
        """`pred`, `label`: (H, W) integer label maps. Returns arrays of length num_classes - 1."""
        p = one_hot(torch.as_tensor(np.asarray(pred), dtype=torch.long)[None, None], self.num_classes, dim=1)
        g = one_hot(torch.as_tensor(np.asarray(label), dtype=torch.long)[None, None], self.num_classes, dim=1)
        p_any = p[0, 1:].flatten(1).any(1).numpy()
        g_any = g[0, 1:].flatten(1).any(1).numpy()
        both_empty, one_empty = ~p_any & ~g_any, p_any ^ g_any
        dice = compute_dice(p, g, include_background=False, ignore_empty=False)[0].numpy().astype(np.float64)
        iou = compute_iou(p, g, include_background=False, ignore_empty=False)[0].numpy().astype(np.float64)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MONAI warns on empty masks; handled just below
            hd = compute_hausdorff_distance(p, g, include_background=False, percentile=95)[0].numpy()
        hd = hd.astype(np.float64)
        hd[both_empty] = 0.0
        hd[one_empty] = float(max(p.shape[-2:]))
        cm = get_confusion_matrix(p, g, include_background=False)
        sens, spec = (
            torch.nan_to_num(compute_confusion_matrix_metric(name, cm), nan=0.0)[0].numpy().astype(np.float64)
            for name in ("sensitivity", "specificity")
        )
        dice_official = dice.copy()
        if self.num_classes == 2:
            dice_official[both_empty] = 0.0  # medpy dc, as the official binary scoring
        return {
            "dice": dice,
            "iou": iou,
            "hd95": hd,
            "sensitivity": np.where(g_any, sens, np.where(p_any, 0.0, 1.0)),
            "specificity": spec,
            "dice_official": dice_official,
        }


# ---- the official TinyUSFM evaluation rules ------------------------------------------------------------------

OFFICIAL_EMPTY_HD95 = 224.0  # the official code's HD95 when exactly one mask is empty (the image side at 224²)
OFFICIAL_KEYS = ("Dice", "IoU", "HD95", "Sensitivity", "Specificity", "PixelAcc")


def _surface_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distances from the border pixels of `a` to the border of `b` (medpy's rule: border = mask minus its
    erosion by the 4-connected cross, Euclidean distance transform, unit spacing)."""
    from scipy.ndimage import binary_erosion, distance_transform_edt, generate_binary_structure

    cross = generate_binary_structure(a.ndim, 1)
    a_border = a ^ binary_erosion(a, structure=cross, iterations=1)
    b_border = b ^ binary_erosion(b, structure=cross, iterations=1)
    return distance_transform_edt(~b_border)[a_border]


def hd95_pooled(pred: np.ndarray, gt: np.ndarray) -> float:
    """medpy's `hd95`: the 95th percentile of both directions' surface distances pooled together (MONAI's
    `compute_hausdorff_distance` takes the larger of the two directed percentiles instead)."""
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    return float(np.percentile(np.hstack((_surface_distances(pred, gt), _surface_distances(gt, pred))), 95))


def _official_binary(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    p_sum, g_sum = int(pred.sum()), int(gt.sum())
    tp = int(np.logical_and(pred, gt).sum())
    union = int(np.logical_or(pred, gt).sum())
    tn = int(np.logical_and(~pred, ~gt).sum())
    fp = int(np.logical_and(pred, ~gt).sum())
    if p_sum and g_sum:
        hd = hd95_pooled(pred, gt)
    elif not p_sum and not g_sum:
        hd = 0.0
    else:
        hd = OFFICIAL_EMPTY_HD95
    return {
        "Dice": 2.0 * tp / (p_sum + g_sum) if p_sum + g_sum else 0.0,  # medpy dc: 0 when both are empty
        "IoU": tp / union if union else 1.0,
        "HD95": hd,
        "Sensitivity": tp / g_sum if g_sum else 0.0,  # medpy recall
        "Specificity": tn / (tn + fp + 1e-8),
        "PixelAcc": float((pred == gt).mean()),
    }


def _official_class(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    if not (pred.any() or gt.any()):
        return {"Dice": 1.0, "IoU": 1.0, "HD95": np.nan, "Sensitivity": np.nan, "Specificity": np.nan}
    tp = int(np.logical_and(pred, gt).sum())
    fn = int(np.logical_and(~pred, gt).sum())
    tn = int(np.logical_and(~pred, ~gt).sum())
    fp = int(np.logical_and(pred, ~gt).sum())
    union = int(np.logical_or(pred, gt).sum())
    return {
        "Dice": 2 * tp / (pred.sum() + gt.sum() + 1e-8),
        "IoU": tp / union if union else 1.0,
        "HD95": hd95_pooled(pred, gt) if pred.any() and gt.any() else OFFICIAL_EMPTY_HD95,
        "Sensitivity": tp / (tp + fn + 1e-8) if tp + fn > 0 else np.nan,
        "Specificity": tn / (tn + fp + 1e-8) if tn + fp > 0 else np.nan,
    }


def official_image_scores(pred: np.ndarray, label: np.ndarray, num_classes: int) -> dict[str, Any]:
    """One image's scores by the official rules. `pred`, `label`: (H, W) label maps (binary: 0/1).

    Binary: {metric: float}. More classes: {metric: [value per class 0..C-1]} plus "PixelAcc" (float).
    """
    pred, label = np.asarray(pred), np.asarray(label)
    if num_classes == 2:
        return _official_binary(pred > 0, label > 0)
    per_class = [_official_class(pred == c, label == c) for c in range(num_classes)]
    out: dict[str, Any] = {k: [s[k] for s in per_class] for k in OFFICIAL_KEYS if k != "PixelAcc"}
    out["PixelAcc"] = float((pred == label).mean())
    return out


class OfficialSegmentationScores:
    """Accumulates `official_image_scores` over images and aggregates them as the official evaluation does.

    Args:
        num_classes: classes, background included (2 = the binary rules).
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.reset()

    def reset(self) -> None:
        self.images: list[dict[str, Any]] = []

    def add(self, pred: np.ndarray, label: np.ndarray) -> dict[str, Any]:
        scores = official_image_scores(pred, label, self.num_classes)
        self.images.append(scores)
        return scores

    def aggregate(self) -> dict[str, float]:
        """{metric: value, metric_std: value} as the official code reports them (nan when no image was added)."""
        out: dict[str, float] = {}
        if not self.images:
            return {k: float("nan") for k in OFFICIAL_KEYS}
        if self.num_classes == 2:
            for k in OFFICIAL_KEYS:
                values = np.array([s[k] for s in self.images], dtype=np.float64)
                out[k], out[f"{k}_std"] = float(values.mean()), float(values.std())
            return out
        acc = np.array([s["PixelAcc"] for s in self.images], dtype=np.float64)
        out["PixelAcc"], out["PixelAcc_std"] = float(np.nanmean(acc)), float(np.nanstd(acc))
        for k in OFFICIAL_KEYS[:-1]:
            table = np.array([s[k] for s in self.images], dtype=np.float64)[:, 1:]  # (N, foreground classes)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a class NaN on every image: nan, as theirs
                out[k] = float(np.nanmean(np.nanmean(table, axis=0)))
                out[f"{k}_std"] = float(np.nanstd(table.T.reshape(-1)))
        return out
