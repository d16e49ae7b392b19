"""Evaluator handlers that write a task's test-set report: metrics JSON/CSV, per-image CSV, figures.

They are attached to `validate#evaluator` by each bundle's `evaluate.json`. Per-image scores are
computed as batches arrive, so memory does not grow with the test set; only the few images kept
for the best/worst overlays are held.
"""

from __future__ import annotations

import csv
import heapq
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.metrics import Metric

from tinyusfm_monai.transforms.pipelines import IMAGENET_MEAN, IMAGENET_STD
from tinyusfm_monai.utils.csvsafe import safe_record

from .metrics import OfficialSegmentationScores, SegmentationScorer, classification_metrics, confusion_matrix

logger = logging.getLogger(__name__)


def _filename(item: dict[str, Any]) -> str:
    meta = getattr(item.get("image"), "meta", None) or item.get("image_meta_dict") or {}
    name = meta.get("filename_or_obj", "")
    return str(name[0] if isinstance(name, (list, tuple)) else name)


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, allow_nan=True) + "\n")


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(safe_record(r) for r in rows)


def _denormalise(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) ImageNet-normalised tensor → (H, W, 3) uint8 for figures."""
    x = image.detach().cpu().float().numpy()
    x = x * np.array(IMAGENET_STD)[:, None, None] + np.array(IMAGENET_MEAN)[:, None, None]
    return (np.clip(x, 0, 1).transpose(1, 2, 0) * 255).astype(np.uint8)


class ClassificationReport:
    """Accuracy, precision, recall, F1, AUC, MCC, balanced accuracy + confusion matrix and ROC figures."""

    def __init__(self, output_dir: str, class_names: Sequence[str], pred_key: str = "pred", label_key: str = "label"):
        self.output_dir = Path(output_dir)
        self.class_names = list(class_names)
        self.pred_key, self.label_key = pred_key, label_key
        self.metrics: dict[str, float] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self.probs: list[np.ndarray] = []
        self.labels: list[int] = []
        self.files: list[str] = []

    def _collect(self, engine: Engine) -> None:
        for item in engine.state.output:
            self.probs.append(torch.as_tensor(item[self.pred_key]).detach().cpu().float().numpy().reshape(-1))
            self.labels.append(int(torch.as_tensor(item[self.label_key]).reshape(-1)[0]))
            self.files.append(_filename(item))

    def _write(self, engine: Engine) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        probs, labels = np.stack(self.probs), np.asarray(self.labels)
        self.metrics = classification_metrics(probs, labels)
        self.metrics["num_images"] = len(labels)
        _write_json(self.output_dir / "metrics.json", self.metrics)
        _write_rows(self.output_dir / "metrics.csv", [{k: v for k, v in self.metrics.items()}])
        rows = []
        for f, y, p in zip(self.files, labels, probs):
            row = {"image": f, "label": self.class_names[y], "pred": self.class_names[int(p.argmax())]}
            row.update({f"p_{c}": float(v) for c, v in zip(self.class_names, p)})
            rows.append(row)
        _write_rows(self.output_dir / "per_image.csv", rows)
        cm = confusion_matrix(labels, probs.argmax(1), len(self.class_names))
        _write_json(self.output_dir / "confusion_matrix.json", {"classes": self.class_names, "matrix": cm.tolist()})
        from .figures import plot_confusion_matrix, plot_roc

        plot_confusion_matrix(cm, self.class_names, self.output_dir / "confusion_matrix.png")
        plot_roc(probs, labels, self.class_names, self.output_dir / "roc.png")
        logger.info("test metrics: %s (written to %s)", _fmt(self.metrics), self.output_dir)


class SegmentationReport:
    """Per-class Dice, IoU, HD95, sensitivity, specificity + overlays of the best and worst images."""

    def __init__(
        self,
        output_dir: str,
        label_names: Sequence[str],
        num_overlays: int = 4,
        pred_key: str = "pred",
        label_key: str = "label",
    ):
        self.output_dir = Path(output_dir)
        self.label_names = list(label_names)
        self.num_overlays = num_overlays
        self.pred_key, self.label_key = pred_key, label_key
        self.scorer = SegmentationScorer(len(self.label_names))
        self.official = OfficialSegmentationScores(len(self.label_names))
        self.metrics: dict[str, Any] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self.rows: list[dict[str, Any]] = []
        self.scores: dict[str, list[np.ndarray]] = {}
        self.best: list[tuple[float, int, tuple]] = []  # min-heap of (dice, i, case)
        self.worst: list[tuple[float, int, tuple]] = []  # min-heap of (-dice, i, case)
        self.empty_references = 0
        self.official.reset()

    @staticmethod
    def _as_map(x: Any) -> np.ndarray:
        t = torch.as_tensor(x).detach().cpu()
        if t.ndim == 3 and t.shape[0] > 1:  # one-hot
            t = t.argmax(0)
        return t.reshape(t.shape[-2:]).numpy().astype(np.int64)

    def _collect(self, engine: Engine) -> None:
        for item in engine.state.output:
            pred, label = self._as_map(item[self.pred_key]), self._as_map(item[self.label_key])
            s = self.scorer(pred, label)
            self.official.add(pred, label)
            self.empty_references += int(not label.any())
            for k, v in s.items():
                self.scores.setdefault(k, []).append(v)
            i = len(self.rows)
            row: dict[str, Any] = {"image": _filename(item)}
            for k, v in s.items():
                row.update({f"{k}_{n}": float(x) for n, x in zip(self.label_names[1:], v)})
            self.rows.append(row)
            mean_dice = float(np.mean(s["dice"]))
            if self.num_overlays and "image" in item:
                case = (_denormalise(torch.as_tensor(item["image"])), pred.astype(np.uint8), label.astype(np.uint8))
                for heap, key in ((self.best, mean_dice), (self.worst, -mean_dice)):
                    entry = (key, i, case)
                    if len(heap) < self.num_overlays:
                        heapq.heappush(heap, entry)
                    elif key > heap[0][0]:
                        heapq.heapreplace(heap, entry)

    def _write(self, engine: Engine) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        per_class: dict[str, dict[str, float]] = {}
        summary: dict[str, Any] = {"num_images": len(self.rows)}
        for metric, values in self.scores.items():
            arr = np.stack(values)  # (N, C-1)
            per_class[metric] = {n: float(np.nanmean(arr[:, j])) for j, n in enumerate(self.label_names[1:])}
            summary[metric] = float(np.nanmean(arr))
        summary["empty_reference_images"] = self.empty_references
        summary["per_class"] = per_class
        # the official TinyUSFM evaluation's rules and aggregation (evaluation/metrics.py), beside ours
        summary["official"] = self.official.aggregate()
        self.metrics = summary
        _write_json(self.output_dir / "metrics.json", summary)
        flat = {k: v for k, v in summary.items() if not isinstance(v, dict)}
        _write_rows(self.output_dir / "metrics.csv", [flat])
        _write_rows(self.output_dir / "per_image.csv", self.rows)
        from .figures import save_overlays

        best = [c for _, _, c in sorted(self.best, key=lambda e: -e[0])]
        worst = [c for _, _, c in sorted(self.worst, key=lambda e: -e[0])]
        if best:
            save_overlays(best, self.output_dir / "best_cases.png", "best Dice")
            save_overlays(worst, self.output_dir / "worst_cases.png", "worst Dice")
        logger.info("test metrics: %s (written to %s)", _fmt(flat), self.output_dir)


def _fmt(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())


class OfficialDice(Metric):
    """Validation key metric of the `paper` preset: mean Dice by the official rules (`OfficialSegmentationScores`),
    so the best checkpoint is chosen as the official script chooses it.

    Args:
        num_classes: classes, background included.
        output_transform: engine output → (preds, labels), per-item label maps.
    """

    def __init__(self, num_classes: int, output_transform: Any = lambda x: x) -> None:
        self.scores = OfficialSegmentationScores(num_classes)
        super().__init__(output_transform=output_transform)

    def reset(self) -> None:
        self.scores.reset()

    def update(self, output: Any) -> None:
        preds, labels = output
        for p, y in zip(preds, labels):
            self.scores.add(SegmentationReport._as_map(p), SegmentationReport._as_map(y))

    def compute(self) -> float:
        return self.scores.aggregate()["Dice"]
