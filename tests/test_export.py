"""ONNX / TorchScript export and INT8 quantisation agree with the eager model (64 x 64 inputs, CPU).

Tolerances: fp32 ONNX and TorchScript are the same arithmetic up to kernel order, so logits agree to
atol 1e-4. INT8 dynamic quantisation rounds weights and activations, so only bounded logit error and
argmax agreement are asserted; the accuracy change on a trained model is measured in
`benchmarks/int8_accuracy.py` (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from tinyusfm_monai.deploy import (
    configure_threads,
    export_onnx,
    onnx_session,
    physical_cores,
    quantize_linear_dynamic,
    quantize_onnx_int8,
)
from tinyusfm_monai.deploy.onnx import run_onnx
from tinyusfm_monai.networks import USFM, TinyUSFM, ViTSegmenter

pytest.importorskip("onnxruntime")

SIZE = 64
FP32_ATOL = 1e-4
INT8_MAX_LOGIT_ERR = 0.1  # random-init logits are O(1); int8 error measured ~1e-2
INT8_MIN_AGREEMENT = 0.9


def _inputs(n: int = 8) -> torch.Tensor:
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def _eager(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return model(x).numpy()


@pytest.mark.parametrize(
    "build",
    [
        lambda: TinyUSFM(num_classes=4, img_size=SIZE),
        lambda: ViTSegmenter("tinyusfm", num_classes=3, img_size=SIZE),
        lambda: USFM(num_classes=4, img_size=SIZE),
    ],
    ids=["tinyusfm-cls", "tinyusfm-seg", "usfm-cls"],
)
def test_onnx_fp32_matches_eager(build, tmp_path):
    model = build().eval()
    path = export_onnx(model, tmp_path / "m.onnx", image_size=SIZE)
    x = _inputs()
    out = run_onnx(onnx_session(path, threads=1), x)  # dynamic batch axis: exported at 1, run at 8
    np.testing.assert_allclose(out, _eager(model, x), atol=FP32_ATOL, rtol=1e-4)


@pytest.mark.parametrize("seg", [False, True], ids=["cls", "seg"])
def test_onnx_int8_agrees_with_eager(seg, tmp_path):
    model = ViTSegmenter("tinyusfm", num_classes=3, img_size=SIZE) if seg else TinyUSFM(num_classes=4, img_size=SIZE)
    model.eval()
    fp32 = export_onnx(model, tmp_path / "m.onnx", image_size=SIZE)
    int8 = quantize_onnx_int8(fp32, tmp_path / "m_int8.onnx")
    assert int8.stat().st_size < 0.5 * fp32.stat().st_size  # the Linear weights really are int8 now
    x = _inputs()
    out, ref = run_onnx(onnx_session(int8, threads=1), x), _eager(model, x)
    assert np.isfinite(out).all()
    assert np.abs(out - ref).max() < INT8_MAX_LOGIT_ERR
    assert (out.argmax(1) == ref.argmax(1)).mean() >= INT8_MIN_AGREEMENT


def test_torch_int8_agrees_with_eager():
    model = TinyUSFM(num_classes=4, img_size=SIZE).eval()
    q = quantize_linear_dynamic(model)
    assert any("quantized" in type(m).__module__ for m in q.modules())
    assert not any("quantized" in type(m).__module__ for m in model.modules())  # the original is untouched
    x = _inputs()
    out, ref = _eager(q, x), _eager(model, x)
    assert np.abs(out - ref).max() < INT8_MAX_LOGIT_ERR
    assert (out.argmax(1) == ref.argmax(1)).mean() >= INT8_MIN_AGREEMENT


def test_threads(monkeypatch):
    from tinyusfm_monai.deploy.threads import busy_cpus, inference_threads

    assert 1 <= physical_cores() <= os.cpu_count()
    before = torch.get_num_threads()
    try:
        assert configure_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert 0.0 <= busy_cpus(0.05) <= os.cpu_count() + 0.01
    assert 1 <= inference_threads() <= physical_cores()  # never more threads than cores, never zero
    monkeypatch.setenv("TINYUSFM_NUM_THREADS", "3")
    assert inference_threads() == 3 and inference_threads(5) == 5  # the operator's choice wins over the guess


def test_plain_tensor_inferer_keeps_metadata():
    from monai.data import MetaTensor
    from monai.inferers import SimpleInferer

    from tinyusfm_monai.inferers.inferer import PlainTensorInferer

    seen = []

    def net(x):
        seen.append(type(x))
        return x * 2

    x = MetaTensor(torch.ones(1, 3, 4, 4), meta={"filename_or_obj": "a.png"})
    out = PlainTensorInferer()(x, net)
    assert seen == [torch.Tensor]
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "a.png"
    torch.testing.assert_close(out.as_tensor(), SimpleInferer()(x, net).as_tensor())


def test_onnx_inferer_is_the_plain_inferer_on_onnx_runtime(tmp_path):
    from monai.data import MetaTensor

    from tinyusfm_monai.inferers.inferer import OnnxInferer, PlainTensorInferer

    torch.manual_seed(0)
    model = TinyUSFM(num_classes=3, img_size=SIZE).eval()
    export_onnx(model, tmp_path / "m.onnx", image_size=SIZE)
    x = MetaTensor(_inputs(2), meta={"filename_or_obj": "a.png"})
    got = OnnxInferer(str(tmp_path / "m.onnx"), threads=1)(x, network=None)
    with torch.inference_mode():
        ref = PlainTensorInferer()(x, model)
    assert isinstance(got, MetaTensor) and got.meta["filename_or_obj"] == "a.png"
    np.testing.assert_allclose(got.as_tensor().numpy(), ref.as_tensor().numpy(), atol=FP32_ATOL)
    with pytest.raises(FileNotFoundError, match="missing.onnx.*tinyusfm-monai export"):
        OnnxInferer(str(tmp_path / "missing.onnx"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "fmt,int8",
    [("onnx", False), ("onnx", True), ("torchscript", False), ("openvino", False), ("openvino", True)],
)
def test_export_command_on_a_bundle(fmt, int8, tmp_path):
    """`tinyusfm-monai export` on a copy of a real bundle (64 x 64, random-init model.pt). OpenVINO calibrates
    on 16 training images of the task's embedded phantom and checks 8 of its test images."""
    import shutil
    from pathlib import Path

    from tinyusfm_monai.deploy.export import export, load_bundle_network

    src = Path(__file__).resolve().parents[1] / "bundles" / "busi_segmentation"
    bundle = tmp_path / "b"
    shutil.copytree(src / "configs", bundle / "configs")
    (bundle / "models").mkdir()
    torch.save(ViTSegmenter("tinyusfm", num_classes=2, img_size=SIZE).state_dict(), bundle / "models" / "model.pt")
    if fmt == "openvino":
        pytest.importorskip("openvino")
    out = Path(export(str(bundle), format=fmt, int8=int8, image_size=SIZE, calibration_size=16, check_size=8))
    assert out.is_file() and out.parent == bundle / "models"
    network, _ = load_bundle_network(bundle, image_size=SIZE)
    x = _inputs(2)
    ref = _eager(network, x)
    if fmt == "onnx":
        got = run_onnx(onnx_session(out, threads=1), x)
    elif fmt == "openvino":
        from tinyusfm_monai.deploy import openvino as ovd
        from tinyusfm_monai.deploy.export import report_path

        assert out.suffix == ".xml" and out.with_suffix(".bin").is_file() and report_path(out).is_file()
        got = ovd.run_openvino(ovd.compile_openvino(out, "f32", threads=1).create_infer_request(), x)
    else:
        with torch.inference_mode():
            got = torch.jit.load(str(out)).eval()(x).numpy()
    if int8:
        assert (got.argmax(1) == ref.argmax(1)).mean() >= INT8_MIN_AGREEMENT
    else:
        np.testing.assert_allclose(got, ref, atol=FP32_ATOL, rtol=1e-4)


@pytest.mark.parametrize("int8", [False, True], ids=["onnx", "onnx-int8"])
def test_onnx_backend_never_runs_an_export_of_other_weights(int8, tmp_path, caplog):
    """The bundle's ONNX backend (batch, node, MONAI Label) after a retraining: `tinyusfm-monai export` wrote the
    file for the old weights, then models/model.pt changed. The predictor's output is that of the new weights,
    not the stale export's; exported again, the file itself is used."""
    import logging
    import shutil
    from pathlib import Path

    from monai.bundle import ConfigParser

    from tinyusfm_monai.bundle.predictor import load_predictor
    from tinyusfm_monai.deploy.export import export

    name = "busi_classification"
    bundle = tmp_path / name
    shutil.copytree(Path(__file__).resolve().parents[1] / "bundles" / name / "configs", bundle / "configs")
    (bundle / "models").mkdir()
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["image_size"] = SIZE

    def train(seed: int) -> None:  # "retraining": new weights in models/model.pt
        torch.manual_seed(seed)
        torch.save(parser.get_parsed_content("network_def", lazy=False).state_dict(), bundle / "models" / "model.pt")

    backend = "onnx-int8" if int8 else "onnx"
    options = {"overrides": {"image_size": SIZE, "num_threads": 1}}
    image = np.random.default_rng(0).integers(0, 255, (80, 96, 3), dtype=np.uint8)
    train(1)
    out = Path(export(str(bundle), format="onnx", int8=int8, image_size=SIZE))
    stale = load_predictor(bundle, backend=backend, **options)
    assert stale.inferer.source == str(out)  # matching weights: the export itself runs
    old = stale.predict(image)
    train(2)
    ref = load_predictor(bundle, backend="pytorch", **options).predict(image)
    assert np.abs(ref - old).max() > 1e-3, "the two weight sets must predict differently for the test to mean much"
    with caplog.at_level(logging.WARNING, logger="tinyusfm_monai.inferers.inferer"):
        fresh = load_predictor(bundle, backend=backend, **options)
        got = fresh.predict(image)
    assert "other weights" in caplog.text and fresh.inferer.source.startswith("in-memory")
    np.testing.assert_allclose(got, ref, atol=1e-4)  # the current weights (fp32 in memory), not the stale file
    export(str(bundle), format="onnx", int8=int8, image_size=SIZE)
    again = load_predictor(bundle, backend=backend, **options)
    assert again.inferer.source == str(out)
    if not int8:
        np.testing.assert_allclose(again.predict(image), ref, atol=1e-4)


def test_export_errors_are_one_line_and_a_read_only_place_is_refused_first(tmp_path, monkeypatch, capsys):
    """`tinyusfm-monai export` into a folder that cannot be written stops before loading or converting anything,
    with one line naming the folder and exit status 2; so does a bundle without weights."""
    from tinyusfm_monai.cli import CLI
    from tinyusfm_monai.deploy import export as export_module

    def never(*args, **kwargs):
        raise AssertionError("the network was loaded before the output folder was checked")

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the output folder should be")
    monkeypatch.setattr(export_module, "load_bundle_network", never)
    monkeypatch.delenv("TINYUSFM_TRACEBACK", raising=False)
    with pytest.raises(SystemExit) as code:
        CLI.export(str(tmp_path), format="onnx", output=str(blocker / "model.onnx"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code.value.code == 2 and len(err) == 1, err
    assert "not-a-folder: the export cannot be written there" in err[0]
    monkeypatch.undo()
    with pytest.raises(SystemExit) as code:
        CLI.export(str(tmp_path / "no-bundle"), format="onnx", output=str(tmp_path / "m.onnx"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code.value.code == 2 and len(err) == 1 and "no-bundle" in err[0], err
