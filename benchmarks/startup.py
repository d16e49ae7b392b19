"""Where a bundle run's start-up goes: `python -X importtime -m monai.bundle run` on one image, summarised.

Prints (1) the wall time of the whole command next to `python -c "import monai"` and `import torch` alone,
(2) import time per top-level package (the interpreter's own `-X importtime` self times, summed), and (3) who
imports the heaviest ones (the chain up to the first import), so a start-up figure can be traced to a package.

    python benchmarks/startup.py [--task busi_classification] [--backend pytorch|openvino] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_importtime(text: str) -> list[tuple[int, int, int, str]]:
    """(self us, cumulative us, depth, module) per `-X importtime` line, in the order printed (children first)."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        fields = line[len("import time:") :].split("|")
        name = fields[2].rstrip("\n")
        depth = (len(name) - len(name.lstrip())) // 2
        rows.append((int(fields[0]), int(fields[1]), depth, name.strip()))
    return rows


def chain(rows: list[tuple[int, int, int, str]], index: int) -> list[str]:
    """The module at `index` and its importers up to the top level."""
    names, depth = [rows[index][3]], rows[index][2]
    for j in range(index + 1, len(rows)):
        if rows[j][2] < depth:
            names.append(rows[j][3])
            depth = rows[j][2]
            if depth == 0:
                break
    return names


def _wall(cmd: list[str], runs: int, env: dict[str, str]) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, capture_output=True, cwd=REPO, env=env)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="busi_classification")
    parser.add_argument("--backend", default="pytorch", help="bundle.parser.BACKENDS name")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()

    import numpy as np
    import torch
    from PIL import Image

    from tinyusfm_monai.bundle.parser import backend_configs, bundle_parser

    overlays, overrides = backend_configs(args.backend)
    with tempfile.TemporaryDirectory(prefix="tinyusfm_startup_") as tmp:
        bundle = Path(tmp) / args.task
        shutil.copytree(REPO / "bundles" / args.task / "configs", bundle / "configs")
        (bundle / "models").mkdir()
        network = bundle_parser(bundle).get_parsed_content("network_def").eval()
        torch.save(network.state_dict(), bundle / "models" / "model.pt")
        if args.backend.startswith("openvino"):  # exported as `tinyusfm-monai export` would (no conversion at run time)
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from inference import _openvino_exports

            _openvino_exports(network, bundle / "models" / "model")
        elif args.backend.startswith("onnx"):
            from tinyusfm_monai.deploy import export_onnx, quantize_onnx_int8

            export_onnx(network, bundle / "models" / "model.onnx")
            quantize_onnx_int8(bundle / "models" / "model.onnx", bundle / "models" / "model_int8.onnx")
        images = Path(tmp) / "images"
        images.mkdir()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(images / "a.png")
        files = [str(bundle / "configs" / c) for c in ("inference.json", *overlays)]
        config = files[0] if len(files) == 1 else "[" + ",".join(f"'{f}'" for f in files) + "]"
        extra = [a for k, v in overrides.items() for a in (f"--{k}", str(v))]
        run = ["-m", "monai.bundle", "run", "--config_file", config, "--dataset_dir", str(images)]
        run += ["--output_dir", str(Path(tmp) / "out"), *extra]
        env = dict(os.environ)
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        walls = {
            "python -c pass": _wall([sys.executable, "-c", "pass"], args.runs, env),
            "import torch": _wall([sys.executable, "-c", "import torch"], args.runs, env),
            "import monai": _wall([sys.executable, "-c", "import monai"], args.runs, env),
            f"monai.bundle run, 1 image ({args.backend})": _wall([sys.executable, *run], args.runs, env),
        }
        proc = subprocess.run([sys.executable, "-X", "importtime", *run], capture_output=True, text=True, cwd=REPO)
    rows = parse_importtime(proc.stderr)
    print(f"# Bundle start-up: {args.task}, backend {args.backend} (load average at start {load})\n")
    print(f"## Wall time, fresh interpreter, median of {args.runs}\n")
    print("| command | seconds |")
    print("|---|---:|")
    for name, seconds in walls.items():
        print(f"| {name} | {seconds:.2f} |")
    per_package: Counter[str] = Counter()
    for self_us, _, _, name in rows:
        per_package[name.split(".")[0]] += self_us
    total = sum(per_package.values())
    print(f"\n## Import time by top-level package (`-X importtime` self times; total {total / 1e6:.2f} s)\n")
    print("| package | seconds | share |")
    print("|---|---:|---:|")
    for name, us in per_package.most_common(args.top):
        print(f"| {name} | {us / 1e6:.2f} | {us / total:.0%} |")
    print("\n## Who imports the heaviest packages (their outermost import, cumulative seconds)\n")
    print("| package | seconds | imported by |")
    print("|---|---:|---|")
    for name, _ in per_package.most_common(args.top):
        # the outermost import of the package: the largest cumulative time among its modules
        ours = [i for i, r in enumerate(rows) if r[3] == name or r[3].startswith(name + ".")]
        i = max(ours, key=lambda k: rows[k][1])
        print(f"| {rows[i][3]} | {rows[i][1] / 1e6:.2f} | {' <- '.join(chain(rows, i)[1:6]) or '(top level)'} |")
    print(f"\nload average at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
