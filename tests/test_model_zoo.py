"""What MONAI model-zoo's CPU premerge checks of a bundle, for all 20 bundles (19 task bundles + distillation):
schema-valid metadata, `version` in `changelog`, LICENSE, a well-formed `large_files.yml` with the official links,
and `ConfigWorkflow(...).check_properties()` of the train and infer configs, as model-zoo's unit tests run it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from monai.bundle import ConfigWorkflow, verify_metadata

from tinyusfm_monai.bundle.docs import OFFICIAL_WEIGHTS
from tinyusfm_monai.bundle.generate import all_bundles
from tinyusfm_monai.data.phantom import generate_task
from tinyusfm_monai.data.registry import TASKS
from tinyusfm_monai.distillation.standin import small_teacher_def

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = ROOT / "bundles"
SCHEMA = ROOT / "tinyusfm_monai" / "bundle" / "schema" / "meta_schema_20240725.json"
ALL = sorted(all_bundles())


def test_twenty_bundles():
    assert len(ALL) == 20 and "tinyusfm_distillation" in ALL


@pytest.mark.parametrize("name", ALL)
def test_premerge_files_metadata_and_version(name):
    bundle = BUNDLES / name
    verify_metadata(meta_file=str(bundle / "configs" / "metadata.json"), filepath=str(SCHEMA))
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"], "model-zoo: the version must have a changelog entry"
    assert (bundle / "LICENSE").is_file() and "Apache License" in (bundle / "LICENSE").read_text()
    for rel in ("configs/logging.conf", "docs/README.md"):
        assert (bundle / rel).is_file(), rel
    from tinyusfm_monai import __version__

    # the wheel built from this tree satisfies every bundle's own requirement on this package
    assert meta["required_packages_version"]["tinyusfm-monai"] == __version__


@pytest.mark.parametrize("name", ALL)
def test_large_files_are_well_formed_official_links(name):
    spec = yaml.safe_load((BUNDLES / name / "large_files.yml").read_text())
    entries = spec["large_files"]
    assert {Path(e["path"]).name for e in entries} == set(OFFICIAL_WEIGHTS)
    for entry in entries:
        assert set(entry) == {"path", "url", "hash_val", "hash_type"}
        assert entry["url"] == OFFICIAL_WEIGHTS[Path(entry["path"]).name]
        assert entry["url"].startswith("https://drive.google.com/file/d/")  # the official READMEs' links
        assert "orangedox" not in entry["url"]  # expired host (openmedlab/USFM issue #8)
        assert not entry["hash_val"] and not entry["hash_type"]  # no project publishes a checksum


def _tiny_task_data(task: str, root: Path) -> Path:
    return generate_task(task, root / task, n_train=2, n_val=1, n_test=1, image_size=32).parent


def _check(config: Path, workflow_type: str, **override) -> list:
    bundle = config.parents[1]
    workflow = ConfigWorkflow(
        config_file=str(config),
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=str(bundle / "configs" / "logging.conf"),
        workflow_type=workflow_type,
        bundle_root=str(bundle),
        **override,
    )
    workflow.initialize()
    result = workflow.check_properties()
    workflow.finalize()
    return result


@pytest.mark.parametrize("name", sorted(TASKS))
def test_task_bundle_workflow_properties(name, tmp_path):
    data = _tiny_task_data(name, tmp_path)
    configs = BUNDLES / name / "configs"
    small = {"dataset_dir": str(data), "image_size": 32, "num_workers": 0}
    assert _check(configs / "train.json", "train", **small) == []
    assert _check(configs / "inference.json", "infer", dataset_dir=str(data / "images"), image_size=32) == []


def test_distillation_bundle_workflow_properties(tmp_path):
    configs = BUNDLES / "tinyusfm_distillation" / "configs"
    tiny_teacher = small_teacher_def(32, embed_dim=48, depth=12, num_heads=12)
    override = {
        "image_size": 32,
        "phantom_pool_size": 4,
        "teacher_def": tiny_teacher,
        "dataset_dir": str(tmp_path / "pool"),
        "output_dir": str(tmp_path / "eval"),
    }
    assert _check(configs / "train.json", "train", **override) == []
