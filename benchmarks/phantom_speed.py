"""Phantom generation speed: images per second and total time for N images (default 1,000 at 224 x 224).

Times the whole path a user runs (simulation, scan conversion, masks, PNG writing, datalist) in one
process, for a classification task, a segmentation task and the distillation pool.

    python benchmarks/phantom_speed.py [--n 1000] [--size 224]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tinyusfm_monai.data.phantom import generate_pool, generate_task

CASES = (
    ("classification", "busi_classification"),
    ("classification (8 classes)", "mmotu_classification"),
    ("segmentation", "busi_segmentation"),
    ("segmentation (3 labels)", "camus_segmentation"),
    ("segmentation (5 labels)", "luss_segmentation"),
    ("pool", None),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind, task in CASES:
            out = Path(tmp) / (task or "pool")
            start = time.perf_counter()
            if task is None:
                generate_pool(out, n=args.n, image_size=args.size)
            else:
                generate_task(task, out, n_train=args.n, n_val=0, n_test=0, image_size=args.size)
            seconds = time.perf_counter() - start
            rows.append((kind, task or "pool", args.n / seconds, seconds))
    print(f"phantom generation, {args.n} images at {args.size}x{args.size}, one process")
    print(f"{'kind':28s} {'task':24s} {'images/s':>9s} {'total s':>8s}")
    for kind, task, rate, seconds in rows:
        print(f"{kind:28s} {task:24s} {rate:9.1f} {seconds:8.1f}")


if __name__ == "__main__":
    main()
