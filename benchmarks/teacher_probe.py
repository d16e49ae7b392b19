"""Is the teacher worth distilling? Linear probe (and kNN) of teachers vs the vanilla student on held-out phantom
tasks, with the PRODUCT pretraining config (bundles/tinyusfm_distillation/configs/pretrain.json).

Arms (each trained once per model seed; `--seeds`):
* mim:        small USFM-architecture teacher (192 wide, 6 blocks, 6 heads) pretrained by pretrain.json
              (spatial noise addition + frequency band-stop MIM, 2-block decoder), `--epochs` over a clean phantom
              pool of `--pool` images at 64 px, batch 64 (5 epochs of 8,000 = 625 steps);
* vanilla:    TinyUSFM pretrained by the same config, recipe, data and steps (what a student learns without a
              teacher);
* standin:    the STAND-IN teacher (`distillation.standin`: same small architecture, supervised on phantom mmotu,
              fetal planes and tn3k, `--standin-steps` steps): not a method, a stand-in for USFM's knowledge;
* standin_disjoint: the same, supervised only on lesion recipes no probe task uses (`kind="disjoint"`: the phantom
              gives every task's class c the same recipe, so `standin` has seen the probes' class concepts);
* random_teacher / random_student: untrained references.

Each model is probed on `--probe-seeds` freshly rendered suites of aul, stmus, uf1990, cubs (80 train / 100 test
each). Paired differences are bootstrapped over the (model seed, probe seed) units, each averaged over the four
tasks. Results per (arm, seed) are cached in the work folder, so seeds can run in parallel processes
(`--seeds 0` and `--seeds 1` side by side, then `--report`).

    nice -n 5 python benchmarks/teacher_probe.py --work runs/teacher_probe --seeds 0,1,2
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

from phantom_eval import evaluate, fix_threads, fmt_ci, paired_ci, probe_suite  # noqa: E402

from tinyusfm_monai.distillation.standin import build, small_teacher_def, train_standin_teacher  # noqa: E402
from tinyusfm_monai.networks import TinyUSFM, load_pretrained  # noqa: E402

PRETRAIN = ROOT / "bundles" / "tinyusfm_distillation" / "configs" / "pretrain.json"
ARMS = ("mim", "vanilla", "standin", "standin_disjoint", "random_teacher", "random_student")
IMG = 64


def prepare_pool(work: Path, n: int) -> tuple[Path, Path]:
    from tinyusfm_monai.data.phantom import generate_pool
    from tinyusfm_monai.distillation.pool import build_manifest

    datalist = work / "pool" / "datalist.json"
    if not datalist.is_file():
        generate_pool(work / "pool", n=n, image_size=IMG, seed=11)
    manifest = work / "pool_manifest.json"
    if not manifest.is_file():
        build_manifest([datalist], manifest)
    return datalist, manifest


def pretrain(work: Path, name: str, definition: dict, seed: int, epochs: int, pool: tuple[Path, Path]) -> Path:
    """Run pretrain.json in this process (ConfigParser, as `monai.bundle run` does); returns the export."""
    from monai.bundle import ConfigParser
    from monai.utils import set_determinism

    root = work / f"{name}_{seed}"
    export = root / "models" / "teacher_pretrained.pth"
    if export.is_file():
        return export
    parser = ConfigParser()
    parser.read_config(str(PRETRAIN))
    parser.update(
        {
            "bundle_root": str(root),
            "image_size": IMG,
            "phantom_pool_size": 0,
            "dataset_dir": str(pool[0]),
            "manifest": str(pool[1]),
            "pool_images#out_dir": str(work / "pool_images"),
            "teacher_def": definition,
            "batch_size": 64,
            "max_epochs": epochs,
            "seed": seed,
            "train#trainer#train_handlers": "$@train#handlers + [@train#rank0_handlers#1]",  # export, no logs
        }
    )
    set_determinism(seed)
    t0 = time.time()
    trainer = parser.get_parsed_content("train#trainer")
    trainer.run()
    print(f"  {name} seed {seed}: pretrained {trainer.state.iteration} steps in {time.time() - t0:.0f} s", flush=True)
    return export


def model_for(arm: str, seed: int, work: Path, args) -> tuple[torch.nn.Module, float]:
    t0 = time.process_time()  # CPU seconds of this (single-threaded) process: what a busy machine does not inflate
    teacher_def = small_teacher_def(IMG)
    if arm == "random_student":
        torch.manual_seed(seed)
        return TinyUSFM(img_size=IMG), 0.0
    if arm == "random_teacher":
        torch.manual_seed(seed)
        return build(teacher_def), 0.0
    if arm in ("standin", "standin_disjoint"):
        path = work / f"{arm}_{seed}.pth"
        if not path.is_file():
            kind = "disjoint" if arm == "standin_disjoint" else "shared"
            train_standin_teacher(path, IMG, steps=args.standin_steps, seed=seed, kind=kind)
        net = build(teacher_def)
    else:
        pool = prepare_pool(work, args.pool)
        definition = teacher_def if arm == "mim" else {"_target_": "tinyusfm_monai.networks.TinyUSFM", "img_size": IMG}
        path = pretrain(work, arm, definition, seed, args.epochs, pool)
        net = build(definition)
    load_pretrained(net, path)
    return net.eval(), time.process_time() - t0


def run_arm(arm: str, seed: int, work: Path, args) -> dict:
    cache = work / "results" / f"{arm}_{seed}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    model, seconds = model_for(arm, seed, work, args)
    per_probe = {}
    for ps in args.probe_seeds:
        per_probe[str(ps)] = evaluate(model, probe_suite(IMG, ps), ("linear_probe", "knn"), seed=ps)
    result = {"arm": arm, "seed": seed, "train_cpu_seconds": seconds, "threads": args.threads, "probe": per_probe}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(result, indent=1))
    lp = np.mean([v["linear_probe"]["mean"] for v in per_probe.values()])
    print(f"  {arm} seed {seed}: linear probe {lp:.3f}", flush=True)
    return result


def report(work: Path, seeds: list[int]) -> dict:
    results = {(r["arm"], r["seed"]): r for r in map(json.loads, map(Path.read_text, work.glob("results/*.json")))}
    arms = [a for a in ARMS if all((a, s) in results for s in seeds)]

    def units(arm: str, metric: str) -> list[float]:
        return [
            results[(arm, s)]["probe"][p][metric]["mean"] for s in seeds for p in sorted(results[(arm, s)]["probe"])
        ]

    print(f"\nHeld-out phantom tasks (aul, stmus, uf1990, cubs), 64 px; {len(seeds)} model seeds x probe seeds")
    print("| model | linear probe | kNN | CPU s to train (1 thread; wall s in older cells) |")
    print("|---|---|---|---|")
    for arm in arms:
        lp, kn = units(arm, "linear_probe"), units(arm, "knn")
        secs = np.mean(
            [results[(arm, s)].get("train_cpu_seconds", results[(arm, s)].get("train_seconds")) for s in seeds]
        )
        print(f"| {arm} | {np.mean(lp):.3f} ± {np.std(lp):.3f} | {np.mean(kn):.3f} | {secs:.0f} |")
    comparisons = [
        ("mim", "vanilla"),
        ("standin", "vanilla"),
        ("standin_disjoint", "vanilla"),
        ("vanilla", "random_student"),
        ("mim", "random_teacher"),
    ]
    out = {}
    print("\n| paired difference (95 % bootstrap CI over model seed x probe seed units) | linear probe | kNN |")
    print("|---|---|---|")
    for a, b in comparisons:
        if a in arms and b in arms:
            lp = paired_ci(units(a, "linear_probe"), units(b, "linear_probe"))
            kn = paired_ci(units(a, "knn"), units(b, "knn"))
            out[f"{a} - {b}"] = {"linear_probe": lp, "knn": kn}
            print(f"| {a} − {b} | {fmt_ci(lp)} | {fmt_ci(kn)} |")
    print("(* = the interval excludes 0)")
    (work / "report.json").write_text(json.dumps(out, indent=1))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/teacher_probe")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--probe-seeds", default="2,3,4")
    ap.add_argument("--pool", type=int, default=8000)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--standin-steps", type=int, default=600)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--report", action="store_true", help="only print the table of what is cached")
    args = ap.parse_args()
    fix_threads(args.threads)
    args.probe_seeds = [int(s) for s in args.probe_seeds.split(",")]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    if not args.report:
        for seed in seeds:
            for arm in args.arms.split(","):
                run_arm(arm, seed, work, args)
    report(work, seeds)


if __name__ == "__main__":
    main()
