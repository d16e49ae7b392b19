"""The package layering of docs/architecture.md holds: no package imports one of a higher layer, and no two
packages import each other (every import statement, module level or inside functions, is read with `ast`)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tinyusfm_monai"
LAYERS = {
    "utils": 1, "io": 1,
    "networks": 2, "transforms": 2, "data": 2,
    "handlers": 3, "evaluation": 3, "distillation": 3,
    "bundle": 4, "deploy": 4,
    "inferers": 5, "dicom": 5, "monailabel": 5, "monaideploy": 5,
    "demo": 6, "cli": 6,
}  # fmt: skip


def _package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "tinyusfm_monai" else None


def _imports() -> set[tuple[str, str]]:
    """(importing package, imported package) for every import between two different packages."""
    pairs = set()
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        source = _package_of(".".join(rel.parts))
        if source is None:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                target = _package_of(name)
                if target and target != source and target in LAYERS:
                    pairs.add((source, target))
    return pairs


def test_every_package_has_a_layer():
    found = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if not p.name.startswith("_")}
    found = {n for n in found if (PACKAGE / n).is_dir() or (PACKAGE / f"{n}.py").is_file()}
    assert found - {"__pycache__"} == set(LAYERS)


def test_no_import_runs_up_a_layer_or_in_a_circle():
    pairs = _imports()
    upward = sorted((a, b) for a, b in pairs if LAYERS[b] > LAYERS[a])
    circles = sorted((a, b) for a, b in pairs if (b, a) in pairs and a < b)
    assert not upward, f"imports from a higher layer: {upward}"
    assert not circles, f"packages importing each other: {circles}"
