"""The distillation ablation: does each part of the method help? One command, prints the tables, writes JSON.

Everything runs through the bundle's own configs (ConfigParser over coreset.json and train.json, as
`monai.bundle run` does), on a junk phantom pool (`data.phantom_junk`: ~36 % blank, dim, saturated, noise, overlay,
air frames, frozen runs and cine bursts), with a teacher that knows the phantom: a STAND-IN teacher
(`distillation.standin`, a small USFM-architecture network supervised on phantom labels; the MIM teacher that
pretrain.json trains on a CPU does not beat the vanilla student, see benchmarks/teacher_probe.py). `--standin`:
`shared` (labels of mmotu, fetal planes, tn3k: the phantom gives every task's class c the same recipe, so this
teacher has seen the probe tasks' concepts) or `disjoint` (recipes no probe task uses; its heads are at chance on
the probe tasks, tests/test_distillation_standin.py).

Arms, each a TinyUSFM student trained for the same number of steps (`--steps`, batch 16):
  vanilla               no teacher: reconstruction only (`distill#feature_weight 0`, `distill#attn_weight 0`), full pool
  random_teacher        distilled from a randomly initialised teacher of the same architecture, full pool
  full_pool             distilled from the teacher, whole pool, consistency weighting
  random_subset         ... on a random subset of `--budget` of the pool (`coreset#strategy random`)
  coreset               ... on the coreset of `--budget` (coreset.json defaults: strategy composite, ours)
  coreset_no_weighting  coreset without consistency weighting (`consistency#enabled false`)
  spatial_only          coreset, spatial mask only (`masks#frequency_enabled false`)
  frequency_only        coreset, frequency mask only (`masks#spatial_enabled false`)

Evaluation on held-out phantom tasks (aul, stmus, uf1990, cubs; fresh images per seed): linear probe and kNN on the
frozen pooled feature, and a short few-label fine-tune (8 labels per class, 40 steps). Seeds (`--seeds`) are
paired: within a seed every arm shares the pool, the teacher, the probe data, the student's initial weights and the
mask generator's seed. Across seeds the probe data, the initial weights and the masks change, and with `redraw`
(the report and full tiers) the junk pool and the stand-in teacher too (pool seed 1000 + seed, teacher trained with
the seed), so the intervals cover the teacher and the pool. Paired differences get a 95 % t-interval over seeds
(each seed's value is its mean over the four tasks) and Holm-adjusted p-values over all the table's comparisons
(their number is printed). The consistency ESS printed beside the arms follows from the rank mapping's floor and is
about the same for every teacher: a property of the design, not a finding. Fixed thread count.

Tiers: `--tier quick` (default; 64 px, 2,000-frame pool, 250 steps, 5 seeds, teacher and pool fixed, the `shared`
stand-in, 2 jobs of 1 thread each: <= 45 min on an idle 2-core machine; QUICK, not a basis for claims),
`--tier report` (the quick sizes, 10 seeds, teacher and pool re-drawn per seed, the `disjoint` stand-in: the tier
for claims; ~3 h of 2 CPU cores) and `--tier full` (for a GPU: 112 px, 20,000 frames, 3,000 steps of batch 64, 10
seeds, re-drawn).
Per-seed, per-task results go to `<work>/cells/<arm>_<seed>.json` and all of them to `<work>/results.json`; a rerun
reuses finished cells.

    nice -n 5 python benchmarks/distillation_ablation.py                 # quick tier, prints the tables
    python benchmarks/distillation_ablation.py --tier full --device cuda  # on a GPU
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from phantom_eval import METRICS, PROBE_TASKS, evaluate, fix_threads, holm, paired_t, probe_suite  # noqa: E402

from tinyusfm_monai.distillation.standin import build, small_teacher_def, train_standin_teacher  # noqa: E402
from tinyusfm_monai.networks import TinyUSFM, load_pretrained  # noqa: E402

CONFIGS = ROOT / "bundles" / "tinyusfm_distillation" / "configs"
TIERS = {
    "quick": dict(
        image_size=64, pool=2000, steps=250, batch=16, seeds=5, threads=1, jobs=2, standin_steps=600, width=192,
        redraw=False, standin="shared",
    ),
    "report": dict(
        image_size=64, pool=2000, steps=250, batch=16, seeds=10, threads=1, jobs=2, standin_steps=600, width=192,
        redraw=True, standin="disjoint",
    ),
    "full": dict(
        image_size=112, pool=20000, steps=3000, batch=64, seeds=10, threads=8, jobs=1, standin_steps=3000, width=384,
        redraw=True, standin="disjoint",
    ),
}  # fmt: skip
FIXED_POOL_SEED = 3  # the pool of the tiers without redraw
ARMS = {
    "vanilla": {"distill#feature_weight": 0.0, "distill#attn_weight": 0.0},
    "random_teacher": {"teacher_weights": ""},
    "full_pool": {},
    "random_subset": {"@subset": "random"},
    "coreset": {"@subset": "composite"},
    "coreset_no_weighting": {"@subset": "composite", "consistency#enabled": False},
    "spatial_only": {"@subset": "composite", "masks#frequency_enabled": False},
    "frequency_only": {"@subset": "composite", "masks#spatial_enabled": False},
}
EPOCH_LENGTH = 50
COMPARISONS = [
    ("full_pool", "vanilla", "distillation vs no teacher"),
    ("full_pool", "random_teacher", "a teacher that knows the phantom vs a random one"),
    ("coreset", "random_subset", "coreset vs random subset (same budget)"),
    ("coreset", "full_pool", "coreset vs full pool (same steps)"),
    ("coreset", "coreset_no_weighting", "consistency weighting"),
    ("coreset", "spatial_only", "both masks vs spatial only"),
    ("coreset", "frequency_only", "both masks vs frequency only"),
    ("coreset", "vanilla", "the whole method vs no teacher"),
]


class Setup:
    """The tier's pool and teacher: one for all seeds, or one per seed (`redraw`); prepared once, on first use."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(args.work)
        self.img = args.image_size
        self.teacher_def = small_teacher_def(self.img, args.width, 6, args.width // 32)

    def folder(self, seed: int) -> Path:
        return self.work / f"seed{seed}" if self.args.redraw else self.work

    def pool(self, seed: int) -> tuple[Path, Path]:
        """(datalist, manifest) of the seed's junk pool."""
        from tinyusfm_monai.data.phantom import ensure_pool
        from tinyusfm_monai.distillation.pool import build_manifest

        pool_seed = 1000 + seed if self.args.redraw else FIXED_POOL_SEED
        datalist = ensure_pool(
            cache_dir=self.work / "pools", junk=True, n=self.args.pool, image_size=self.img, seed=pool_seed
        )
        manifest = self.folder(seed) / "pool_manifest.json"
        if not manifest.is_file():
            manifest.parent.mkdir(parents=True, exist_ok=True)
            build_manifest([datalist], manifest)
        return datalist, manifest

    def teacher(self, seed: int) -> Path:
        """The seed's stand-in teacher (trained with the seed when re-drawn, else with seed 0)."""
        kind = self.args.standin
        name = "teacher_standin.pth" if kind == "shared" else f"teacher_standin_{kind}.pth"
        path = self.folder(seed) / name
        if not path.is_file():
            t0 = time.time()
            path.parent.mkdir(parents=True, exist_ok=True)
            train_standin_teacher(
                path, self.img, self.args.standin_steps, definition=self.teacher_def, device=self.args.device,
                seed=seed if self.args.redraw else 0, data_seed=seed + 1 if self.args.redraw else 1, kind=kind,
            )  # fmt: skip
            print(f"stand-in teacher ({kind}) of seed {seed} trained in {time.time() - t0:.0f} s", flush=True)
        return path

    def base(self, seed: int) -> dict:
        datalist, manifest = self.pool(seed)
        return {
            "image_size": self.img,
            "phantom_pool_size": 0,
            "dataset_dir": str(datalist),
            "manifest": str(manifest),
            "pool_images#out_dir": str(self.work / "pool_images"),
            "teacher_def": self.teacher_def,
            "teacher_weights": str(self.teacher(seed)),
            "seed": seed,
            "device": f"$torch.device('{self.args.device}')",
            "amp": self.args.device.startswith("cuda"),
            "num_workers": self.args.workers,
        }

    def subset(self, strategy: str, seed: int) -> str:
        """The coreset (or random subset) datalist of this seed, made by coreset.json."""
        from monai.bundle import ConfigParser
        from monai.utils import set_determinism

        out = self.work / f"seed{seed}" / f"coreset_{strategy}"
        datalist = out / "coreset_datalist.json"
        if datalist.is_file():
            return str(datalist)
        parser = ConfigParser()
        parser.read_config(str(CONFIGS / "coreset.json"))
        parser.update(
            {
                **self.base(seed),
                "bundle_root": str(self.work / f"seed{seed}"),
                "coreset_dir": str(out),
                "coreset#strategy": strategy,
                "coreset#budget": self.args.budget,
                "coreset#batch_size": 128,
            }
        )
        set_determinism(seed)
        result = parser.get_parsed_content("coreset_selector").run()
        if result.get("diagnostics"):
            (out / "diagnostics_summary.txt").write_text(result["diagnostics"]["text"])
        return str(datalist)

    def train(self, arm: str, seed: int) -> tuple[torch.nn.Module, dict]:
        from monai.bundle import ConfigParser
        from monai.utils import set_determinism

        overrides = dict(ARMS[arm])
        subset = overrides.pop("@subset", None)
        datalist = self.subset(subset, seed) if subset else ""
        n_items = len(json.loads(Path(datalist).read_text())["training"]) if datalist else self.args.pool
        epoch_length = min(EPOCH_LENGTH, self.args.steps)  # fixed "epochs" of 50 steps: every arm the same steps
        epochs = max(1, math.ceil(self.args.steps / epoch_length))
        total = epochs * epoch_length
        parser = ConfigParser()
        parser.read_config(str(CONFIGS / "train.json"))
        parser.update(
            {
                **self.base(seed),
                "bundle_root": str(self.work / f"seed{seed}" / arm),
                "resume": False,
                "coreset_datalist": datalist,
                "distill#teacher_layers": [1, 3, 5],  # the 6-block teacher's blocks matched to student 3, 7, 11
                "distill#teacher_attn_layers": [5],
                "batch_size": self.args.batch,
                "base_lr": self.args.base_lr,
                "max_epochs": epochs,
                "train#trainer#epoch_length": epoch_length,
                "lr_scheduler#t_total": total,
                "lr_scheduler#warmup_steps": int(0.1 * total),
                # the diagnostics handler only (no checkpoint, export, logging): rank0_handlers[2]
                "train#trainer#train_handlers": "$@train#handlers[1:] + [@train#rank0_handlers#2]",
                **overrides,
            }
        )
        set_determinism(seed)
        t0 = time.time()
        trainer = parser.get_parsed_content("train#trainer")
        trainer.run()
        diag = parser.get_parsed_content("train#rank0_handlers#2").history
        info = {"steps": trainer.state.iteration, "train_seconds": time.time() - t0, "data": n_items}
        info["consistency"] = diag[-1] if diag else None
        return parser.get_parsed_content("network").cpu(), info


def _cell_path(work: Path, name: str) -> Path:
    return work / "cells" / f"{name}.json"


def run_seeds(args: argparse.Namespace, seeds: list[int]) -> None:
    """Train and evaluate every arm of `seeds` in this process; each finished cell is its own JSON file (so
    parallel jobs never write the same file and a rerun skips what is done)."""
    setup = Setup(args)
    work = Path(args.work)
    arms = [a for a in args.arms.split(",") if a]
    t_all = time.time()
    for seed in seeds:
        suite = probe_suite(setup.img, 100 + seed)
        ref_path = _cell_path(work, f"references_{seed}")
        if not ref_path.is_file():
            torch.manual_seed(seed)
            teacher = build(setup.teacher_def)
            load_pretrained(teacher, setup.teacher(seed))
            torch.manual_seed(seed)
            refs = {
                "teacher (stand-in)": evaluate(teacher, suite, ("linear_probe", "knn"), seed),
                "random-init student": evaluate(TinyUSFM(img_size=setup.img), suite, METRICS, seed),
            }
            ref_path.parent.mkdir(parents=True, exist_ok=True)
            ref_path.write_text(json.dumps(refs, indent=1))
        for arm in arms:
            path = _cell_path(work, f"{arm}_{seed}")
            if path.is_file():
                continue
            student, info = setup.train(arm, seed)
            scores = evaluate(student, suite, METRICS, seed)
            path.write_text(json.dumps({"arm": arm, "seed": seed, **info, "scores": scores}, indent=1))
            print(
                f"seed {seed} {arm:22s} probe {scores['linear_probe']['mean']:.3f} kNN {scores['knn']['mean']:.3f} "
                f"few-label {scores['few_label_finetune']['mean']:.3f} ({info['steps']} steps, "
                f"{info['train_seconds']:.0f} s; this job {time.time() - t_all:.0f} s)",
                flush=True,
            )


def run(args: argparse.Namespace) -> dict:
    """All seeds: in this process (`--jobs 1`) or split over `--jobs` child processes with `--threads` each."""
    if not args.redraw:  # the one pool and teacher, before any job starts (re-drawn ones: by the job of their seed)
        setup = Setup(args)
        setup.pool(args.seeds[0])
        setup.teacher(args.seeds[0])
    if args.jobs <= 1:
        run_seeds(args, args.seeds)
    else:
        procs = []
        for j in range(args.jobs):
            part = args.seeds[j :: args.jobs]
            if not part:
                continue
            seeds = ",".join(map(str, part))
            cmd = [sys.executable, __file__, *sys.argv[1:], "--seeds", seeds, "--jobs", "1", "--job-only"]
            procs.append(subprocess.Popen(cmd))
        if any(p.wait() for p in procs):
            raise SystemExit("an ablation job failed")
    return collect(Path(args.work), args)


def collect(work: Path, args: argparse.Namespace | None = None) -> dict:
    cells, refs = {}, {}
    for path in sorted((work / "cells").glob("*.json")):
        data = json.loads(path.read_text())
        if path.stem.startswith("references_"):
            refs[path.stem.split("_", 1)[1]] = data
        else:
            cells[f"{data['arm']}/{data['seed']}"] = data
    results = {"cells": cells, "references": refs}
    config_path = work / "config.json"
    if args is not None:
        config_path.write_text(json.dumps({k: v for k, v in vars(args).items() if k != "report"}, indent=1))
    if config_path.is_file():
        results["config"] = json.loads(config_path.read_text())
    return results


def report(results: dict, seeds: list[int]) -> None:
    cells = results["cells"]
    arms = [a for a in ARMS if all(f"{a}/{s}" in cells for s in seeds)]
    cfg = results.get("config", {})
    redraw = "teacher and pool re-drawn per seed" if cfg.get("redraw") else "teacher and pool FIXED across seeds"
    print(
        f"\nDistillation ablation ({cfg.get('tier')} tier): {cfg.get('image_size')} px, junk pool of "
        f"{cfg.get('pool')}, budget {cfg.get('budget')}, {cfg.get('steps')} steps of batch {cfg.get('batch')}, "
        f"{len(seeds)} paired seeds, {redraw}, stand-in teacher {cfg.get('standin')!r}, {cfg.get('jobs')} job(s) of "
        f"{cfg.get('threads')} thread(s); held-out tasks: {', '.join(PROBE_TASKS)}"
    )
    if cfg.get("tier") == "quick" or len(seeds) < 10 or not cfg.get("redraw"):
        print("QUICK TIER: fewer than 10 seeds or teacher and pool fixed: not a basis for claims (--tier report)")

    def per_seed(arm: str, metric: str) -> list[float]:
        return [cells[f"{arm}/{s}"]["scores"][metric]["mean"] for s in seeds]

    print("| arm | linear probe | kNN | few-label fine-tune | consistency ESS (junk AUROC) | train s |")
    print("|---|---|---|---|---|---|")
    for name in ("teacher (stand-in)", "random-init student"):
        refs = [results["references"][str(s)][name] for s in seeds if str(s) in results["references"]]
        vals = [f"{np.mean([r[m]['mean'] for r in refs]):.3f}" if refs and m in refs[0] else "–" for m in METRICS]
        print(f"| *{name}* | " + " | ".join(vals) + " | – | – |")
    for arm in arms:
        vals = [per_seed(arm, m) for m in METRICS]
        cons = [cells[f"{arm}/{s}"].get("consistency") for s in seeds]
        cons = [c for c in cons if c]
        ess = (
            f"{np.mean([c['ess'] for c in cons]):.2f} ({np.mean([c.get('junk_auroc', np.nan) for c in cons]):.2f})"
            if cons
            else "–"
        )
        secs = np.mean([cells[f"{arm}/{s}"]["train_seconds"] for s in seeds])
        print(
            f"| {arm} | " + " | ".join(f"{np.mean(v):.3f} ± {np.std(v):.3f}" for v in vals) + f" | {ess} | {secs:.0f} |"
        )
    summary = {}
    for a, b, _ in COMPARISONS:
        if a in arms and b in arms:
            summary[f"{a} - {b}"] = {m: paired_t(per_seed(a, m), per_seed(b, m)) for m in METRICS}
    family = [(k, m) for k in summary for m in METRICS]
    for (k, m), p in zip(family, holm([summary[k][m]["p"] for k, m in family])):
        summary[k][m]["p_holm"] = p
    print(
        f"\nPaired differences, 95 % t-interval over {len(seeds)} seeds; {len(family)} comparisons, "
        "* = Holm-adjusted p < 0.05 (unadjusted intervals)"
    )
    print("| comparison | what it tests | linear probe | kNN | few-label fine-tune |")
    print("|---|---|---|---|---|")
    for a, b, what in COMPARISONS:
        if f"{a} - {b}" in summary:
            cis = summary[f"{a} - {b}"]
            print(f"| {a} − {b} | {what} | " + " | ".join(fmt_t(cis[m]) for m in METRICS) + " |")
    print("consistency ESS: set by the rank mapping's floor, about the same for every teacher (a design property)")
    results["comparisons"] = summary


def fmt_t(ci: dict[str, float]) -> str:
    mark = " *" if ci.get("p_holm", 1.0) < 0.05 else ""
    return f"{ci['diff']:+.3f} [{ci['lo']:+.3f}, {ci['hi']:+.3f}]{mark}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tier", choices=sorted(TIERS), default="quick")
    ap.add_argument("--work", default="")
    ap.add_argument("--seeds", default="", help="comma-separated (default: 0..n-1 of the tier)")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--budget", type=float, default=0.25)
    ap.add_argument("--base-lr", type=float, default=4e-3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--standin", choices=("shared", "disjoint"), default=None, help="stand-in teacher (tier default)")
    for key in ("image_size", "pool", "steps", "batch", "threads", "standin_steps", "width", "jobs"):
        ap.add_argument(f"--{key.replace('_', '-')}", type=int, default=None)
    ap.add_argument("--report", action="store_true", help="only print the tables of the cached results")
    ap.add_argument("--job-only", action="store_true", help=argparse.SUPPRESS)  # a child of --jobs: no tables
    args = ap.parse_args()
    for key, value in TIERS[args.tier].items():
        if key != "seeds" and getattr(args, key, None) is None:
            setattr(args, key, value)
    args.seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(range(TIERS[args.tier]["seeds"]))
    args.work = args.work or f"runs/distillation_ablation_{args.tier}"
    fix_threads(args.threads)
    t0 = time.time()
    if args.job_only:
        run_seeds(args, args.seeds)
        return
    results = collect(Path(args.work)) if args.report else run(args)
    report(results, args.seeds)
    (Path(args.work) / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\nwhole run {time.time() - t0:.0f} s; per-seed, per-task results: {Path(args.work) / 'results.json'}")


if __name__ == "__main__":
    main()
