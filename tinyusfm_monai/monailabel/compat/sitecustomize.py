"""Compatibility shim for running the unmodified monailabel 0.8.5 server next to our package (two fixes).

Put this folder on PYTHONPATH of `monailabel start_server` (MONAI Label passes PYTHONPATH on to its training
subprocesses); Python imports `sitecustomize` at start-up. monailabel itself stays unmodified, and each fix
only acts when the real module cannot be imported. Used by tests/test_monailabel_server.py and the commands in
docs/monailabel.md (the server start command), nothing else.

1. pydicom-seg 0.4.1 (a monailabel requirement, imported by `monailabel.interfaces.app`) imports
   `pydicom._storage_sopclass_uids`, which pydicom 3 removed (its UIDs live in `pydicom.uid`); our package needs
   pydicom 3 (pydicom.pixels). Known upstream: Project-MONAI/MONAILabel#1841, razorx89/pydicom-seg#60. A finder
   placed *last* on sys.meta_path answers only when pydicom has no such module, with an alias of `pydicom.uid`.
2. monailabel imports `torchvision.utils.{make_grid, save_image}` at module level (`monailabel/transform/post.py`,
   used by every BundleInferTask). PyPI's torchvision 0.28.0 is built against the CUDA torch; with the local CPU
   torch 2.13.0 wheel of these machines `import torchvision` fails ("operator torchvision::nms does not exist").
   If the real torchvision imports, it is used; otherwise a minimal `torchvision` / `torchvision.utils` is
   registered whose two functions raise if ever called (our app never calls them).
"""

import importlib
import importlib.abc
import importlib.util
import sys
import types

_ALIAS = "pydicom._storage_sopclass_uids"


class _StorageUidAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        return importlib.util.spec_from_loader(fullname, self) if fullname == _ALIAS else None

    def create_module(self, spec):
        return importlib.import_module("pydicom.uid")

    def exec_module(self, module):
        return None


def _install_torchvision_stub() -> None:
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]

    def _unavailable(*args, **kwargs):
        raise RuntimeError("torchvision is stubbed by tinyusfm_monai/monailabel/compat (it cannot be imported here)")

    package = types.ModuleType("torchvision")
    package.__path__ = []  # a package, so `import torchvision.utils` resolves to the submodule below
    package.__version__ = "0.0.0+stub"
    utils = types.ModuleType("torchvision.utils")
    utils.make_grid = _unavailable
    utils.save_image = _unavailable
    package.utils = utils
    sys.modules["torchvision"] = package
    sys.modules["torchvision.utils"] = utils


sys.meta_path.append(_StorageUidAlias())

try:
    import torchvision  # noqa: F401
except Exception:  # noqa: BLE001 - the real one is broken here (see above), whatever the error
    _install_torchvision_stub()
