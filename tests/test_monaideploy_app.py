"""The MONAI Deploy app: its steps give the node's objects (fast, this venv), and the real App SDK 4.0 app
(Holoscan scheduler, CPU only) runs from its MAP staging folder on the real vendor files in its own venv
(`make monaideploy-env`), with a tiny bundle (seeded random weights: plumbing, not accuracy)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from dicom_fixtures import ThresholdSegmenter, us_file

from tinyusfm_monai.dicom.process import process_file
from tinyusfm_monai.monaideploy.app_info import SDK_VERSION
from tinyusfm_monai.monaideploy.package import app_yaml, requirements
from tinyusfm_monai.monaideploy.steps import predict_instance, select_ultrasound, write_results

ROOT = Path(__file__).resolve().parents[1]
VENDOR = ["US1_UNCR.dcm", "examples_palette.dcm", "gdcm-US-ALOKA-16.dcm", "examples_ybr_color.dcm"]


def _inputs(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in [*VENDOR, "CT_small.dcm"]:
        shutil.copy(us_file(name), folder / name)
    (folder / "notes.txt").write_text("not DICOM")
    return folder


def test_steps_select_ultrasound_and_write_what_the_node_writes(tmp_path):
    selection = select_ultrasound(_inputs(tmp_path / "in"))
    assert sorted(p.name for p in selection.instances) == sorted(VENDOR)
    assert sorted(Path(p).name for p in selection.skipped) == ["CT_small.dcm", "notes.txt"]
    assert selection.skipped[str(tmp_path / "in" / "CT_small.dcm")].startswith("not-ultrasound")
    predictor = ThresholdSegmenter()
    for path in selection.instances:
        image, results = predict_instance(predictor, path, "every:10")
        app = write_results(image, results, predictor, tmp_path / "app")
        node = process_file(predictor, path, tmp_path / "node", "every:10").outputs
        assert [p.relative_to(tmp_path / "app") for p in app] == [p.relative_to(tmp_path / "node") for p in node]
        a, b = pydicom.dcmread(app[0]), pydicom.dcmread(node[0])
        assert a.SOPInstanceUID == b.SOPInstanceUID and a.SeriesInstanceUID == b.SeriesInstanceUID
        if "PixelData" in b:
            assert a.PixelData == b.PixelData


def test_package_files_come_from_pyproject_and_request_no_gpu():
    reqs = requirements()
    assert "torch==2.13.0" in reqs and f"monai-deploy-app-sdk=={SDK_VERSION}" in reqs
    assert any(r.startswith("highdicom") for r in reqs) and any(r.startswith("openvino") for r in reqs)
    yaml = app_yaml()
    assert "gpu: 0\n" in yaml and 'inputFormats: ["file"]' in yaml
    assert f'SDK_VERSION = "{SDK_VERSION}"' in (ROOT / "tinyusfm_monai/monaideploy/app_info.py").read_text()


def _sdk_python() -> Path:
    venv = Path(os.environ.get("MONAIDEPLOY_VENV", ROOT / ".venv-monaideploy"))
    python = venv / "bin" / "python"
    if not (venv / ".installed").exists():
        message = f"MONAI Deploy env missing ({venv}): make monaideploy-env"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return python


@pytest.mark.slow
def test_sdk_app_runs_on_cpu_from_its_map_stage_on_vendor_files(tmp_path):
    python = _sdk_python()
    sys.path.insert(0, str(Path(__file__).parent))
    from monailabel_harness import tiny_bundle_copy

    bundle = tiny_bundle_copy("busi_segmentation", tmp_path / "bundles", image_size=64)
    stage = tmp_path / "stage"
    subprocess.run(
        [sys.executable, "-m", "tinyusfm_monai.monaideploy.package", str(stage), str(bundle)],
        check=True,
        cwd=ROOT,
        timeout=120,
    )
    for name in ("app.yaml", "requirements.txt", "__main__.py", "tinyusfm_monai/monaideploy/app.py"):
        assert (stage / "app" / name).is_file()
    inputs, out = _inputs(tmp_path / "in"), tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # only the staged package is importable
    env.update(TINYUSFM_BACKEND="pytorch", TINYUSFM_FRAMES="every:10")
    proc = subprocess.run(
        [str(python), str(stage / "app"), "-i", str(inputs), "-o", str(out), "-m", str(stage / "models" / bundle.name)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env=env,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "Graph execution finished" in log  # the Holoscan scheduler ran the operators
    assert str(stage / "app") in log or "tinyusfm_monai.monaideploy" in log
    report = json.loads((out / "monai-deploy-report.json").read_text())
    assert sorted(report) == sorted(VENDOR) and all(v.startswith("written: ") for v in report.values())
    written = sorted(out.rglob("*.dcm"))
    kinds = sorted(pydicom.dcmread(p, stop_before_pixels=True).Modality for p in written)
    assert kinds == ["SEG", "SEG", "SEG", "SR"]
    # the same objects (names, UIDs, masks) as `dicom infer` with the same bundle in this environment
    from tinyusfm_monai.bundle.predictor import load_predictor

    predictor = load_predictor(bundle, backend="pytorch")
    for name in VENDOR:
        expected = process_file(predictor, inputs / name, tmp_path / "infer", "every:10").outputs[0]
        got = out / expected.relative_to(tmp_path / "infer")
        a, b = pydicom.dcmread(got), pydicom.dcmread(expected)
        assert a.SOPInstanceUID == b.SOPInstanceUID
        if "PixelData" in b:
            assert a.PixelData == b.PixelData
