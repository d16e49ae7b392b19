import json
import os
from pathlib import Path

import pytest
import torch

# Official checkpoint keys and shapes of the released TinyUSFM / USFM files, kept with the tests so a plain clone
# can check the networks against them.
REFERENCE = Path(__file__).resolve().parent / "data"


def load_manifest(name: str) -> dict[str, list[int]]:
    """Official checkpoint keys and shapes (`tests/data/official-checkpoint-keys-<name>.json`)."""
    path = REFERENCE / f"official-checkpoint-keys-{name}.json"
    if not path.is_file():
        pytest.fail(f"missing reference manifest {path}")
    return json.loads(path.read_text())


# The OHIF viewer check has its own target (`make ohif-check`: a browser and the viewer, ~250 MB of downloads): in
# `make test` it is not collected at all rather than reported as skipped.
collect_ignore = [] if os.environ.get("TINYUSFM_OHIF") == "1" else ["test_ohif_viewer.py"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def manifest():
    return load_manifest
