"""What a `tinyusfm-monai reproduce` run costs per task: measured on its cells, projected to the real datasets.

    python benchmarks/reproduce_cost.py OUT [--epochs-cls 400 --epochs-seg 1000]

Reads every cell of a reproduce output folder (`OUT/<task>/seed<k>/run.log`, `result.json`) and prints, per task:
the median training-epoch time (ignite's per-epoch time, validation included, epochs after the first) divided by
the cell's training images, and the projection to the task's real dataset: images (registry, as counted by
UniUS-Bench) × 0.7 (the training share of a 7:1:2 split) × the paper preset's epochs × that per-image time. It is
a linear projection from the measured device (on the phantom cells: this CPU); it ignores data loading from disk,
which the phantom's small PNGs make cheap.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

from tinyusfm_monai.bundle.reproduce import UNIUS_BENCH_TASKS
from tinyusfm_monai.data.registry import DATASETS, TASKS

EPOCH = re.compile(r"SupervisedTrainer - INFO - Epoch\[(\d+)\] Complete\. Time taken: (\d+):(\d+):([\d.]+)")


def epoch_seconds(log: str) -> list[float]:
    """Training-epoch times of a run.log after the first epoch (ignite's own timing)."""
    times = [(int(m[1]), int(m[2]) * 3600 + int(m[3]) * 60 + float(m[4])) for m in EPOCH.finditer(log)]
    return [t for epoch, t in times if epoch > 1]


def train_images(cell: Path) -> int:
    datalist = Path(cell.parents[1] / "_phantom" / cell.parent.name / "datalist.json")
    return len(json.loads(datalist.read_text())["training"]) if datalist.is_file() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--epochs-cls", type=int, default=400)
    parser.add_argument("--epochs-seg", type=int, default=1000)
    args = parser.parse_args()
    print("| task | cells | train images | s / image-epoch (median) | cell wall s (median) | real images | "
          "projected paper-preset run |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    per_type: dict[str, list[float]] = {"classification": [], "segmentation": []}
    for task_dir in sorted(p for p in args.out.iterdir() if p.is_dir() and p.name in TASKS):
        cells = sorted(c for c in task_dir.glob("seed*") if (c / "result.json").is_file())
        if not cells:
            continue
        per_image, wall = [], []
        for cell in cells:
            n = train_images(cell)
            times = epoch_seconds((cell / "run.log").read_text())
            if n and times:
                per_image.append(statistics.median(times) / n)
            r = json.loads((cell / "result.json").read_text())
            wall.append(r["train_seconds"] + r["evaluate_seconds"])
        task = TASKS[task_dir.name]
        real = DATASETS[task.dataset].num_images
        epochs = args.epochs_cls if task.task_type == "classification" else args.epochs_seg
        s = statistics.median(per_image) if per_image else float("nan")
        per_type[task.task_type] += per_image
        hours = s * 0.7 * real * epochs / 3600
        print(
            f"| {task.name} | {len(cells)} | {train_images(cells[0])} | {s:.3f} | {statistics.median(wall):.0f} | "
            f"{real} | {hours:.1f} h ({epochs} epochs) |"
        )
    # every UniUS-Bench task, from the median per-image time of its task type
    print("\n| task | images | epochs | projected hours (median s / image-epoch of its type) |\n|---|---|---|---|")
    total = 0.0
    for name in UNIUS_BENCH_TASKS:
        task = TASKS[name]
        if not per_type[task.task_type]:
            continue
        s = statistics.median(per_type[task.task_type])
        epochs = args.epochs_cls if task.task_type == "classification" else args.epochs_seg
        real = DATASETS[task.dataset].num_images
        hours = s * 0.7 * real * epochs / 3600
        total += hours
        print(f"| {name} | {real} | {epochs} | {hours:.0f} |")
    print(f"| **all, one seed** | | | **{total:.0f}** |")


if __name__ == "__main__":
    main()
