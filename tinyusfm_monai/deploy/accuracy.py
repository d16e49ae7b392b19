"""How far an exported / reduced-precision model is from the eager fp32 one, on labelled images.

Classification: accuracy against the labels, its change in percentage points, argmax agreement with fp32, and
the largest probability / logit differences. Segmentation: mean foreground Dice against the label masks, its
change, pixel agreement of the argmax maps with fp32, and the largest logit difference. Accuracy on a phantom or
a barely trained model says little; agreement with fp32 is the number that shows what the conversion did.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def mean_dice(pred: np.ndarray, label: np.ndarray, num_classes: int) -> float:
    """Mean Dice over the foreground classes present in the label or the prediction (1.0 if neither has any)."""
    scores = []
    for c in range(1, num_classes):
        p, g = pred == c, label == c
        denominator = p.sum() + g.sum()
        if denominator:
            scores.append(2.0 * np.logical_and(p, g).sum() / denominator)
    return float(np.mean(scores)) if scores else 1.0


def compare(
    reference: np.ndarray, outputs: dict[str, np.ndarray], labels: list[Any], task_type: str
) -> dict[str, dict[str, float]]:
    """Rows keyed by model name (the reference first, as "fp32 eager"), each with the task's figures.

    reference / outputs: logits (N, C) for classification or (N, C, H, W) for segmentation.
    """
    rows: dict[str, dict[str, float]] = {}
    ref_arg = reference.argmax(1)
    if task_type == "classification":
        y = np.asarray([int(np.asarray(v).reshape(-1)[0]) for v in labels])
        ref_acc = float((ref_arg == y).mean())
        ref_p = softmax(reference)
        for name, out in {"fp32 eager": reference, **outputs}.items():
            acc = float((out.argmax(1) == y).mean())
            rows[name] = {
                "accuracy": acc,
                "delta_points": 100.0 * (acc - ref_acc),
                "agreement": float((out.argmax(1) == ref_arg).mean()),
                "max_abs_prob_diff": float(np.abs(softmax(out) - ref_p).max()),
                "max_abs_logit_diff": float(np.abs(out - reference).max()),
            }
        return rows
    classes = reference.shape[1]
    ref_dice = np.mean([mean_dice(p, g, classes) for p, g in zip(ref_arg, labels)])
    for name, out in {"fp32 eager": reference, **outputs}.items():
        arg = out.argmax(1)
        dice = float(np.mean([mean_dice(p, g, classes) for p, g in zip(arg, labels)]))
        rows[name] = {
            "dice": dice,
            "delta_dice": float(dice - ref_dice),
            "agreement": float((arg == ref_arg).mean()),
            "max_abs_logit_diff": float(np.abs(out - reference).max()),
        }
    return rows


def markdown_table(rows: dict[str, dict[str, float]], task_type: str) -> str:
    """The rows as a Markdown table (what `tinyusfm-monai export` prints)."""
    if task_type == "classification":
        lines = [
            "| model | accuracy | Δ accuracy (points) | argmax agreement with fp32 | max |Δ prob| | max |Δ logit| |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, r in rows.items():
            lines.append(
                f"| {name} | {r['accuracy']:.2%} | {r['delta_points']:+.2f} | {r['agreement']:.2%} | "
                f"{r['max_abs_prob_diff']:.4f} | {r['max_abs_logit_diff']:.4f} |"
            )
    else:
        lines = [
            "| model | mean Dice | Δ Dice | pixel agreement with fp32 | max |Δ logit| |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, r in rows.items():
            lines.append(
                f"| {name} | {r['dice']:.4f} | {r['delta_dice']:+.4f} | {r['agreement']:.4%} | "
                f"{r['max_abs_logit_diff']:.4f} |"
            )
    return "\n".join(lines)
