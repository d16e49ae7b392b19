"""Report figures (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

# Distinct colours for label values 1..; background is not drawn.
PALETTE = np.array(
    [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240)],
    dtype=np.uint8,
)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion_matrix(cm: np.ndarray, names: Sequence[str], path: Path) -> None:
    plt = _pyplot()
    size = 2.0 + 0.6 * len(names)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def roc_curve(scores: np.ndarray, positives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates over all thresholds (one-vs-rest)."""
    order = np.argsort(-scores, kind="stable")
    pos = positives[order].astype(np.float64)
    tps, fps = np.cumsum(pos), np.cumsum(1 - pos)
    tpr = np.concatenate([[0], tps / max(pos.sum(), 1)])
    fpr = np.concatenate([[0], fps / max((1 - pos).sum(), 1)])
    return fpr, tpr


def plot_roc(probs: np.ndarray, labels: np.ndarray, names: Sequence[str], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    classes = [1] if len(names) == 2 else range(len(names))
    for c in classes:
        fpr, tpr = roc_curve(probs[:, c], labels == c)
        ax.plot(fpr, tpr, label=names[c])
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend label colours into an (H, W, 3) uint8 image."""
    out = image.astype(np.float32).copy()
    for value in range(1, int(mask.max()) + 1):
        sel = mask == value
        out[sel] = (1 - alpha) * out[sel] + alpha * PALETTE[(value - 1) % len(PALETTE)]
    return out.astype(np.uint8)


def save_overlays(cases: list[tuple[np.ndarray, np.ndarray, np.ndarray]], path: Path, title: str) -> None:
    """One row per case: image, reference overlay, prediction overlay."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(cases), 3, figsize=(7.5, 2.5 * len(cases)), squeeze=False)
    for row, (image, pred, label) in zip(axes, cases):
        for ax, (img, sub) in zip(
            row, ((image, "image"), (overlay(image, label), "reference"), (overlay(image, pred), "prediction"))
        ):
            ax.imshow(img)
            ax.set_title(sub, fontsize=8)
            ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
