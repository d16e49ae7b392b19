"""MAP (MONAI Application Package) staging for the MONAI Deploy app: `app.yaml`, `requirements.txt`, the app
folder and the bundle as the model, laid out as `monai-deploy package` expects. No container is built here (no
container runtime on these machines); docs/hospital_it.md gives the packaging command.

    tinyusfm-monai-deploy-stage: python -m tinyusfm_monai.monaideploy.package STAGE_DIR BUNDLE_DIR

writes STAGE_DIR/app/ (a copy of the `tinyusfm_monai` package, `__main__.py`, `app.yaml`, `requirements.txt`)
and STAGE_DIR/models/<bundle>/ (configs and models/model.pt). `python STAGE_DIR/app -i IN -o OUT -m
STAGE_DIR/models/<bundle>` runs the staged app: the test runs it that way, so the stage is self-contained.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import tomllib

from tinyusfm_monai.monaideploy.app_info import APP_NAME, APP_TITLE, APP_VERSION, SDK_VERSION

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # tinyusfm_monai/
PYPROJECT = PACKAGE_ROOT.parent / "pyproject.toml"


def requirements(pyproject: Path = PYPROJECT) -> list[str]:
    """The app's pip requirements: the project's runtime dependencies (one source: pyproject.toml), the
    OpenVINO runtime, and the SDK at the version the app was written for."""
    project = tomllib.loads(pyproject.read_text())["project"]
    runtime = list(project["dependencies"])
    openvino = [r for r in project["optional-dependencies"]["openvino"] if r.startswith("openvino")]
    return [*runtime, *openvino, f"monai-deploy-app-sdk=={SDK_VERSION}"]


def app_yaml(cpu: int = 2, memory_gib: int = 4) -> str:
    """The packager's application configuration (Holoscan app.yaml): CPU only, no GPU requested; memory from
    the node's measured peak (under 1.5 GB with a bundle model) with headroom for a batch."""
    return (
        f"application:\n"
        f"  title: {APP_TITLE}\n"
        f"  version: {APP_VERSION}\n"
        f'  inputFormats: ["file"]\n'
        f'  outputFormats: ["file"]\n'
        f"\n"
        f"resources:\n"
        f"  cpu: {cpu}\n"
        f"  gpu: 0\n"
        f"  memory: {memory_gib}Gi\n"
        f"  gpuMemory: 0Gi\n"
    )


MAIN = '''"""Entry point of the packaged app ({name}): the SDK's runner calls `python <app folder>`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tinyusfm_monai.monaideploy.app import main  # noqa: E402

main()
'''


def stage(stage_dir: str | Path, bundle: str | Path) -> Path:
    """Lay out the MAP inputs under `stage_dir` (replaced); returns the app folder."""
    stage_dir, bundle = Path(stage_dir), Path(bundle)
    if not (bundle / "models" / "model.pt").is_file():
        raise FileNotFoundError(f"{bundle}: no models/model.pt (train or download the bundle's weights first)")
    app = stage_dir / "app"
    if app.exists():
        shutil.rmtree(app)
    shutil.copytree(PACKAGE_ROOT, app / "tinyusfm_monai", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (app / "__main__.py").write_text(MAIN.format(name=APP_NAME))
    (app / "app.yaml").write_text(app_yaml())
    (app / "requirements.txt").write_text("\n".join(requirements()) + "\n")
    models = stage_dir / "models" / bundle.name
    if models.exists():
        shutil.rmtree(models)
    shutil.copytree(bundle, models, ignore=shutil.ignore_patterns("eval", "runs", "__pycache__"))
    return app


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m tinyusfm_monai.monaideploy.package STAGE_DIR BUNDLE_DIR")
    print(stage(sys.argv[1], sys.argv[2]))
