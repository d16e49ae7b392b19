"""`POST /activelearning/<strategy>` latency on a large datastore, and the scoring pass's speed: a real server.

A datastore of `--n` phantom images (96 x 80, the BUSI segmentation phantom; 10 % of them in cine bursts of 4-8
frames) with `--labelled` of them labelled (class painted into a label PNG, the app's convention), served by a real
`monailabel start_server` (the MONAI Label venv, as tests/test_monailabel_server.py) with busi_classification at
`--image-size` and seeded initial weights. The benchmark waits for the background scoring pass MONAI Label starts
with the server (its speed is read from the cache's last_pass.json), then sends `--calls` requests per strategy,
one after the other, and prints the median and 90th percentile of the wall time per request (client side, HTTP
included) and of the strategy's own time (`al_seconds`). MONAI Label runs its scoring methods again after every
proposal (MONAI_LABEL_AUTO_UPDATE_SCORING, default on); such a pass finds nothing new and only hashes, but it is a
subprocess that shares the CPUs with the next request: measured as it ships.

    nice -n 10 python benchmarks/active_learning_latency.py --n 5000 --image-size 224
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from monailabel_harness import Server, http, tiny_bundle_copy  # noqa: E402

from tinyusfm_monai.data import phantom_junk  # noqa: E402
from tinyusfm_monai.data.phantom import render_sample  # noqa: E402

CLS = "busi_classification"


def make_datastore(studies: Path, n: int, labelled: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    (studies / "labels" / "final").mkdir(parents=True)
    i = 0
    scene = 0
    while i < n:
        image, _, label = render_sample(CLS, "training", scene, 96, seed)
        image = image[:80]
        scene += 1
        frames = [image]
        if rng.random() < 0.02:  # ~10 % of frames in bursts
            frames = phantom_junk.make_burst(rng, image, int(rng.integers(4, 9)))
        for frame in frames[: n - i]:
            name = f"img{i:05d}"
            Image.fromarray(frame).save(studies / f"{name}.png")
            if i < labelled:
                mask = np.zeros(frame.shape, np.uint8)
                mask[10:20, 10:20] = label + 1
                Image.fromarray(mask).save(studies / "labels" / "final" / f"{name}.png")
            i += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--labelled", type=int, default=250)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--calls", type=int, default=15)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="al_latency_"))
    shutil.rmtree(work, ignore_errors=True)
    (work / "bundles").mkdir(parents=True)
    tiny_bundle_copy(CLS, work / "bundles", image_size=args.image_size)
    t0 = time.time()
    make_datastore(work / "studies", args.n, args.labelled)
    print(f"datastore: {args.n} images ({args.labelled} labelled) written in {time.time() - t0:.0f} s", flush=True)
    server = Server(work / "studies", work / "bundles", [CLS], work / "server.log")
    rows = []
    try:
        server.wait_ready(timeout=600)
        t0 = time.time()
        while True:  # the start-up pass computes everything; a sync pass after it finds nothing to do
            status, body = http(
                f"{server.url}/scoring/tinyusfm_features?run_sync=true", "POST", json_body={}, timeout=3600
            )
            if status != 429:
                break
            time.sleep(2)
        assert status == 200, body[:2000]
        last = json.loads((work / "studies" / ".tinyusfm_activelearning" / CLS / "last_pass.json").read_text())
        print(f"scoring ready after {time.time() - t0:.0f} s: {json.dumps(last)}", flush=True)
        for strategy in ("random", "first", "diversity", "uncertainty", "hybrid"):
            wall, own = [], []
            for _ in range(args.calls):
                t = time.perf_counter()
                status, body = http(f"{server.url}/activelearning/{strategy}", "POST", json_body={"model": CLS})
                wall.append(time.perf_counter() - t)
                assert status == 200, body[:2000]
                if "al_seconds" in json.loads(body):
                    own.append(json.loads(body)["al_seconds"])
            rows.append((strategy, np.median(wall), np.percentile(wall, 90), np.median(own) if own else np.nan))
    finally:
        server.stop()
    print(f"\n{args.n} images, {args.labelled} labelled, image size {args.image_size}, {args.calls} calls each")
    print(
        f"scoring pass: {last['computed']} images in {last['features_s']:.1f} s = {last['images_per_s']} images/s "
        f"(+ index {last['index_s']:.1f} s: {last['duplicate_groups']} duplicate groups, {last['clusters']} clusters)"
    )
    print("| strategy | median s / request | p90 s | strategy's own median s |")
    print("|---|---|---|---|")
    for strategy, med, p90, own in rows:
        print(f"| {strategy} | {med:.3f} | {p90:.3f} | {'—' if np.isnan(own) else f'{own:.3f}'} |")


if __name__ == "__main__":
    main()
