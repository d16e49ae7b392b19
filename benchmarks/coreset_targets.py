"""Does the coreset remove junk and redundancy and keep coverage? The product coreset.json on junk phantom pools.

For each junk pool (`--pools` seeds, `--n` frames at 64 px, the default junk rates: ~36 % junk incl. blank, dim,
saturated, noise, overlay, air frames, frozen runs and cine bursts), each teacher and each budget, the bundle's
coreset.json runs with its defaults (ConfigParser, as `monai.bundle run` does) and its own evaluation-only
diagnostics are collected. Targets (issue 12): junk share <= 1/3 of random's; at most one frame of any frozen run
or burst; every organ >= 80 % of the coverage random selection gives (distinct scenes, pooled over the pools).

Teachers: `random` (the small USFM-architecture teacher, random init), and any pretrained one given as
`--teacher NAME=PATH` (official layout, the same small architecture), e.g. the MIM teacher of pretrain.json and
the supervised stand-in written by benchmarks/teacher_probe.py.

    nice -n 5 python benchmarks/coreset_targets.py --work runs/coreset_targets \\
        --teacher mim=runs/teacher_probe/mim_0/models/teacher_pretrained.pth --teacher standin=runs/teacher_probe/standin_0.pth
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from phantom_eval import fix_threads  # noqa: E402

from tinyusfm_monai.distillation.standin import small_teacher_def  # noqa: E402

CORESET = ROOT / "bundles" / "tinyusfm_distillation" / "configs" / "coreset.json"
IMG = 64


def coreset_parser(
    work: Path, root: Path, coreset_dir: Path, seed: int, n: int, weights: str, budget: float, overrides: dict
):
    """The distillation bundle's coreset.json on a junk phantom pool of `n` frames (pool `seed`) with the small test
    teacher at `weights` ("random" = a fresh one), selecting `budget` of it into `coreset_dir`."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CORESET))
    parser.update(
        {
            "bundle_root": str(root),
            "image_size": IMG,
            "phantom_pool_size": n,
            "phantom_junk": True,
            "dataset_dir": str(work / "pools"),
            "pool_images#out_dir": str(work / "pool_images"),
            "seed": seed,
            "teacher_def": small_teacher_def(IMG),
            "teacher_weights": weights,
            "coreset#budget": budget,
            "coreset_dir": str(coreset_dir),
            **overrides,
        }
    )
    return parser


def run_coreset(work: Path, pool_seed: int, n: int, teacher: str, weights: str, budget: float, extra: dict) -> dict:
    from monai.utils import set_determinism

    root = work / f"pool{pool_seed}_{teacher}"
    parser = coreset_parser(work, root, root / f"coreset_{budget}", pool_seed, n, weights, budget, extra)
    set_determinism(pool_seed)  # a random teacher is a fresh one per pool, seeded by it
    t0 = time.time()
    result = parser.get_parsed_content("coreset_selector").run()
    return {**result["diagnostics"], "seconds": time.time() - t0, "timings": result["timings"]}


def summarise(rows: list[dict]) -> None:
    print("\n| teacher | budget | junk share (random) | ratio (target <= 0.33) | max copies per run (target 1) | "
          "worst organ coverage vs random, pooled (target >= 0.8) | selected junk by type |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    keys = sorted({(r["teacher"], r["budget"]) for r in rows}, key=lambda k: (k[0], k[1]))
    for teacher, budget in keys:
        rs = [r for r in rows if r["teacher"] == teacher and r["budget"] == budget]
        junk = np.mean([r["junk_share"] for r in rs])
        rand = np.mean([r["junk_share_random"] for r in rs])
        copies = max(r["max_copies_per_run"] for r in rs)
        organs = rs[0]["coverage"]["organ"]
        pooled = {
            o: sum(r["coverage"]["organ"][o]["selected"] for r in rs)
            / sum(r["coverage"]["organ"][o]["random_expected"] for r in rs)
            for o in organs
        }
        worst = min(pooled, key=pooled.get)
        by_type: dict[str, int] = {}
        for r in rs:
            for t, c in r["selected_by_type"].items():
                if t != "clean":
                    by_type[t] = by_type.get(t, 0) + c
        types = ", ".join(f"{t} {c}" for t, c in sorted(by_type.items()))
        print(
            f"| {teacher} | {budget:.0%} | {junk:.3f} ({rand:.3f}) | {junk / rand:.2f} | {copies} | "
            f"{pooled[worst]:.2f} ({worst}) | {types} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/coreset_targets")
    ap.add_argument("--pools", default="0,1")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--budgets", default="0.1,0.25")
    ap.add_argument("--teacher", action="append", default=[], help="NAME=PATH of a pretrained small teacher")
    ap.add_argument("--no-random", action="store_true", help="skip the random-init teacher")
    ap.add_argument("--override", default="{}", help="JSON of extra coreset.json overrides (a variant)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    fix_threads(args.threads)
    work = Path(args.work)
    teachers = ([] if args.no_random else [("random", "")]) + [tuple(t.split("=", 1)) for t in args.teacher]
    extra = json.loads(args.override)
    rows = []
    out = work / "results.json"
    if out.is_file():
        rows = json.loads(out.read_text())
    done = {(r["pool"], r["teacher"], r["budget"], json.dumps(r["override"])) for r in rows}
    for pool_seed in (int(s) for s in args.pools.split(",")):
        for name, weights in teachers:
            for budget in (float(b) for b in args.budgets.split(",")):
                if (pool_seed, name, budget, json.dumps(extra)) in done:
                    continue
                r = run_coreset(work, pool_seed, args.n, name, weights, budget, extra)
                rows.append({"pool": pool_seed, "teacher": name, "budget": budget, "override": extra, **r})
                print(f"pool {pool_seed} {name} {budget}: {r['text']} ({r['seconds']:.0f} s)", flush=True)
                out.write_text(json.dumps(rows, indent=1))
    summarise([r for r in rows if r["override"] == extra])


if __name__ == "__main__":
    main()
