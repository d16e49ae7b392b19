"""`tinyusfm-monai reproduce`: fine-tune and evaluate a set of UniUS-Bench tasks over several seeds, one table.

Each (task, seed) cell is one real `python -m monai.bundle run` of the task bundle's `train.json` (with
`train_paper.json` for the `paper` preset), then its evaluate config on the test split, with the cell's own
`bundle_root` (`OUT/<task>/seed<k>/`: models/, eval/, logs). The cells are resumable: a finished cell (its
`result.json`) is skipped; an interrupted one restarts its training run, which resumes from the bundle's training
state (`models/last.pt`). With several GPUs, cells run in parallel, one per GPU (`CUDA_VISIBLE_DEVICES`).

The table has the paper's layout (a row per task, then the classification-accuracy and segmentation-Dice
averages) with mean ± std over seeds, and the paper's published TinyUSFM averages beside the averages. Without a
data root the cells run on the embedded phantom (a smoke test, no number of it is comparable with the paper's).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tinyusfm_monai.data.registry import DATASETS, TASKS
from tinyusfm_monai.utils import atomic_write

logger = logging.getLogger(__name__)

PAPER_AVERAGES = {"classification": 84.91, "segmentation": 85.78}  # TinyUSFM, UniUS-Bench averages (%), the paper
PRESETS = ("paper", "default")
RESULT = "result.json"
# The 18 UniUS-Bench tasks: every registry task but BUSI segmentation, which the registry adds beside the benchmark.
UNIUS_BENCH_TASKS = tuple(t for t in TASKS if t != "busi_segmentation")


def _metric(task_type: str, preset: str, metrics: dict[str, Any]) -> float:
    """The task's headline number in %: accuracy, or Dice (the official rules under the paper preset)."""
    if task_type == "classification":
        return 100 * float(metrics["accuracy"])
    if preset == "paper" and "official" in metrics:
        return 100 * float(metrics["official"]["Dice"])
    return 100 * float(metrics["dice"])


def _split(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value]
    return [v.strip() for v in str(value).split(",") if v.strip()]


def _devices(gpus: Any) -> list[str | None]:
    """CUDA device ids to run cells on (one cell per device at a time); [None] = one cell at a time on CPU/default."""
    if gpus in ("auto", None, ""):
        try:
            import torch

            count = torch.cuda.device_count()
        except Exception:  # noqa: BLE001 - no CUDA build: CPU
            count = 0
        return [str(i) for i in range(count)] or [None]
    ids = _split(gpus)
    return [None] if ids in (["cpu"], ["none"]) else ids


def _phantom_dataset(task: str, out: Path, counts: list[int], image_size: int) -> Path:
    """A small phantom of the task, generated once under OUT/_phantom (shared by the seeds)."""
    from tinyusfm_monai.data.phantom import generate_task

    folder = out / "_phantom" / task
    if not (folder / "datalist.json").is_file():
        generate_task(task, folder, n_train=counts[0], n_val=counts[1], n_test=counts[2], image_size=image_size, seed=1)
    return folder


def _run(cmd: list[str], log: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    with open(log, "a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} ... failed with exit code {proc.returncode}; see {log}")
    return time.perf_counter() - start


def run_cell(
    task: str,
    seed: int,
    bundles: Path,
    cell: Path,
    preset: str,
    dataset_dir: str,
    pretrained: str,
    overrides: dict[str, Any],
    device: str | None,
) -> dict[str, Any]:
    """Train and evaluate one (task, seed) cell; writes and returns its result.json."""
    configs = bundles / task / "configs"
    train = [configs / "train.json"] + ([configs / "train_paper.json"] if preset == "paper" else [])
    as_list = lambda files: "[" + ",".join(f"'{f}'" for f in files) + "]"  # noqa: E731
    common = ["--bundle_root", str(cell), "--dataset_dir", dataset_dir, "--seed", str(seed)]
    for key, value in overrides.items():
        common += [f"--{key}", str(value)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if device is not None:
        env["CUDA_VISIBLE_DEVICES"] = device
    cell.mkdir(parents=True, exist_ok=True)
    log = cell / "run.log"
    run = [sys.executable, "-m", "monai.bundle", "run", "--config_file"]
    train_s = _run([*run, as_list(train), *common, "--pretrained", pretrained], log, env)
    eval_s = _run([*run, as_list([*train, configs / "evaluate.json"]), *common], log, env)
    metrics = json.loads((cell / "eval" / "metrics.json").read_text())
    task_type = TASKS[task].task_type
    result = {
        "task": task,
        "seed": seed,
        "preset": preset,
        "metric": _metric(task_type, preset, metrics),
        "metrics": metrics,
        "train_seconds": train_s,
        "evaluate_seconds": eval_s,
        "device": "cuda:" + device if device is not None else "default",
    }
    atomic_write(cell / RESULT, json.dumps(result, indent=2) + "\n")
    return result


def build_table(results: list[dict[str, Any]], preset: str) -> str:
    """Markdown: a row per task (mean ± std over seeds), then the two averages with the paper's beside them."""
    by_task: dict[str, dict[int, float]] = {}
    for r in results:
        by_task.setdefault(r["task"], {})[int(r["seed"])] = float(r["metric"])
    seeds = sorted({int(r["seed"]) for r in results})

    def fmt(values: list[float]) -> str:
        if not values:
            return "—"
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.2f} ± {sd:.2f}"

    dice_rule = "Dice by the official rules" if preset == "paper" else "Dice (ours)"
    lines = [
        f"| task | organ | type | metric | mean ± std over seeds {seeds} (%) | paper |",
        "|---|---|---|---|---|---|",
    ]
    for kind in ("classification", "segmentation"):
        for task in [t for t in TASKS if t in by_task and TASKS[t].task_type == kind]:
            metric = "accuracy" if kind == "classification" else dice_rule
            organ = DATASETS[TASKS[task].dataset].organ
            lines.append(f"| {task} | {organ} | {kind} | {metric} | {fmt(list(by_task[task].values()))} | — |")
    for kind, name in (("classification", "accuracy"), ("segmentation", dice_rule)):
        tasks = [t for t in by_task if TASKS[t].task_type == kind]
        if not tasks:
            continue
        per_seed = [statistics.mean(by_task[t][s] for t in tasks) for s in seeds if all(s in by_task[t] for t in tasks)]
        lines.append(
            f"| **average ({len(tasks)} {kind} tasks)** | | {kind} | {name} | {fmt(per_seed)} | "
            f"{PAPER_AVERAGES[kind]:.2f} (TinyUSFM, all 8/10 tasks) |"
        )
    return "\n".join(lines) + "\n"


def reproduce(
    tasks: Any = "all",
    seeds: Any = "42,43,44",
    preset: str = "paper",
    pretrained: str = "",
    data_root: str = "",
    out: str = "reproduce",
    bundles: str = "bundles",
    gpus: Any = "auto",
    max_epochs: int | None = None,
    image_size: int | None = None,
    batch_size: int | None = None,
    num_workers: int | None = None,
    phantom: str = "24,8,8",
    phantom_size: int = 224,
) -> str:
    """Fine-tune and evaluate `tasks` × `seeds` with the `paper` preset (or `default`), write OUT/table.md.

    Args:
        tasks: "all" (the 18 UniUS-Bench tasks of the registry) or comma-separated task (bundle) names.
        seeds: comma-separated seeds (each cell passes `--seed`).
        preset: "paper" (train.json + train_paper.json: the official protocol) or "default" (train.json).
        pretrained: backbone weights (the official TinyUSFM.pth); empty = random init (the bundles warn).
        data_root: folder holding `<task>/datalist.json` per task (`tinyusfm-monai prepare`); empty = phantom.
        out: output folder (one sub-folder per task and seed; `table.md`, `results.json`).
        bundles: the task bundles folder.
        gpus: "auto" (every visible CUDA device, one cell per device), "cpu", or comma-separated device ids.
        max_epochs, image_size, batch_size, num_workers: overrides for every cell (e.g. a short smoke test).
        phantom: train,val,test image counts of the phantom used without a data root.
        phantom_size: phantom image side in pixels.
    """
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
    if not logging.getLogger().handlers:  # progress on the console when run from the command line
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    names = list(UNIUS_BENCH_TASKS) if tasks == "all" else _split(tasks)
    unknown = [t for t in names if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; known: {sorted(TASKS)}")
    seed_list = [int(s) for s in _split(seeds)]
    out_dir, bundle_dir = Path(out).resolve(), Path(bundles).resolve()
    overrides = {
        k: v
        for k, v in (
            ("max_epochs", max_epochs),
            ("image_size", image_size),
            ("batch_size", batch_size),
            ("num_workers", num_workers),
        )
        if v is not None
    }
    counts = [int(c) for c in _split(phantom)]
    cells: queue.Queue = queue.Queue()
    results: list[dict[str, Any]] = []
    for task in names:
        if data_root:
            dataset = str(Path(data_root) / task)
        else:
            dataset = str(_phantom_dataset(task, out_dir, counts, phantom_size))
        for seed in seed_list:
            cell = out_dir / task / f"seed{seed}"
            if (cell / RESULT).is_file():
                results.append(json.loads((cell / RESULT).read_text()))
                logger.info("%s seed %d: done before, skipped", task, seed)
            else:
                cells.put((task, seed, dataset, cell))
    total, lock, errors = cells.qsize(), threading.Lock(), []

    def worker(device: str | None) -> None:
        while True:
            try:
                task, seed, dataset, cell = cells.get_nowait()
            except queue.Empty:
                return
            where = f"cuda:{device}" if device is not None else "default device"
            logger.info("%s seed %d: start (%s)", task, seed, where)
            try:
                r = run_cell(task, seed, bundle_dir, cell, preset, dataset, pretrained, overrides, device)
            except RuntimeError as e:
                with lock:
                    errors.append(str(e))
                logger.error("%s seed %d: %s", task, seed, e)
                continue
            with lock:
                results.append(r)
                logger.info(
                    "%s seed %d: %.2f%% in %.0f s train + %.0f s evaluate (%d/%d cells this run)",
                    task, seed, r["metric"], r["train_seconds"], r["evaluate_seconds"], len(results), total,
                )  # fmt: skip

    threads = [threading.Thread(target=worker, args=(d,)) for d in _devices(gpus)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    table = build_table(results, preset)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / "table.md", table)
    atomic_write(out_dir / "results.json", json.dumps(sorted(results, key=lambda r: (r["task"], r["seed"])), indent=2))
    print(table)
    if errors:
        raise SystemExit(f"{len(errors)} cell(s) failed (rerun to resume them):\n" + "\n".join(errors))
    return str(out_dir / "table.md")
