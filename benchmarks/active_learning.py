"""Label efficiency of the MONAI Label app's active-learning strategies: simulated annotation on phantom pools.

For 2 classification and 2 segmentation phantom tasks and each seed, a pool like an annotation backlog is rendered
at 64 px: distinct labelled scenes, cine bursts (runs of near-identical frames of one scene, same label), frozen
runs (exact repeats) and junk frames (blank, electronic noise, probe in air, saturated, dim; the junk pool
generator's makers). A simulated annotator starts from 5 % of the pool labelled (the same random images for every
strategy of a seed: paired), then each round labels the next 5 % proposed by a strategy, and the model is
retrained. Strategies: MONAI Label's `random` and `first` (first unlabelled in datastore order: runs are contiguous,
as cine frames in an archive), and the app's `diversity`, `uncertainty`, `hybrid`, run through exactly the app's
selection code (`tinyusfm_monai.monailabel.lib.activelearning`: near-duplicate groups, k-center greedy, hybrid
clusters; an image just labelled is "taken", so its duplicates are never proposed).

Choices (ours, sized for ~20 min on one idle CPU thread; the reported run took ~63 min wall on 2 cores shared
with 4 other jobs):
* the **backbone is frozen**: the supervised stand-in teacher (`distillation.standin`, trained once on other
  phantom tasks: mmotu, fetal planes, tn3k classification; it stands for a pretrained TinyUSFM backbone). Its
  pooled feature of every pool image is computed once per seed and cached; these are the strategies' features.
* **what is retrained each round**: only a head, from scratch, fixed steps, seeded. Classification: a linear
  softmax head on the standardised pooled features (200 full-batch Adam steps, lr 0.05, weight decay 1e-3);
  metric accuracy on 150 balanced held-out images. Segmentation: a per-pixel MLP (hidden 16) on frozen pixel
  features (the backbone's last-block patch tokens reduced to 12 dims by a fixed PCA of the pool and upsampled,
  grey level at 4 smoothing scales, depth), trained 200 Adam steps on 256 pixels per labelled image (half
  foreground where there is one), predicted at 32 x 32 and upsampled; metric mean foreground Dice on 150 held-out
  images (1 where truth and prediction are both empty). The uncertainty is that head's: normalised softmax entropy
  (classification), mean pixel entropy (segmentation).
* **junk costs a label** (the annotator opens it and rejects it) but gives no training example; it then counts as
  labelled (so its near-duplicates are blocked like any labelled image's).
* full-label score: the head trained on every non-junk pool image. "Labels to 95 %": the first round whose
  metric reaches 0.95 x that score; a curve that never does is censored at the last round's count (reported).
* AUC: the mean of the metric over the rounds (equal spacing: the normalised area under the curve).
Seeds: reported 0..9; tuning seeds 100..102 (never reported; seed 100 was run on one classification and one
segmentation task to check that the heads train; nothing was changed after it).

    nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/active_learning.py --out runs/active_learning
    python benchmarks/active_learning.py --out runs/active_learning --report-only --figure docs/images/active_learning.png

Per (task, seed, strategy) cell a JSON file under `--out/cells` (resume: existing cells are skipped); pools and
their features are cached under `--out/pools`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tinyusfm_monai.data import phantom_junk as junk  # noqa: E402
from tinyusfm_monai.data.phantom import render_sample  # noqa: E402
from tinyusfm_monai.monailabel.lib.activelearning import (  # noqa: E402
    ActiveLearningSettings,
    build_index,
    entropy_uncertainty,
    select,
)

TASKS = ("busi_classification", "cubs_classification", "busi_segmentation", "kidneyus_segmentation")
STRATEGIES = ("random", "first", "diversity", "uncertainty", "hybrid")
REPORT_SEEDS = tuple(range(10))
TUNING_SEEDS = (100, 101, 102)
SIZE = 64
N_CLEAN, N_BURSTS, N_FROZEN, RUN = 200, 10, 4, (4, 8)
N_JUNK = {"blank": 8, "noise": 8, "air": 8, "saturated": 8, "dim": 8}
N_TEST = 150
START, BATCH, ROUNDS = 0.05, 0.05, 12
HEAD_STEPS = 200


# ---- pools -------------------------------------------------------------------------------------------------------


def build_pool(task: str, seed: int) -> dict:
    """Images, labels, kind (clean / burst / frozen / junk type), run id, in a shuffled order, runs contiguous."""
    rng = np.random.default_rng([seed, 23])
    seg = task.endswith("_segmentation")
    units: list[list[tuple]] = []
    index = 0

    def sample(split: str) -> tuple:
        nonlocal index
        image, mask, label = render_sample(task, split, index, SIZE, seed)
        index += 1
        return image, (mask if seg else label)

    for _ in range(N_CLEAN):
        image, y = sample("training")
        units.append([(image, y, "clean", -1)])
    run_id = 0
    for kind, count in (("burst", N_BURSTS), ("frozen", N_FROZEN)):
        for _ in range(count):
            image, y = sample("training")
            length = int(rng.integers(RUN[0], RUN[1] + 1))
            frames = junk.make_burst(rng, image, length) if kind == "burst" else [image.copy()] * length
            units.append([(f, y, kind, run_id) for f in frames])
            run_id += 1
    fov = junk.field_of_view(sample("training")[0])
    for kind, count in N_JUNK.items():
        for _ in range(count):
            base, y = sample("training")
            if kind == "blank":
                image = junk.make_blank(rng, SIZE)
            elif kind == "noise":
                image = junk.make_noise(rng, fov)
            elif kind == "air":
                image = junk.make_air(rng, fov)
            elif kind == "saturated":
                image = junk.make_saturated(rng, base)
            else:
                image = junk.make_dim(rng, base)
            units.append([(image, y, kind, -1)])
    items = [item for u in rng.permutation(len(units)) for item in units[u]]
    test = [render_sample(task, "test", i, SIZE, seed) for i in range(N_TEST)]
    out = {
        "images": np.stack([i[0] for i in items]),
        "kind": np.array([i[2] for i in items]),
        "run": np.array([i[3] for i in items]),
        "test_images": np.stack([t[0] for t in test]),
    }
    if seg:
        out["y"] = np.stack([i[1] for i in items]).astype(np.uint8)
        out["test_y"] = np.stack([t[1] for t in test]).astype(np.uint8)
    else:
        out["y"] = np.array([i[1] for i in items], np.int64)
        out["test_y"] = np.array([t[2] for t in test], np.int64)
    return out


def standin_backbone(out: Path) -> torch.nn.Module:
    from tinyusfm_monai.distillation.standin import build, small_teacher_def, train_standin_teacher
    from tinyusfm_monai.networks import load_pretrained

    path = out / "standin_teacher.pth"
    if not path.is_file():
        print("training the stand-in backbone once (frozen afterwards) ...", flush=True)
        train_standin_teacher(path, image_size=SIZE, steps=300, n_train=200, seed=0)
    net = build(small_teacher_def(SIZE))
    load_pretrained(net, str(path))
    return net.eval()


@torch.no_grad()
def backbone_features(net: torch.nn.Module, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features (N, D) and last-block patch tokens (N, g, g, D) of grey uint8 images."""
    from tinyusfm_monai.distillation.shards import normalize_on_device

    pooled, tokens = [], []
    for s in range(0, len(images), 64):
        x = torch.from_numpy(np.repeat(images[s : s + 64, None], 3, 1))
        final, _, _ = net.forward_features(normalize_on_device(x), [], [])
        pooled.append(net.pool(final))
        g = net.grid_size
        tokens.append(final[:, 1:].reshape(len(x), g[0], g[1], -1))
    return torch.cat(pooled).numpy(), torch.cat(tokens).numpy()


def pixel_features(images: np.ndarray, tokens: np.ndarray, pca: np.ndarray, res: int = 32) -> np.ndarray:
    """(N, res, res, F): PCA-reduced upsampled patch tokens, grey level at 4 smoothing scales, depth."""
    import torch.nn.functional as F

    from tinyusfm_monai.data.phantom_junk import smooth

    t = torch.from_numpy(tokens @ pca).permute(0, 3, 1, 2)
    t = F.interpolate(t, size=(res, res), mode="bilinear", align_corners=False).permute(0, 2, 3, 1).numpy()
    grey = images.astype(np.float32) / 255.0
    scales = [grey] + [np.stack([smooth(g, s, s) for g in grey]) for s in (1.0, 2.0, 4.0)]
    step = images.shape[1] // res
    scales = [a[:, ::step, ::step] for a in scales]
    depth = np.broadcast_to(np.linspace(0, 1, res, dtype=np.float32)[None, :, None], (len(images), res, res))
    return np.concatenate([t, np.stack(scales, -1), depth[..., None]], -1).astype(np.float32)


def pool_with_features(task: str, seed: int, net: torch.nn.Module, cache: Path) -> dict:
    path = cache / f"{task}_{seed}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            return dict(z)
    pool = build_pool(task, seed)
    feats, tokens = backbone_features(net, pool["images"])
    pool["features"] = feats
    pool["signatures"] = junk_signatures(pool["images"])
    if task.endswith("_segmentation"):
        _, test_tokens = backbone_features(net, pool["test_images"])
        flat = tokens.reshape(-1, tokens.shape[-1])
        flat = flat - flat.mean(0)
        _, _, vt = np.linalg.svd(flat[:: max(1, len(flat) // 4000)], full_matrices=False)
        pca = vt[:12].T.astype(np.float32)
        pool["pixels"] = pixel_features(pool["images"], tokens, pca)
        pool["test_pixels"] = pixel_features(pool["test_images"], test_tokens, pca)
    else:
        pool["test_features"] = backbone_features(net, pool["test_images"])[0]
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **pool)
    os.replace(tmp, path)
    return pool


def junk_signatures(images: np.ndarray) -> np.ndarray:
    from tinyusfm_monai.monailabel.lib.activelearning import signatures_of

    return signatures_of(torch.from_numpy(images[:, None]))


# ---- heads (what is retrained each round) ------------------------------------------------------------------------


def fit_classifier(x: np.ndarray, y: np.ndarray, n_classes: int, seed: int):
    torch.manual_seed(seed)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xt = torch.from_numpy((x - mu) / sd)
    head = torch.nn.Linear(x.shape[1], n_classes)
    opt = torch.optim.Adam(head.parameters(), lr=0.05, weight_decay=1e-3)
    yt = torch.from_numpy(y)
    for _ in range(HEAD_STEPS):
        loss = torch.nn.functional.cross_entropy(head(xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()

    @torch.no_grad()
    def predict(z: np.ndarray) -> np.ndarray:
        return torch.softmax(head(torch.from_numpy((z - mu) / sd)), 1).numpy()

    return predict


def fit_segmenter(px: np.ndarray, masks: np.ndarray, n_classes: int, seed: int):
    """px (L, r, r, F) of the labelled images, masks (L, 64, 64)."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    res = px.shape[1]
    step = masks.shape[1] // res
    small = masks[:, ::step, ::step]
    xs, ys = [], []
    for f, m in zip(px, small):
        fg, bg = np.flatnonzero(m.ravel() > 0), np.flatnonzero(m.ravel() == 0)
        n_fg = min(len(fg), 128)
        pick = np.r_[rng.choice(fg, n_fg, replace=False) if n_fg else [], rng.choice(bg, 256 - n_fg, replace=True)]
        pick = pick.astype(np.int64)
        xs.append(f.reshape(-1, f.shape[-1])[pick])
        ys.append(m.ravel()[pick])
    x, y = np.concatenate(xs), np.concatenate(ys).astype(np.int64)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 16), torch.nn.ReLU(), torch.nn.Linear(16, n_classes))
    opt = torch.optim.Adam(net.parameters(), lr=0.02, weight_decay=1e-4)
    xt, yt = torch.from_numpy((x - mu) / sd), torch.from_numpy(y)
    for _ in range(HEAD_STEPS):
        loss = torch.nn.functional.cross_entropy(net(xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()

    @torch.no_grad()
    def predict(z: np.ndarray) -> torch.Tensor:
        """(N, r, r, F) → probabilities (N, C, 64, 64)."""
        logits = net(torch.from_numpy((z - mu) / sd)).permute(0, 3, 1, 2)
        return torch.softmax(torch.nn.functional.interpolate(logits, scale_factor=step, mode="bilinear"), 1)

    return predict


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    scores = []
    for p, t in zip(pred, truth):
        p, t = p > 0, t > 0
        denom = p.sum() + t.sum()
        scores.append(1.0 if denom == 0 else 2.0 * (p & t).sum() / denom)
    return float(np.mean(scores))


class Task:
    def __init__(self, name: str, pool: dict, seed: int) -> None:
        self.name, self.pool, self.seed = name, pool, seed
        self.seg = name.endswith("_segmentation")
        self.useful = pool["kind"] == np.array(["clean", "burst", "frozen"])[:, None]
        self.useful = self.useful.any(0)
        from tinyusfm_monai.data.registry import get_task

        self.n_classes = get_task(name).num_classes

    def train_eval(self, labelled: np.ndarray) -> tuple[float, np.ndarray]:
        """Fit the head on the labelled non-junk images; (test metric, uncertainty of every pool image)."""
        rows = np.flatnonzero(labelled & self.useful)
        p = self.pool
        if self.seg:
            predict = fit_segmenter(p["pixels"][rows], p["y"][rows], self.n_classes, self.seed)
            test = predict(p["test_pixels"]).argmax(1).numpy()
            metric = dice(test, p["test_y"])
            unc = []
            for s in range(0, len(p["pixels"]), 64):
                probs = predict(p["pixels"][s : s + 64]).clamp_min(1e-12)
                unc.append((-(probs * probs.log()).sum(1) / np.log(self.n_classes)).flatten(1).mean(1).numpy())
            return metric, np.concatenate(unc)
        if len(np.unique(p["y"][rows])) < 2:  # one class seen: the head can only answer it
            only = int(p["y"][rows][0]) if len(rows) else 0
            return float((p["test_y"] == only).mean()), np.ones(len(p["y"]), np.float32)
        predict = fit_classifier(p["features"][rows], p["y"][rows], self.n_classes, self.seed)
        metric = float((predict(p["test_features"]).argmax(1) == p["test_y"]).mean())
        return metric, entropy_uncertainty(predict(p["features"]))


def run_cell(task: Task, strategy: str, index) -> dict:
    n = len(task.pool["kind"])
    start, batch = int(round(START * n)), int(round(BATCH * n))
    rng = np.random.default_rng([task.seed, 5])
    labelled = np.zeros(n, bool)
    labelled[rng.choice(n, start, replace=False)] = True  # the same start for every strategy of the seed
    pick_rng = np.random.default_rng([task.seed, 7])
    counts, metrics, junk_picks, dup_picks = [], [], [], 0
    for r in range(ROUNDS + 1):
        metric, unc = task.train_eval(labelled)
        counts.append(int(labelled.sum()))
        metrics.append(metric)
        if r == ROUNDS:
            break
        if strategy == "random":
            picks = pick_rng.choice(np.flatnonzero(~labelled), batch, replace=False)
        elif strategy == "first":
            picks = np.flatnonzero(~labelled)[:batch]
        else:
            index.uncertainty = unc
            picks = np.array(select(index, strategy, labelled, batch), np.int64)
        runs = task.pool["run"]
        seen_runs = set(runs[labelled & (runs >= 0)].tolist())
        dup_picks += int(sum(1 for i in picks if runs[i] >= 0 and runs[i] in seen_runs))
        junk_picks.append(int((~task.useful[picks]).sum()))
        labelled[picks] = True
    return {"labels": counts, "metric": metrics, "junk_picks": junk_picks, "duplicate_picks": dup_picks}


# ---- report ------------------------------------------------------------------------------------------------------


def labels_to_reach(counts: list[int], metrics: list[float], target: float) -> tuple[int, bool]:
    for c, m in zip(counts, metrics):
        if m >= target:
            return c, True
    return counts[-1], False


def t_interval(d: np.ndarray) -> tuple[float, float, float]:
    from scipy import stats

    d = np.asarray(d, float)
    m = float(d.mean())
    if len(d) < 2 or d.std(ddof=1) == 0:
        return m, m, m
    h = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    return m, m - h, m + h


def report(out: Path, seeds, figure: Path | None) -> str:
    cells = {}
    for f in (out / "cells").glob("*.json"):
        c = json.loads(f.read_text())
        cells[(c["task"], c["seed"], c["strategy"])] = c
    lines = [
        "| task | strategy | AUC (mean) | AUC − random [95 % CI] | labels to 95 % (mean, reached) | "
        "labels − random [95 % CI] | ratio to random [95 % CI] | junk picked | dup. picks |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    curves: dict[tuple[str, str], list] = {}
    pooled: dict[str, list] = {}
    for task in TASKS:
        done = [s for s in seeds if all((task, s, st) in cells for st in STRATEGIES)]
        if not done:
            continue
        per: dict[str, dict[str, np.ndarray]] = {}
        for st in STRATEGIES:
            auc, lab, reached, jk, dp = [], [], [], [], []
            for s in done:
                c = cells[(task, s, st)]
                auc.append(np.mean(c["metric"]))
                n_lab, ok = labels_to_reach(c["labels"], c["metric"], 0.95 * c["full_score"])
                lab.append(n_lab)
                reached.append(ok)
                jk.append(sum(c["junk_picks"]))
                dp.append(c["duplicate_picks"])
                curves.setdefault((task, st), []).append(
                    (np.array(c["labels"]) / c["pool_size"], np.array(c["metric"]) / c["full_score"])
                )
            per[st] = {"auc": np.array(auc), "lab": np.array(lab, float), "reached": np.array(reached)}
            per[st]["junk"], per[st]["dup"] = np.array(jk), np.array(dp)
        for st in STRATEGIES:
            p, r = per[st], per["random"]
            da = t_interval(p["auc"] - r["auc"])
            dl = t_interval(p["lab"] - r["lab"])
            ratio = t_interval(p["lab"] / r["lab"])
            base = st == "random"
            lines.append(
                f"| {task} | {st} | {p['auc'].mean():.3f} | "
                + ("—" if base else f"{da[0]:+.3f} [{da[1]:+.3f}, {da[2]:+.3f}]")
                + f" | {p['lab'].mean():.1f} ({int(p['reached'].sum())}/{len(done)}) | "
                + ("—" if base else f"{dl[0]:+.1f} [{dl[1]:+.1f}, {dl[2]:+.1f}]")
                + " | "
                + ("1" if base else f"{ratio[0]:.2f} [{ratio[1]:.2f}, {ratio[2]:.2f}]")
                + f" | {p['junk'].mean():.1f} | {p['dup'].mean():.1f} |"
            )
        lines.append(f"|  | seeds | {len(done)} ({done[0]}..{done[-1]}) |  |  |  |  |  |  |")
        for st in STRATEGIES:
            pooled.setdefault(st, []).extend(
                zip(per[st]["auc"] - per["random"]["auc"], per[st]["lab"] / per["random"]["lab"])
            )
    for st in STRATEGIES[1:]:
        if st not in pooled:
            continue
        d_auc, ratio = (np.array(v) for v in zip(*pooled[st]))
        a, r = t_interval(d_auc), t_interval(ratio)
        lines.append(
            f"| all 4 tasks (pooled pairs: {len(ratio)}) | {st} |  | {a[0]:+.3f} [{a[1]:+.3f}, {a[2]:+.3f}] |  |  | "
            f"{r[0]:.2f} [{r[1]:.2f}, {r[2]:.2f}] |  |  |"
        )
    if figure is not None and curves:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(TASKS), figsize=(4 * len(TASKS), 3.4), sharey=False)
        for ax, task in zip(np.atleast_1d(axes), TASKS):
            for st in STRATEGIES:
                if (task, st) not in curves:
                    continue
                xs = np.mean([c[0] for c in curves[(task, st)]], 0)
                ys = np.array([c[1] for c in curves[(task, st)]])
                m = ys.mean(0)
                se = ys.std(0, ddof=1) / np.sqrt(len(ys)) if len(ys) > 1 else 0 * m
                ax.plot(xs, m, label=st, marker=".")
                ax.fill_between(xs, m - 1.96 * se, m + 1.96 * se, alpha=0.15)
            ax.axhline(0.95, color="grey", ls=":", lw=1)
            ax.set_title(task, fontsize=9)
            ax.set_xlabel("fraction of the pool labelled")
        np.atleast_1d(axes)[0].set_ylabel("metric / full-label metric")
        np.atleast_1d(axes)[-1].legend(fontsize=8)
        fig.tight_layout()
        figure.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(figure, dpi=110)
        print(f"figure: {figure}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "active_learning")
    ap.add_argument("--seeds", default="report", help="report (0..9) | tuning (100..102) | comma list")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--figure", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    seeds = {"report": REPORT_SEEDS, "tuning": TUNING_SEEDS}.get(args.seeds)
    seeds = seeds or tuple(int(s) for s in args.seeds.split(","))
    tasks = [t for t in args.tasks.split(",") if t]
    cells_dir = args.out / "cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        net = standin_backbone(args.out)
        todo = [(t, s) for s in seeds for t in tasks]
        total = len(todo) * len(STRATEGIES)
        done = sum(1 for t, s in todo for st in STRATEGIES if (cells_dir / f"{t}_{s}_{st}.json").is_file())
        t0, ran = time.time(), 0
        for task_name, seed in todo:
            missing = [st for st in STRATEGIES if not (cells_dir / f"{task_name}_{seed}_{st}.json").is_file()]
            if not missing:
                continue
            pool = pool_with_features(task_name, seed, net, args.out / "pools")
            task = Task(task_name, pool, seed)
            full, _ = task.train_eval(np.ones(len(pool["kind"]), bool))
            index = build_index(
                f"standin-seed{seed}",
                [str(i) for i in range(len(pool["kind"]))],
                pool["features"],
                pool["signatures"],
                np.zeros(len(pool["kind"]), np.float32),
                ActiveLearningSettings(seed=seed),
            )
            for st in missing:
                cell = run_cell(task, st, index)
                cell.update(
                    task=task_name,
                    seed=seed,
                    strategy=st,
                    full_score=full,
                    pool_size=len(pool["kind"]),
                    index_info=index.info,
                )
                path = cells_dir / f"{task_name}_{seed}_{st}.json"
                path.with_suffix(".tmp").write_text(json.dumps(cell))
                os.replace(path.with_suffix(".tmp"), path)
                done += 1
                ran += 1
                eta = (time.time() - t0) / ran * (total - done)
                print(
                    f"[{done}/{total}] {task_name} seed {seed} {st:11s} full {full:.3f} "
                    f"final {cell['metric'][-1]:.3f} junk {sum(cell['junk_picks'])} dups {cell['duplicate_picks']} "
                    f"(eta {eta / 60:.1f} min)",
                    flush=True,
                )
    print(report(args.out, seeds, args.figure))


if __name__ == "__main__":
    main()
