"""Tiny copies of the publishers' folder layouts, built at test time.

Each builder writes a few synthetic 64x64 files with the real folder names and file naming of one dataset
(see the converter docstrings and datasets/<key>/README.md for the sources) and returns what the test needs
to know: the root and the deliberately broken files.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 64


def speckle(name: str, size: int = SIZE, rgb: bool = False) -> np.ndarray:
    """A distinct, deterministic speckle-like image per name (distinct dHashes, so no false leakage)."""
    seed = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
    rng = np.random.default_rng(seed)
    blocks = rng.uniform(0, 180, (8, 8))  # coarse random anatomy: what the difference hash sees
    coarse = np.kron(blocks, np.ones((size // 8, size // 8)))
    image = np.clip(coarse + rng.rayleigh(15.0, (size, size)), 0, 255).astype(np.uint8)
    return np.repeat(image[..., None], 3, axis=2) if rgb else image


def disc_mask(size: int = SIZE, centre: tuple[int, int] = (32, 32), radius: int = 10, value: int = 255) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) <= radius**2).astype(np.uint8) * value


def save(array: np.ndarray, path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not an image")
    return path


def build_busi(root: Path, per_class: int = 10) -> dict:
    base = root / "Dataset_BUSI_with_GT"
    for cls in ("benign", "malignant", "normal"):
        for i in range(1, per_class + 1):
            stem = f"{cls} ({i})"
            save(speckle(stem, rgb=True), base / cls / f"{stem}.png")
            mask = np.zeros((SIZE, SIZE), np.uint8) if cls == "normal" else disc_mask(centre=(20 + i, 30))
            save(mask, base / cls / f"{stem}_mask.png")
    save(disc_mask(centre=(50, 50), radius=5), base / "benign" / "benign (2)_mask_1.png")  # second lesion
    save(disc_mask(size=32), base / "benign" / "benign (5)_mask.png")  # size mismatch: seg only
    broken = corrupt(base / "malignant" / "malignant (3).png")
    return {"root": root, "broken": broken, "mismatch": "benign_5", "two_lesions": "benign_2"}


def build_tn3k(root: Path, n_trainval: int = 20, n_test: int = 6) -> dict:
    base = root / "tn3k"
    label_lines = {"trainval": ["image,label"], "test": []}  # a header line, as some copies have
    for part, n in (("trainval", n_trainval), ("test", n_test)):
        for i in range(n):
            name = f"{i:04d}.jpg"
            save(speckle(f"{part}{i}", rgb=True), base / f"{part}-image" / name, quality=95)
            save(disc_mask(centre=(24 + i % 16, 32)), base / f"{part}-mask" / name, quality=75)  # JPEG ringing
            label_lines[part].append(f"{name},{i % 2}")
    (base / "label4trainval.csv").write_text("\n".join(label_lines["trainval"]) + "\n")
    (base / "label4test.csv").write_text("\ufeff" + "\n".join(label_lines["test"]) + "\n")
    fold = {"train": list(range(0, n_trainval - 4)), "val": list(range(n_trainval - 4, n_trainval))}
    (base / "tn3k-trainval-fold0.json").write_text(json.dumps(fold))
    return {"root": root, "validation": [f"trainval_{i:04d}" for i in fold["val"]]}


def build_mmotu(root: Path, n_train: int = 64, n_val: int = 16) -> dict:
    base = root / "OTU_2d"
    classes = {}
    for split, names in (("train", range(1, n_train + 1)), ("val", range(n_train + 1, n_train + n_val + 1))):
        names = [str(n) for n in names]
        (base / f"{split}.txt").parent.mkdir(parents=True, exist_ok=True)
        (base / f"{split}.txt").write_text("\n".join(names) + "\n")
        lines = []
        for n in names:
            classes[n] = int(n) % 8
            lines.append(f"{n}.JPG  {classes[n]}")
            save(speckle(f"otu{n}", rgb=True), base / "images" / f"{n}.JPG", format="JPEG", quality=95)
            save(disc_mask(value=64), base / "annotations" / f"{n}_binary.PNG", format="PNG")
        (base / f"{split}_cls.txt").write_text("\n".join(lines) + "\n")
    return {"root": root, "classes": classes, "val_names": [str(n) for n in range(n_train + 1, n_train + n_val + 1)]}


FETAL_PLANES = ("Fetal abdomen", "Fetal brain", "Fetal femur", "Fetal thorax", "Maternal cervix", "Other")


def build_fetal_planes(root: Path, n_patients: int = 36) -> dict:
    base = root / "FETAL_PLANES_ZENODO"
    rows = ["Image_name;Patient_num;Plane;Brain_plane;Operator;US_Machine;Train "]
    for p in range(1, n_patients + 1):
        plane = FETAL_PLANES[p % 6]
        for k in (1, 2):
            name = f"Patient{p:05d}_Plane{p % 6 + 1}_{k}_of_2"
            save(speckle(name), base / "Images" / f"{name}.png")
            rows.append(f"{name};{p};{plane};Not A Brain;Op. 1;Voluson E6;{1 if p <= n_patients * 3 // 4 else 0}")
    (base / "FETAL_PLANES_DB_data.csv").write_text("\n".join(rows) + "\n")
    return {"root": root}


def build_aul(root: Path, per_class: int = 10) -> dict:
    base = root / "AUL"
    for cls in ("Benign", "Malignant", "Normal"):
        for i in range(1, per_class + 1):  # same numbers in every class folder, as in the release
            save(speckle(f"{cls}{i}", rgb=True), base / cls / "image" / f"{i}.jpg", quality=95)
            (base / cls / "segmentation" / "liver").mkdir(parents=True, exist_ok=True)
            (base / cls / "segmentation" / "liver" / f"{i}.json").write_text("[[1, 1], [30, 1], [30, 30]]")
    return {"root": root}


def build_stmus(root: Path, per_folder: int = 4) -> dict:
    base = root / "DATASET for Deep learning segmentation" / "Polito-Radboud-DeepLearningUS"
    for muscle in ("BB", "GM", "TA"):
        for group in ("Healthy", "Pathological"):
            for i in range(per_folder):
                name = f"{muscle}{group[0]}{i:03d}.png"
                save(speckle(f"{muscle}{group}{i}"), base / muscle / group / "Images" / name)
                save(disc_mask(), base / muscle / group / "Masks" / name)
    # the authors' re-split copy inside their code folder must not be read twice
    save(speckle("BBHealthy0"), base / "Segmentation_models" / "data" / "MuscleCNN" / "train" / "BBH000.png")
    return {"root": root, "n": 3 * 2 * per_folder}


def build_uf1990(root: Path, per_class: int = 10) -> dict:
    base = root / "UF1990 dataset"
    for folder in ("Uterine Fibroid", "Non-Uterine Fibroid"):
        for i in range(1, per_class + 1):
            save(speckle(f"{folder}{i}", rgb=True), base / folder / f"{i}.jpg", quality=95)
    stray = save(speckle("stray"), base / "preview.png")
    return {"root": root, "stray": stray}


def build_cubs(root: Path, n_patients: int = 10, tech: bool = False) -> dict:
    """CUBS 2021 layout (IMAGES/ SEGMENTATIONS/) or the 2022 technical layout (images/ LIMA-Profiles/)."""
    base = root / ("DATASET_CUBS_tech" if tech else "DATASET for CUBS")
    images = base / ("images" if tech else "IMAGES")
    profiles = base / ("LIMA-Profiles" if tech else "SEGMENTATIONS") / "Manual-A1"
    profiles.mkdir(parents=True, exist_ok=True)
    (base / "CF").mkdir(parents=True, exist_ok=True)
    expected = {}
    for p in range(1, n_patients + 1):
        for side in ("L", "R"):
            stem = f"clin_{p:04d}_{side}"
            save(speckle(stem), images / f"{stem}.tiff")
            gap_px = 10 if p % 2 else 20  # x 0.06 mm/px -> 0.6 mm normal, 1.2 mm increased
            xs = np.arange(5, 55)
            li, ma = np.stack([xs, np.full(50, 20.0)], 1), np.stack([xs, np.full(50, 20.0 + gap_px)], 1)
            if tech:  # two rows: x values, then y values
                for name, points in (("LI", li), ("MA", ma)):
                    rows = [" ".join(map(str, points[:, 0])), " ".join(map(str, points[:, 1]))]
                    (profiles / f"{stem}-{name}.txt").write_text("\n".join(rows))
            else:
                (profiles / f"{stem}-LI.txt").write_text("\n".join(f"{x} {y}" for x, y in li))
                (profiles / f"{stem}-MA.txt").write_text("\n".join(f"{x} {y}" for x, y in ma))
            (base / "CF" / f"{stem}_CF.txt").write_text("0.06\n")
            expected[stem] = "normal IMT" if gap_px == 10 else "increased IMT"
    (profiles / "clin_0001_R-MA.txt").unlink()  # a missing annotation is reported, not fatal
    expected.pop("clin_0001_R")
    return {"root": root, "expected": expected, "missing_profile": "clin_0001_R"}


BUILDERS = {
    "busi": build_busi,
    "tn3k": build_tn3k,
    "mmotu": build_mmotu,
    "fetal_planes": build_fetal_planes,
    "aul": build_aul,
    "stmus": build_stmus,
    "uf1990": build_uf1990,
    "cubs": build_cubs,
}


def tree_digest(root: Path) -> str:
    """Hash of every path, size and content under root: proves a conversion left the source untouched."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()
