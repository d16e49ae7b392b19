"""UniUS-Bench metrics (SPEC §4), computed with MONAI's metric functions where MONAI has them.

Classification: accuracy, precision, recall, F1 (binary: positive = class 1; >2 classes: macro),
AUC (binary, or one-vs-rest macro), MCC (Gorodkin's multi-class form, equal to the binary MCC for two
classes), balanced accuracy. Segmentation, per image and foreground class: Dice, IoU, HD95,
sensitivity, specificity.

Empty masks (NerveSeg): when reference and prediction are both empty, our Dice/IoU is 1 (the
prediction is right) and HD95 is 0; when exactly one is empty, HD95 is the image's larger side
(as the official code uses 224 at 224²). The official TinyUSFM code scores binary empty-vs-empty
Dice as 0 (medpy `dc`); `dice_official` reproduces that so both can be reported.
"""

from __future__ import annotations

import warnings

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
