"""Bundles outside this repository, as model-zoo's CI or a user runs them: build the wheel, install it with the
bundle's own `required_packages_version` into a fresh virtualenv, copy a task bundle and the distillation bundle
into an empty folder, and run train.json (one tiny epoch), inference.json and verify_metadata there.

Nothing of the repository is on the path of those runs: the package comes from the wheel, the bundles from the
copies. Slow (about a minute to build and install, pip's cache warm)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinyusfm_monai.distillation.standin import small_teacher_def

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 900) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{out[-4000:]}"
    return out


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python of a fresh virtualenv with the wheel and the bundles' requirements, a clean environment)."""
    tmp = tmp_path_factory.mktemp("standalone")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    run([sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp / "dist"), str(ROOT)], tmp, env)
    wheels = list((tmp / "dist").glob("tinyusfm_monai-*.whl"))
    assert len(wheels) == 1
    run([sys.executable, "-m", "venv", str(tmp / "venv")], tmp, env)
    python = str(tmp / "venv" / "bin" / "python")
    # exactly what model-zoo's CI installs for a bundle: every entry of required_packages_version, pinned
    meta = json.loads((ROOT / "bundles" / "busi_classification" / "configs" / "metadata.json").read_text())
    pins = [f"{name}=={version}" for name, version in meta["required_packages_version"].items()]
    run([python, "-m", "pip", "install", "-q", "--find-links", str(tmp / "dist"), *pins], tmp, env)
    env["TINYUSFM_CACHE"] = str(tmp / "cache")
    env["OMP_NUM_THREADS"] = "1"
    return python, env, tmp


def test_wheel_runs_copied_bundles_in_an_empty_folder(installed):
    python, env, tmp = installed
    work = tmp / "work"  # empty: no repository, no source tree beside the bundles
    work.mkdir()
    for name in ("busi_classification", "tinyusfm_distillation"):
        shutil.copytree(ROOT / "bundles" / name, work / name, ignore=shutil.ignore_patterns("models", "eval", "runs"))
    where = run([python, "-c", "import tinyusfm_monai; print(tinyusfm_monai.__file__)"], work, env)
    assert "site-packages" in where and str(ROOT) not in where

    schema = (
        run(
            [
                python,
                "-c",
                "import importlib.resources as r; print(r.files('tinyusfm_monai.bundle')"
                ".joinpath('schema/meta_schema_20240725.json'))",
            ],
            work,
            env,
        )
        .strip()
        .splitlines()[-1]
    )
    for name in ("busi_classification", "tinyusfm_distillation"):
        run(
            [
                python,
                "-m",
                "monai.bundle",
                "verify_metadata",
                "--meta_file",
                f"{name}/configs/metadata.json",
                "--filepath",
                schema,
            ],
            work,
            env,
        )

    bundle = work / "busi_classification"
    tiny = ["--image_size", "32", "--batch_size", "16", "--num_workers", "0"]
    log = run(
        [
            python,
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            f"{bundle.name}/configs/train.json",
            "--max_epochs",
            "1",
            *tiny,
        ],
        work,
        env,
    )
    assert "Epoch[1] Complete" in log
    assert (bundle / "models" / "model.pt").is_file() and (bundle / "models" / "last.pt").is_file()

    images = work / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (60, 80), dtype=np.uint8)).save(images / f"us_{i}.png")
    run(
        [
            python,
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            f"{bundle.name}/configs/inference.json",
            "--dataset_dir",
            str(images),
            "--image_size",
            "32",
        ],
        work,
        env,
    )
    rows = (bundle / "eval" / "predictions.csv").read_text().splitlines()
    assert rows[0].startswith("image,pred,p_normal") and len(rows) == 3

    distil = work / "tinyusfm_distillation"
    teacher = small_teacher_def(32, embed_dim=48, depth=12, num_heads=12)
    args = work / "distil_args.json"
    args.write_text(
        json.dumps({"image_size": 32, "phantom_pool_size": 4, "batch_size": 2, "max_epochs": 1, "teacher_def": teacher})
    )
    run(
        [
            python,
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            f"{distil.name}/configs/train.json",
            "--args_file",
            str(args),
        ],
        work,
        env,
    )
    assert (distil / "models" / "model.pt").is_file()  # the student, official TinyUSFM layout
