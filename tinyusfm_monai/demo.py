"""The README's main job (`make demo`): the paper's pipeline at miniature scale, end to end on embedded data.

1. A teacher that knows the phantom. No USFM weights can be downloaded here, and the masked-image-model teacher
   that `configs/pretrain.json` trains in CPU minutes does not beat the vanilla student (README), so the demo uses
   the clearly labelled STAND-IN (`distillation.standin`): a small USFM-architecture network supervised on phantom
   tasks other than the demo's (mmotu, fetal planes, tn3k), standing for what USFM learnt from 2M images.
2. The distillation bundle with the real `python -m monai.bundle run` commands: `coreset.json` selects a quarter of
   a junk phantom pool (blank, frozen, burst, noisy, overlay, air frames among the clean ones) and prints how it
   did; `train.json` distils TinyUSFM from the teacher on that coreset (consistency-weighted, both masks), and the
   same config with the teacher switched off (`distill#feature_weight 0`, `distill#attn_weight 0`) trains the
   vanilla student on the same data for the same steps.
3. `busi_classification` and `busi_segmentation` fine-tuned (`--pretrained`) from the distilled student and from
   the vanilla one, each evaluated on its phantom test split; the two are printed side by side.
4. The distilled bundles infer on real vendor ultrasound DICOM shipped inside pydicom (bundle inference.json), and
   write DICOM SEG / SR through the hospital-IT path.

Everything lands in `runs/demo/`; a rerun reuses finished steps (the teacher file, the coreset, `models/last.pt`).
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DEMO_TASKS = ("busi_classification", "busi_segmentation")
STARTS = ("distilled", "vanilla")
REAL_US = ("examples_rgb_color.dcm", "examples_palette.dcm", "examples_ybr_color.dcm")  # US files inside pydicom
VANILLA = {"distill#feature_weight": 0.0, "distill#attn_weight": 0.0}


def _set(cfg: dict[str, Any], key: str, value: Any) -> None:
    """Set a config id (`a#b#c`) in a config dict."""
    *parents, last = key.split("#")
    for p in parents:
        cfg = cfg[p]
    cfg[last] = value


def _configure_copy(src: Path, dst: Path, settings: dict[str, dict[str, Any]]) -> None:
    """Copy a bundle and bake the demo settings into its configs ({config file: {config id: value}}), so every tool
    that reads the copy (bundle run, the DICOM predictor) builds the same network as the one trained."""
    if not dst.exists():
        shutil.copytree(src, dst)
    for name, keys in settings.items():
        path = dst / "configs" / name
        cfg = json.loads(path.read_text())
        for key, value in keys.items():
            _set(cfg, key, value)
        path.write_text(json.dumps(cfg, indent=4) + "\n")


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and its finished children: on a shared machine the wall time
    says how busy the others were, this says what the demo itself cost."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _bundle_run(configs: list[Path], *args: str) -> float:
    config = str(configs[0]) if len(configs) == 1 else "[" + ",".join(f"'{c}'" for c in configs) + "]"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config, *args]
    print("$ python -m monai.bundle run --config_file " + config + (" " + " ".join(args) if args else ""), flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise SystemExit(f"demo step failed (exit {proc.returncode}): {' '.join(cmd)}")
    return time.perf_counter() - start


def _real_ultrasound(folder: Path) -> list[Path]:
    from pydicom.data import get_testdata_file

    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for name in REAL_US:
        dst = folder / name
        if not dst.exists():
            shutil.copy(get_testdata_file(name), dst)
        files.append(dst)
    return files


def _teacher(work: Path, image_size: int, steps: int, kind: str = "shared") -> tuple[Path, dict]:
    from tinyusfm_monai.distillation.standin import small_teacher_def, train_standin_teacher

    definition = small_teacher_def(image_size)
    path = work / "teacher" / ("teacher_standin.pth" if kind == "shared" else f"teacher_standin_{kind}.pth")
    if not path.is_file():
        what = {
            "shared": "supervised on phantom mmotu, fetal planes, tn3k labels (it has seen busi's class concepts)",
            "disjoint": "supervised on phantom lesion recipes that no evaluated task uses",
        }[kind]
        print(f"\n== teacher: the STAND-IN ({kind}), {what} ({steps} steps) ==")
        t0 = time.perf_counter()
        train_standin_teacher(path, image_size, steps=steps, definition=definition, kind=kind)
        print(f"stand-in teacher written to {path} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return path, definition


def _distil(work: Path, root: Path, settings: dict, timings: dict) -> dict[str, Path]:
    """coreset.json, then train.json distilled and vanilla (same coreset, same steps); the two student files."""
    students = {}
    for start in STARTS:
        bundle = work / f"tinyusfm_distillation_{start}"
        baked = {**settings, "train.json": {**settings["train.json"], **(VANILLA if start == "vanilla" else {})}}
        _configure_copy(root / "tinyusfm_distillation", bundle, baked)
        students[start] = bundle / "models" / "model.pt"
    distilled = work / "tinyusfm_distillation_distilled" / "configs"
    coreset = work / "tinyusfm_distillation_distilled" / "eval" / "coreset" / "coreset_datalist.json"
    if not coreset.is_file():
        print("\n== coreset: a quarter of the junk phantom pool, selected with the teacher's features ==", flush=True)
        timings["coreset"] = _bundle_run([distilled / "coreset.json"])
    for start in STARTS:
        if not students[start].is_file():
            what = "from the teacher" if start == "distilled" else "without a teacher (reconstruction only)"
            print(f"\n== {start} student: TinyUSFM trained on the coreset {what} ==", flush=True)
            configs = work / f"tinyusfm_distillation_{start}" / "configs"
            timings[f"{start} student"] = _bundle_run([configs / "train.json"], "--coreset_datalist", str(coreset))
    return students


def main(
    out: str = "runs/demo",
    epochs: int = 15,
    seg_epochs: int = 8,
    learning_rate: float = 1e-3,
    image_size: int = 64,
    pool: int = 2000,
    distill_epochs: int = 10,
    teacher_steps: int = 300,
    fresh: bool = False,
    standin: str = "shared",
) -> None:
    """Teacher → coreset → distillation → busi bundles fine-tuned from the distilled and the vanilla student →
    evaluation → DICOM; prints the two side by side.

    The classifier is fine-tuned for `epochs` at `learning_rate` (the bundle's 1e-4 leaves the new head
    under-trained in 15 epochs at 64 px: test accuracy 0.725 instead of 0.825-0.925 at 1e-3, three seeds), with the
    bundle's layer-wise decay 0.75; the segmenter for `seg_epochs` at the bundle's learning rate (time: the whole
    demo must stay within 10 minutes on 2 cores). `standin`: the stand-in teacher, `shared` (labels of other phantom
    tasks, which share busi's class recipes: part of the distilled student's lead can be that concept leak) or
    `disjoint` (recipes busi never uses; `distillation/standin.py`)."""
    from tinyusfm_monai.networks.profile import profile

    root = Path(__file__).resolve().parents[1] / "bundles"
    work = Path(out).resolve()
    if fresh and work.exists():
        shutil.rmtree(work)
    t_all, cpu0 = time.perf_counter(), _cpu_seconds()
    timings: dict[str, float] = {}
    print("== TinyUSFM vs USFM ==", flush=True)
    profile()
    if standin not in ("shared", "disjoint"):
        raise SystemExit(f"--standin {standin!r}: choose shared or disjoint")
    teacher, teacher_def = _teacher(work, image_size, teacher_steps, standin)
    timings["teacher"] = time.perf_counter() - t_all
    common = {
        "image_size": image_size,
        "phantom_pool_size": pool,
        "phantom_junk": True,
        "dataset_dir": str(work / "phantom_pool"),
        "teacher_def": teacher_def,
        "teacher_weights": str(teacher),
    }
    distill = {
        **common,
        "max_epochs": distill_epochs,
        "batch_size": 16,
        "base_lr": 4e-3,
        "distill#teacher_layers": [1, 3, 5],  # the 6-block teacher's blocks matched to the student's 3, 7, 11
        "distill#teacher_attn_layers": [5],
    }
    settings = {"coreset.json": {**common, "coreset#budget": 0.25}, "train.json": distill}
    students = _distil(work, root, settings, timings)

    from tinyusfm_monai.data.registry import TASKS

    results: dict[str, dict[str, dict[str, Any]]] = {}
    for task in DEMO_TASKS:
        classification = TASKS[task].task_type == "classification"
        task_epochs = epochs if classification else seg_epochs
        task_settings = {
            "image_size": image_size,
            "max_epochs": task_epochs,
            "warmup_epochs": 1,
            "batch_size": 16,
            "num_workers": 0,
            **({"learning_rate": learning_rate} if classification else {}),
        }
        for start in STARTS:
            bundle = work / f"{task}_{start}"
            _configure_copy(
                root / task,
                bundle,
                {
                    "train.json": {**task_settings, "pretrained": str(students[start])},
                    "inference.json": {"image_size": image_size},
                },
            )
            cfg = bundle / "configs"
            if not (bundle / "eval" / "metrics.json").is_file():
                what = f"{task_epochs} epochs, {image_size}px"
                print(f"\n== {task}: fine-tune from the {start} student ({what}) ==", flush=True)
                timings[f"{task} {start}"] = _bundle_run([cfg / "train.json"])
                print(f"\n== {task} ({start}): evaluate on the phantom test split ==", flush=True)
                _bundle_run([cfg / "train.json", cfg / "evaluate.json"])
            results.setdefault(task, {})[start] = json.loads((bundle / "eval" / "metrics.json").read_text())

    print("\n== real vendor ultrasound (DICOM files shipped in pydicom), distilled bundles ==", flush=True)
    real = work / "real_ultrasound"
    _real_ultrasound(real)
    for task in DEMO_TASKS:
        bundle = work / f"{task}_distilled"
        _bundle_run(
            [bundle / "configs" / "inference.json"], "--dataset_dir", str(real), "--output_dir", str(bundle / "infer")
        )
    from tinyusfm_monai.dicom.batch import infer as dicom_infer

    dicom_out = work / "dicom_out"
    for task in DEMO_TASKS:
        bundle = work / f"{task}_distilled"
        print(f"$ tinyusfm-monai dicom infer --bundle {bundle} --input {real} --output {dicom_out / task}", flush=True)
        dicom_infer(bundle=str(bundle), input=str(real), output=str(dicom_out / task))
    _print_summary(results, work, real, dicom_out, timings, time.perf_counter() - t_all, _cpu_seconds() - cpu0)


def _metric_line(task: str, m: dict[str, Any]) -> str:
    from tinyusfm_monai.data.registry import TASKS

    if TASKS[task].task_type == "classification":
        return f"accuracy {m['accuracy']:.3f}, F1 {m['f1']:.3f}, AUC {m['auc']:.3f}"
    return f"Dice {m['dice']:.3f}, IoU {m['iou']:.3f}, HD95 {m['hd95']:.1f}px"


def _print_summary(
    results: dict[str, dict[str, dict[str, Any]]],
    work: Path,
    real: Path,
    dicom_out: Path,
    timings: dict[str, float],
    total: float,
    cpu: float,
) -> None:
    import csv

    import numpy as np
    from PIL import Image

    from tinyusfm_monai.data.registry import TASKS

    coreset = work / "tinyusfm_distillation_distilled" / "eval" / "coreset" / "diagnostics.json"
    if coreset.is_file():
        d = json.loads(coreset.read_text())
        print(
            f"\n== coreset (junk phantom pool, evaluation-only ground truth): junk share {d['junk_share']:.3f} vs "
            f"random {d['junk_share_random']:.3f}, at most {d['max_copies_per_run']} frame per frozen run / burst, "
            f"worst organ coverage {d['min_coverage_organ']:.2f} of random's =="
        )
    print(
        "\n== results on the phantom test splits: fine-tuned from the DISTILLED student vs the VANILLA student (same "
        "data, same steps, no teacher); the teacher is the supervised STAND-IN, not USFM =="
    )
    print(f"{'task':<22} {'from distilled student':<44} {'from vanilla student':<44}")
    for task, by_start in results.items():
        cells = [f"{_metric_line(task, by_start[s]):<44}" for s in STARTS]
        print(f"{task:<22} " + " ".join(cells))
    cls = [t for t in results if TASKS[t].task_type == "classification"]
    for task in cls:
        print(f"  ({task}: chance {1 / TASKS[task].num_classes:.3f}, {TASKS[task].num_classes} classes)")

    print("\nreal ultrasound, distilled busi_classification inference.json:")
    rows = list(csv.DictReader(open(work / "busi_classification_distilled" / "infer" / "predictions.csv")))
    for row in rows:
        probs = ", ".join(f"{k[2:]} {float(v):.2f}" for k, v in row.items() if k.startswith("p_"))
        print(f"  {Path(row['image']).name:<26} class: {row['pred']:<10} ({probs})")
    for path in sorted((work / "busi_segmentation_distilled" / "infer").glob("*_seg.png")):
        mask = np.asarray(Image.open(path))
        print(
            f"  {path.name:<26} mask {mask.shape[1]}x{mask.shape[0]}, lesion {100 * (mask > 0).mean():.1f}% of pixels"
        )
    print("\nhospital IT path (DICOM SEG / SR, one report per run):")
    for task in results:
        report = json.loads((dicom_out / task / "report.json").read_text())
        entries = report.get("inputs", report.get("rows", []))
        done = sum(1 for r in entries if r.get("status") == "processed")
        outputs = sorted(p.name for p in (dicom_out / task).rglob("*.dcm"))
        print(
            f"  {task:<22} processed {done}/{len(entries)} inputs -> {len(outputs)} DICOM objects in {dicom_out / task}"
        )
    steps = ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
    print(f"\nwall times: {steps}; whole demo {total:.0f} s wall, {cpu:.0f} s CPU (user + system, all processes)")
    print(f"everything is in {work}")


if __name__ == "__main__":
    main()
