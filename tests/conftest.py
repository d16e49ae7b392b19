import json
from pathlib import Path

import pytest
import torch

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
if not REFERENCE.is_dir():  # a clone with shared/ inside the checkout
    REFERENCE = Path(__file__).resolve().parents[1] / "shared" / "reference"


def load_manifest(name: str) -> dict[str, list[int]]:
    """Official checkpoint keys and shapes (`shared/reference/official-checkpoint-keys-<name>.json`)."""
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
