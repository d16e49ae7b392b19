"""`tinyusfm-monai` command line (python-fire).

Each sub-command lives in the module that owns the logic; this file only maps names to them and
imports lazily, so `tinyusfm-monai --help` stays fast and a broken optional part (e.g. DICOM
networking) cannot stop the others.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable


def _lazy(path: str) -> Callable[..., Any]:
    module_name, attr = path.split(":")

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module_name), attr)(*args, **kwargs)

    call.__doc__ = f"See {module_name}.{attr}."
    call.__name__ = attr
    return call


class _Dicom:
    """DICOM in, DICOM SEG / SR out."""

    infer = staticmethod(_lazy("tinyusfm_monai.dicom.batch:infer"))
    serve = staticmethod(_lazy("tinyusfm_monai.dicom.node:serve"))


class _Bundles:
    """Generate and check the task bundles from the registry."""

    generate = staticmethod(_lazy("tinyusfm_monai.bundle.generate:generate"))


class CLI:
    """TinyUSFM for MONAI."""

    profile = staticmethod(_lazy("tinyusfm_monai.networks.profile:profile"))
    prepare = staticmethod(_lazy("tinyusfm_monai.data.prepare:prepare"))
    phantom = staticmethod(_lazy("tinyusfm_monai.data.phantom:phantom_cli"))
    demo = staticmethod(_lazy("tinyusfm_monai.demo:main"))
    leaderboard = staticmethod(_lazy("tinyusfm_monai.evaluation.leaderboard:leaderboard"))
    dicom = _Dicom
    bundles = _Bundles


def main() -> None:
    import fire

    fire.Fire(CLI, name="tinyusfm-monai")


if __name__ == "__main__":
    main()
