"""Every task bundle is generated from the registry and is a valid model-zoo bundle (fast checks)."""

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, verify_metadata

from tinyusfm_monai.bundle.generate import bundle_files, generate
from tinyusfm_monai.data.registry import TASKS
from tinyusfm_monai.transforms.pipelines import build_preprocessing

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = ROOT / "bundles"
SCHEMA = ROOT / "tinyusfm_monai" / "bundle" / "schema" / "meta_schema_20240725.json"
REQUIRED = [
    "LICENSE",
    "large_files.yml",
    "configs/metadata.json",
    "configs/train.json",
    "configs/train_paper.json",
    "configs/evaluate.json",
    "configs/inference.json",
    "configs/inference_onnx.json",
    "configs/inference_openvino.json",
    "configs/multi_gpu_train.json",
    "configs/logging.conf",
    "docs/README.md",
    "docs/data_license.txt",
]


def test_committed_bundles_are_what_the_generator_writes():
    """Fails on any drift between bundles/ and the generator (check mode writes nothing)."""
    assert generate(out=str(BUNDLES), check=True) == []


def test_drift_check_fails_on_an_edited_committed_file(tmp_path):
    import shutil

    copy = tmp_path / "bundles"
    shutil.copytree(BUNDLES, copy, ignore=shutil.ignore_patterns("models", "eval", "runs"))
    assert generate(out=str(copy), check=True) == []
    readme = copy / "tinyusfm_distillation" / "docs" / "README.md"
    readme.write_text(readme.read_text().replace("| `coreset#budget` | `0.1` |", "| `coreset#budget` | `0.2` |"))
    with pytest.raises(SystemExit, match="tinyusfm_distillation/docs/README.md"):
        generate(out=str(copy), check=True)


def test_generator_check_mode_reports_drift(tmp_path):
    generate(out=str(tmp_path), tasks="busi_classification")
    (tmp_path / "busi_classification" / "configs" / "train.json").write_text("{}")
    with pytest.raises(SystemExit, match="busi_classification/configs/train.json"):
        generate(out=str(tmp_path), tasks="busi_classification", check=True)


def test_one_bundle_per_task_with_the_right_suffix():
    names = {p.name for p in BUNDLES.iterdir() if p.is_dir() and p.name in TASKS}
    assert names == set(TASKS) and len(names) == 19
    assert {p.name for p in BUNDLES.iterdir() if p.is_dir()} == set(TASKS) | {"tinyusfm_distillation"}
    for name, task in TASKS.items():
        assert name.endswith("_" + task.task_type)  # MONAI Label takes the task type from the folder name
        for rel in REQUIRED:
            assert (BUNDLES / name / rel).is_file(), f"{name}/{rel}"
        paper_inference = ["configs/inference_paper.json"] if task.task_type == "segmentation" else []
        for rel in paper_inference:
            assert (BUNDLES / name / rel).is_file(), f"{name}/{rel}"
        assert set(bundle_files(task)) == set(REQUIRED + paper_inference)
        assert "## The `paper` preset" in (BUNDLES / name / "docs" / "README.md").read_text()


@pytest.mark.parametrize("name", sorted(TASKS))
def test_metadata_valid_and_from_registry(name, tmp_path):
    meta_file = BUNDLES / name / "configs" / "metadata.json"
    verify_metadata(meta_file=str(meta_file), filepath=str(SCHEMA))  # raises on an invalid file; no download
    meta = json.loads(meta_file.read_text())
    task = TASKS[name]
    assert meta["version"] in meta["changelog"]
    fmt = meta["network_data_format"]
    assert list(fmt["inputs"]) == ["image"] and list(fmt["outputs"]) == ["pred"]
    pred = fmt["outputs"]["pred"]
    assert pred["channel_def"] == {str(i): n for i, n in enumerate(task.labels)}
    assert pred["num_channels"] == task.num_classes
    if task.task_type == "segmentation":
        assert pred["channel_def"]["0"] == "background" and pred["type"] == "image"
    else:
        assert "background" not in pred["channel_def"].values() and pred["type"] == "probabilities"
    assert "tinyusfm-monai" in meta["required_packages_version"]


def test_schema_rejects_a_broken_metadata(tmp_path):
    meta = json.loads((BUNDLES / "busi_classification" / "configs" / "metadata.json").read_text())
    del meta["network_data_format"]
    bad = tmp_path / "metadata.json"
    bad.write_text(json.dumps(meta))
    with pytest.raises(Exception, match="network_data_format"):
        verify_metadata(meta_file=str(bad), filepath=str(SCHEMA))


# IDs that MONAI Label, MONAI Deploy and model-zoo tooling look up, beyond MONAI's required properties.
EXTRA_TRAIN_IDS = [
    "network_def",
    "network",
    "train#dataset#data",
    "train#handlers",
    "train#preprocessing",
    "train#postprocessing",
    "validate#evaluator",
    "validate#dataset#data",
    "validate#handlers",
    "val_interval",
    "initialize",
    "run",
]
EXTRA_INFER_IDS = ["network", "preprocessing", "postprocessing", "dataset#data", "handlers", "initialize", "run"]


@pytest.mark.parametrize("name", sorted(TASKS))
def test_standard_ids_present(name):
    from monai.bundle.properties import InferProperties, TrainProperties

    configs = BUNDLES / name / "configs"
    for files, props, extra in (
        (["train.json"], TrainProperties, EXTRA_TRAIN_IDS),
        (["train.json", "multi_gpu_train.json"], TrainProperties, EXTRA_TRAIN_IDS),
        (["train.json", "evaluate.json"], TrainProperties, EXTRA_TRAIN_IDS),
        (["inference.json"], InferProperties, EXTRA_INFER_IDS),
        (["inference.json", "inference_onnx.json"], InferProperties, EXTRA_INFER_IDS),
        (["inference.json", "inference_openvino.json"], InferProperties, EXTRA_INFER_IDS),
    ):
        parser = ConfigParser()
        parser.read_config([str(configs / f) for f in files])
        required = [p["id"] for p in props.values() if p["required"]]
        missing = [i for i in required + extra if i not in parser]
        assert not missing, f"{name} {files}: missing {missing}"


def test_bundle_root_follows_the_config_file():
    from tinyusfm_monai.bundle.components import default_bundle_root

    cfg = "bundles/busi_classification/configs/train.json"
    assert Path(default_bundle_root(["x", "run", "--config_file", cfg])).name == "busi_classification"
    assert Path(default_bundle_root(["x", "--config_file", f"['{cfg}', 'b.json']"])).name == "busi_classification"
    assert Path(default_bundle_root([f"--config_file={cfg}"])).name == "busi_classification"
    assert default_bundle_root(["python", "-m", "pytest"]) == "."


@pytest.mark.parametrize("name", ["busi_classification", "camus_segmentation"])
def test_bundle_preprocessing_is_the_parity_tested_one(name, tmp_path):
    """inference.json's preprocessing gives the same tensor as the pipeline that test_preprocessing checks."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    path = tmp_path / "img.png"
    Image.fromarray(rng.integers(0, 255, (80, 96), dtype=np.uint8)).save(path)
    parser = ConfigParser()
    parser.read_config(str(BUNDLES / name / "configs" / "inference.json"))
    ours = parser.get_parsed_content("preprocessing")({"image": str(path)})["image"]
    ref = build_preprocessing(224)({"image": str(path)})["image"]
    torch.testing.assert_close(ours.as_tensor(), ref.as_tensor())
