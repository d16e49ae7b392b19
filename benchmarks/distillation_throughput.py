"""Distillation throughput: images/s and peak memory, teacher cost separated from student cost.

Each measurement runs in its own child process, so its peak resident memory (CPU) is its own:
  teacher  : frozen USFM forward on both masked views (no grad)
  student  : TinyUSFM + projection heads + light decoder forward/backward/AdamW step, given the teacher targets
  full     : the bundle's whole iteration (masks, teacher, consistency weights, student, loss, step)
On a GPU (when one exists) AMP is on and peak memory is `torch.cuda.max_memory_allocated`; on CPU it is the
child's peak RSS. Images/s counts clean images (each is seen as 2 masked views).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def child(mode: str, batch: int, img: int, steps: int, warmup: int) -> dict:
    import logging

    import torch

    from tinyusfm_monai.distillation.consistency import ConsistencyWeighting
    from tinyusfm_monai.distillation.losses import DistillationLoss
    from tinyusfm_monai.distillation.masks import build_masker
    from tinyusfm_monai.distillation.model import DistillationModel, FrozenTeacher
    from tinyusfm_monai.networks import USFM, TinyUSFM

    logging.disable(logging.WARNING)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp = device.type == "cuda"
    torch.manual_seed(0)
    teacher = FrozenTeacher(USFM(img_size=img, drop_path_rate=0.0), None, [3, 7, 11], [11], device)
    model = DistillationModel(TinyUSFM(img_size=img), teacher).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    masker = build_masker()
    loss_fn = DistillationLoss()
    cons = ConsistencyWeighting()
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    x = torch.randn(batch, 3, img, img, device=device)
    views = masker(x)
    names = list(views)
    stacked = torch.cat([views[n][0] for n in names])
    masks = {n: views[n][1] for n in names}
    with torch.autocast(device.type, enabled=amp):
        t_fixed = teacher(stacked)

    def step_teacher():
        with torch.autocast(device.type, enabled=amp):
            teacher(stacked)

    def step_student(t_out=None, w=None, xs=stacked, ms=masks):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, enabled=amp):
            terms = loss_fn(model(xs), t_out or t_fixed, x, names, ms, w)
        scaler.scale(terms["loss"]).backward()
        scaler.step(opt)
        scaler.update()

    def step_full():
        v = masker(masker.augment(x))
        xs = torch.cat([v[n][0] for n in names])
        with torch.autocast(device.type, enabled=amp):
            t_out = teacher(xs)
        b = x.shape[0]
        w = cons(t_out["final"][:b], t_out["final"][b:], 0.5)
        step_student(t_out, w, xs, {n: v[n][1] for n in names})

    fn = {"teacher": step_teacher, "student": step_student, "full": step_full}[mode]
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {
        "mode": mode,
        "device": str(device),
        "amp": amp,
        "images_per_s": batch * steps / dt,
        "s_per_step": dt / steps,
        "peak_mib": peak,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--child", type=str, default="")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.batch, args.image_size, args.steps, args.warmup)))
        return
    rows = []
    for mode in ("teacher", "student", "full"):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                mode,
                "--batch",
                str(args.batch),
                "--image-size",
                str(args.image_size),
                "--steps",
                str(args.steps),
                "--warmup",
                str(args.warmup),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"  measured {mode}", file=sys.stderr, flush=True)
    r = rows[0]
    print(
        f"Distillation throughput, {r['device']} ({r['threads']} threads), AMP {'on' if r['amp'] else 'off'}, "
        f"batch {args.batch} clean images × 2 masked views, {args.image_size}px, {args.steps} timed steps"
    )
    print("| part | images/s | s/step | peak memory (MiB) |")
    print("|---|---|---|---|")
    labels = {
        "teacher": "teacher (USFM fwd, 2 views, no grad)",
        "student": "student (TinyUSFM+heads+decoder fwd/bwd/step)",
        "full": "full iteration",
    }
    for r in rows:
        print(f"| {labels[r['mode']]} | {r['images_per_s']:.2f} | {r['s_per_step']:.2f} | {r['peak_mib']:.0f} |")
    print(
        "peak memory: peak RSS of the measuring process on CPU (includes the Python/torch runtime and the "
        "teacher weights in every row), max_memory_allocated on GPU"
    )


if __name__ == "__main__":
    main()
