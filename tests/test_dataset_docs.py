"""The committed dataset READMEs are exactly what the registry and the converters say."""

from __future__ import annotations

import pytest

from tinyusfm_monai.data import dataset_docs

REGENERATE = "regenerate with: python -m tinyusfm_monai.data.dataset_docs"


@pytest.mark.parametrize("key", dataset_docs.generated_keys())
def test_dataset_readme_matches_registry_and_converter(key):
    path = dataset_docs.DATASETS_DIR / key / "README.md"
    assert path.is_file(), f"{path} missing; {REGENERATE} {key}"
    assert path.read_text() == dataset_docs.render_dataset(key), f"{path} is stale; {REGENERATE} {key}"


def test_index_lists_every_registry_dataset():
    path = dataset_docs.DATASETS_DIR / "README.md"
    assert path.read_text() == dataset_docs.render_index(), f"{path} is stale; {REGENERATE}"


def test_label_decisions_of_cubs_and_stmus_are_documented():
    for key in ("cubs", "stmus"):
        text = (dataset_docs.DATASETS_DIR / key / "README.md").read_text()
        assert "**Label decision.**" in text
