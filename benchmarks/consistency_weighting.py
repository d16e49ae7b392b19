"""Does the consistency weighting keep the signal, reflect the image rather than the mask draw, and flag junk?

Product code only (`distillation.masks`, `distillation.consistency`, `FrozenTeacher`). `--images` frames of a junk
phantom pool (all types, 64 px), `--draws` independent mask draws per image, batches of 16 (a fixed partition;
every draw re-masks the same batches, as training would). Per (teacher, masks, reading, content):

* ESS / batch: effective sample size of each batch's weights over the batch size, mean over batches and draws
  (target >= 0.7);
* variance share from the draw: mean over images of the variance of its weight across draws, over the variance
  of all weights (target <= 0.2);
* junk AUROC: low weight flags single-frame junk (blank, dim, saturated, noise, overlay, air) against clean frames
  (bursts and frozen copies are clean content; redundancy is the coreset's job), on single draws (what a training
  step sees) and on each image's mean over draws (target >= 0.75).

Teachers: `random` (small USFM architecture, random init) and `--teacher NAME=PATH` (official layout, same small
architecture).

    nice -n 5 python benchmarks/consistency_weighting.py --teacher standin=runs/teacher_probe/standin_0.pth
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from phantom_eval import fix_threads  # noqa: E402

from tinyusfm_monai.data.phantom_junk import build_junk_pool  # noqa: E402
from tinyusfm_monai.distillation.consistency import ConsistencyWeighting, effective_sample_size  # noqa: E402
from tinyusfm_monai.distillation.diagnostics import auroc_low  # noqa: E402
from tinyusfm_monai.distillation.masks import CLEAN, DomainMasker  # noqa: E402
from tinyusfm_monai.distillation.model import FrozenTeacher  # noqa: E402
from tinyusfm_monai.distillation.shards import normalize_on_device  # noqa: E402
from tinyusfm_monai.distillation.standin import build, small_teacher_def  # noqa: E402

JUNK = ("blank", "dim", "saturated", "noise", "overlay", "air")
IMG = 64
MASKS = {  # name -> the `masks` section of train.json
    "defaults (add_noise 0.5, rings to Nyquist, ring 0 kept)": {},
    "replace fill (noise 0.5)": {"spatial": {"fill": "noise"}},
    "previous (replace 0.75, rings to sqrt 2, no ring kept)": {
        "spatial": {"fill": "noise", "ratio": 0.75},
        "frequency": {"max_radius": 1.4143, "protect_low_bands": 0},
    },
    "fine (8 px patches, 16 rings, 2 kept)": {"spatial": {"patch_size": 8}, "frequency": {"num_bands": 16, "protect_low_bands": 2}},
}  # fmt: skip
WEIGHTINGS = {  # name -> the `consistency` section
    "views, rank": {},
    "views, rank x token spread": {"content": "token_spread"},
    "clean, rank": {"reading": "clean"},
    "clean, rank x token spread": {"reading": "clean", "content": "token_spread"},
    "views, softmax T0.1 (previous)": {"mapping": "softmax", "temperature": 0.1},
}


def pool_tensor(n: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    pool = build_junk_pool(n, IMG, seed)
    x = torch.stack(
        [torch.from_numpy(np.repeat(i[None], 3, 0) if i.ndim == 2 else i.transpose(2, 0, 1)) for i in pool.images]
    )
    return x, np.array([t["type"] for t in pool.truth])


@torch.no_grad()
def measure(teacher: FrozenTeacher, x: torch.Tensor, types: np.ndarray, masks: dict, draws: int, seed: int) -> dict:
    """Weights of every weighting for every (draw, image), then the three measurements per weighting."""
    n = len(x) // 16 * 16
    batches = np.random.default_rng(seed).permutation(len(x))[:n].reshape(-1, 16)
    masker = DomainMasker.from_settings({**masks, "hflip_prob": 0.0}, seed=seed)
    weightings = {k: ConsistencyWeighting(**{**v, "schedule": "constant"}) for k, v in WEIGHTINGS.items()}
    weights = {k: np.zeros((draws, len(x)), np.float32) for k in weightings}
    ess = {k: [] for k in weightings}
    for r in range(draws):
        for idx in batches:
            clean = normalize_on_device(x[idx])
            views = masker(clean)
            h = {name: teacher(v[0])["final"] for name, v in views.items()}
            h[CLEAN] = teacher(clean)["final"]
            for k, cw in weightings.items():
                w = cw(h if cw.reading == "clean" else {n: h[n] for n in views}, 1.0)
                ess[k].append(float(effective_sample_size(w).mean()))
                weights[k][r, idx] = w.mean(0).numpy()  # one weight per image (views averaged)
    out = {}
    for k, w in weights.items():
        w = w[:, batches.ravel()]
        t = types[batches.ravel()]
        keep, positive = np.isin(t, ("clean",) + JUNK), t[np.isin(t, ("clean",) + JUNK)] != "clean"
        out[k] = {
            "ess": float(np.mean(ess[k])),
            "variance_share_draw": float(w.var(0).mean() / max(w.var(), 1e-12)),
            "junk_auroc_single_draw": float(np.mean([auroc_low(w[r][keep], positive) for r in range(draws)])),
            "junk_auroc_mean_of_draws": auroc_low(w.mean(0)[keep], positive),
            "mean_weight_by_type": {ty: float(w[:, t == ty].mean()) for ty in np.unique(t)},
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=800)
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--pool-seed", type=int, default=0)
    ap.add_argument("--teacher", action="append", default=[], help="NAME=PATH of a pretrained small teacher")
    ap.add_argument("--masks", default=",".join(MASKS), help="comma-separated prefixes of the mask settings")
    ap.add_argument("--out", default="runs/consistency_weighting.json")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    fix_threads(args.threads)
    x, types = pool_tensor(args.images, args.pool_seed)
    teachers = [("random", "")] + [tuple(t.split("=", 1)) for t in args.teacher]
    chosen = [m for m in MASKS if any(m.startswith(p.strip()) for p in args.masks.split(","))]
    results = []
    for name, path in teachers:
        torch.manual_seed(0)
        teacher = FrozenTeacher(build(small_teacher_def(IMG)), path or None, [], [])
        for mask_name in chosen:
            t0 = time.time()
            for weighting, r in measure(teacher, x, types, MASKS[mask_name], args.draws, args.pool_seed).items():
                results.append({"teacher": name, "masks": mask_name, "weighting": weighting, **r})
            print(f"  {name} / {mask_name}: {time.time() - t0:.0f} s", flush=True)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"\n{args.images} junk-pool frames (seed {args.pool_seed}), {args.draws} mask draws each, batches of 16")
    print("| teacher | masks | weighting | ESS/batch (>= 0.7) | var. share from draw (<= 0.2) | junk AUROC single draw "
          "/ mean of draws (>= 0.75) |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['teacher']} | {r['masks']} | {r['weighting']} | {r['ess']:.2f} | {r['variance_share_draw']:.2f} | "
            f"{r['junk_auroc_single_draw']:.2f} / {r['junk_auroc_mean_of_draws']:.2f} |"
        )


if __name__ == "__main__":
    main()
