"""Distillation throughput: images/s of the bundle's own step, its parts, peak memory and MFU.

Parts, each timed with the bundle's components and settings (teacher weights cast once to the teacher dtype,
masks from a device generator, uint8 batches normalised on the device, student under autocast):
  teacher : frozen teacher forward on both masked views (no grad)
  student : student + projection heads + light decoder forward/backward/optimizer step, given the teacher targets
  full    : `DistillationIteration` itself (augment, masks, teacher, consistency weights, student, loss, step)
Images/s counts clean images (each is seen as 2 masked views). MFU = achieved FLOP/s / the device's peak, with
FLOPs by the paper's convention (2 x MACs of linear and conv layers; attention matrix products excluded, so MFU is
a lower bound): teacher forward on 2 views, student forward + backward (3 x forward) on 2 views.

`--bundle` also runs the real `python -m monai.bundle run configs/train.json` on a generated phantom pool and reports
images/s over the last epochs (data loading from the decoded pool on disk included).

Usage: python benchmarks/distillation_throughput.py [--device cuda] [--batch 128 256] [--bundle]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PEAK_TFLOPS = {"cuda": 790.0}  # dense bf16, H200/H100 SXM (what a 8192^3 matmul reaches on the H200: ~790)


def _components(device, image_size: int, teacher_dtype: str, compile_: bool, seed: int = 0):
    import torch

    from tinyusfm_monai.bundle.distillation import train_config
    from tinyusfm_monai.distillation.consistency import ConsistencyWeighting
    from tinyusfm_monai.distillation.losses import DistillationLoss
    from tinyusfm_monai.distillation.masks import DomainMasker
    from tinyusfm_monai.distillation.model import DistillationModel, FrozenTeacher
    from tinyusfm_monai.distillation.settings import DistillSettings, from_mapping
    from tinyusfm_monai.networks import USFM, TinyUSFM

    cfg = train_config()  # the bundle's defaults: masks, consistency, distill sections
    torch.manual_seed(seed)
    distill = from_mapping(DistillSettings, cfg["distill"])
    teacher = FrozenTeacher(
        USFM(img_size=image_size, drop_path_rate=0.0),
        None,
        distill.teacher_layers,
        distill.teacher_attn_layers,
        device,
        dtype=teacher_dtype,
        compile=compile_,
    )
    student = TinyUSFM(img_size=image_size)
    model = DistillationModel.from_settings(student, teacher, cfg["distill"]).to(device)
    network = torch.compile(model) if compile_ else model
    masker = DomainMasker.from_settings(cfg["masks"], device=device, seed=seed)
    loss = DistillationLoss.from_settings(cfg["distill"], patch_size=student.patch_size)
    consistency = ConsistencyWeighting.from_settings(cfg["consistency"])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), fused=device.type == "cuda")
    return teacher, student, model, network, masker, loss, consistency, opt


def _flops_per_image(image_size: int) -> float:
    """Teacher fwd on 2 views + student (fwd + bwd = 3 x fwd) on 2 views, paper convention."""
    from tinyusfm_monai.networks import USFM, TinyUSFM
    from tinyusfm_monai.networks.profile import count_flops

    teacher = count_flops(USFM(num_classes=0, img_size=image_size), image_size)
    student = count_flops(TinyUSFM(num_classes=0, img_size=image_size), image_size)
    return 2 * teacher + 2 * 3 * student


def measure(
    mode: str, batch: int, image_size: int, steps: int, warmup: int, device_name: str, amp_dtype: str, compile_: bool
) -> dict:
    import logging

    import torch

    from tinyusfm_monai.distillation.engine import DistillationIteration
    from tinyusfm_monai.distillation.shards import normalize_on_device

    logging.disable(logging.WARNING)
    device = torch.device(device_name)
    amp = device.type == "cuda" and amp_dtype != "none"
    teacher_dtype = "bfloat16" if amp else "float32"
    teacher, student, model, network, masker, loss_fn, cons, opt = _components(
        device, image_size, teacher_dtype, compile_
    )
    autocast = {"device_type": device.type, "enabled": amp, "dtype": getattr(torch, amp_dtype, torch.bfloat16)}
    gen = torch.Generator(device=device).manual_seed(0)
    clean = torch.randint(0, 256, (batch, 3, image_size, image_size), dtype=torch.uint8, generator=gen, device=device)
    x = normalize_on_device(clean)
    views = masker(x)
    names = list(views)
    stacked = torch.cat([views[n][0] for n in names])
    masks = {n: views[n][1] for n in names}
    with torch.autocast(**autocast):
        t_fixed = teacher(stacked)
    engine = SimpleNamespace(
        state=SimpleNamespace(device=device, iteration=1, max_epochs=1, epoch_length=steps + warmup),
        non_blocking=True,
        network=network,
        optimizer=opt,
        amp=amp,
        amp_kwargs={"dtype": autocast["dtype"]},
    )
    iteration = DistillationIteration(teacher, masker, loss_fn, cons, None)

    def step_teacher() -> None:
        with torch.autocast(**autocast):
            teacher(stacked)

    def step_student() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(**autocast):
            terms = loss_fn(network(stacked), t_fixed, x, names, masks, None)
        terms["loss"].backward()
        opt.step()

    def step_full() -> None:
        iteration(engine, {"image": clean})

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
    from tinyusfm_monai.utils import peak_rss_mib

    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else peak_rss_mib()
    rate = batch * steps / dt
    out = {"mode": mode, "batch": batch, "images_per_s": rate, "ms_per_step": 1000 * dt / steps, "peak_mib": peak}
    out.update(device=str(device), amp=amp_dtype if amp else "off", compile=compile_, threads=torch.get_num_threads())
    if mode == "full":
        tflops = rate * _flops_per_image(image_size) / 1e12
        out["tflops"] = tflops
        out["mfu"] = tflops / PEAK_TFLOPS[device.type] if device.type in PEAK_TFLOPS else None
    return out


def bundle_rate(pool: int, batch: int, image_size: int, workers: int, epochs: int) -> dict:
    """The real bundle on a generated phantom pool: images/s over epochs 2..N (epoch 1 includes the start-up)."""
    work = Path(tempfile.mkdtemp(prefix="tinyusfm_distil_bundle_"))
    args = {
        "phantom_pool_size": pool,
        "image_size": image_size,
        "batch_size": batch,
        "num_workers": workers,
        "max_epochs": epochs,
        "resume": False,
    }
    (work / "args.json").write_text(json.dumps(args))
    config = ROOT / "bundles" / "tinyusfm_distillation" / "configs" / "train.json"
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str(config),
        "--bundle_root",
        str(work),
        "--args_file",
        str(work / "args.json"),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"bundle run failed:\n{log[-3000:]}")
    times = [
        3600 * int(h) + 60 * int(m) + float(s)
        for h, m, s in re.findall(r"Epoch\[\d+\] Complete\. Time taken: (\d+):(\d+):([\d.]+)", log)
    ]
    steady = times[1:] or times
    per_epoch = (pool // batch) * batch
    return {
        "pool": pool,
        "batch": batch,
        "workers": workers,
        "epochs": len(times),
        "wall_s": wall,
        "epoch_s": steady,
        "images_per_s": per_epoch * len(steady) / sum(steady),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--batch", type=int, nargs="+", default=[4])
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--amp-dtype", default="bfloat16", help="bfloat16 | float16 | none (CUDA only)")
    ap.add_argument("--compile", action="store_true", help="torch.compile teacher and student")
    ap.add_argument("--parts", nargs="+", default=["teacher", "student", "full"])
    ap.add_argument("--bundle", action="store_true", help="also run the real bundle on a phantom pool")
    ap.add_argument("--bundle-pool", type=int, default=2048)
    ap.add_argument("--bundle-batch", type=int, default=128)
    ap.add_argument("--bundle-workers", type=int, default=8)
    ap.add_argument("--bundle-epochs", type=int, default=3)
    ap.add_argument("--json", default="", help="also write the rows here")
    ap.add_argument("--child", default="")
    args = ap.parse_args()
    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if args.child:
        mode, batch = args.child.split(":")
        row = measure(mode, int(batch), args.image_size, args.steps, args.warmup, device, args.amp_dtype, args.compile)
        print(json.dumps(row))
        return
    rows = []
    for batch in args.batch:
        for mode in args.parts:  # one child process per measurement: its peak memory is its own
            cmd = [
                sys.executable,
                __file__,
                "--child",
                f"{mode}:{batch}",
                "--device",
                device,
                "--image-size",
                str(args.image_size),
                "--steps",
                str(args.steps),
                "--warmup",
                str(args.warmup),
                "--amp-dtype",
                args.amp_dtype,
            ] + (["--compile"] if args.compile else [])
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                print(out.stderr[-2000:], file=sys.stderr)
                raise SystemExit(f"measurement {mode} batch {batch} failed")
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"  measured {mode} batch {batch}", file=sys.stderr, flush=True)
    r = rows[0]
    print(
        f"\n## Distillation iteration, {r['device']} ({r['threads']} CPU threads), AMP {r['amp']}, "
        f"compile {'on' if r['compile'] else 'off'}, {args.image_size}px, {args.steps} timed steps after "
        f"{args.warmup} warm-up; images/s = clean images (each seen as 2 masked views)\n"
    )
    print("| part | batch | images/s | ms/step | peak memory (MiB) | TFLOP/s | MFU |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        tf = f"{r['tflops']:.0f}" if r.get("tflops") else "-"
        mfu = f"{100 * r['mfu']:.0f} %" if r.get("mfu") else "-"
        print(
            f"| {r['mode']} | {r['batch']} | {r['images_per_s']:.1f} | {r['ms_per_step']:.1f} | "
            f"{r['peak_mib']:.0f} | {tf} | {mfu} |"
        )
    if args.bundle:
        b = bundle_rate(args.bundle_pool, args.bundle_batch, args.image_size, args.bundle_workers, args.bundle_epochs)
        rows.append({"mode": "bundle", **b})
        print(
            f"\n## `monai.bundle run configs/train.json`, phantom pool of {b['pool']} decoded to uint8 shards, "
            f"batch {b['batch']}, {b['workers']} workers: {b['images_per_s']:.1f} images/s over epochs 2..{b['epochs']} "
            f"(epoch times {', '.join(f'{t:.2f}' for t in b['epoch_s'])} s; whole command {b['wall_s']:.0f} s)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
