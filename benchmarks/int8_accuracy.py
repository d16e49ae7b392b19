"""Accuracy change of reduced precision (INT8, bf16) on a phantom classification task.

There is no fine-tuned TinyUSFM checkpoint offline, so the fp32 reference is trained here: TinyUSFM
(random init) on a phantom task for a few epochs through the bundle's own preprocessing, then the same
weights are exported as ONNX fp32, ONNX INT8 (`quantize_onnx_int8`, `tinyusfm-monai export --format onnx --int8`),
torch.ao INT8, OpenVINO f32 / bf16 and OpenVINO INT8 (NNCF calibrated on the training images, as
`tinyusfm-monai export --format openvino --int8`), and compared on the phantom test split: accuracy, argmax
agreement with fp32, and probability/logit error.

    python benchmarks/int8_accuracy.py [--task busi_classification] [--train 300] [--test 200] [--epochs 6]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tinyusfm_monai.data.phantom import generate_task
from tinyusfm_monai.deploy import (
    configure_threads,
    export_onnx,
    onnx_session,
    quantize_linear_dynamic,
    quantize_onnx_int8,
)
from tinyusfm_monai.deploy.onnx import run_onnx
from tinyusfm_monai.networks import build_backbone
from tinyusfm_monai.transforms.pipelines import build_preprocessing


def _load(datalist: Path, split: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    entries = json.loads(datalist.read_text())[split]
    pre = build_preprocessing(size)
    xs = [pre({"image": str(datalist.parent / e["image"])})["image"].as_tensor() for e in entries]
    return torch.stack(xs), torch.tensor([int(e["label"]) for e in entries])


def _openvino_outputs(
    model: torch.nn.Module, x_train: torch.Tensor, x_test: torch.Tensor, size: int
) -> dict[str, np.ndarray]:
    """OpenVINO f32, bf16 (where the CPU has it) and NNCF INT8 calibrated on the training images."""
    from tinyusfm_monai.deploy import openvino as ovd

    if not ovd.openvino_available():
        return {}
    fp32 = ovd.convert_network(model, size)
    int8 = ovd.quantize_int8(fp32, [x[None].numpy() for x in x_train], len(x_train))
    variants = [(f"{p} OpenVINO", fp32, p) for p in ovd.cpu_precisions()] + [("int8 OpenVINO (NNCF)", int8, "f32")]
    outs = {}
    for name, ir, precision in variants:
        request = ovd.compile_openvino(ir, precision).create_infer_request()
        outs[name] = np.concatenate([ovd.run_openvino(request, x[None]) for x in x_test])
    return outs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="busi_classification")
    parser.add_argument("--train", type=int, default=300)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: physical cores)")
    args = parser.parse_args()
    configure_threads(args.threads or None)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="int8acc_") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        datalist = generate_task(
            args.task, work / "data", n_train=args.train, n_val=0, n_test=args.test, image_size=args.size
        )
        x_train, y_train = _load(datalist, "training", args.size)
        x_test, y_test = _load(datalist, "test", args.size)
        classes = int(max(y_train.max(), y_test.max())) + 1
        print(
            f"phantom {args.task}: {len(y_train)} train / {len(y_test)} test at {args.size}^2, {classes} classes "
            f"({time.perf_counter() - t:.0f} s to generate and preprocess)"
        )

        model = build_backbone("tinyusfm", num_classes=classes, img_size=args.size)
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
        steps = args.epochs * ((len(y_train) + args.batch - 1) // args.batch)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.15)
        for epoch in range(args.epochs):
            model.train()
            perm = torch.randperm(len(y_train))
            total = 0.0
            t = time.perf_counter()
            for i in range(0, len(perm), args.batch):
                idx = perm[i : i + args.batch]
                xb = x_train[idx]
                if torch.rand(()) < 0.5:
                    xb = xb.flip(-1)
                loss = F.cross_entropy(model(xb), y_train[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss) * len(idx)
            print(
                f"epoch {epoch + 1}/{args.epochs}: loss {total / len(y_train):.3f} ({time.perf_counter() - t:.0f} s)",
                flush=True,
            )
        model.eval()

        with torch.inference_mode():
            ref = torch.cat([model(x_test[i : i + 32]) for i in range(0, len(y_test), 32)]).numpy()
            q = quantize_linear_dynamic(model)
            torch_int8 = torch.cat([q(x_test[i : i + 32]) for i in range(0, len(y_test), 32)]).numpy()
        fp32_path = export_onnx(model, work / "m.onnx", image_size=args.size)
        int8_path = quantize_onnx_int8(fp32_path, work / "m_int8.onnx")
        outs = {
            "fp32 eager": ref,
            "fp32 ONNX": None,
            "int8 ONNX (ORT dynamic)": None,
            "int8 torch.ao dynamic": torch_int8,
        }
        for name, path in (("fp32 ONNX", fp32_path), ("int8 ONNX (ORT dynamic)", int8_path)):
            session = onnx_session(path)
            outs[name] = np.concatenate([run_onnx(session, x_test[i : i + 32]) for i in range(0, len(y_test), 32)])
        outs.update(_openvino_outputs(model, x_train, x_test, args.size))
        y = y_test.numpy()
        p_ref = torch.softmax(torch.from_numpy(ref), 1).numpy()
        print(
            f"\n## INT8 and bf16, TinyUSFM on phantom {args.task} ({len(y)} test images, {args.epochs} epochs from scratch)\n"
        )
        print(
            "| model | accuracy | Δ accuracy vs fp32 | argmax agreement with fp32 | max |Δ prob| | mean |Δ prob| | max |Δ logit| |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        acc_ref = float((ref.argmax(1) == y).mean())
        for name, out in outs.items():
            p = torch.softmax(torch.from_numpy(out), 1).numpy()
            acc = float((out.argmax(1) == y).mean())
            print(
                f"| {name} | {acc:.2%} | {acc - acc_ref:+.2%} | {float((out.argmax(1) == ref.argmax(1)).mean()):.2%} | "
                f"{np.abs(p - p_ref).max():.4f} | {np.abs(p - p_ref).mean():.5f} | {np.abs(out - ref).max():.4f} |"
            )
        print(f"\nchance level {np.bincount(y).max() / len(y):.2%} (majority class of the test split)")


if __name__ == "__main__":
    main()
