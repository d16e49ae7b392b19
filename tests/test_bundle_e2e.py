"""Real `python -m monai.bundle run` of a classification and a segmentation bundle on a tiny phantom:
train → resume → evaluate → infer → export, as a user runs them."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tinyusfm_monai.data.phantom import generate_task

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--image_size", "64", "--batch_size", "4", "--num_workers", "0"]
pytestmark = pytest.mark.slow


def bundle_run(configs, *args, cwd=None, check=True):
    config = configs[0] if len(configs) == 1 else "[" + ",".join(f"'{c}'" for c in configs) + "]"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(config), *map(str, args)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=900)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module", params=["busi_classification", "camus_segmentation"])
def trained(request, tmp_path_factory):
    """A copy of the bundle, trained for 2 epochs on a 64x64 phantom of its task."""
    name = request.param
    tmp = tmp_path_factory.mktemp(name)
    bundle = tmp / name
    shutil.copytree(ROOT / "bundles" / name, bundle)
    data = tmp / "data"
    generate_task(name, data, n_train=12, n_val=4, n_test=6, image_size=64, seed=1)
    proc = bundle_run([bundle / "configs" / "train.json"], "--dataset_dir", data, "--max_epochs", 2, *TINY)
    return name, bundle, data, proc.stdout + proc.stderr


def _epoch(checkpoint: dict) -> int:
    """Completed epochs recorded in a training checkpoint (ignite keeps iterations and the epoch length)."""
    engine = checkpoint["training_state"]["engine"]
    return int(engine["iteration"]) // int(engine["epoch_length"])


def test_training_writes_best_and_resume_checkpoints(trained):
    name, bundle, _, log = trained
    assert (bundle / "models" / "model.pt").is_file() and (bundle / "models" / "last.pt").is_file()
    assert "Epoch[2] Metrics" in log and ("val_accuracy" in log or "val_mean_dice" in log)
    last = torch.load(bundle / "models" / "last.pt", weights_only=True)
    assert _epoch(last) == 2 and "rng" in last["training_state"]
    assert {"model", "optimizer", "lr_scheduler", "best_model"} <= set(last)


def test_multi_gpu_train_runs_under_torchrun(trained, tmp_path):
    """multi_gpu_train.json under a real `torchrun` (Gloo on CPU, one process): DDP accepts the network (every
    trainable parameter gets a gradient) and the run ends with its checkpoint."""
    name, bundle, data, _ = trained
    copy = tmp_path / name
    shutil.copytree(bundle, copy, ignore=shutil.ignore_patterns("models"))
    configs = f"['{copy / 'configs' / 'train.json'}','{copy / 'configs' / 'multi_gpu_train.json'}']"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]
    cmd += ["-m", "monai.bundle", "run", "--config_file", configs, "--dataset_dir", str(data), "--max_epochs", "1"]
    proc = subprocess.run([*cmd, *TINY, "--resume", "False"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert _epoch(torch.load(copy / "models" / "last.pt", weights_only=True)) == 1


def test_resume_continues_from_the_last_epoch(trained, tmp_path):
    name, bundle, data, _ = trained
    copy = tmp_path / name
    shutil.copytree(bundle, copy)
    proc = bundle_run([copy / "configs" / "train.json"], "--dataset_dir", data, "--max_epochs", 3, *TINY)
    log = proc.stdout + proc.stderr
    assert "resumed from" in log and "at epoch 2 of 3" in log
    assert "Epoch[3] Metrics" in log and "Epoch[1] Metrics" not in log
    assert _epoch(torch.load(copy / "models" / "last.pt", weights_only=True)) == 3


def test_evaluate_writes_the_metric_report(trained):
    name, bundle, data, _ = trained
    cfg = bundle / "configs"
    bundle_run([cfg / "train.json", cfg / "evaluate.json"], "--dataset_dir", data, *TINY)
    metrics = json.loads((bundle / "eval" / "metrics.json").read_text())
    assert metrics["num_images"] == 6
    if name.endswith("classification"):
        assert {"accuracy", "precision", "recall", "f1", "auc", "mcc", "balanced_accuracy"} <= set(metrics)
        assert (bundle / "eval" / "confusion_matrix.png").is_file() and (bundle / "eval" / "roc.png").is_file()
        cm = json.loads((bundle / "eval" / "confusion_matrix.json").read_text())["matrix"]
        assert sum(map(sum, cm)) == 6
    else:
        assert {"dice", "iou", "hd95", "sensitivity", "specificity"} <= set(metrics)
        assert set(metrics["per_class"]["dice"]) == {"left ventricle endocardium", "myocardium", "left atrium"}
        assert (bundle / "eval" / "worst_cases.png").is_file() and (bundle / "eval" / "best_cases.png").is_file()
    rows = list(csv.DictReader(open(bundle / "eval" / "per_image.csv")))
    assert len(rows) == 6


def test_inference_on_a_folder_keeps_original_sizes(trained, tmp_path):
    name, bundle, data, _ = trained
    images = tmp_path / "in"
    images.mkdir()
    src = sorted((data / "images").glob("test_*.png"))[:2]
    for p in src:
        shutil.copy(p, images / p.name)
    Image.open(src[0]).resize((96, 80)).save(images / "odd.png")  # non-square, not the model size
    out = tmp_path / "out"
    bundle_run(
        [bundle / "configs" / "inference.json"], "--dataset_dir", images, "--output_dir", out, "--image_size", 64
    )
    if name.endswith("classification"):
        rows = list(csv.DictReader(open(out / "predictions.csv")))
        assert len(rows) == 3 and {r["pred"] for r in rows} <= {"normal", "benign", "malignant"}
        probs = np.array([[float(r[k]) for k in ("p_normal", "p_benign", "p_malignant")] for r in rows])
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
    else:
        mask = np.asarray(Image.open(out / "odd_seg.png"))
        assert mask.shape == (80, 96) and mask.dtype == np.uint8 and mask.max() <= 3
        assert np.asarray(Image.open(out / f"{src[0].stem}_seg.png")).shape == (64, 64)


def test_inference_skips_bad_files_and_batches_mixed_formats(trained, tmp_path):
    from pydicom.data import get_testdata_file

    name, bundle, data, _ = trained
    images = tmp_path / "in"
    images.mkdir()
    good = sorted((data / "images").glob("test_*.png"))[0]
    shutil.copy(good, images / "a_good.png")
    (images / "b_truncated.png").write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    shutil.copy(get_testdata_file("CT_small.dcm"), images / "c_ct.dcm")
    shutil.copy(get_testdata_file("examples_palette.dcm"), images / "d_us.dcm")
    out = tmp_path / "out"
    proc = bundle_run(
        [bundle / "configs" / "inference.json"],
        "--dataset_dir",
        images,
        "--output_dir",
        out,
        "--image_size",
        64,
        "--batch_size",
        2,
        check=False,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 3, log[-3000:]  # the run finished, and says that inputs were skipped
    assert "skipped" in log and "b_truncated.png" in log and "c_ct.dcm: DicomInputError" in log
    if name.endswith("classification"):
        rows = list(csv.DictReader(open(out / "predictions.csv")))
        assert [Path(r["image"]).name for r in rows] == ["a_good.png", "d_us.dcm"]
    else:
        assert sorted(p.name for p in out.glob("*_seg.png")) == ["a_good_seg.png", "d_us_seg.png"]


def test_inference_never_overwrites_one_prediction_with_another(trained, tmp_path):
    """a.png and a.jpg (one stem), case1/im.png and case2/im.png (one name in two folders) and solo.png: five
    inputs, five masks (each the size of its own image) or five CSV rows; a file without a stem twin keeps the
    usual name."""
    name, bundle, data, _ = trained
    images = tmp_path / "in"
    (images / "case1").mkdir(parents=True)
    (images / "case2").mkdir()
    src = sorted((data / "images").glob("test_*.png"))
    Image.open(src[0]).save(images / "a.png")
    Image.open(src[1]).convert("RGB").resize((70, 60)).save(images / "a.jpg", quality=95)
    Image.open(src[2]).resize((72, 64)).save(images / "case1" / "im.png")
    Image.open(src[3]).resize((64, 80)).save(images / "case2" / "im.png")
    Image.open(src[4]).save(images / "solo.png")
    out = tmp_path / "out"
    bundle_run(
        [bundle / "configs" / "inference.json"], "--dataset_dir", images, "--output_dir", out, "--image_size", 64
    )
    if name.endswith("classification"):  # one CSV row per input, named by its path
        rows = list(csv.DictReader(open(out / "predictions.csv")))
        inputs = {"a.png", "a.jpg", "case1/im.png", "case2/im.png", "solo.png"}
        assert sorted(str(Path(r["image"]).relative_to(images)) for r in rows) == sorted(inputs)
        return
    shapes = {str(p.relative_to(out)): np.asarray(Image.open(p)).shape for p in sorted(out.rglob("*_seg.png"))}
    assert shapes == {
        "a_jpg_seg.png": (60, 70),
        "a_png_seg.png": (64, 64),
        "case1/im_seg.png": (64, 72),
        "case2/im_seg.png": (80, 64),
        "solo_seg.png": (64, 64),
    }


def test_bundle_predictor_matches_the_bundle_run(trained, tmp_path):
    from tinyusfm_monai.bundle.predictor import BundlePredictor

    name, bundle, data, _ = trained
    img_path = sorted((data / "images").glob("test_*.png"))[0]
    images = tmp_path / "in"
    images.mkdir()
    shutil.copy(img_path, images / img_path.name)
    out = tmp_path / "out"
    bundle_run(
        [bundle / "configs" / "inference.json"], "--dataset_dir", images, "--output_dir", out, "--image_size", 64
    )
    predictor = BundlePredictor(bundle, overrides={"image_size": 64})
    pred = predictor.predict(np.asarray(Image.open(img_path)))
    if name.endswith("classification"):
        row = next(csv.DictReader(open(out / "predictions.csv")))
        np.testing.assert_allclose(pred, [float(row[f"p_{c}"]) for c in predictor.task.labels], atol=1e-4)
    else:
        ref = np.asarray(Image.open(out / f"{img_path.stem}_seg.png"))
        assert (pred == ref).mean() > 0.99


def test_onnx_overlay_gives_the_eager_results(trained, tmp_path):
    """`tinyusfm-monai export` then inference.json + inference_onnx.json = inference.json alone."""
    name, bundle, data, _ = trained
    images = tmp_path / "in"
    images.mkdir()
    for p in sorted((data / "images").glob("test_*.png"))[:3]:
        shutil.copy(p, images / p.name)
    cli = [
        sys.executable,
        "-m",
        "tinyusfm_monai.cli",
        "export",
        "--bundle",
        str(bundle),
        "--format",
        "onnx",
        "--image_size",
        "64",
    ]
    subprocess.run(cli, check=True, capture_output=True, timeout=600)
    cfg = bundle / "configs"
    eager, onnx = tmp_path / "eager", tmp_path / "onnx"
    bundle_run([cfg / "inference.json"], "--dataset_dir", images, "--output_dir", eager, "--image_size", 64)
    bundle_run(
        [cfg / "inference.json", cfg / "inference_onnx.json"],
        "--dataset_dir",
        images,
        "--output_dir",
        onnx,
        "--image_size",
        64,
    )
    if name.endswith("classification"):

        def read(folder: Path) -> np.ndarray:
            rows = csv.DictReader(open(folder / "predictions.csv"))
            return np.array([[float(v) for k, v in r.items() if k.startswith("p_")] for r in rows])

        np.testing.assert_allclose(read(onnx), read(eager), atol=1e-4)
    else:
        for mask in sorted(eager.glob("*_seg.png")):
            a, b = np.asarray(Image.open(mask)), np.asarray(Image.open(onnx / mask.name))
            assert (a == b).mean() > 0.999


def _predictions(name: str, folder: Path) -> dict[str, np.ndarray]:
    """Probabilities per image (classification CSV) or the label maps (segmentation PNGs) a bundle run wrote."""
    if name.endswith("classification"):
        rows = csv.DictReader(open(folder / "predictions.csv"))
        return {r["image"]: np.array([float(v) for k, v in r.items() if k.startswith("p_")]) for r in rows}
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob("*_seg.png"))}


def test_openvino_overlay_gives_the_eager_results(trained, tmp_path):
    """`tinyusfm-monai export --format openvino [--int8]`, then the real `monai.bundle run` with
    inference_openvino.json: f32 = eager (1e-4 / identical masks), bf16 and INT8 close; the export's calibration
    set is the task's training split and its report sits next to the model."""
    name, bundle, data, _ = trained
    images = tmp_path / "in"
    images.mkdir()
    for p in sorted((data / "images").glob("test_*.png"))[:4]:
        shutil.copy(p, images / p.name)
    export = [sys.executable, "-m", "tinyusfm_monai.cli", "export", "--bundle", str(bundle), "--format", "openvino"]
    export += ["--image_size", "64", "--dataset_dir", str(data)]
    for extra in ([], ["--int8", "--calibration_size", "12"]):
        proc = subprocess.run(export + extra, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((bundle / "models" / "model_int8.export.json").read_text())
    assert len(report["calibration"]["images"]) == 12 and report["calibration"]["datalist"] == str(
        data / "datalist.json"
    )
    assert all(Path(p).name.startswith("train_") for p in report["calibration"]["images"])
    assert report["accuracy_check"]["images"] == 6  # the whole test split of the fixture
    cfg = bundle / "configs"
    overlay = [cfg / "inference.json", cfg / "inference_openvino.json"]
    common = ["--dataset_dir", images, "--image_size", 64]
    bundle_run([cfg / "inference.json"], *common, "--output_dir", tmp_path / "eager")
    eager = _predictions(name, tmp_path / "eager")
    runs = {
        "f32": [],
        "bf16": ["--openvino_precision", "bf16"],
        "int8": ["--openvino_file", bundle / "models" / "model_int8.xml"],
    }
    for run, extra in runs.items():
        proc = bundle_run(overlay, *common, "--output_dir", tmp_path / run, *extra)
        log = proc.stdout + proc.stderr
        model_file = "model_int8.xml" if run == "int8" else "model.xml"
        assert f"models/{model_file}, precision {'bf16' if run == 'bf16' else 'f32'}" in log, log[-2000:]
        assert "in memory" not in log  # the exported IR matches the weights: no conversion at run time
        got = _predictions(name, tmp_path / run)
        assert set(got) == set(eager)
        for key, ref in eager.items():
            if name.endswith("classification"):
                np.testing.assert_allclose(got[key], ref, atol=1e-4 if run == "f32" else 0.05)
            else:
                assert (got[key] == ref).mean() > (0.999 if run == "f32" else 0.98)


def test_inference_without_weights_says_how_to_get_them(tmp_path):
    bundle = tmp_path / "busi_classification"
    shutil.copytree(ROOT / "bundles" / "busi_classification", bundle)
    images = tmp_path / "in"
    images.mkdir()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(images / "a.png")
    proc = bundle_run([bundle / "configs" / "inference.json"], "--dataset_dir", images, check=False)
    assert proc.returncode != 0
    assert "no trained weights" in proc.stderr and "configs/train.json" in proc.stderr
    assert "large_files.yml" in proc.stderr
    assert not (bundle / "eval" / "predictions.csv").exists()


def test_model_zoo_checks_and_exports_agree(trained, tmp_path):
    """verify_net_in_out, ckpt_export (TorchScript) and onnx_export, run from the bundle root as model-zoo does."""
    import onnxruntime as ort

    name, bundle, _, _ = trained
    mz = [sys.executable, "-m", "monai.bundle"]
    common = ["--meta_file", "configs/metadata.json", "--config_file", "configs/inference.json"]
    for cmd in (
        mz + ["verify_net_in_out", "network_def", *common, "--image_size", "224"],
        mz
        + [
            "ckpt_export",
            "network_def",
            "--filepath",
            "models/model.ts",
            "--ckpt_file",
            "models/model.pt",
            *common,
            "--image_size",
            "64",
            "--input_shape",
            "[1, 3, 64, 64]",
        ],
        mz
        + [
            "onnx_export",
            "network_def",
            "--filepath",
            "models/model.onnx",
            "--ckpt_file",
            "models/model.pt",
            *common,
            "--image_size",
            "64",
            "--input_shape",
            "[1, 3, 64, 64]",
        ],
    ):
        proc = subprocess.run(cmd, cwd=bundle, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"{cmd[3]} failed:\n{proc.stderr[-3000:]}"
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["image_size"] = 64
    net = parser.get_parsed_content("network_def").eval()
    net.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        eager = net(x)
    scripted = torch.jit.load(str(bundle / "models" / "model.ts"))
    torch.testing.assert_close(scripted(x), eager, rtol=1e-4, atol=1e-4)
    session = ort.InferenceSession(str(bundle / "models" / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(onnx_out, eager.numpy(), rtol=1e-3, atol=1e-4)


def test_inference_protects_every_stage_and_scales_bit_depths(trained, tmp_path):
    """A 1 x 1 image and an item whose result cannot be written are skipped with their reason and the run goes
    on; MHA/NRRD are read, a 3D volume is named; a 16-bit PNG gives the 8-bit PNG's prediction; no full path
    is logged (folders may be named after patients)."""
    import itk

    name, bundle, data, _ = trained
    images = tmp_path / "Smith_John_1961"
    images.mkdir()
    src = sorted((data / "images").glob("test_*.png"))[0]
    gray = np.asarray(Image.open(src).convert("L"))
    Image.fromarray(gray).save(images / "a8.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(images / "b16.png")
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(images / "c_dot.png")
    itk.imwrite(itk.image_from_array(gray), str(images / "d.mha"))
    itk.imwrite(itk.image_from_array(gray), str(images / "e.nrrd"))
    itk.imwrite(itk.image_from_array(np.stack([gray] * 3)), str(images / "f_volume.mha"))
    Image.fromarray(gray).save(images / "g_blocked.png")
    out = tmp_path / "out"
    (out / "g_blocked_seg.png").mkdir(parents=True)  # the writer cannot replace a folder: postprocessing fails
    proc = bundle_run(
        [bundle / "configs" / "inference.json"],
        *("--dataset_dir", images, "--output_dir", out, "--image_size", 64),
        check=False,
    )
    log = proc.stdout + proc.stderr
    # the exit status of `dicom infer`: 4 when a result was not written (the blocked segmentation), else 3
    segmentation = name.endswith("segmentation")
    assert proc.returncode == (4 if segmentation else 3), log[-3000:]
    assert "inference: 7 image(s) to predict" in log
    assert f"inference finished: {4 if segmentation else 5}/7 image(s) predicted, 2 unreadable (skipped)" in log
    assert "skipped #3 c_dot.png: ValueError: image of 1 x 1 pixels" in log
    assert "skipped #6 f_volume.mha: ValueError: 3D image of 3 x " in log
    # MONAI's own run summary echoes the command line (`> dataset_dir: ...`); every other line is ours
    ours = "\n".join(line for line in log.splitlines() if "> dataset_dir:" not in line)
    assert str(images) not in ours and "Smith_John" not in ours
    if name.endswith("classification"):
        rows = {Path(r["image"]).name: r for r in csv.DictReader(open(out / "predictions.csv"))}
        assert set(rows) == {"a8.png", "b16.png", "d.mha", "e.nrrd", "g_blocked.png"}
        assert rows["b16.png"]["pred"] == rows["a8.png"]["pred"] == rows["d.mha"]["pred"]
        p8 = np.array([float(v) for k, v in rows["a8.png"].items() if k.startswith("p_")])
        p16 = np.array([float(v) for k, v in rows["b16.png"].items() if k.startswith("p_")])
        np.testing.assert_allclose(p16, p8, atol=0.02)
    else:
        assert "skipped g_blocked.png: postprocessing failed" in log
        written = sorted(p.name for p in out.glob("*_seg.png") if p.is_file())
        assert written == ["a8_seg.png", "b16_seg.png", "d_seg.png", "e_seg.png"]
        fg8 = (np.asarray(Image.open(out / "a8_seg.png")) > 0).mean()
        fg16 = (np.asarray(Image.open(out / "b16_seg.png")) > 0).mean()
        assert abs(fg16 - fg8) <= 0.02, (fg8, fg16)


def test_dicom_batch_and_node_path_with_the_real_bundle(trained, tmp_path):
    """The DICOM batch with the real BundlePredictor (trained weights) on real vendor files, cine included."""
    from pydicom.data import get_testdata_file

    from tinyusfm_monai.bundle.predictor import BundlePredictor
    from tinyusfm_monai.dicom.batch import run_batch

    name, bundle, _, _ = trained
    inputs = tmp_path / "in"
    inputs.mkdir()
    for file in ("US1_J2KI.dcm", "examples_ybr_color.dcm", "OBXXXX1A_2frame.dcm", "CT_small.dcm"):
        shutil.copy(get_testdata_file(file), inputs / file)
    predictor = BundlePredictor(bundle, device="cpu", overrides={"image_size": 64})
    rows = {r.input: r for r in run_batch(predictor, inputs, tmp_path / "out", frames="every:10")}
    assert [rows[f].status for f in ("US1_J2KI.dcm", "examples_ybr_color.dcm", "OBXXXX1A_2frame.dcm")] == [
        "processed"
    ] * 3
    assert (rows["CT_small.dcm"].status, rows["CT_small.dcm"].reason) == ("skipped", "not-ultrasound")
    assert rows["examples_ybr_color.dcm"].frames == "1,11,21"
