"""`tinyusfm-monai` command line (python-fire).

Each sub-command lives in the module that owns the logic; this file only maps names to them and
imports lazily, so `tinyusfm-monai --help` stays fast and a broken optional part (e.g. DICOM
networking) cannot stop the others.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable
from typing import Any


class _Lazy:
    """A command whose module is imported only when it is called or its help is shown."""

    def __init__(self, path: str, one_line_errors: bool = False) -> None:
        self.path = path
        self.one_line_errors = one_line_errors

    def _target(self) -> Callable[..., Any]:
        module_name, attr = self.path.split(":")
        return getattr(importlib.import_module(module_name), attr)

    @property
    def __signature__(self) -> inspect.Signature:  # what fire shows for --help and binds arguments to
        return inspect.signature(self._target())

    @property
    def __doc__(self) -> str | None:  # type: ignore[override]
        return self._target().__doc__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.one_line_errors and not os.environ.get("TINYUSFM_TRACEBACK"):
            try:
                result = self._target()(*args, **kwargs)
            except Exception as exc:  # a user error (missing weights, read-only folder...) is one line, exit 2
                name = self.path.split(":")[1]
                print(
                    f"tinyusfm-monai {name}: {type(exc).__name__}: {exc} (TINYUSFM_TRACEBACK=1 shows the traceback)",
                    file=sys.stderr,
                )
                raise SystemExit(2) from None
        else:
            result = self._target()(*args, **kwargs)
        code = getattr(result, "exit_code", 0)
        if code:  # fire would print the result and exit 0: print it here and exit with the command's status
            print(result)
            raise SystemExit(code)
        return result


def _lazy(path: str, one_line_errors: bool = False) -> _Lazy:
    return _Lazy(path, one_line_errors)


class _Dicom:
    """DICOM in, DICOM SEG / SR out."""

    infer = _lazy("tinyusfm_monai.dicom.batch:infer")
    serve = _lazy("tinyusfm_monai.dicom.node:serve")
    status = _lazy("tinyusfm_monai.dicom.status:status")
    pull = _lazy("tinyusfm_monai.dicom.dicomweb:pull")


class _Bundles:
    """Generate and check the task bundles from the registry."""

    generate = _lazy("tinyusfm_monai.bundle.generate:generate")


class CLI:
    """TinyUSFM for MONAI."""

    profile = _lazy("tinyusfm_monai.networks.profile:profile")
    prepare = _lazy("tinyusfm_monai.data.prepare:prepare")
    prepare_official = _lazy("tinyusfm_monai.data.official_layout:prepare_official")
    phantom = _lazy("tinyusfm_monai.data.phantom:phantom_cli")
    demo = _lazy("tinyusfm_monai.demo:main")
    leaderboard = _lazy("tinyusfm_monai.evaluation.leaderboard:leaderboard")
    reproduce = _lazy("tinyusfm_monai.bundle.reproduce:reproduce")
    export = _lazy("tinyusfm_monai.deploy.export:export", one_line_errors=True)
    dicom = _Dicom
    bundles = _Bundles


def main() -> None:
    import fire

    fire.Fire(CLI, name="tinyusfm-monai")


if __name__ == "__main__":
    main()
