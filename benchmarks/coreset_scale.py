"""Coreset selection at scale: scoring throughput, and selecting 10 % of 1,000,000 synthetic 768-d features.

1. Scoring throughput on this machine: teacher (USFM, 224px) feature extraction samples/s and proxy-gradient
   scoring samples/s (TinyUSFM forward/backward), through the same functions the bundle uses.
2. Selection: 1,000,000 synthetic 768-d vectors (clustered: 200 Gaussian blobs of different sizes) are streamed
   into a float16 feature store on disk; a child process then runs k-means (k=100), cluster assignment, the
   distance ranks, the dual fusion with a synthetic quality score and the 10 % quota selection, streaming from
   disk. Reported: wall time per stage and the child's peak RSS.
3. A PROJECTION (not a measurement) of the cost for 2.2M images on one GPU, from the paper FLOP counts and
   stated throughput assumptions.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

USFM_GFLOPS = 33.7  # forward, 224px, paper convention (2 x MACs of linear/conv layers)
TINY_GFLOPS = 2.15


def write_synthetic(root: Path, n: int, dim: int, seed: int = 0, chunk: int = 50_000) -> None:
    from tinyusfm_monai.distillation.features import FeatureStore

    rng = np.random.default_rng(seed)
    k = 200
    centres = rng.normal(size=(k, dim)).astype(np.float32) * 3
    weights = rng.pareto(1.5, size=k) + 0.05
    weights /= weights.sum()
    store = FeatureStore(root)
    store.init("synthetic", n, dim, 100_000, "float16")
    for i, (s, e) in enumerate(store.ranges()):
        out = np.lib.format.open_memmap(store.shard_path(i), mode="w+", dtype=np.float16, shape=(e - s, dim))
        for a in range(0, e - s, chunk):
            b = min(a + chunk, e - s)
            lab = rng.choice(k, size=b - a, p=weights)
            out[a:b] = centres[lab] + rng.normal(size=(b - a, dim)).astype(np.float32)
        out.flush()
        del out
        store.done_path(i).write_text("{}")


def select_child(root: str, k: int, iters: int, budget: float) -> dict:
    import torch

    from tinyusfm_monai.distillation import coreset as cs
    from tinyusfm_monai.distillation.features import FeatureStore

    store = FeatureStore(root)
    t = {}
    t0 = time.perf_counter()
    centres = cs.kmeans(store, k, iters=iters, seed=0, chunk_rows=65536)
    t["kmeans_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    labels, dists = cs.assign(store, centres, chunk_rows=65536)
    t["assign_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    quality = np.random.default_rng(1).normal(size=store.num_samples).astype(np.float32)
    sel = cs.select("dual", store.num_samples, budget, labels, dists, quality)
    t["rank_fuse_select_s"] = time.perf_counter() - t2
    t["total_s"] = time.perf_counter() - t0
    t["selected"] = int(len(sel.selected))
    t["clusters_covered"] = int(len(np.unique(labels[sel.selected])))
    t["clusters"] = int(len(np.unique(labels)))
    t["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t["threads"] = torch.get_num_threads()
    return t


def scoring_throughput(n: int, img: int) -> dict:
    import logging

    import torch
    from PIL import Image

    from tinyusfm_monai.distillation.features import FeatureStore, extract_features, pooled_teacher_embedding
    from tinyusfm_monai.distillation.model import FrozenTeacher
    from tinyusfm_monai.distillation.pool import build_manifest
    from tinyusfm_monai.distillation.quality import QualityScorer
    from tinyusfm_monai.distillation.shards import ensure_pool_images
    from tinyusfm_monai.networks import USFM, TinyUSFM

    logging.disable(logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="tinyusfm_score_"))
    rng = np.random.default_rng(0)
    (work / "imgs").mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (img, img), dtype=np.uint8)).save(work / "imgs" / f"{i:04d}.png")
    build_manifest([work / "imgs"], work / "m.json")
    images = ensure_pool_images(work / "m.json", work / "decoded", image_size=img)
    teacher = FrozenTeacher(USFM(img_size=img, drop_path_rate=0.0), None, [], [])
    store = FeatureStore(work / "f")
    t0 = time.perf_counter()
    extract_features(images, pooled_teacher_embedding(teacher), 768, store, batch_size=8, shard_size=max(n // 2, 1))
    feat_s = time.perf_counter() - t0
    scorer = QualityScorer(work / "q", TinyUSFM(img_size=img), epochs=1, batch_size=8)
    t1 = time.perf_counter()
    scorer.run(images, store)
    quality_s = time.perf_counter() - t1
    shutil.rmtree(work, ignore_errors=True)
    return {"features_per_s": n / feat_s, "quality_per_s_per_epoch": n / quality_s, "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--budget", type=float, default=0.1)
    ap.add_argument("--score-images", type=int, default=16)
    ap.add_argument("--work", type=str, default="")
    ap.add_argument("--child", type=str, default="")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(select_child(args.child, args.k, args.iters, args.budget)))
        return
    work = Path(args.work or tempfile.mkdtemp(prefix="tinyusfm_coreset_scale_"))
    score = scoring_throughput(args.score_images, 224) if args.score_images > 0 else None
    if score:
        print(f"  scoring measured: {score}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    store_dir = work / "features"
    if not (store_dir / "meta.json").is_file():
        write_synthetic(store_dir, args.n, args.dim)
    gen_s = time.perf_counter() - t0
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            str(store_dir),
            "--k",
            str(args.k),
            "--iters",
            str(args.iters),
            "--budget",
            str(args.budget),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    size_gb = sum(p.stat().st_size for p in store_dir.glob("*.npy")) / 1e9
    print(
        f"Coreset selection, {args.n:,} synthetic {args.dim}-d features (float16 on disk, {size_gb:.2f} GB), "
        f"k={args.k}, {args.iters} Lloyd iterations, budget {args.budget:g}, CPU {r['threads']} threads"
    )
    print("| stage | time (s) |")
    print("|---|---|")
    print(f"| write synthetic store (not part of selection) | {gen_s:.1f} |")
    for key in ("kmeans_s", "assign_s", "rank_fuse_select_s", "total_s"):
        print(f"| {key[:-2].replace('_', ' ')} | {r[key]:.1f} |")
    print(
        f"peak RSS of the selecting process: {r['peak_rss_mib']:.0f} MiB (the features alone would be "
        f"{args.n * args.dim * 4 / 2**20:.0f} MiB in float32); selected {r['selected']:,}, "
        f"{r['clusters_covered']}/{r['clusters']} clusters covered"
    )
    if score:
        print()
        print(f"Scoring throughput on this CPU ({score['threads']} threads, 224px, random USFM/TinyUSFM weights):")
        print("| stage | samples/s |")
        print("|---|---|")
        print(f"| teacher features (USFM forward) | {score['features_per_s']:.2f} |")
        print(f"| proxy gradient scoring, per epoch (TinyUSFM fwd+bwd) | {score['quality_per_s_per_epoch']:.2f} |")
    n = 2_200_000
    gpu_tflops = 200.0  # ASSUMED sustained bf16 throughput of one H100 on ViT-B inference (~20 % of peak)
    io_rate = 2500.0  # ASSUMED images/s of JPEG decode + resize with 16 CPU workers feeding the GPU
    feat = max(n * USFM_GFLOPS * 1e9 / (gpu_tflops * 1e12), n / io_rate)
    proxy_epochs = 3
    prox = proxy_epochs * max(n * 3 * TINY_GFLOPS * 1e9 / (gpu_tflops * 1e12), n / io_rate)
    sel = r["total_s"] * n / args.n
    print()
    print("PROJECTION (not measured here, no GPU on this machine) for the 2.2M-image 3M-US pool on one GPU:")
    print(
        f"assumptions: {gpu_tflops:.0f} TFLOP/s sustained (AMP), {io_rate:.0f} images/s data loading, "
        f"USFM {USFM_GFLOPS} GFLOPs/image, TinyUSFM {TINY_GFLOPS} GFLOPs fwd (x3 fwd+bwd), {proxy_epochs} proxy "
        "epochs, selection scaled linearly from the CPU measurement above (it can stay on CPU)"
    )
    print("| stage | projected time |")
    print("|---|---|")
    bound = "data loading" if n / io_rate >= feat else "compute"
    print(f"| teacher features (1 pass) | {feat / 60:.0f} min (bound: {bound}) |")
    print(f"| proxy gradient epochs ({proxy_epochs}) | {prox / 60:.0f} min |")
    print(f"| clustering + ranks + selection | {sel / 60:.0f} min |")
    print(f"| total | {(feat + prox + sel) / 3600:.1f} h; disk for features: {n * 768 * 2 / 1e9:.1f} GB float16 |")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
