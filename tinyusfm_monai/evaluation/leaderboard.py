"""`tinyusfm-monai leaderboard`: one UniUS-Bench table from the evaluate outputs of all bundles.

The paper's published averages are printed beside ours, labelled as theirs: only its averages are
public (no per-dataset numbers), and our numbers come from our splits, our runs and whatever
weights were evaluated — never to be read as a reproduction unless the same data and weights were used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tinyusfm_monai.data.registry import TASKS

PAPER = {"accuracy": 84.91, "dice": 85.78}  # TinyUSFM, arXiv 2510.19239 abstract: UniUS-Bench averages (%)
CLASSIFICATION_COLUMNS = ("accuracy", "f1", "auc", "mcc", "balanced_accuracy")
SEGMENTATION_COLUMNS = ("dice", "iou", "hd95", "sensitivity", "specificity")


def collect(bundles: str | Path = "bundles", eval_dir: str = "eval") -> dict[str, dict[str, Any]]:
    """metrics.json of every task bundle that has one."""
    found = {}
    for name in TASKS:
        path = Path(bundles) / name / eval_dir / "metrics.json"
        if path.is_file():
            found[name] = json.loads(path.read_text())
    return found


def _pct(v: Any) -> str:
    return "—" if v is None or v != v else f"{100 * v:.2f}"


def build_table(results: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """Markdown table of per-task metrics and averages, and the averages as a dict."""
    lines = ["| task | organ | n | " + " | ".join(CLASSIFICATION_COLUMNS) + " |", "|---" * 8 + "|"]
    cls = [(n, m) for n, m in results.items() if TASKS[n].task_type == "classification"]
    seg = [(n, m) for n, m in results.items() if TASKS[n].task_type == "segmentation"]
    for name, m in cls:
        cells = [_pct(m.get(c)) for c in CLASSIFICATION_COLUMNS]
        lines.append(f"| {name} | {TASKS[name].organ} | {m.get('num_images', '')} | " + " | ".join(cells) + " |")
    lines += ["", "| task | organ | n | dice | iou | hd95 (px) | sensitivity | specificity |", "|---" * 8 + "|"]
    for name, m in seg:
        cells = [
            _pct(m.get("dice")),
            _pct(m.get("iou")),
            f"{m.get('hd95', float('nan')):.1f}",
            _pct(m.get("sensitivity")),
            _pct(m.get("specificity")),
        ]
        lines.append(f"| {name} | {TASKS[name].organ} | {m.get('num_images', '')} | " + " | ".join(cells) + " |")
    acc = [m["accuracy"] for _, m in cls]
    dice = [m["dice"] for _, m in seg]
    summary = {
        "ours": {
            "classification_accuracy": 100 * sum(acc) / len(acc) if acc else None,
            "segmentation_dice": 100 * sum(dice) / len(dice) if dice else None,
            "classification_tasks": len(acc),
            "segmentation_tasks": len(dice),
        },
        "paper_published": {"classification_accuracy": PAPER["accuracy"], "segmentation_dice": PAPER["dice"]},
    }
    ours = summary["ours"]
    lines += [
        "",
        "| average | ours | tasks evaluated | TinyUSFM paper (published, their data and weights) |",
        "|---|---|---|---|",
        f"| classification accuracy | {_fmt(ours['classification_accuracy'])} | {len(acc)} / 8 "
        f"| {PAPER['accuracy']:.2f} |",
        f"| segmentation Dice | {_fmt(ours['segmentation_dice'])} | {len(dice)} / 11 | {PAPER['dice']:.2f} |",
    ]
    if len(acc) < 8 or len(dice) < 11:
        lines.append(
            "\nOnly evaluated bundles are averaged; the paper averages 8 classification and 10 segmentation tasks."
        )
    return "\n".join(lines), summary


def leaderboard(bundles: str = "bundles", out: str | None = None, eval_dir: str = "eval") -> None:
    """Print (and with --out, write as Markdown + JSON) the table of all evaluated bundles."""
    results = collect(bundles, eval_dir)
    table, summary = build_table(results)
    print(table)
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "leaderboard.md").write_text(table + "\n")
        (Path(out) / "leaderboard.json").write_text(json.dumps({"tasks": results, **summary}, indent=2) + "\n")


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"
