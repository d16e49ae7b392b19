"""Coreset stages at scale: samples/s of each stage on `--rows` pool rows on `--device`, and the projection to the
2.2M-image 3M-US pool (linear in N: every stage is a pass, or a fixed number of passes, over the rows).

Stages (the product code, `distillation.coreset` / `quality` / `features`):
  features        the teacher (USFM by default, bfloat16 on CUDA) over the decoded uint8 pool, with the thumbnail
                  signatures in the same pass, written to sharded stores
  quality         the Quality Rank on the cached features (pseudo-label k-means + proxy MLP epochs, no image pass)
  near_duplicates kNN inside k-means blocks in the teacher and the signature spaces, connected components
  clustering      the Distance Rank's k-means (budget / 8 clusters) on one sample per duplicate group
  selection       quotas, sub-centres, fill

The pool: a junk phantom pool of `--distinct` images at `--image-size`, decoded once to uint8 shards; more rows are
made by LINKING the same decoded shard file again (the run says so): rows then repeat every `--distinct` rows, so
near-duplicate groups of that many copies exist, which the selection handles like any other duplicates.

    python benchmarks/coreset_scale.py --device cuda --rows 204800 --image-size 224 --json /tmp/coreset.json
    python benchmarks/coreset_scale.py --device cpu --rows 2048 --image-size 64 --teacher small   # CPU check
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FULL_POOL = 2_200_000


def linked_pool(work: Path, rows: int, distinct: int, image_size: int):
    """A decoded pool of `rows` rows: `distinct` phantom junk-pool images decoded once, the shard linked again."""
    from tinyusfm_monai.data.phantom import ensure_pool
    from tinyusfm_monai.distillation.pool import build_manifest
    from tinyusfm_monai.distillation.shards import PoolImages, ensure_pool_images

    distinct = min(distinct, rows)
    datalist = ensure_pool(cache_dir=work / "pools", junk=True, n=distinct, image_size=image_size, seed=0)
    manifest = build_manifest([datalist], work / "manifest.json")
    base = ensure_pool_images(manifest, work / "decoded", image_size=image_size, shard_size=distinct)
    if rows == distinct:
        return base, 1
    store = PoolImages(work / f"linked_{rows}")
    store.init(f"linked-{base.meta()['pool_hash']}-{rows}", rows, (3, image_size, image_size), distinct, "uint8")
    source = base.shard_path(0)
    for i, (s, e) in enumerate(store.ranges()):
        if store.done_path(i).is_file():
            continue
        if e - s == distinct:
            target = store.shard_path(i)
            if not target.exists():
                os.link(source, target) if _same_device(source, target) else os.symlink(source.resolve(), target)
        else:  # the last, shorter shard: a real (small) copy
            np.save(store.shard_path(i), np.load(source, mmap_mode="r")[: e - s])
        store.done_path(i).write_text("{}")
    return store, rows // distinct


def _same_device(a: Path, b: Path) -> bool:
    return os.stat(a).st_dev == os.stat(b.parent).st_dev


def teacher_for(name: str, image_size: int, device: torch.device):
    from tinyusfm_monai.distillation.model import FrozenTeacher
    from tinyusfm_monai.distillation.standin import build, small_teacher_def
    from tinyusfm_monai.networks import USFM

    net = USFM(img_size=image_size, drop_path_rate=0.0) if name == "usfm" else build(small_teacher_def(image_size))
    dtype = "bfloat16" if device.type == "cuda" else "float32"
    return FrozenTeacher(net, None, [], [], device=device, dtype=dtype)


def run(args: argparse.Namespace) -> dict:
    from tinyusfm_monai.distillation import coreset as cs
    from tinyusfm_monai.distillation.features import FeatureStore, SignatureStore, extract_features
    from tinyusfm_monai.distillation.quality import quality_scores

    logging.disable(logging.WARNING)
    device = torch.device(args.device)
    work = Path(args.work or tempfile.mkdtemp(prefix="tinyusfm_coreset_scale_"))
    t0 = time.perf_counter()
    images, copies = linked_pool(work, args.rows, args.distinct, args.image_size)
    prep_s = time.perf_counter() - t0
    settings = cs.CoresetSettings(budget=args.budget)
    teacher = teacher_for(args.teacher, args.image_size, device)
    seconds: dict[str, float] = {}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    t = time.perf_counter()
    store, sig_store = FeatureStore(work / "features"), SignatureStore(work / "signatures")
    extract_features(
        images, teacher.pooled, teacher.embed_dim, store, args.batch, args.distinct, args.workers, device,
        "float16", device.type == "cuda", signatures=sig_store,
    )  # fmt: skip
    sync()
    seconds["features"] = time.perf_counter() - t
    x = cs.prepare_features(cs.load_rows(store, device), settings.center)
    sig = cs.load_rows(sig_store, device)
    sync()
    t = time.perf_counter()
    quality = quality_scores(x, settings.quality_settings, seed=0).score
    sync()
    seconds["quality"] = time.perf_counter() - t
    t = time.perf_counter()
    groups, _ = cs.duplicate_groups(x, settings, sig)
    sync()
    seconds["near_duplicates"] = time.perf_counter() - t
    timings: dict[str, float] = {}
    sel = cs.select(x, len(x), settings, quality, groups, timings=timings)
    seconds["clustering"], seconds["selection"] = timings["clustering_s"], timings["selection_s"]
    rates = {k: args.rows / max(v, 1e-9) for k, v in seconds.items()}
    result = {
        "rows": args.rows,
        "budget": args.budget,
        "stages_per_s": rates,
        "projected_2p2m_s": sum(FULL_POOL / r for r in rates.values()),
        "seconds": seconds,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "image_size": args.image_size,
        "teacher": args.teacher,
        "distinct_rows": min(args.distinct, args.rows),
        "linked_copies": copies,
        "pool_preparation_s": prep_s,
        "selected": int(len(sel.selected)),
        "peak_gpu_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
    }
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rows", type=int, default=204_800)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--budget", type=float, default=0.1)
    ap.add_argument("--distinct", type=int, default=1024, help="distinct decoded images; more rows are links")
    ap.add_argument("--teacher", choices=("usfm", "small"), default="usfm")
    ap.add_argument("--batch", type=int, default=0, help="feature batch (default 256 on CUDA, 32 on CPU)")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--work", default="")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    args.batch = args.batch or (256 if args.device.startswith("cuda") else 32)
    r = run(args)
    print(
        f"Coreset stages on {r['rows']:,} pool rows ({r['distinct_rows']:,} distinct decoded images"
        + (f", the shard linked {r['linked_copies']} times: rows repeat" if r["linked_copies"] > 1 else "")
        + f"), {r['image_size']} px, teacher {r['teacher']}, {r['device_name']}, budget {r['budget']:g}"
    )
    print("| stage | seconds | samples/s |")
    print("|---|---|---|")
    for stage, rate in r["stages_per_s"].items():
        print(f"| {stage} | {r['seconds'][stage]:.1f} | {rate:,.0f} |")
    print(
        f"projected for {FULL_POOL:,} images (LINEAR extrapolation from {r['rows']:,} rows, not measured): "
        f"{r['projected_2p2m_s'] / 60:.1f} min"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
