"""Ablation of the distillation bundle on the ultrasound phantom (CPU, a few minutes).

1. Pretrain a small USFM-architecture teacher (supervised, a few hundred steps) on phantom classification tasks,
   so it has something worth distilling (no real USFM weights exist on these machines).
2. Select coresets from an unlabelled phantom pool with coreset.json's components (dual rank vs random).
3. Distil TinyUSFM students with train.json itself (parsed with ConfigParser), each row one config override:
   (a) vanilla: no teacher (reconstruction only: `distill#feature_weight 0`, `distill#attn_weight 0`)
   (b) random subset            `coreset_datalist` = random selection
   (c) dual-rank coreset        (the default recipe)
   (d) no consistency weighting `consistency#enabled false`
   (e) spatial-only / frequency-only masks  `masks#frequency_enabled false` / `masks#spatial_enabled false`
4. Linear-probe each frozen student (pooled 192-d feature, multinomial logistic regression) on held-out phantom
   tasks that the teacher never saw; print the table (mean test accuracy over tasks).

Numbers are whatever they are: the phantom is small, the runs are short, one seed by default (--seeds for more).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monai.bundle import ConfigParser  # noqa: E402

from tinyusfm_monai.data.phantom import generate_pool, generate_task  # noqa: E402
from tinyusfm_monai.distillation import coreset as cs  # noqa: E402
from tinyusfm_monai.distillation.features import FeatureStore, extract_features, pooled_teacher_embedding  # noqa: E402
from tinyusfm_monai.distillation.model import FrozenTeacher  # noqa: E402
from tinyusfm_monai.distillation.pool import build_manifest, build_pool_transform, manifest_datalist  # noqa: E402
from tinyusfm_monai.distillation.quality import QualityScorer, quality_scores  # noqa: E402
from tinyusfm_monai.networks import TinyUSFM, VisionTransformer  # noqa: E402

TEACHER_TASKS = ["busi_classification", "mmotu_classification", "fetal_planes_classification"]
PROBE_TASKS = ["aul_classification", "stmus_classification", "uf1990_classification", "cubs_classification"]
CONFIG = ROOT / "bundles" / "tinyusfm_distillation" / "configs" / "train.json"


def teacher_net(img: int) -> VisionTransformer:
    # USFM architecture (q/v bias, relative position bias, layer scale), narrower and shallower for CPU
    return VisionTransformer(
        img_size=img,
        embed_dim=192,
        depth=6,
        num_heads=6,
        qv_bias=True,
        use_abs_pos_emb=False,
        use_rel_pos_bias=True,
        init_values=0.1,
    )


def load_split(datalist: Path, split: str, transform) -> tuple[torch.Tensor, torch.Tensor]:
    data = json.loads(datalist.read_text())
    items = data[split]
    xs = torch.stack([transform({"image": str(datalist.parent / it["image"]), "frame": -1})["image"] for it in items])
    ys = torch.tensor([int(it["label"]) for it in items])
    return xs, ys


def pretrain_teacher(img: int, work: Path, steps: int, transform) -> VisionTransformer:
    torch.manual_seed(0)
    net = teacher_net(img)
    data = []
    for t in TEACHER_TASKS:
        dl = generate_task(t, work / "teacher" / t, n_train=96, n_val=0, n_test=0, image_size=img, seed=1)
        data.append(load_split(dl, "training", transform))
    heads = torch.nn.ModuleList([torch.nn.Linear(net.embed_dim, int(y.max()) + 1) for _, y in data])
    opt = torch.optim.AdamW(list(net.parameters()) + list(heads.parameters()), lr=5e-4, weight_decay=0.05)
    g = torch.Generator().manual_seed(0)
    for step in range(steps):
        loss = 0.0
        for (x, y), head in zip(data, heads):
            idx = torch.randint(len(x), (16,), generator=g)
            xb = x[idx].flip(-1) if step % 2 else x[idx]
            loss = loss + F.cross_entropy(head(net(xb)), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    return net


def linear_probe(features_tr, y_tr, features_te, y_te, epochs: int = 300) -> float:
    mu, sd = features_tr.mean(0), features_tr.std(0) + 1e-6
    a, b = (features_tr - mu) / sd, (features_te - mu) / sd
    w = torch.zeros(a.shape[1], int(y_tr.max()) + 1, requires_grad=True)
    bias = torch.zeros(int(y_tr.max()) + 1, requires_grad=True)
    opt = torch.optim.LBFGS([w, bias], lr=0.5, max_iter=epochs)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(a @ w + bias, y_tr) + 1e-3 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return float(((b @ w + bias).argmax(1) == y_te).float().mean())


@torch.no_grad()
def embed(model, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i : i + 64]) for i in range(0, len(x), 64)])


def probe_suite(img: int, work: Path, transform) -> list[tuple]:
    suite = []
    for t in PROBE_TASKS:
        dl = generate_task(t, work / "probe" / t, n_train=80, n_val=0, n_test=60, image_size=img, seed=2)
        suite.append((t, load_split(dl, "training", transform), load_split(dl, "test", transform)))
    return suite


def probe(model, suite) -> float:
    accs = [linear_probe(embed(model, xtr), ytr, embed(model, xte), yte) for _, (xtr, ytr), (xte, yte) in suite]
    return float(np.mean(accs))


def select_coresets(teacher, items, pool_hash, work: Path, img: int, budget: float, transform, seed: int):
    store = FeatureStore(work / "features")
    extract_features(
        items,
        pool_hash,
        pooled_teacher_embedding(teacher),
        teacher.embed_dim,
        store,
        transform,
        batch_size=32,
        shard_size=128,
    )
    scorer = QualityScorer(work / "quality", TinyUSFM(img_size=img), epochs=3, lr=3e-4, batch_size=32, seed=seed)
    scorer.run(items, store, transform)
    quality = quality_scores(scorer.gradients(store))
    centres = cs.kmeans(store, 8, iters=15, seed=seed)
    labels, dists = cs.assign(store, centres)
    out = {}
    for strategy in ("random", "dual"):
        sel = cs.select(strategy, len(items), budget, labels, dists, quality, seed=seed)
        path = work / f"coreset_{strategy}.json"
        path.write_text(json.dumps({"training": [items[i] for i in sel.selected]}))
        out[strategy] = path
    return out


def distil(overrides: dict, work: Path, name: str, seed: int) -> torch.nn.Module:
    parser = ConfigParser()
    parser.read_config(str(CONFIG))
    parser.update({"bundle_root": str(work / name), "resume": False, "seed": seed, **overrides})
    from monai.utils import set_determinism

    set_determinism(seed)
    trainer = parser.get_parsed_content("train#trainer")
    trainer.logger.setLevel("WARNING")
    trainer.run()
    return parser.get_parsed_content("network")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--pool", type=int, default=480)
    ap.add_argument("--budget", type=float, default=0.25)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--teacher-steps", type=int, default=300)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument(
        "--work",
        type=str,
        default="",
        help="work folder; an existing one reuses the teacher, the feature store and the gradient records",
    )
    ap.add_argument("--rows", type=str, default="init,a,b,c,d,e1,e2", help="comma-separated subset of rows to run")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    work = Path(args.work or tempfile.mkdtemp(prefix="tinyusfm_ablation_"))
    img = args.image_size
    transform = build_pool_transform(img)
    t0 = time.time()
    teacher_path = work / "teacher.pth"
    if teacher_path.is_file():
        teacher = teacher_net(img)
        teacher.load_state_dict(torch.load(teacher_path, weights_only=True))
        teacher.eval()
        print(f"teacher reused from {teacher_path}", flush=True)
    else:
        teacher = pretrain_teacher(img, work, args.teacher_steps, transform)
        torch.save(teacher.state_dict(), teacher_path)
        print(f"teacher pretrained in {time.time() - t0:.0f}s", flush=True)
    wanted = set(args.rows.split(","))
    pool_dl = work / "pool" / "datalist.json"
    if not pool_dl.is_file():
        pool_dl = generate_pool(work / "pool", n=args.pool, image_size=img, seed=3)
    manifest = build_manifest([pool_dl], work / "pool_manifest.json")
    items = manifest_datalist(manifest)
    pool_hash = json.loads(manifest.read_text())["pool_hash"]
    suite = probe_suite(img, work, transform)
    frozen = FrozenTeacher(teacher_net(img), str(teacher_path), feature_layers=[1, 3, 5], attn_layers=[5])
    teacher_def = {
        "_target_": "tinyusfm_monai.networks.VisionTransformer",
        "img_size": img,
        "embed_dim": 192,
        "depth": 6,
        "num_heads": 6,
        "qv_bias": True,
        "use_abs_pos_emb": False,
        "use_rel_pos_bias": True,
        "init_values": 0.1,
    }
    base = {
        "image_size": img,
        "phantom_pool_size": 0,
        "dataset_dir": str(pool_dl.parent),
        "manifest": str(manifest),
        "teacher_def": teacher_def,
        "teacher_weights": str(teacher_path),
        "distill#student_layers": [3, 7, 11],
        "distill#teacher_layers": [1, 3, 5],
        "distill#student_attn_layers": [11],
        "distill#teacher_attn_layers": [5],
        "max_epochs": args.epochs,
        "batch_size": 16,
        "base_lr": 0.004,
        "train#trainer#train_handlers": "$@train#handlers[2:3]",
    }
    rows: dict[str, list[float]] = {}
    t_sel = time.time()
    for seed in range(args.seeds):
        coresets = select_coresets(frozen, items, pool_hash, work / f"sel{seed}", img, args.budget, transform, seed)
        if seed == 0:
            print(f"coresets selected in {time.time() - t_sel:.0f}s", flush=True)
        dual = str(coresets["dual"])
        variants = [
            ("random init (no pretraining)", None),
            (
                "(a) vanilla: reconstruction only, no teacher",
                {"coreset_datalist": dual, "distill#feature_weight": 0.0, "distill#attn_weight": 0.0},
            ),
            ("(b) distilled, random subset", {"coreset_datalist": str(coresets["random"])}),
            ("(c) distilled, dual-rank coreset", {"coreset_datalist": dual}),
            ("(d) (c) without consistency weighting", {"coreset_datalist": dual, "consistency#enabled": False}),
            ("(e1) (c) spatial mask only", {"coreset_datalist": dual, "masks#frequency_enabled": False}),
            ("(e2) (c) frequency mask only", {"coreset_datalist": dual, "masks#spatial_enabled": False}),
        ]
        for name, override in variants:
            key = "init" if override is None else name.split()[0].strip("()")
            if key not in wanted:
                continue
            t = time.time()
            if override is None:
                torch.manual_seed(seed)
                model = TinyUSFM(img_size=img)
            else:
                model = distil({**base, **override}, work / f"runs{seed}", name.split()[0].strip("()"), seed)
            acc = probe(model, suite)
            rows.setdefault(name, []).append(acc)
            print(f"  seed {seed} {name}: probe acc {acc:.3f} ({time.time() - t:.0f}s)", flush=True)
    teacher_acc = probe(teacher, suite)
    print()
    print(
        f"Linear probe on held-out phantom tasks ({', '.join(PROBE_TASKS)}), image {img}px, pool {args.pool}, "
        f"budget {args.budget:g}, {args.epochs} distillation epochs, {args.seeds} seed(s); total "
        f"{time.time() - t0:.0f}s"
    )
    print(f"| {'student':<48} | mean test accuracy |")
    print(f"|{'-' * 50}|{'-' * 20}|")
    for name, accs in rows.items():
        spread = f" ± {np.std(accs):.3f}" if len(accs) > 1 else ""
        print(f"| {name:<48} | {np.mean(accs):.3f}{spread:<13} |")
    print(f"| {'teacher (small USFM-architecture, supervised)':<48} | {teacher_acc:.3f}{'':<13} |")


if __name__ == "__main__":
    main()
