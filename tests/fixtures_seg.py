"""Tiny copies of the segmentation publishers' layouts, built at test time.

Each builder writes a few synthetic 48x64 (rows x columns, deliberately not square, so a transposed reader
fails) files with the folder names, file naming and formats of one dataset (sources: the converter docstrings
and datasets/<key>/README.md) and returns a `Fixture`: the root, what every sample must load as, and the one
deliberately broken file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from fixtures_raw import save
from PIL import Image

H, W = 48, 64


@dataclass
class Expected:
    mask: np.ndarray  # exact label map the converter must return
    image: np.ndarray | None = None  # exact pixels where the format is lossless
    patient: str | None = None
    split: str | None = None


@dataclass
class Fixture:
    root: Path
    samples: dict[str, Expected]  # id -> expectation, for the samples that load
    broken_id: str  # a sample whose file is damaged
    broken_file: str  # the damaged file's name, which the error must mention
    issues: set[str] = field(default_factory=set)  # ids the reader flags at scan time (missing annotation)


def speckle(name: str, rgb: bool = False) -> np.ndarray:
    """A distinct deterministic speckle image per name: distinct hashes, so no false leakage alarms."""
    rng = np.random.default_rng(int(hashlib.sha256(name.encode()).hexdigest()[:8], 16))
    image = rng.rayleigh(40.0, (H, W)) + np.linspace(0, 80, H)[:, None]  # brighter with depth: rows matter
    image = np.clip(image + 40, 0, 255).astype(np.uint8)
    return np.repeat(image[..., None], 3, axis=2) if rgb else image


def box(top: int, left: int, bottom: int, right: int, value: int = 1, out: np.ndarray | None = None) -> np.ndarray:
    """Inclusive rectangle, as a filled polygon with these corners rasterises."""
    mask = np.zeros((H, W), np.uint8) if out is None else out.copy()
    mask[top : bottom + 1, left : right + 1] = value
    return mask


def corners(top: int, left: int, bottom: int, right: int) -> list[tuple[int, int]]:
    """(x, y) outline of `box`."""
    return [(left, top), (right, top), (right, bottom), (left, bottom)]


def triangle(points: list[tuple[int, int]]) -> np.ndarray:
    from PIL import ImageDraw

    canvas = Image.new("L", (W, H), 0)
    ImageDraw.Draw(canvas).polygon(points, fill=1, outline=1)
    return np.asarray(canvas).copy()


def corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00 this is not what the name promises")
    return path


def write_itk(array: np.ndarray, path: Path) -> Path:
    import itk

    path.parent.mkdir(parents=True, exist_ok=True)
    itk.imwrite(itk.image_from_array(np.ascontiguousarray(array)), str(path))
    return path


# ---- one builder per dataset ------------------------------------------------------------------------------


def build_luminous(root: Path) -> Fixture:
    base = root / "Luminous"
    samples = {}
    layout = {  # stem -> (subject, [mask boxes])
        "1001_prone_L": ("1001", [(5, 5, 20, 25)]),
        "1001_standing_L": ("1001", [(10, 8, 30, 30)]),
        "1002_prone": ("1002", [(6, 4, 20, 20), (6, 40, 22, 60)]),  # both muscles: two mask files
    }
    for stem, (subject, boxes) in layout.items():
        image = speckle(stem)
        save(image, base / "B-mode" / f"{stem}_Bmode.tif")
        union = np.zeros((H, W), np.uint8)
        for k, b in enumerate(boxes, start=1):
            save(box(*b, value=255), base / "Masks" / f"{stem}_Mask{k}.tif")
            union = box(*b, out=union)
        samples[stem] = Expected(mask=union, image=image, patient=subject)
    corrupt(base / "B-mode" / "1003_prone_Bmode.tif")
    save(box(5, 5, 10, 10, value=255), base / "Masks" / "1003_prone_Mask1.tif")
    save(speckle("no mask"), base / "B-mode" / "1004_prone_Bmode.tif")
    return Fixture(root, samples, "1003_prone", "1003_prone_Bmode.tif", issues={"1004_prone"})


def build_kidneyus(root: Path, with_mask_pngs: bool = True) -> Fixture:
    images = root / "kidneyUS_images_14_june_2022"
    labels = root / "labels"
    layout = {  # stem -> (patient, capsule box, rgb)
        "1_IM-0001-0059_anon": ("1", (10, 12, 30, 40), False),
        "2_IM-0383-0001_anon": ("2", (5, 5, 40, 50), True),
        "2_IM-0383-0009_anon": ("2", (8, 6, 38, 48), False),  # second frame of patient 2's cine
    }
    rows = ["filename,file_size,file_attributes,region_count,region_id,region_shape_attributes,region_attributes"]
    samples = {}
    for stem, (patient, capsule, rgb) in layout.items():
        image = speckle(stem, rgb=rgb)
        save(image, images / f"{stem}.png")
        if with_mask_pngs:
            save(box(*capsule), labels / "reviewed_masks_1" / "capsule" / f"{stem}.png")
            save(box(*capsule, value=2), labels / "reviewed_masks_1" / "regions" / f"{stem}.png")
        for region_id, (anatomy, b) in enumerate((("Capsule", capsule), ("Cortex", (0, 0, 3, 3)))):
            xs, ys = zip(*corners(*b))
            shape = json.dumps({"name": "polygon", "all_points_x": list(xs), "all_points_y": list(ys)})
            attributes = json.dumps({"Anatomy": anatomy})
            rows.append(
                f'{stem}.png,1,"{{}}",2,{region_id},"{shape.replace(chr(34), 2 * chr(34))}",'
                f'"{attributes.replace(chr(34), 2 * chr(34))}"'
            )
        samples[stem] = Expected(mask=box(*capsule), image=image, patient=patient)
    broken = "3_IM-0005-0003_anon"
    corrupt(images / f"{broken}.png")
    if with_mask_pngs:
        save(box(1, 1, 5, 5), labels / "reviewed_masks_1" / "capsule" / f"{broken}.png")
    labels.mkdir(parents=True, exist_ok=True)
    (labels / "reviewed_labels_1.csv").write_text("\n".join(rows) + "\n")
    save(speckle("logo", rgb=True), root / "kidneyUSlogo.png")  # a repository file that is no sample
    return Fixture(root, samples, broken, f"{broken}.png")


def _coco(images: list[dict], annotations: list[dict]) -> dict:
    categories = [{"id": 1, "name": "lmym"}, {"id": 2, "name": "GIST"}]
    return {"images": images, "annotations": annotations, "categories": categories}


def build_gist514(root: Path) -> Fixture:
    base = root / "GIST514-DB" / "usd514_jpeg_roi"
    boxes = {"1": [((5, 5, 20, 30), 1)], "2": [((2, 2, 12, 12), 1), ((20, 30, 40, 60), 2)], "3": [((1, 1, 9, 9), 2)]}
    entries = {}
    for n, instances in boxes.items():
        entries[n] = (
            {"id": int(n), "file_name": f"{n}.jpg", "height": H, "width": W},
            [
                {
                    "id": 10 * int(n) + k,
                    "image_id": int(n),
                    "category_id": cat,
                    "segmentation": [[c for xy in corners(*b) for c in xy]],
                }
                for k, (b, cat) in enumerate(instances)
            ],
        )
    for n in ("1", "2"):
        save(speckle(f"gist{n}", rgb=True), base / "images" / f"{n}.jpg", quality=95)
    corrupt(base / "images" / "3.jpg")
    save(speckle("gist unannotated", rgb=True), base / "images" / "4.jpg", quality=95)
    split = {"train": ["1", "3"], "val": ["2"]}
    for part, names in split.items():
        coco = _coco([entries[n][0] for n in names], [a for n in names for a in entries[n][1]])
        path = base / "annotations" / f"{part}_anno_crop_split_0.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(coco))
    # the full-frame variant next to it has other sizes: reading it instead of the ROI crops must fail the tests
    raw = root / "GIST514-DB" / "usd514_jpeg_raw"
    save(np.zeros((96, 128, 3), np.uint8), raw / "images" / "1.jpg")
    (raw / "annotations").mkdir(parents=True)
    (raw / "annotations" / "train_anno_split_0.json").write_text(
        json.dumps(_coco([{"id": 1, "file_name": "1.jpg", "height": 96, "width": 128}], []))
    )
    samples = {}
    for n in ("1", "2"):
        mask = np.zeros((H, W), np.uint8)
        for b, _ in boxes[n]:
            mask = box(*b, out=mask)
        samples[n] = Expected(mask=mask)
    return Fixture(root, samples, "3", "3.jpg", issues={"4"})


def build_ddti_processed(root: Path) -> Fixture:
    base = root / "DDTI"
    samples = {}
    for n, b in (("1", (10, 10, 30, 40)), ("2", (4, 20, 20, 60))):
        image = speckle(f"ddti{n}")
        save(image, base / "1_or_data" / "image" / f"{n}.PNG")
        save(box(*b, value=255), base / "1_or_data" / "mask" / f"{n}.PNG")
        samples[n] = Expected(mask=box(*b), image=image)
        # the cropped copies have another size: picking them instead of 1_or_data must fail the tests
        crop = base / "2_preprocessed_data" / "stage1"
        save(np.zeros((32, 32), np.uint8), crop / "p_image" / f"{n}.PNG")
        save(np.zeros((32, 32), np.uint8), crop / "p_mask" / f"{n}.PNG")
    corrupt(base / "1_or_data" / "image" / "3.PNG")
    save(box(1, 1, 5, 5, value=255), base / "1_or_data" / "mask" / "3.PNG")
    (base / "1_or_data" / "category.csv").write_text("ID,CATE\n1,0\n2,1\n3,0\n")
    return Fixture(root, samples, "3", "3.PNG")


def _ddti_xml(case: int, marks: dict[int, str]) -> str:
    blocks = "".join(f"<mark><image>{k}</image><svg>{svg}</svg></mark>" for k, svg in marks.items())
    return (
        f'<?xml version="1.0" encoding="utf-8"?><case><number>{case}</number><age>49</age><sex>F</sex>'
        f"<composition>solid</composition><tirads>4a</tirads>{blocks}</case>"
    )


def _svg(*outlines: list[tuple[int, int]]) -> str:
    regions = [
        {"points": [{"x": x, "y": y} for x, y in outline], "annotation": {}, "regionType": "freehand"}
        for outline in outlines
    ]
    return json.dumps(regions)


def build_ddti_original(root: Path) -> Fixture:
    base = root / "DDTI"
    b1, b2, b3 = (10, 10, 30, 40), (5, 45, 15, 60), (12, 20, 36, 50)
    for name in ("1_1", "1_2", "2_1", "3_1"):
        save(speckle(f"ddti-o{name}", rgb=True), base / f"{name}.jpg", quality=95)
    (base / "1.xml").write_text(_ddti_xml(1, {1: _svg(corners(*b1), corners(*b2)), 2: _svg(corners(*b3))}))
    full = _svg(corners(*b3))
    last = corners(*b3)[3]
    truncated = full[: full.index(json.dumps({"x": last[0], "y": last[1]}))] + '{"x": '  # cut inside corner 4
    (base / "2.xml").write_text(_ddti_xml(2, {1: truncated}))
    (base / "3.xml").write_text("<case><number>3</number><mark><image>1")  # broken XML
    samples = {
        "1_1": Expected(mask=box(*b2, out=box(*b1)), patient="1"),
        "1_2": Expected(mask=box(*b3), patient="1"),
        "2_1": Expected(mask=triangle(corners(*b3)[:3]), patient="2"),  # the corners written before the cut
    }
    return Fixture(root, samples, "3_1", "3.xml")


def build_busbra(root: Path) -> Fixture:
    base = root / "BUSBRA"
    layout = {
        "bus_0001-l": ("1", (5, 5, 20, 30)),
        "bus_0001-r": ("1", (10, 30, 40, 60)),  # the same patient's other breast
        "bus_0002-l": ("2", (3, 3, 9, 9)),
    }
    samples = {}
    rows = ["ID,Case,Histology,Pathology,BIRADS,Device,Width,Height,Side,BBOX"]
    for stem, (case, b) in layout.items():
        image = speckle(stem)
        save(image, base / "Images" / f"{stem}.png")
        save(box(*b, value=255), base / "Masks" / f"mask{stem[3:]}.png")
        samples[stem] = Expected(mask=box(*b), image=image, patient=case)
        rows.append(f'{stem},{case},fibroadenoma,benign,3,GE,{W},{H},{stem[-1]},"[1, 2, 3, 4]"')
    corrupt(base / "Images" / "bus_0003-s.png")
    save(box(1, 1, 4, 4, value=255), base / "Masks" / "mask_0003-s.png")
    rows.append('bus_0003-s,3,carcinoma,malignant,5,GE,64,48,s,"[]"')
    (base / "bus_data.csv").write_text("\n".join(rows) + "\n")
    (base / "5-fold-cv.csv").write_text("ID,Pathology,kFold\n" + "\n".join(f"{s},benign,1" for s in layout) + "\n")
    return Fixture(root, samples, "bus_0003-s", "bus_0003-s.png")


def build_nerveseg(root: Path) -> Fixture:
    train = root / "train"
    layout = {"1_1": (5, 10, 20, 30), "1_2": None, "2_1": (20, 20, 40, 50)}  # 1_2: no nerve in view
    samples = {}
    for stem, b in layout.items():
        image = speckle(f"nerve{stem}")
        save(image, train / f"{stem}.tif")
        mask = box(*b) if b else np.zeros((H, W), np.uint8)
        save(mask * 255, train / f"{stem}_mask.tif")
        samples[stem] = Expected(mask=mask, image=image, patient=stem.split("_")[0])
    corrupt(train / "3_1.tif")
    save(box(1, 1, 3, 3, value=255), train / "3_1_mask.tif")
    save(speckle("test1"), train / "4_1.tif")  # mask missing
    save(speckle("kaggle test"), root / "test" / "1.tif")  # unlabelled competition set: not a sample
    (root / "train_masks.csv").write_text("subject,img,pixels\n1,1,1 2\n")
    return Fixture(root, samples, "3_1", "3_1.tif", issues={"4_1"})


def build_luss(root: Path) -> Fixture:
    base = root / "LUSS_phantom"
    samples = {}
    for n in range(1, 4):
        stem = f"phantom_{n:03d}"
        image = speckle(stem)
        mask = box(2, 2, 6, 60, value=1)  # rib
        mask = box(10, 0, 12, 63, value=2, out=mask)  # pleural line
        mask = box(20, 0, 21, 63, value=3, out=mask)  # A-line
        mask = box(14, 30 + n, 47, 33 + n, value=4 if n < 3 else 5, out=mask)  # B-line / confluence
        save(image, base / "images" / f"{stem}.png")
        save(mask, base / "masks" / f"{stem}.png")
        samples[stem] = Expected(mask=mask, image=image)
    corrupt(base / "images" / "phantom_004.png")
    save(box(1, 1, 3, 3), base / "masks" / "phantom_004.png")
    return Fixture(root, samples, "phantom_004", "phantom_004.png")


def build_fhpsaop(root: Path) -> Fixture:
    base = root / "Pubic Symphysis-Fetal Head Segmentation and Angle of Progression"
    samples = {}
    for n in (1, 2):
        stem = f"{n:05d}"
        grey = speckle(stem)
        write_itk(np.stack([grey, grey, grey]), base / "image_mha" / f"{stem}.mha")  # three identical planes
        label = box(20, 5, 40, 20, value=1)  # pubic symphysis
        label = box(5, 25 + n, 30, 60, value=2, out=label)  # fetal head
        write_itk(label, base / "label_mha" / f"{stem}.mha")
        samples[stem] = Expected(mask=label, image=grey)
    corrupt(base / "image_mha" / "00003.mha")
    write_itk(box(1, 1, 3, 3), base / "label_mha" / "00003.mha")
    write_itk(np.stack([speckle("x")] * 3), base / "image_mha" / "00004.mha")  # label missing
    return Fixture(root, samples, "00003", "00003.mha", issues={"00004"})


def build_camus(root: Path) -> Fixture:
    base = root / "CAMUS_public"
    nifti = base / "database_nifti"
    split = {"patient0001": "training", "patient0002": "validation", "patient0003": "test"}
    frames = {  # (patient, view) -> frames in the half sequence
        ("patient0001", "2CH"): 3,
        ("patient0001", "4CH"): 2,
        ("patient0002", "2CH"): 2,
        ("patient0003", "2CH"): 2,
    }
    samples = {}
    for (patient, view), count in frames.items():
        folder = nifti / patient
        images = np.stack([speckle(f"{patient}{view}{t}") for t in range(count)])
        labels = np.stack([heart(t) for t in range(count)])
        write_itk(images, folder / f"{patient}_{view}_half_sequence.nii.gz")
        write_itk(labels, folder / f"{patient}_{view}_half_sequence_gt.nii.gz")
        write_itk(images[:1], folder / f"{patient}_{view}_ED.nii.gz")  # also in the release; not extra samples
        write_itk(labels[:1], folder / f"{patient}_{view}_ED_gt.nii.gz")
        (folder / f"Info_{view}.cfg").write_text(f"ED: 1\nES: {count}\nNbFrame: {count}\nSex: F\nAge: 60\n")
        for t in range(count):
            samples[f"{patient}_{view}_f{t + 1:02d}"] = Expected(
                mask=labels[t], image=images[t], patient=patient, split=split[patient]
            )
    corrupt(nifti / "patient0003" / "patient0003_4CH_half_sequence.nii.gz")
    write_itk(np.stack([heart(0)] * 2), nifti / "patient0003" / "patient0003_4CH_half_sequence_gt.nii.gz")
    (base / "database_split").mkdir(parents=True)
    for name, file_name in (("training", "training"), ("validation", "validation"), ("test", "testing")):
        patients = [p for p, s in split.items() if s == name]
        (base / "database_split" / f"subgroup_{file_name}.txt").write_text("\n".join(patients) + "\n")
    return Fixture(root, samples, "patient0003_4CH_half_sequence", "patient0003_4CH_half_sequence.nii.gz")


def heart(t: int) -> np.ndarray:
    mask = box(20, 20, 40, 40, value=2)  # myocardium around
    mask = box(24, 24 + t, 36, 36, value=1, out=mask)  # LV cavity, changing with the frame
    return box(41, 22, 46, 38, value=3, out=mask)  # left atrium below


BUILDERS = {
    "luminous": build_luminous,
    "kidneyus": build_kidneyus,
    "gist514": build_gist514,
    "ddti": build_ddti_processed,
    "busbra": build_busbra,
    "nerveseg": build_nerveseg,
    "luss": build_luss,
    "fhpsaop": build_fhpsaop,
    "camus": build_camus,
}
