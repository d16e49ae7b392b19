"""The OpenVINO backend: IR parity with eager, explicit precision, NNCF INT8, the inferer's rules (exported IR only
when it matches the weights, else in-memory conversion; PyTorch with one log line without OpenVINO), and the one
backend setting of the predictor. 64 x 64 inputs, random-init networks (parity, not accuracy: the accuracy of
bf16 / INT8 on a trained phantom model is checked in the slow tests and measured in benchmarks/).
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tinyusfm_monai.networks import USFM, TinyUSFM, ViTSegmenter

pytest.importorskip("openvino")

from tinyusfm_monai.deploy import openvino as ovd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64
FP32_ATOL = 1e-4


def _inputs(n: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _eager(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return model(x).numpy()


def _run(model, x: torch.Tensor, precision: str = "f32") -> np.ndarray:
    return ovd.run_openvino(ovd.compile_openvino(model, precision, threads=1).create_infer_request(), x)


@pytest.fixture(scope="module")
def tiny_cls():
    """A TinyUSFM classifier and its OpenVINO model, converted once for the tests that need one (conversion takes
    seconds)."""
    torch.manual_seed(3)
    model = TinyUSFM(num_classes=3, img_size=SIZE).eval()
    return model, ovd.convert_network(model, SIZE)


@pytest.mark.parametrize(
    "build",
    [
        lambda: TinyUSFM(num_classes=4, img_size=SIZE),
        lambda: ViTSegmenter("tinyusfm", num_classes=3, img_size=SIZE),
        pytest.param(lambda: USFM(num_classes=4, img_size=SIZE), marks=pytest.mark.slow),
    ],
    ids=["tinyusfm-cls", "tinyusfm-seg", "usfm-cls"],
)
def test_ir_fp32_matches_eager(build, tmp_path):
    """Saved with fp32 weights (no fp16 compression), read back, run at f32, dynamic batch: eager within 1e-4."""
    model = build().eval()
    path = ovd.save_ir(ovd.set_metadata(ovd.convert_network(model, SIZE), {"image_size": SIZE}), tmp_path / "m.xml")
    assert path.with_suffix(".bin").stat().st_size > 4 * sum(p.numel() for p in model.parameters()) * 0.99
    x = _inputs()  # converted at batch 1, run at 4
    np.testing.assert_allclose(_run(ovd.read_ir(path), x), _eager(model, x), atol=FP32_ATOL, rtol=1e-4)
    assert ovd.metadata(ovd.read_ir(path)) == {"image_size": str(SIZE)}
    assert not list(tmp_path.glob(".tmp-*")), "temporary files left behind"


def test_precision_is_explicit_and_bf16_changes_outputs(tiny_cls):
    """OpenVINO's CPU default is bf16 on this CPU; our compiled models report the precision asked for."""
    with pytest.raises(ValueError, match="f32"):
        ovd.compile_openvino(None, "fp16")
    model, ir = tiny_cls
    compiled = ovd.compile_openvino(ir, "f32", threads=1)
    assert str(compiled.get_property("INFERENCE_PRECISION_HINT")) in ("f32", "<Type: 'float32'>")
    if "bf16" not in ovd.cpu_precisions():
        pytest.skip("this CPU has no native bf16")
    x = _inputs(8)
    ref, bf16 = _eager(model, x), _run(ir, x, "bf16")
    diff = np.abs(bf16 - ref).max()
    assert 1e-6 < diff < 0.1, f"bf16 should differ from fp32 a little, max |Δ| = {diff}"


def test_weights_fingerprint_follows_the_weights():
    a, b = TinyUSFM(num_classes=2, img_size=SIZE), TinyUSFM(num_classes=2, img_size=SIZE)
    assert ovd.weights_fingerprint(a) != ovd.weights_fingerprint(b)
    b.load_state_dict(a.state_dict())
    assert ovd.weights_fingerprint(a) == ovd.weights_fingerprint(b)


@pytest.mark.parametrize("seg", [False, True], ids=["cls", "seg"])
def test_nncf_int8_agrees_with_eager(seg):
    """NNCF INT8 calibrated on a few images: int8 weights, bounded logit error, argmax mostly kept."""
    model = ViTSegmenter("tinyusfm", num_classes=3, img_size=SIZE) if seg else TinyUSFM(num_classes=4, img_size=SIZE)
    model.eval()
    calibration = [_inputs(1, seed=s).numpy() for s in range(8)]
    q = ovd.quantize_int8(ovd.convert_network(model, SIZE), calibration, subset_size=8)
    types = {op.get_type_name() for op in q.get_ops()}
    assert "FakeQuantize" in types or "FakeConvert" in types
    x = _inputs(8, seed=99)
    out, ref = _run(q, x), _eager(model, x)
    assert np.isfinite(out).all()
    assert np.abs(out - ref).max() < 0.25
    assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.75


# ------------------------------------------------------------------------------------------------ the inferer


def _ir_for(model: torch.nn.Module, path: Path, converted=None) -> Path:
    """What the export writes: the IR with the weights' fingerprint and the input size."""
    meta = {"image_size": SIZE, "weights_sha256": ovd.weights_fingerprint(model)}
    converted = converted if converted is not None else ovd.convert_network(model, SIZE)
    return ovd.save_ir(ovd.set_metadata(converted.clone(), meta), path)


def test_openvino_inferer_is_the_plain_inferer_on_openvino(tiny_cls, tmp_path, caplog):
    from monai.data import MetaTensor

    from tinyusfm_monai.inferers.inferer import OpenVinoInferer, PlainTensorInferer

    model = tiny_cls[0]
    path = _ir_for(model, tmp_path / "m.xml", tiny_cls[1])
    x = MetaTensor(_inputs(2), meta={"filename_or_obj": "a.png"})
    inferer = OpenVinoInferer(str(path), precision="f32", threads=1)
    with caplog.at_level(logging.INFO, logger="tinyusfm_monai.inferers.inferer"), torch.inference_mode():
        got = inferer(x, model)
        ref = PlainTensorInferer()(x, model)
    assert isinstance(got, MetaTensor) and got.meta["filename_or_obj"] == "a.png"
    np.testing.assert_allclose(got.as_tensor().numpy(), ref.as_tensor().numpy(), atol=FP32_ATOL)
    assert inferer.source == str(path) and "in memory" not in caplog.text
    with pytest.raises(ValueError, match="precision"):
        OpenVinoInferer(str(path), precision="fp16")


def test_openvino_inferer_never_runs_an_ir_of_other_weights(tiny_cls, tmp_path, caplog):
    """An IR exported before retraining is not used: the current network is converted; and again after the
    weights change in place (MONAI Label reloading models/model.pt into the same network)."""
    from tinyusfm_monai.inferers.inferer import OpenVinoInferer

    old, model = tiny_cls[0], TinyUSFM(num_classes=3, img_size=SIZE).eval()
    path = _ir_for(old, tmp_path / "m.xml", tiny_cls[1])
    x = _inputs(2)
    inferer = OpenVinoInferer(str(path), precision="f32", threads=1)
    with caplog.at_level(logging.WARNING, logger="tinyusfm_monai.inferers.inferer"):
        np.testing.assert_allclose(inferer(x, model).numpy(), _eager(model, x), atol=FP32_ATOL)
    assert "other weights" in caplog.text and inferer.source.startswith("in-memory")

    model.load_state_dict(TinyUSFM(num_classes=3, img_size=SIZE).state_dict())  # "retrained"
    np.testing.assert_allclose(inferer(x, model).numpy(), _eager(model, x), atol=FP32_ATOL)
    model.load_state_dict(old.state_dict())  # now the exported IR fits again
    np.testing.assert_allclose(OpenVinoInferer(str(path), threads=1)(x, model).numpy(), _eager(old, x), atol=FP32_ATOL)
    missing = OpenVinoInferer(str(tmp_path / "none.xml"), threads=1)
    with pytest.raises(FileNotFoundError, match="tinyusfm-monai export"):
        missing(x, lambda t: t)  # no network to convert and no IR


@pytest.fixture
def without_openvino(monkeypatch):
    """`import openvino` fails, as on a machine where it is not installed (a None entry in sys.modules makes the
    import raise ImportError; no real part can uninstall it for one test)."""
    monkeypatch.setitem(sys.modules, "openvino", None)
    ovd.openvino_available.cache_clear()
    yield
    ovd.openvino_available.cache_clear()


def test_without_openvino_the_pytorch_network_runs_with_one_log_line(without_openvino, tmp_path, caplog):
    from tinyusfm_monai.inferers.inferer import OpenVinoInferer

    model = TinyUSFM(num_classes=3, img_size=SIZE).eval()
    x = _inputs(2)
    with caplog.at_level(logging.INFO, logger="tinyusfm_monai"):
        inferer = OpenVinoInferer(str(tmp_path / "model.xml"), threads=1)
        with torch.inference_mode():
            out = inferer(x, model)
            inferer(x, model)
    assert inferer.backend == "pytorch"
    torch.testing.assert_close(out, torch.from_numpy(_eager(model, x)), rtol=0, atol=0)
    lines = [r.getMessage() for r in caplog.records if "OpenVINO" in r.getMessage()]
    assert len(lines) == 1 and "not installed" in lines[0] and "PyTorch" in lines[0]
    assert "tinyusfm-monai[openvino]" in lines[0]
    with pytest.raises(ImportError, match=r"tinyusfm-monai\[openvino\]"):
        ovd.require_openvino()


# ----------------------------------------------------------------------------------- one backend setting


def _tiny_bundle(tmp_path: Path, name: str = "busi_classification", ir: bool = False) -> Path:
    from tinyusfm_monai.deploy.export import load_bundle_network

    bundle = tmp_path / name
    shutil.copytree(ROOT / "bundles" / name / "configs", bundle / "configs")
    (bundle / "models").mkdir()
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["image_size"] = SIZE
    torch.save(parser.get_parsed_content("network_def").state_dict(), bundle / "models" / "model.pt")
    network, _ = load_bundle_network(bundle, image_size=SIZE)  # the weights fit the bundle's network
    if ir:
        _ir_for(network, bundle / "models" / "model.xml")
    return bundle


def test_backend_names_and_the_default():
    from tinyusfm_monai.bundle.parser import BACKENDS, DEFAULT_BACKEND, backend_configs, resolve_backend

    assert {"pytorch", "onnx", "openvino", "openvino-bf16", "openvino-int8"} <= set(BACKENDS)
    with pytest.raises(ValueError, match="backend must be"):
        backend_configs("tensorrt")
    assert DEFAULT_BACKEND == "auto"
    assert resolve_backend("auto", "cpu") == "openvino" and resolve_backend("auto", "cuda:0") == "pytorch"
    assert resolve_backend("onnx", "cuda") == "onnx"
    assert backend_configs("openvino-bf16") == (("inference_openvino.json",), {"openvino_precision": "bf16"})


def test_predictor_backends_give_the_same_predictions(tmp_path):
    from tinyusfm_monai.bundle.predictor import load_predictor

    bundle = _tiny_bundle(tmp_path, ir=True)
    image = np.random.default_rng(0).integers(0, 255, (80, 96, 3), dtype=np.uint8)
    ref = load_predictor(bundle, backend="pytorch", overrides={"image_size": SIZE}).predict(image)
    predictor = load_predictor(bundle, device="cpu", overrides={"image_size": SIZE, "num_threads": 1})
    assert predictor.backend == "openvino"  # the default on CPU
    assert type(predictor.inferer).__name__ == "OpenVinoInferer" and predictor.inferer.precision == "f32"
    assert predictor.inferer.source == str(bundle / "models" / "model.xml")  # compiled at load (warm-up)
    np.testing.assert_allclose(predictor.predict(image), ref, atol=FP32_ATOL)
    bf16 = load_predictor(bundle, backend="openvino-bf16", overrides={"image_size": SIZE, "num_threads": 1})
    assert bf16.inferer.precision == "bf16"
    assert np.abs(bf16.predict(image) - ref).max() < 0.05


def test_predictor_openvino_backend_without_openvino_is_pytorch(without_openvino, tmp_path, caplog):
    from tinyusfm_monai.bundle.predictor import load_predictor

    bundle = _tiny_bundle(tmp_path)
    image = np.random.default_rng(0).integers(0, 255, (80, 96, 3), dtype=np.uint8)
    ref = load_predictor(bundle, backend="pytorch", overrides={"image_size": SIZE}).predict(image)
    with caplog.at_level(logging.WARNING):
        predictor = load_predictor(bundle, device="cpu", overrides={"image_size": SIZE, "num_threads": 1})  # auto
        out = predictor.predict(image)
    np.testing.assert_array_equal(out, ref)
    assert sum("OpenVINO is not installed" in r.getMessage() for r in caplog.records) == 1


def test_export_report_is_written_next_to_the_model(tmp_path):
    """`tinyusfm-monai export --format openvino --int8` on a bundle: IR, calibration set and accuracy check JSON.
    Calibrated on 8 training images of the task's phantom, checked on 8 test images."""
    from tinyusfm_monai.deploy.export import export, report_path

    bundle = _tiny_bundle(tmp_path)
    out = Path(export(str(bundle), format="openvino", int8=True, image_size=SIZE, calibration_size=8, check_size=8))
    assert out == bundle / "models" / "model_int8.xml" and out.with_suffix(".bin").is_file()
    report = json.loads(report_path(out).read_text())
    assert report["int8"] is True and report["image_size"] == SIZE and report["checked_precision"] == "f32"
    assert len(report["calibration"]["images"]) == 8 and report["calibration"]["split"] == "training"
    assert all("/images/train_" in p for p in report["calibration"]["images"])
    rows = report["accuracy_check"]["rows"]
    assert report["accuracy_check"]["images"] == 8 and "fp32 eager" in rows and "OpenVINO int8 @ f32" in rows
    assert set(rows["OpenVINO int8 @ f32"]) >= {"accuracy", "delta_points", "agreement", "max_abs_prob_diff"}
    assert ovd.metadata(ovd.read_ir(out))["weights_sha256"] == report["weights_sha256"]
    with pytest.raises(ValueError, match="only --format openvino"):
        export(str(bundle), format="onnx", precision="bf16")
