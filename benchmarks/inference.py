"""CPU inference benchmark: every backend side by side, TinyUSFM vs USFM, and the bundles end to end.

One command, all tables, every number from this run (ratios are taken within the run):

1. Per model, batch 1 at 224 x 224: latency (median and p90 over N runs after warm-up), throughput at the best of
   a few batch sizes, peak memory; classification (backbone + linear head) and segmentation (FPN segmenter),
   TinyUSFM and USFM, on PyTorch eager, TorchScript (scripted, frozen), ONNX Runtime fp32 and INT8 (dynamic
   quantisation), OpenVINO f32, bf16 (CPUs with AVX-512 BF16 / AMX) and INT8 (NNCF post-training). Every variant
   runs in a fresh subprocess (its own peak RSS).
2. TinyUSFM/USFM ratios per backend, next to the FLOP ratio; TinyUSFM reduced precision vs fp32.
3. End to end: the bundles' `inference.json` (+ the backend's overlay, `bundle.parser.BACKENDS`) on real-size
   ultrasound images (PNG and DICOM, `benchmarks/us_images.py`), each run in a fresh process: start-up (launch
   until the weights are loaded: interpreter, imports, config, network, weights), the first image (OpenVINO
   compiles then), per image after it, the model's share inside the bundle, and per image / the model's own
   latency from table 1 (the issue's "at most 1.5x" figure).
4. Pipeline variants of the same runs: sequential (a plain DataLoader; inference.json's default), a DataLoader
   worker process, a prefetch thread (`monai.data.ThreadDataLoader`; inference_openvino.json's default), each also with the model on one thread (the other core decodes), to show which
   overlap of decoding/resizing with the model helps on this CPU.
5. Start-up components: `import torch`, `import monai`, `import openvino`, `import onnxruntime` in fresh
   interpreters (medians).

Threads: every variant uses the same fixed intra-op thread count (default: physical cores; `--threads`), so a
busy machine changes the times but not which configuration runs. The bundles get a `model.pt` of a randomly
initialised network and its exports (timing does not depend on weight values; INT8 models are calibrated on
random inputs for the same reason; accuracy is `tinyusfm-monai export`'s and `benchmarks/int8_accuracy.py`'s job).

    python benchmarks/inference.py            # default, ~15 min on 2 idle cores
    python benchmarks/inference.py --quick    # fewer runs and images, ~5 min
    python benchmarks/inference.py --full     # more runs and images, larger batches
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TASKS = {"classification": ("busi_classification", 3), "segmentation": ("busi_segmentation", 2)}
MODELS = ("tinyusfm", "usfm")
MODEL_NAMES = {"tinyusfm": "TinyUSFM", "usfm": "USFM"}
BACKENDS = ("eager", "torchscript", "onnx", "onnx-int8", "openvino-f32", "openvino-bf16", "openvino-int8")
FP32_BACKENDS = ("eager", "torchscript", "onnx", "openvino-f32")
# bundle backend (bundle.parser.BACKENDS) -> the per-model row that is "the model's own time"
BUNDLE_BACKENDS = {
    "pytorch": "eager",
    "onnx": "onnx",
    "onnx-int8": "onnx-int8",
    "openvino": "openvino-f32",
    "openvino-bf16": "openvino-bf16",
    "openvino-int8": "openvino-int8",
}
PIPELINES = {
    "sequential": {"dataloader#_target_": "DataLoader"},  # explicit: inference_openvino.json prefetches
    "worker process": {"num_workers": 1, "dataloader#_target_": "DataLoader"},
    "prefetch thread": {"dataloader#_target_": "ThreadDataLoader"},
    # the model on one core, decoding/resizing on the other
    "worker process, model 1 thread": {"num_workers": 1, "num_threads": 1, "dataloader#_target_": "DataLoader"},
    "prefetch thread, model 1 thread": {"dataloader#_target_": "ThreadDataLoader", "num_threads": 1},
    # the overlays before issue 15: torch's pre/postprocessing on all threads too (no effect on the pytorch backend)
    "sequential, torch on all threads": {"configure_threads#torch_threads": 0, "dataloader#_target_": "DataLoader"},
}
PROFILES = {
    "quick": {"runs": 8, "warmup": 2, "budget": 4.0, "batches": (1, 4), "images": 20, "import_runs": 2},
    "default": {"runs": 20, "warmup": 3, "budget": 8.0, "batches": (1, 4), "images": 60, "import_runs": 3},
    "full": {"runs": 50, "warmup": 5, "budget": 30.0, "batches": (1, 4, 8, 16), "images": 100, "import_runs": 5},
}


# ----------------------------------------------------------------------------------------------- helpers


def _build(model: str, kind: str, image_size: int = 224) -> Any:
    from tinyusfm_monai.networks import ViTSegmenter, build_backbone

    classes = TASKS[kind][1]
    if kind == "segmentation":
        return ViTSegmenter(model, num_classes=classes, img_size=image_size).eval()
    return build_backbone(model, num_classes=classes, img_size=image_size).eval()


def _run_child(args: list[str], timeout: float = 1800) -> dict[str, Any]:
    """Run this script in a fresh interpreter; its last stdout line is JSON."""
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {args[:2]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _timed_runs(fn: Callable[[], Any], warmup: int, runs: int, budget: float, min_runs: int = 3) -> list[float]:
    """Seconds per call: `warmup` untimed calls, then up to `runs` calls or until `budget` s (at least `min_runs`)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < runs and (len(times) < min_runs or time.perf_counter() - start < budget):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def _has_bf16() -> bool:
    try:
        from tinyusfm_monai.deploy import openvino as ovd

        return "bf16" in ovd.cpu_precisions()
    except ImportError:
        return False


def machine_description(threads: int) -> str:
    import onnxruntime
    import torch

    from tinyusfm_monai.deploy import physical_cores

    cpu = platform.processor() or "unknown CPU"
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                have = set(line.split(":", 1)[1].split())
                flags = " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16") if f in have)
    except OSError:
        pass
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kib / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    try:
        import openvino

        ov = f"openvino {openvino.__version__.split('-')[0]} (CPU plugin, {threads} threads, precision set per row)"
    except ImportError:
        ov = "openvino not installed (its rows are skipped)"
    return (
        f"machine: {cpu} [{flags}], {os.cpu_count()} logical CPUs, {physical_cores()} physical cores{mem}; "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}\n"
        f"torch {torch.__version__} ({threads} intra-op threads), onnxruntime {onnxruntime.__version__} "
        f"(CPUExecutionProvider, {threads} threads), {ov}\n"
        f"load average at start (1/5/15 min): {_load()}"
    )


# ---------------------------------------------------------------------------------------- model variants


def _openvino_exports(net: Any, stem: Path, size: int = 224, calibration: int = 32) -> None:
    """`<stem>.xml` (fp32) and `<stem>_int8.xml` (NNCF, calibrated on random inputs) with the metadata the
    export writes, so the bundles' OpenVinoInferer accepts them for these weights."""
    import numpy as np

    from tinyusfm_monai.deploy import openvino as ovd

    meta = {"image_size": size, "weights_sha256": ovd.weights_fingerprint(net)}
    model = ovd.convert_network(net, size)
    ovd.save_ir(ovd.set_metadata(model.clone(), {**meta, "int8": False}), f"{stem}.xml")
    rng = np.random.default_rng(0)
    data = [rng.standard_normal((1, 3, size, size)).astype(np.float32) for _ in range(calibration)]
    ovd.save_ir(
        ovd.set_metadata(ovd.quantize_int8(model, data, calibration), {**meta, "int8": True}), f"{stem}_int8.xml"
    )


def prepare_artifacts(work: Path, models: list[str]) -> dict[str, Any]:
    """Child: weights, TorchScript, ONNX (fp32, int8) and OpenVINO IR (fp32, int8) for every model/kind; FLOPs."""
    import torch

    from tinyusfm_monai.deploy import export_onnx, quantize_onnx_int8
    from tinyusfm_monai.deploy.openvino import openvino_available
    from tinyusfm_monai.networks.profile import count_flops

    flops: dict[str, float] = {}
    for kind in TASKS:
        for model in models:
            torch.manual_seed(0)
            net = _build(model, kind)
            stem = work / f"{model}_{kind}"
            torch.save(net.state_dict(), f"{stem}.pt")
            with torch.no_grad():
                torch.jit.freeze(torch.jit.script(net)).save(f"{stem}.ts")
            export_onnx(net, f"{stem}.onnx")
            quantize_onnx_int8(f"{stem}.onnx", f"{stem}_int8.onnx")
            if openvino_available():
                _openvino_exports(net, stem)
            flops[f"{model}_{kind}"] = count_flops(net, 224) / 1e9
            print(f"  {model} {kind} exported ({time.strftime('%H:%M:%S')})", file=sys.stderr, flush=True)
    return {"gflops": flops}


def _runner(work: Path, model: str, kind: str, backend: str, threads: int) -> Callable[[Any], Any]:
    """A function batch -> logits for one variant (loaded here, in this child process)."""
    import torch

    stem = work / f"{model}_{kind}"
    if backend.startswith("onnx"):
        from tinyusfm_monai.deploy import onnx_session
        from tinyusfm_monai.deploy.onnx import run_onnx

        session = onnx_session(f"{stem}{'_int8' if backend == 'onnx-int8' else ''}.onnx", threads)
        return lambda x: run_onnx(session, x.numpy())
    if backend.startswith("openvino"):
        from tinyusfm_monai.deploy import openvino as ovd

        path = f"{stem}{'_int8' if backend == 'openvino-int8' else ''}.xml"
        precision = "bf16" if backend == "openvino-bf16" else "f32"
        model_ir = ovd.read_ir(path)
        requests: dict[int, Any] = {}

        def run(x: Any) -> Any:
            if x.shape[0] not in requests:  # static shape per batch size, as the bundles' inferer compiles
                compiled = ovd.compile_openvino(model_ir, precision, threads, batch=x.shape[0])
                requests[x.shape[0]] = compiled.create_infer_request()
            return ovd.run_openvino(requests[x.shape[0]], x.numpy())

        return run
    if backend == "torchscript":
        net = torch.jit.load(f"{stem}.ts", map_location="cpu")
    else:
        net = _build(model, kind)
        net.load_state_dict(torch.load(f"{stem}.pt", map_location="cpu", weights_only=True))

    def run_torch(x: Any) -> Any:
        with torch.inference_mode():
            return net(x).numpy()

    return run_torch


def measure_variant(
    work: Path, model: str, kind: str, backend: str, cfg: dict[str, Any], threads: int
) -> dict[str, Any]:
    """Child: load one variant, measure latency, throughput and memory."""
    import numpy as np
    import torch

    from tinyusfm_monai.deploy import configure_threads

    configure_threads(threads)
    from tinyusfm_monai.utils import current_rss_mib, peak_rss_mib

    base_mib = current_rss_mib()
    run = _runner(work, model, kind, backend, threads)
    gen = torch.Generator().manual_seed(0)
    x1 = torch.randn(1, 3, 224, 224, generator=gen)
    lat = _timed_runs(lambda: run(x1), cfg["warmup"], cfg["runs"], cfg["budget"])
    throughput = {1: 1.0 / statistics.median(lat)}
    for b in cfg["batches"]:
        if b == 1:
            continue
        xb = torch.randn(b, 3, 224, 224, generator=gen)
        times = _timed_runs(lambda xb=xb: run(xb), 1, max(2, cfg["runs"] // 4), cfg["budget"] / 2, min_runs=2)
        throughput[b] = b / statistics.median(times)
    best = max(throughput, key=throughput.get)
    out = np.asarray(run(x1))
    return {
        "median_ms": statistics.median(lat) * 1e3,
        "p90_ms": _percentile(lat, 0.9) * 1e3,
        "runs": len(lat),
        "throughput": throughput[best],
        "best_batch": best,
        "peak_rss_mib": peak_rss_mib(),
        "model_rss_mib": peak_rss_mib() - base_mib,
        "finite": bool(np.isfinite(out).all()),
    }


def _available_backends() -> list[str]:
    from tinyusfm_monai.deploy.openvino import openvino_available

    names = list(BACKENDS)
    if not openvino_available():
        names = [b for b in names if not b.startswith("openvino")]
    elif not _has_bf16():
        names.remove("openvino-bf16")
    return names


def model_tables(cfg: dict[str, Any], threads: int, work: Path, models: list[str]) -> list[dict[str, Any]]:
    print("\nexporting TorchScript / ONNX / OpenVINO artifacts, fp32 and INT8 (not timed) ...", flush=True)
    t = time.perf_counter()
    cached = work / f"gflops_{'_'.join(models)}.json"  # artifacts of an earlier run with the same --work are reused
    if cached.is_file():
        flops = json.loads(cached.read_text())
    else:
        flops = _run_child(["--child", "prepare", "--work", str(work), "--spec", json.dumps(models)])["gflops"]
        cached.write_text(json.dumps(flops))
    print(f"  done in {time.perf_counter() - t:.0f} s", flush=True)
    rows = []
    for kind in TASKS:
        for model in models:
            for backend in _available_backends():
                spec = json.dumps({"model": model, "kind": kind, "backend": backend, "cfg": cfg, "threads": threads})
                res = _run_child(["--child", "measure", "--work", str(work), "--spec", spec])
                res.update(model=model, kind=kind, backend=backend, gflops=flops[f"{model}_{kind}"])
                res["load"] = os.getloadavg()[0]
                rows.append(res)
                print(
                    f"  {kind:14s} {MODEL_NAMES[model]:8s} {backend:13s} {res['median_ms']:8.1f} ms (load {res['load']:.2f})",
                    flush=True,
                )
    return rows


def print_model_tables(rows: list[dict[str, Any]], cfg: dict[str, Any]) -> None:
    batches = "/".join(str(b) for b in cfg["batches"])
    print(
        f"\n## 1. Per-model CPU inference at 224x224 (batch-1 latency over up to {cfg['runs']} runs; throughput: best of batch {batches})\n"
    )
    print(
        "| task | model | backend | GFLOPs | latency median (ms) | p90 (ms) | throughput (img/s) @batch | peak RSS (MiB) | model RSS (MiB) | load |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['kind']} | {MODEL_NAMES[r['model']]} | {r['backend']} | {r['gflops']:.2f} | {r['median_ms']:.1f} | "
            f"{r['p90_ms']:.1f} | {r['throughput']:.1f} @{r['best_batch']} | {r['peak_rss_mib']:.0f} | {r['model_rss_mib']:.0f} | {r['load']:.2f} |"
        )
    index = {(r["kind"], r["model"], r["backend"]): r for r in rows}
    print("\n## 2a. USFM / TinyUSFM (same task, same backend)\n")
    print(
        "| task | backend | FLOP ratio | latency ratio (speed-up) | throughput ratio | model-RSS ratio | speed-up / FLOP ratio |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for kind in TASKS:
        for backend in BACKENDS:
            t, u = index.get((kind, "tinyusfm", backend)), index.get((kind, "usfm", backend))
            if not t or not u:
                continue
            flop = u["gflops"] / t["gflops"]
            speed = u["median_ms"] / t["median_ms"]
            print(
                f"| {kind} | {backend} | {flop:.1f}x | {speed:.1f}x | {t['throughput'] / u['throughput']:.1f}x | "
                f"{u['model_rss_mib'] / max(t['model_rss_mib'], 1e-9):.1f}x | {speed / flop:.2f} |"
            )
    print("\n## 2b. TinyUSFM: each backend against PyTorch eager and ONNX Runtime fp32 (same task)\n")
    print(
        "| task | backend | latency (ms) | speed-up vs eager | vs ONNX Runtime fp32 | vs OpenVINO f32 | throughput (img/s) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for kind in TASKS:
        eager, onnx = index.get((kind, "tinyusfm", "eager")), index.get((kind, "tinyusfm", "onnx"))
        ov = index.get((kind, "tinyusfm", "openvino-f32"))
        for backend in BACKENDS:
            r = index.get((kind, "tinyusfm", backend))
            if not r or not eager or not onnx:
                continue
            vs_ov = f"{ov['median_ms'] / r['median_ms']:.2f}x" if ov else "-"
            print(
                f"| {kind} | {backend} | {r['median_ms']:.1f} | {eager['median_ms'] / r['median_ms']:.2f}x | "
                f"{onnx['median_ms'] / r['median_ms']:.2f}x | {vs_ov} | {r['throughput']:.1f} |"
            )


# ----------------------------------------------------------------------------------------------- bundles


def prepare_bundles(work: Path, n_images: int, source: Path, backends: list[str]) -> dict[str, Path]:
    """Copies of the two task bundles (configs from `source`) with a random-init model.pt and its exports, and
    the images."""
    import torch

    from tinyusfm_monai.deploy.export import export, load_bundle_network
    from tinyusfm_monai.deploy.onnx import quantize_onnx_int8

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from us_images import write_images

    paths: dict[str, Path] = {}
    for kind, (task, _) in TASKS.items():
        dst = work / "bundles" / task
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(source / task / "configs", dst / "configs")
        (dst / "models").mkdir(parents=True)
        torch.manual_seed(0)
        torch.save(_build("tinyusfm", kind).state_dict(), dst / "models" / "model.pt")
        if any(b.startswith("onnx") for b in backends):
            with contextlib.redirect_stdout(io.StringIO()):  # its one-line report
                export(str(dst), format="onnx")
            quantize_onnx_int8(dst / "models" / "model.onnx", dst / "models" / "model_int8.onnx")
        if any(b.startswith("openvino") for b in backends):
            network, _ = load_bundle_network(dst)
            _openvino_exports(network, dst / "models" / "model")
        paths[kind] = dst
    images = work / "images"
    marker = images / f".{n_images}"
    if marker.is_file():  # reuse the images of an earlier run with --work
        png, dcm = images / "png", images / "dicom"
    else:
        png, dcm = write_images(images, n=n_images)
        marker.touch()
    paths["png"], paths["dicom"] = png, dcm
    return paths


def instrumented_run(
    bundle: Path, backend: str, images: Path, out: Path, t0: float, overrides: dict[str, Any]
) -> dict[str, Any]:
    """Child: the bundle's inference config (+ the backend's overlay) run in this process, with timestamps for
    start-up and timers around the dataloader and the inferer."""
    t_imports = time.time()
    from ignite.engine import Events

    from tinyusfm_monai.bundle.parser import bundle_parser

    t_imported = time.time()
    parser = bundle_parser(
        bundle, "inference.json", backend, {"dataset_dir": str(images), "output_dir": str(out), **overrides}
    )
    if "initialize" in parser:
        parser.get_parsed_content("initialize")  # as `monai.bundle run` does before "run"
    evaluator = parser.get_parsed_content("evaluator")
    t_configured = time.time()
    marks: dict[str, float] = {}
    timers: dict[str, list[float]] = {"data": [], "model": [], "iteration": []}

    def mark(name: str) -> Callable[..., None]:
        def handler(*_: Any) -> None:
            marks[name] = time.time()

        return handler

    def add(name: str, start: str, end: str) -> Callable[..., None]:
        def handler(*_: Any) -> None:
            timers[name].append(marks[end] - marks[start])

        return handler

    evaluator.add_event_handler(Events.STARTED, mark("weights_loaded"))  # after TrainedWeightsLoader (added first)
    evaluator.add_event_handler(Events.GET_BATCH_STARTED, mark("batch_start"))
    evaluator.add_event_handler(Events.GET_BATCH_COMPLETED, mark("batch_end"))
    evaluator.add_event_handler(Events.GET_BATCH_COMPLETED, add("data", "batch_start", "batch_end"))
    evaluator.add_event_handler(Events.ITERATION_STARTED, mark("iter_start"))
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, mark("iter_end"))
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, add("iteration", "iter_start", "iter_end"))
    evaluator.add_event_handler(Events.ITERATION_COMPLETED(once=1), mark("first_image"))
    inferer = evaluator.inferer  # the model time is the inferer's (PyTorch network, ONNX Runtime or OpenVINO)

    def timed_inferer(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        result = inferer(*args, **kwargs)
        timers["model"].append(time.perf_counter() - t)
        return result

    evaluator.inferer = timed_inferer
    evaluator.run()
    end = time.time()
    import torch

    n = len(timers["model"])

    def med(values: list[float]) -> float:
        return statistics.median(values[1:] or values) * 1e3

    post = [it - m for it, m in zip(timers["iteration"], timers["model"])]
    # ITERATION_STARTED fires after the batch is fetched, so iteration = model + transfer + postprocessing.
    return {
        "interpreter_s": t_imports - t0,
        "imports_s": t_imported - t_imports,
        "config_s": t_configured - t_imported,
        "startup_s": marks["weights_loaded"] - t0,
        "first_image_s": marks["first_image"] - marks["weights_loaded"],
        "per_image_ms": (end - marks["first_image"]) / max(n - 1, 1) * 1e3,
        "data_ms": med(timers["data"]),
        "model_ms": med(timers["model"]),
        "post_ms": med(post),
        "images": n,
        "threads": torch.get_num_threads(),
    }


def bundle_tables(
    paths: dict[str, Path],
    work: Path,
    overrides: dict[str, Any],
    backends: list[str],
    pipelines: list[str],
    real_cli: bool,
) -> list[dict[str, Any]]:
    rows = []
    runs = [(b, fmt, "sequential") for b in backends for fmt in ("png", "dicom")]
    runs += [(b, "png", p) for b in ("pytorch", "openvino") if b in backends for p in pipelines if p != "sequential"]
    for kind, (task, _) in TASKS.items():
        for backend, fmt, pipeline in runs:
            row: dict[str, Any] = {"task": task, "backend": backend, "format": fmt, "pipeline": pipeline}
            settings = {**overrides, **PIPELINES[pipeline]}
            out = work / "out" / f"{task}_{backend}_{fmt}_{pipeline.replace(' ', '_')}"
            spec = {"bundle": str(paths[kind]), "backend": backend, "images": str(paths[fmt]), "out": str(out)}
            row.update(
                _run_child(
                    ["--child", "bundle", "--spec", json.dumps({**spec, "overrides": settings, "t0": time.time()})]
                )
            )
            if real_cli and pipeline == "sequential":
                row["cli_wall_s"] = _real_cli(paths[kind], backend, paths[fmt], Path(f"{out}_cli"), settings)
            row["load"] = os.getloadavg()[0]
            rows.append(row)
            print(
                f"  {task} {backend} {fmt} {pipeline}: start-up {row['startup_s']:.1f} s, {row['per_image_ms']:.1f} ms/image "
                f"(load {row['load']:.2f})",
                flush=True,
            )
    return rows


def _real_cli(bundle: Path, backend: str, images: Path, out: Path, settings: dict[str, Any]) -> float:
    """Wall time of the real `python -m monai.bundle run` with the same configs and settings."""
    from tinyusfm_monai.bundle.parser import backend_configs

    overlays, backend_overrides = backend_configs(backend)
    files = [str(bundle / "configs" / c) for c in ("inference.json", *overlays)]
    config_arg = files[0] if len(files) == 1 else "[" + ",".join(f"'{f}'" for f in files) + "]"
    extra = [
        a
        for k, v in {**backend_overrides, **settings}.items()
        for a in (f"--{k}", v if isinstance(v, str) else json.dumps(v))
    ]
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config_arg]
    cmd += ["--dataset_dir", str(images), "--output_dir", str(out), *extra]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t


def print_bundle_tables(rows: list[dict[str, Any]], models: list[dict[str, Any]], note: str) -> None:
    own = {(r["kind"], r["backend"]): r["median_ms"] for r in models if r["model"] == "tinyusfm"}
    kind_of = {task: kind for kind, (task, _) in TASKS.items()}
    n = rows[0]["images"] if rows else 0
    print(
        f"\n## 3. End to end: bundles/<task>/configs/inference.json + the backend's overlay, {n} real-size images ({note})\n"
    )
    print(
        "start-up = launch until the weights are loaded (interpreter, imports, config, network, weights); first image "
        "includes OpenVINO's compile; per image = after the first; model = the inferer's median inside the bundle; "
        "model's own = table 1, same backend\n"
    )
    print(
        "| task | backend | input | start-up (s) | of which imports (s) | first image (s) | ms/image after start-up | data (ms) | model in bundle (ms) | post (ms) | model's own (ms) | per image / model's own | `monai.bundle run` wall (s) | threads | load |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if r["pipeline"] != "sequential":
            continue
        ref = own.get((kind_of[r["task"]], BUNDLE_BACKENDS[r["backend"]]))
        ratio = f"{r['per_image_ms'] / ref:.2f}x" if ref else "-"
        cli = f"{r['cli_wall_s']:.1f}" if "cli_wall_s" in r else "-"
        print(
            f"| {r['task']} | {r['backend']} | {r['format']} | {r['startup_s']:.2f} | {r['imports_s'] + r['interpreter_s']:.2f} | "
            f"{r['first_image_s']:.2f} | {r['per_image_ms']:.1f} | {r['data_ms']:.1f} | {r['model_ms']:.1f} | {r['post_ms']:.1f} | "
            f"{ref or 0:.1f} | {ratio} | {cli} | {r['threads']} | {r['load']:.2f} |"
        )
    variants = [r for r in rows if r["format"] == "png" and r["backend"] in ("pytorch", "openvino")]
    if any(r["pipeline"] != "sequential" for r in variants):
        print("\n## 4. Overlapping decoding/resizing with the model (PNG input, same runs' settings)\n")
        print(
            "| task | backend | pipeline | ms/image after start-up | data wait (ms) | model in bundle (ms) | post (ms) | vs sequential | load |"
        )
        print("|---|---|---|---:|---:|---:|---:|---:|---:|")
        base = {(r["task"], r["backend"]): r["per_image_ms"] for r in variants if r["pipeline"] == "sequential"}
        for r in sorted(variants, key=lambda r: (r["task"], r["backend"], list(PIPELINES).index(r["pipeline"]))):
            speed = base[(r["task"], r["backend"])] / r["per_image_ms"]
            print(
                f"| {r['task']} | {r['backend']} | {r['pipeline']} | {r['per_image_ms']:.1f} | {r['data_ms']:.1f} | "
                f"{r['model_ms']:.1f} | {r['post_ms']:.1f} | {speed:.2f}x | {r['load']:.2f} |"
            )
    fp32 = [r for r in rows if r["pipeline"] == "sequential" and r["backend"] in ("pytorch", "onnx", "openvino")]
    if fp32:
        print("\nfastest fp32 backend end to end (median over inputs): ", end="")
        per = {
            b: statistics.median(r["per_image_ms"] for r in fp32 if r["backend"] == b)
            for b in {r["backend"] for r in fp32}
        }
        print(", ".join(f"{b} {v:.1f} ms/image" for b, v in sorted(per.items(), key=lambda kv: kv[1])))


# --------------------------------------------------------------------------------------------- start-up


IMPORTS = {
    "python (nothing)": "pass",
    "import torch": "import torch",
    "import monai (what `monai.bundle run` imports first)": "import monai",
    "import monai + the bundle's components": "import monai, ignite.engine; "
    "import tinyusfm_monai.inferers.inferer, tinyusfm_monai.transforms.io, tinyusfm_monai.data.skipping_dataset",
    "import onnxruntime": "import onnxruntime",
    "import openvino": "import openvino",
}


def startup_table(runs: int) -> list[dict[str, Any]]:
    rows = []
    for name, code in IMPORTS.items():
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=REPO)
            times.append(time.perf_counter() - t)
            if proc.returncode != 0:
                times = []
                break
        rows.append({"what": name, "median_s": statistics.median(times) if times else None, "load": os.getloadavg()[0]})
    return rows


def print_startup_table(rows: list[dict[str, Any]], runs: int) -> None:
    print(f"\n## 5. Start-up components (fresh interpreter, median of {runs})\n")
    print("| what | seconds | load |")
    print("|---|---:|---:|")
    for r in rows:
        value = f"{r['median_s']:.2f}" if r["median_s"] is not None else "not installed"
        print(f"| {r['what']} | {value} | {r['load']:.2f} |")


# -------------------------------------------------------------------------------------------------- main


def _child(args: argparse.Namespace) -> None:
    if args.child == "prepare":
        result = prepare_artifacts(Path(args.work), json.loads(args.spec))
    elif args.child == "measure":
        s = json.loads(args.spec)
        result = measure_variant(Path(args.work), s["model"], s["kind"], s["backend"], s["cfg"], s["threads"])
    else:
        s = json.loads(args.spec)
        result = instrumented_run(
            Path(s["bundle"]), s["backend"], Path(s["images"]), Path(s["out"]), s["t0"], s["overrides"]
        )
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="fewer runs and images (~5 min)")
    mode.add_argument("--full", action="store_true", help="more runs and images, batch 8 and 16 too")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads everywhere (default: physical cores)")
    parser.add_argument("--skip-models", action="store_true", help="no per-model tables")
    parser.add_argument("--skip-bundles", action="store_true", help="no end-to-end tables")
    parser.add_argument("--skip-startup", action="store_true", help="no start-up component table")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument(
        "--bundle-backends",
        nargs="+",
        default=list(BUNDLE_BACKENDS),
        choices=list(BUNDLE_BACKENDS),
        help="end-to-end backends (bundle.parser.BACKENDS names)",
    )
    parser.add_argument(
        "--pipelines", nargs="+", default=list(PIPELINES), choices=list(PIPELINES), help="overlap variants (table 4)"
    )
    parser.add_argument(
        "--cli", action="store_true", help="also time the real `monai.bundle run` of each sequential run"
    )
    parser.add_argument("--images", type=int, default=0, help="number of real-size images (default: profile's)")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="bundle config override for the end-to-end runs, e.g. batch_size=4 (repeatable)",
    )
    parser.add_argument(
        "--bundles-dir",
        default=str(REPO / "bundles"),
        help="where the task bundles' configs come from (e.g. an older copy, for before/after)",
    )
    parser.add_argument("--work", default="", help="work folder (default: a temporary one)")
    parser.add_argument("--json", default="", help="also write all numbers to this JSON file")
    parser.add_argument("--child", choices=("prepare", "measure", "bundle"), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return

    from tinyusfm_monai.deploy import physical_cores
    from tinyusfm_monai.deploy.openvino import openvino_available

    profile = "quick" if args.quick else "full" if args.full else "default"
    cfg = dict(PROFILES[profile])
    threads = args.threads or physical_cores()
    overrides = {"num_threads": threads, **{k: json.loads(v) for k, v in (o.split("=", 1) for o in args.override)}}
    backends = [b for b in args.bundle_backends if openvino_available() or not b.startswith("openvino")]
    if "openvino-bf16" in backends and not _has_bf16():
        backends.remove("openvino-bf16")
    print(f"# CPU inference benchmark, every backend side by side ({profile} profile)\n")
    print(machine_description(threads))
    start = time.perf_counter()
    results: dict[str, Any] = {"profile": profile, "threads": threads, "models": [], "bundles": []}
    with tempfile.TemporaryDirectory(prefix="tinyusfm_bench_") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        if not args.skip_startup:
            results["startup"] = startup_table(cfg["import_runs"])
        if not args.skip_models:
            results["models"] = model_tables(cfg, threads, work, args.models)
        if not args.skip_bundles:
            n = args.images or cfg["images"]
            print(f"\nwriting {n} real-size ultrasound images, bundle copies and their exports ...", flush=True)
            paths = prepare_bundles(work, n, Path(args.bundles_dir), backends)
            results["bundles"] = bundle_tables(paths, work, overrides, backends, args.pipelines, args.cli)
    if results["models"]:
        print_model_tables(results["models"], cfg)
    if results["bundles"]:
        note = ", ".join(f"{k}={v}" for k, v in overrides.items())
        print_bundle_tables(results["bundles"], results["models"], note)
    if "startup" in results:
        print_startup_table(results["startup"], cfg["import_runs"])
    print(f"\nbenchmark wall time {time.perf_counter() - start:.0f} s; load average at end: {_load()}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
