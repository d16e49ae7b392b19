"""The README's main job (`make demo`): the product end to end on embedded data, no downloads.

1. Fine-tune TinyUSFM with a classification and a segmentation bundle on their phantom versions,
   with the real `python -m monai.bundle run` commands a user would type.
2. Evaluate both on the phantom test split (the full UniUS-Bench metric report).
3. Infer on real vendor ultrasound DICOM shipped inside pydicom (bundle inference.json), and write
   DICOM SEG / SR for them through the hospital-IT path.

No pretrained weights can be downloaded here, so the backbones start from random weights and train
briefly at a reduced input size: the numbers show that the pipeline learns, not TinyUSFM's accuracy.
Everything lands in `runs/demo/` (bundle copies, checkpoints, reports, DICOM outputs); a rerun
resumes finished training from `models/last.pt`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DEMO_TASKS = ("busi_classification", "busi_segmentation")
REAL_US = ("examples_rgb_color.dcm", "examples_palette.dcm", "examples_ybr_color.dcm")  # US files inside pydicom


def _configure_copy(src: Path, dst: Path, settings: dict[str, Any]) -> None:
    """Copy a bundle and bake the demo settings into its configs, so every tool that reads the copy
    (bundle run, the DICOM predictor) builds the same network as the one trained."""
    if not dst.exists():
        shutil.copytree(src, dst)
    for name, keys in (("train.json", settings), ("inference.json", {"image_size": settings["image_size"]})):
        path = dst / "configs" / name
        cfg = json.loads(path.read_text())
        cfg.update(keys)
        path.write_text(json.dumps(cfg, indent=4) + "\n")


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


def main(out: str = "runs/demo", epochs: int = 15, image_size: int = 64, fresh: bool = False) -> None:
    """Fine-tune + evaluate two bundles on the phantom, then infer on real ultrasound DICOM."""
    from tinyusfm_monai.networks.profile import profile

    root = Path(__file__).resolve().parents[1] / "bundles"
    work = Path(out).resolve()
    if fresh and work.exists():
        shutil.rmtree(work)
    settings = {
        "image_size": image_size,
        "max_epochs": epochs,
        "warmup_epochs": 1,
        # From scratch (no pretrained weights offline): no layer-wise decay, which only makes sense when the
        # lower layers are already pretrained. The learning rate stays the official 1e-4 (5e-4 learned worse).
        "layer_decay": 1.0,
        "batch_size": 16,
        "num_workers": 0,
    }
    print("== TinyUSFM vs USFM ==", flush=True)
    profile()
    results: dict[str, dict[str, Any]] = {}
    for task in DEMO_TASKS:
        bundle = work / task
        _configure_copy(root / task, bundle, settings)
        cfg = bundle / "configs"
        print(f"\n== {task}: fine-tune on the embedded phantom ({epochs} epochs, {image_size}px) ==", flush=True)
        t_train = _bundle_run([cfg / "train.json"])
        print(f"\n== {task}: evaluate on the phantom test split ==", flush=True)
        _bundle_run([cfg / "train.json", cfg / "evaluate.json"])
        results[task] = {"train_s": t_train, **json.loads((bundle / "eval" / "metrics.json").read_text())}

    print("\n== real vendor ultrasound (DICOM files shipped in pydicom) ==", flush=True)
    real = work / "real_ultrasound"
    _real_ultrasound(real)
    for task in DEMO_TASKS:
        bundle = work / task
        _bundle_run(
            [bundle / "configs" / "inference.json"], "--dataset_dir", str(real), "--output_dir", str(bundle / "infer")
        )
    from tinyusfm_monai.dicom.batch import infer as dicom_infer

    dicom_out = work / "dicom_out"
    for task in DEMO_TASKS:
        print(
            f"$ tinyusfm-monai dicom infer --bundle {work / task} --input {real} --output {dicom_out / task}",
            flush=True,
        )
        dicom_infer(bundle=str(work / task), input=str(real), output=str(dicom_out / task))
    _print_summary(results, work, real, dicom_out)


def _print_summary(results: dict[str, dict[str, Any]], work: Path, real: Path, dicom_out: Path) -> None:
    import csv

    import numpy as np
    from PIL import Image

    from tinyusfm_monai.data.registry import TASKS

    print(
        "\n== results (phantom test split; random-init backbone, brief training: a pipeline check, not TinyUSFM's "
        "published accuracy) =="
    )
    print(f"{'task':<22} {'train s':>8}  metrics")
    for task, m in results.items():
        if TASKS[task].task_type == "classification":
            chance = 1 / TASKS[task].num_classes
            line = (
                f"accuracy {m['accuracy']:.3f} (chance {chance:.3f}), F1 {m['f1']:.3f}, AUC {m['auc']:.3f}, "
                f"MCC {m['mcc']:.3f}"
            )
        else:
            line = f"Dice {m['dice']:.3f}, IoU {m['iou']:.3f}, HD95 {m['hd95']:.1f}px"
        print(f"{task:<22} {m['train_s']:>8.0f}  {line}")

    print("\nreal ultrasound, bundle inference.json:")
    rows = list(csv.DictReader(open(work / "busi_classification" / "infer" / "predictions.csv")))
    for row in rows:
        probs = ", ".join(f"{k[2:]} {float(v):.2f}" for k, v in row.items() if k.startswith("p_"))
        print(f"  {Path(row['image']).name:<26} class: {row['pred']:<10} ({probs})")
    for path in sorted((work / "busi_segmentation" / "infer").glob("*_seg.png")):
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
    print(f"\neverything is in {work}")


if __name__ == "__main__":
    main()
