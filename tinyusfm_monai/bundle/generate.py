"""`tinyusfm-monai bundles generate`: write every task bundle from the registry.

The committed `bundles/<name>/` folders (19 task bundles and the distillation bundle) are this module's output; a
test compares them with what it would write and fails on any difference, so 20 bundles cannot drift apart. Only
the files listed by `bundle_files` / `distillation_files` are owned by the generator; `models/` and `eval/` are
left alone.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable
from pathlib import Path

from tinyusfm_monai import __version__
from tinyusfm_monai.data.registry import DATASETS, TASKS, Task

from . import configs, distillation, docs

# The versions the bundles are written for (metadata "generated with"); pinned so the generated
# files do not change with whatever happens to be installed.
VERSIONS = {
    "monai": "1.6.1",
    "torch": "2.13.0",
    "numpy": "2.4.6",
    "ignite": "0.5.5",
    "tensorboard": "2.21.0",
    "matplotlib": "3.11.2",
    "tinyusfm-monai": __version__,
}

LOGGING_CONF = """[loggers]
keys=root

[handlers]
keys=consoleHandler

[formatters]
keys=fullFormatter

[logger_root]
level=INFO
handlers=consoleHandler

[handler_consoleHandler]
class=StreamHandler
level=INFO
formatter=fullFormatter
args=(sys.stdout,)

[formatter_fullFormatter]
format=%(asctime)s - %(name)s - %(levelname)s - %(message)s
"""


def _json(obj: object) -> str:
    return json.dumps(obj, indent=4, ensure_ascii=False) + "\n"


def bundle_files(task: Task) -> dict[str, str]:
    """Relative path → content of every generated file of one task bundle."""
    return {
        "configs/metadata.json": _json(configs.metadata(task, VERSIONS)),
        "configs/train.json": _json(configs.train_config(task)),
        "configs/train_paper.json": _json(configs.train_paper_config(task)),
        "configs/evaluate.json": _json(configs.evaluate_config(task)),
        "configs/inference.json": _json(configs.inference_config(task)),
        "configs/inference_onnx.json": _json(configs.inference_onnx_config(task)),
        "configs/inference_openvino.json": _json(configs.inference_openvino_config(task)),
        "configs/multi_gpu_train.json": _json(configs.multi_gpu_config(task)),
        **(
            {"configs/inference_paper.json": _json(configs.inference_paper_config(task))}
            if task.task_type == "segmentation"
            else {}
        ),
        "configs/logging.conf": LOGGING_CONF,
        "docs/README.md": docs.bundle_readme(task),
        "docs/data_license.txt": docs.data_license(DATASETS[task.dataset]),
        "LICENSE": docs.LICENSE_TEXT,
        "large_files.yml": docs.large_files(),
    }


def distillation_files() -> dict[str, str]:
    """Relative path → content of every generated file of the distillation bundle."""
    return {
        "configs/metadata.json": _json(distillation.metadata(VERSIONS)),
        "configs/coreset.json": _json(distillation.coreset_config()),
        "configs/train.json": _json(distillation.train_config()),
        "configs/multi_gpu_train.json": _json(distillation.multi_gpu_config()),
        "configs/pretrain.json": _json(distillation.pretrain_config()),
        "configs/multi_gpu_pretrain.json": _json(distillation.multi_gpu_pretrain_config()),
        "configs/logging.conf": LOGGING_CONF,
        "docs/README.md": distillation.readme(),
        "docs/data_license.txt": distillation.DATA_LICENSE,
        "LICENSE": docs.LICENSE_TEXT,
        "large_files.yml": docs.large_files(),
    }


def all_bundles() -> dict[str, Callable[[], dict[str, str]]]:
    """Bundle folder name → its file generator, for the 19 task bundles and the distillation bundle."""
    bundles: dict[str, Callable[[], dict[str, str]]] = {
        name: functools.partial(bundle_files, task) for name, task in TASKS.items()
    }
    bundles[distillation.NAME] = distillation_files
    return bundles


def _select(bundles: str | Iterable[str]) -> dict[str, Callable[[], dict[str, str]]]:
    known = all_bundles()
    if bundles == "all":
        return known
    names = bundles.split(",") if isinstance(bundles, str) else list(bundles)
    unknown = [n.strip() for n in names if n.strip() not in known]
    if unknown:
        raise ValueError(f"unknown bundle(s) {unknown}; known: {sorted(known)}")
    return {n.strip(): known[n.strip()] for n in names}


def generate(out: str = "bundles", tasks: str = "all", check: bool = False) -> list[str]:
    """Write (or with `--check`, compare) the bundles under `out`; returns the files written or differing.

    `tasks`: "all" (the 19 task bundles and the distillation bundle) or comma-separated bundle names.
    `--check` writes nothing and raises SystemExit listing every generated file that differs from the tree.
    """
    root = Path(out)
    touched: list[str] = []
    for name, files in _select(tasks).items():
        for rel, content in files().items():
            path = root / name / rel
            current = path.read_text() if path.is_file() else None
            if current == content:
                continue
            touched.append(str(path))
            if not check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content)
    if check and touched:
        raise SystemExit(
            "bundles differ from the registry; run `tinyusfm-monai bundles generate`:\n" + "\n".join(touched)
        )
    return touched
