"""`tinyusfm-monai bundles generate`: write every task bundle from the registry.

The committed `bundles/<task>/` folders are this function's output; a test regenerates them and
fails on any difference, so 19 bundles cannot drift apart. Only the files listed in
`bundle_files` are owned by the generator; `models/` and `eval/` are left alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from tinyusfm_monai.data.registry import DATASETS, TASKS, Task

from . import configs, docs

# The versions the bundles are written for (metadata "generated with"); pinned so the generated
# files do not change with whatever happens to be installed.
VERSIONS = {
    "monai": "1.6.1",
    "torch": "2.13.0",
    "numpy": "2.4.6",
    "ignite": "0.5.5",
    "tensorboard": "2.21.0",
    "matplotlib": "3.11.2",
    "tinyusfm-monai": "0.1.0",
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
    """Relative path → content of every generated file of one bundle."""
    return {
        "configs/metadata.json": _json(configs.metadata(task, VERSIONS)),
        "configs/train.json": _json(configs.train_config(task)),
        "configs/evaluate.json": _json(configs.evaluate_config(task)),
        "configs/inference.json": _json(configs.inference_config(task)),
        "configs/inference_onnx.json": _json(configs.inference_onnx_config(task)),
        "configs/multi_gpu_train.json": _json(configs.multi_gpu_config(task)),
        "configs/logging.conf": LOGGING_CONF,
        "docs/README.md": docs.bundle_readme(task),
        "docs/data_license.txt": docs.data_license(DATASETS[task.dataset]),
        "LICENSE": docs.LICENSE_TEXT,
        "large_files.yml": docs.large_files(),
    }


def _select(tasks: str | Iterable[str]) -> list[Task]:
    if tasks == "all":
        return list(TASKS.values())
    names = tasks.split(",") if isinstance(tasks, str) else list(tasks)
    return [TASKS[n.strip()] for n in names]


def generate(out: str = "bundles", tasks: str = "all", check: bool = False) -> list[str]:
    """Write (or with `--check`, compare) the bundles under `out`; returns the files written or differing.

    `--check` exits non-zero-worthy information: it lists every file that differs from the registry.
    """
    root = Path(out)
    touched: list[str] = []
    for task in _select(tasks):
        for rel, content in bundle_files(task).items():
            path = root / task.name / rel
            current = path.read_text() if path.is_file() else None
            if current == content:
                continue
            touched.append(str(path))
            if not check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content)
    if check and touched:
        raise SystemExit("bundles differ from the registry; run `tinyusfm-monai bundles generate`:\n" + "\n".join(touched))
    return touched
