import json
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


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def manifest():
    return load_manifest
