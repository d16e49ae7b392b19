"""What the coreset and distillation runs print about themselves, and the only reader of a pool's ground truth.

A phantom junk pool (`data.phantom_junk`) records per image whether it is clean or junk (and which run of frozen
frames or cine burst it belongs to) in `ground_truth.json` beside the datalist. Selection and training never read
it: `load_ground_truth` is called only here, after the selection is final or to summarise an epoch, so the
numbers below are evaluation. A real pool has no such file and the runs print only what needs no ground truth
(effective sample size, weight spread, picks per cluster, duplicate groups).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from tinyusfm_monai.data.phantom_junk import GROUND_TRUTH, SINGLE_TYPES

from .consistency import effective_sample_size
from .pool import load_manifest

logger = logging.getLogger(__name__)


# ---- ground truth (evaluation only) -----------------------------------------------------------------------------


def load_ground_truth(manifest_path: str | Path) -> list[dict[str, Any]] | None:
    """Per manifest row, the ground truth recorded by the phantom junk pool; None when any row has none."""
    manifest = load_manifest(manifest_path)
    tables: dict[Path, dict[str, Any]] = {}
    for source in manifest.get("sources", []):
        folder = Path(source).parent if Path(source).is_file() else Path(source)
        path = folder / GROUND_TRUTH
        if path.is_file():
            samples = json.loads(path.read_text())["samples"]
            tables[folder.resolve()] = samples
    if not tables:
        return None
    truth: list[dict[str, Any]] = []
    for sample in manifest["training"]:
        image = Path(sample["image"]).resolve()
        found = None
        for folder, samples in tables.items():
            try:
                found = samples.get(image.relative_to(folder).as_posix())
            except ValueError:
                continue
            if found is not None:
                break
        if found is None:
            return None
        truth.append(found)
    return truth


def auroc_low(score: np.ndarray, positive: np.ndarray) -> float:
    """AUROC of "a low score flags a positive" (ties averaged); NaN without both classes."""
    from scipy.stats import rankdata

    positive = np.asarray(positive, bool)
    pos, neg = int(positive.sum()), int((~positive).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    r = rankdata(-np.asarray(score, np.float64))
    return float((r[positive].sum() - pos * (pos + 1) / 2) / (pos * neg))


# ---- coreset ----------------------------------------------------------------------------------------------------


def _p_any(n: int, s: int, size: int) -> float:
    """P(a run of `size` frames has at least one frame in a uniform random subset of s out of n)."""
    p_none = 1.0
    for j in range(size):
        p_none *= max(n - s - j, 0) / (n - j)
    return 1.0 - p_none


def coreset_report(selected: np.ndarray, truth: Sequence[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    """How a selection did on a junk pool, against uniform random selection of the same size.

    Junk share (strict: every non-clean frame; excess: junk types plus copies beyond the first of a run) overall
    and by type; copies kept per frozen run / burst; coverage per organ and task (distinct scenes of clean frames
    and runs selected, divided by random's expectation). Targets of issue 12: strict junk ≤ 1/3 of random's, at
    most one copy per run, every organ ≥ 0.8 of random's coverage.
    """
    selected = np.asarray(selected)
    n, s = len(truth), len(selected)
    types = np.array([t["type"] for t in truth])
    groups = np.array([t["group"] for t in truth])
    sel_types = types[selected]
    kept: dict[int, int] = {}
    for g in groups[selected]:
        if g >= 0:
            kept[int(g)] = kept.get(int(g), 0) + 1
    group_size = {int(g): int((groups == g).sum()) for g in np.unique(groups[groups >= 0])}
    strict = float((sel_types != "clean").mean()) if s else 0.0
    excess = (float(np.isin(sel_types, SINGLE_TYPES).sum()) + sum(v - 1 for v in kept.values())) / max(s, 1)
    random_strict = float((types != "clean").mean())
    random_excess = float(np.isin(types, SINGLE_TYPES).mean()) + sum(
        size * s / n - _p_any(n, s, size) for size in group_size.values()
    ) / max(s, 1)
    coverage = _coverage(truth, set(selected.tolist()), n, s)
    worst = {level: min(v.items(), key=lambda kv: kv[1]["ratio"]) for level, v in coverage.items() if v}
    report = {
        "size": s,
        "junk_share": strict,
        "junk_share_random": random_strict,
        "junk_ratio_to_random": strict / random_strict if random_strict else float("nan"),
        "junk_excess": excess,
        "junk_excess_random": random_excess,
        "selected_by_type": {t: int((sel_types == t).sum()) for t in np.unique(types)},
        "pool_by_type": {t: int((types == t).sum()) for t in np.unique(types)},
        "max_copies_per_run": max(kept.values()) if kept else 0,
        "runs_with_more_than_one": int(sum(v > 1 for v in kept.values())),
        "runs_kept": len(kept),
        "runs_total": len(group_size),
        "coverage": coverage,
        "min_coverage_organ": worst["organ"][1]["ratio"] if "organ" in worst else float("nan"),
        "worst_organ": worst["organ"][0] if "organ" in worst else None,
        "min_coverage_task": worst["task"][1]["ratio"] if "task" in worst else float("nan"),
    }
    report["text"] = format_coreset_report(report)
    return report


def _coverage(truth: Sequence[dict[str, Any]], chosen: set[int], n: int, s: int) -> dict[str, dict[str, dict]]:
    """Distinct scenes selected per organ / task (a clean frame, or a whole run, is one unit) vs random."""
    units: dict[tuple, dict[str, Any]] = {}
    for i, t in enumerate(truth):
        if t["type"] == "clean":
            units[("c", i)] = {"organ": t["organ"], "task": t["task"], "members": [i]}
        elif t["type"] in ("frozen", "burst"):
            u = units.setdefault(("g", t["group"]), {"organ": t["organ"], "task": t["task"], "members": []})
            u["members"].append(i)
    out: dict[str, dict[str, dict]] = {"organ": {}, "task": {}}
    for level in out:
        got: dict[str, float] = {}
        expected: dict[str, float] = {}
        for u in units.values():
            name = u[level]
            expected[name] = expected.get(name, 0.0) + _p_any(n, s, len(u["members"]))
            got[name] = got.get(name, 0.0) + float(any(m in chosen for m in u["members"]))
        out[level] = {
            k: {"selected": got[k], "random_expected": expected[k], "ratio": got[k] / max(expected[k], 1e-12)}
            for k in sorted(expected)
        }
    return out


def format_coreset_report(r: dict[str, Any]) -> str:
    by_type = ", ".join(f"{t} {r['selected_by_type'].get(t, 0)}/{c}" for t, c in r["pool_by_type"].items())
    return "\n".join(
        [
            "coreset diagnostics (evaluation only: the pool's ground truth, never read by the selection):",
            f"  junk share {r['junk_share']:.3f} vs random {r['junk_share_random']:.3f} "
            f"(ratio {r['junk_ratio_to_random']:.2f}, target <= 0.33); excess {r['junk_excess']:.3f} vs "
            f"{r['junk_excess_random']:.3f}",
            f"  selected / pool by type: {by_type}",
            f"  frozen runs and bursts: {r['runs_kept']}/{r['runs_total']} kept, at most {r['max_copies_per_run']} "
            f"copies of one (target 1), {r['runs_with_more_than_one']} with more than one",
            f"  coverage vs random: worst organ {r['worst_organ']} {r['min_coverage_organ']:.2f} (target >= 0.8), "
            f"worst task {r['min_coverage_task']:.2f}",
        ]
    )


# ---- consistency weighting ---------------------------------------------------------------------------------------


def junk_weight_summary(weights: np.ndarray, types: np.ndarray) -> dict[str, Any]:
    """Mean weight per ground-truth type and the AUROC of "low weight flags junk" (single-frame junk vs clean;
    bursts and frozen copies are clean content, redundancy is the coreset's job)."""
    by_type = {t: float(weights[types == t].mean()) for t in np.unique(types)}
    keep = np.isin(types, ("clean",) + SINGLE_TYPES)
    auroc = auroc_low(weights[keep], types[keep] != "clean")
    return {"mean_weight_by_type": by_type, "junk_auroc": auroc}


class ConsistencyDiagnostics:
    """Per epoch, what the consistency weighting did: mean effective sample size per batch (as a share of the
    batch; the rank mapping's floor bounds it), mean weight spread (std), share of weights below 0.5, and, when the
    pool has ground truth (phantom junk pool), the mean weight per junk type and the junk AUROC of low weight.

    Everything accumulates on the weights' device and is read once per epoch (no host sync on the step).

    Args:
        manifest: the pool manifest; its ground truth, if any, is read once at the start (evaluation only).
    """

    def __init__(self, manifest: str | None = None) -> None:
        self.manifest = manifest
        self.types: np.ndarray | None = None
        self.history: list[dict[str, Any]] = []
        self._reset()

    def _reset(self) -> None:
        self.stats: list[torch.Tensor] = []  # per step: (ESS, std, share below 0.5)
        self.weight_sum: torch.Tensor | None = None
        self.weight_count: torch.Tensor | None = None

    def attach(self, engine: Engine) -> None:
        if self.manifest:
            truth = load_ground_truth(self.manifest)
            if truth is not None:
                self.types = np.array([t["type"] for t in truth])
        engine.add_event_handler(Events.EPOCH_STARTED, lambda _: self._reset())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.summarise)

    def update(self, engine: Engine) -> None:
        out = engine.state.output
        w = out.get("weights") if isinstance(out, dict) else None
        if w is None:
            return
        rows = w.float().reshape(w.shape[0], w.shape[1], -1).mean(-1)  # (V, B): token weights averaged per image
        self.stats.append(
            torch.stack((effective_sample_size(rows).mean(), rows.std(-1).mean(), (rows < 0.5).float().mean())).detach()
        )
        index = out.get("index")
        if self.types is not None and index is not None:
            if self.weight_sum is None:
                self.weight_sum = torch.zeros(len(self.types), device=rows.device)
                self.weight_count = torch.zeros(len(self.types), device=rows.device)
            index = torch.as_tensor(index).to(rows.device)
            self.weight_sum.index_add_(0, index, rows.mean(0))
            self.weight_count.index_add_(0, index, torch.ones_like(rows[0]))  # type: ignore[union-attr]

    def summarise(self, engine: Engine) -> None:
        if not self.stats:
            return
        ess, std, below = torch.stack(self.stats).mean(0).tolist()
        entry: dict[str, Any] = {"epoch": engine.state.epoch, "ess": ess, "weight_std": std, "share_below_half": below}
        line = (
            f"consistency weights, epoch {entry['epoch']}: ESS {ess:.2f} of the batch, weight std {std:.2f}, "
            f"{100 * below:.0f} % below 0.5"
        )
        if self.types is not None and self.weight_sum is not None:
            count = self.weight_count.cpu().numpy()  # type: ignore[union-attr]
            seen = count > 0
            mean_w = self.weight_sum.cpu().numpy()[seen] / count[seen]
            summary = junk_weight_summary(mean_w, self.types[seen])
            entry.update(summary)
            by_type = ", ".join(f"{t} {v:.2f}" for t, v in summary["mean_weight_by_type"].items())
            line += f"; mean weight by type (ground truth, evaluation only): {by_type}; junk AUROC of low weight "
            line += f"{summary['junk_auroc']:.2f}"
        self.history.append(entry)
        logger.info("%s", line)
