"""The UniUS-Bench task registry: the single source of truth for datasets and tasks.

Bundles, converters, the phantom, dataset docs and tests all read this module; nothing else may
repeat a class list, a licence or a URL. A *dataset* is what a publisher ships (17 of them); a *task*
is one benchmark entry built from a dataset (19: the 18 UniUS-Bench tasks plus BUSI segmentation).
TN3K and BUSI each feed one classification and one segmentation task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TaskType = Literal["classification", "segmentation"]


@dataclass(frozen=True)
class Dataset:
    """A public dataset as its publisher ships it."""

    key: str  # CLI name: `tinyusfm-monai prepare <key>`
    title: str
    organ: str
    num_images: int  # as counted by UniUS-Bench (the TinyUSFM README table)
    url: str
    licence: str
    citation: str
    official_split: str | None = None  # how the publisher splits it; None -> our 70/10/20 rule
    has_patient_ids: bool = False  # False -> image-level split


@dataclass(frozen=True)
class Task:
    """One UniUS-Bench task; its `name` is the bundle directory name."""

    name: str
    dataset: str  # Dataset.key
    task_type: TaskType
    # classification: class names, index == class id.
    # segmentation: label names, index == pixel value, index 0 is always "background".
    labels: tuple[str, ...]
    label_note: str = ""  # why these labels, where the publication does not settle them
    # Segmentation tasks whose object can be legitimately absent (NerveSeg) need a stated rule.
    empty_mask_note: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def flip_augment(self) -> bool:
        """Whether flips are a valid augmentation: always for classification; for segmentation only for
        lesions, as in the official code ("tumor" tasks). Flipping anatomy with a fixed layout (heart apex
        up, pubic symphysis beside the fetal head, muscle under the skin) makes implausible images."""
        return self.task_type == "classification" or self.name in LESION_SEGMENTATION_TASKS

    @property
    def organ(self) -> str:
        return DATASETS[self.dataset].organ


# Segmentation tasks whose target is a lesion rather than anatomy with a fixed layout.
LESION_SEGMENTATION_TASKS = frozenset(
    {"tn3k_segmentation", "busi_segmentation", "ddti_segmentation", "busbra_segmentation", "gist514_segmentation"}
)

_DATASETS: tuple[Dataset, ...] = (
    # ---- classification sources -------------------------------------------------------------
    Dataset(
        key="cubs",
        title="CUBS: Carotid Ultrasound Boundary Study",
        organ="carotid",
        num_images=1378,
        url="https://data.mendeley.com/datasets/fpv535fss7/1",
        licence="CC BY 4.0",
        citation="Meiburger KM, et al. Carotid Ultrasound Boundary Study (CUBS): an open multicenter analysis of "
        "computerized intima-media thickness measurement systems and their clinical impact. "
        "Ultrasound Med Biol. 2021;47(8):2442-2455. Technical set: Meiburger KM, et al. Comput Biol Med. "
        "2022, doi:10.1016/j.compbiomed.2022.105333 (Mendeley Data m7ndn58sv6).",
        has_patient_ids=True,
    ),
    Dataset(
        key="uf1990",
        title="UF1990: uterine fibroid ultrasound images",
        organ="uterus",
        num_images=1990,
        url="https://data.mendeley.com/datasets/552zbvzwrk/1",
        licence="CC BY 4.0 (Mendeley Data default; confirm on the dataset page)",
        citation="Xi H, Wang W. Deep learning based uterine fibroid detection in ultrasound images. "
        "BMC Med Imaging. 2024. doi:10.1186/s12880-024-01389-z.",
    ),
    Dataset(
        key="tn3k",
        title="TN3K: thyroid nodule ultrasound (TRFE-Net)",
        organ="thyroid",
        num_images=3491,
        url="https://github.com/haifangong/TRFE-Net-for-thyroid-nodule-segmentation",
        licence="research use (see repository)",
        citation="Gong H, et al. Multi-task learning for thyroid nodule segmentation with thyroid region prior. "
        "ISBI 2021:257-261.",
        official_split="trainval-image (2,879) / test-image (614) folders; validation = fold 0 of "
        "tn3k-trainval-fold0.json",
    ),
    Dataset(
        key="stmus",
        title="STMUS_NDA: transverse musculoskeletal ultrasound for neuromuscular disease assessment",
        organ="skeletal muscle",
        num_images=5312,
        url="https://data.mendeley.com/datasets/3jykz7wz8d",
        licence="CC BY 4.0",
        citation="Marzola F, et al. Deep learning segmentation of transverse musculoskeletal ultrasound images "
        "for neuromuscular disease assessment. Comput Biol Med. 2021, doi:10.1016/j.compbiomed.2021.104623. "
        "Data: Mendeley Data doi:10.17632/3jykz7wz8d.1.",
        has_patient_ids=False,  # 1,283 subjects, but no subject id in the file names that could be confirmed
    ),
    Dataset(
        key="aul",
        title="AUL: annotated ultrasound liver images",
        organ="liver",
        num_images=735,
        url="https://zenodo.org/records/7272660",
        licence="CC BY 4.0",
        citation="Xu Y, et al. Improving artificial intelligence pipeline for liver malignancy diagnosis using "
        "ultrasound images and video frames. Brief Bioinform. 2023, doi:10.1093/bib/bbac569. Data: Zenodo "
        "doi:10.5281/zenodo.7272660.",
    ),
    Dataset(
        key="busi",
        title="BUSI: breast ultrasound images",
        organ="breast",
        num_images=780,
        url="https://scholar.cu.edu.eg/?q=afahmy/pages/dataset",
        licence="CC0 1.0",
        citation="Al-Dhabyani W, Gomaa M, Khaled H, Fahmy A. Dataset of breast ultrasound images. "
        "Data in Brief. 2020;28:104863.",
    ),
    Dataset(
        key="mmotu",
        title="MMOTU: multi-modality ovarian tumor ultrasound (OTU-2D)",
        organ="ovary",
        num_images=1469,
        url="https://github.com/cv516Buaa/MMOTU_DS2Net",
        licence="CC BY 4.0",
        citation="Zhao Q, et al. A multi-modality ovarian tumor ultrasound image dataset for unsupervised cross-domain "
        "semantic segmentation. arXiv:2207.06799.",
        official_split="OTU_2d train.txt (1,000) / val.txt (469, the publisher's held-out set, used as test)",
    ),
    Dataset(
        key="fetal_planes",
        title="FETAL_PLANES_DB: common maternal-fetal ultrasound planes",
        organ="fetus",
        num_images=12400,
        url="https://zenodo.org/records/3904280",
        licence="CC BY 4.0",
        citation="Burgos-Artizzu XP, et al. Evaluation of deep convolutional neural networks for automatic "
        "classification of common maternal fetal ultrasound planes. Sci Rep. 2020;10:10200.",
        official_split="Train column of FETAL_PLANES_DB_data.csv (patient-disjoint train/test)",
        has_patient_ids=True,
    ),
    # ---- segmentation sources ---------------------------------------------------------------
    Dataset(
        key="luminous",
        title="LUMINOUS: lumbar multifidus muscle ultrasound",
        organ="multifidus muscle",
        num_images=341,
        url="http://data.sonography.ai",
        licence="see the database site (terms not stated in the paper, which is CC BY 4.0)",
        citation="Belasso CJ, et al. LUMINOUS database: lumbar multifidus muscle segmentation from ultrasound "
        "images. BMC Musculoskelet Disord. 2020;21:703.",
        has_patient_ids=True,
    ),
    Dataset(
        key="kidneyus",
        title="KidneyUS: kidney ultrasound segmentation",
        organ="kidney",
        num_images=487,
        url="https://github.com/rsingla92/kidneyUS",
        licence="CC BY-NC-SA 4.0",
        citation="Singla R, Ringstrom C, Hu G, Lessoway V, Reid J, Nguan C, Rohling R. The open kidney ultrasound "
        "data set. ASMUS 2023; arXiv:2206.06657.",
        has_patient_ids=True,
    ),
    Dataset(
        key="gist514",
        title="GIST514-DB: gastrointestinal stromal tumour endoscopic ultrasound",
        organ="stomach",
        num_images=514,
        url="https://github.com/howardchina/query2",
        licence="CC BY-NC-SA 4.0",
        citation="He Q, Bano S, Liu J, Liu W, Stoyanov D, Zuo S. Query2: query over queries for improving "
        "gastrointestinal stromal tumour detection in an endoscopic ultrasound. Comput Biol Med. 2022:106424.",
    ),
    Dataset(
        key="ddti",
        title="DDTI: digital database of thyroid ultrasound images",
        organ="thyroid",
        num_images=637,
        url="http://cimalab.unal.edu.co/?lang=en&mod=program&id=26",
        licence="research use (see publisher)",
        citation="Pedraza L, et al. An open access thyroid ultrasound image database. SIPAIM 2015, Proc SPIE 9287.",
    ),
    Dataset(
        key="busbra",
        title="BUS-BRA: breast ultrasound dataset",
        organ="breast",
        num_images=1875,
        url="https://zenodo.org/records/8231412",
        licence="CC BY 4.0",
        citation="Gomez-Flores W, et al. BUS-BRA: a breast ultrasound dataset for assessing computer-aided "
        "diagnosis systems. Med Phys. 2024;51(4):3110-3123.",
        has_patient_ids=True,
    ),
    Dataset(
        key="nerveseg",
        title="Ultrasound Nerve Segmentation (Kaggle)",
        organ="neck nerve",
        num_images=5735,
        url="https://www.kaggle.com/c/ultrasound-nerve-segmentation",
        licence="Kaggle competition rules (non-commercial research)",
        citation="Kaggle Ultrasound Nerve Segmentation challenge, 2016.",
        has_patient_ids=True,
    ),
    Dataset(
        key="luss",
        title="LUSS: lung ultrasound segmentation phantom",
        organ="lung",
        num_images=564,
        url="https://archive.researchdata.leeds.ac.uk/1263/",
        licence="see the Leeds repository record",
        citation="Lung ultrasound segmentation phantom dataset (LUSS_phantom), University of Leeds Research Data "
        "Repository, record 1263.",
    ),
    Dataset(
        key="fhpsaop",
        title="FH-PS-AoP: pubic symphysis and fetal head segmentation",
        organ="pelvis",
        num_images=4000,
        url="https://zenodo.org/records/10829116",
        licence="CC BY 4.0",
        citation="Lu Y, et al. The JNU-IFM dataset for segmenting pubic symphysis-fetal head. Data in Brief. "
        "2022;41:107904.",
    ),
    Dataset(
        key="camus",
        title="CAMUS: cardiac acquisitions for multi-structure ultrasound segmentation",
        organ="heart",
        num_images=19232,
        url="https://www.creatis.insa-lyon.fr/Challenge/camus/",
        licence="CC BY-NC-SA 4.0 (registration required)",
        citation="Leclerc S, et al. Deep learning for segmentation using an open large-scale dataset in 2D "
        "echocardiography. IEEE Trans Med Imaging. 2019;38(9):2198-2210.",
        official_split="database_split/subgroup_{training,validation,testing}.txt",
        has_patient_ids=True,
    ),
)

_TASKS: tuple[Task, ...] = (
    Task(
        "cubs_classification",
        "cubs",
        "classification",
        ("normal IMT", "increased IMT"),
        label_note="CUBS publishes no image class, only expert LI/MA boundaries, calibration factors and "
        "clinical data. The label is derived from the dataset's own annotation: far-wall intima-media thickness "
        "(mean LI-MA distance of analyst A1 x calibration factor) > 0.9 mm = increased IMT (ESH/ESC 2013 "
        "threshold for carotid organ damage). Plaque is not annotated in CUBS, so a plaque label would be a "
        "guess; IMT is measured for every image.",
    ),
    Task("uf1990_classification", "uf1990", "classification", ("non-fibroid", "fibroid")),
    Task("tn3k_classification", "tn3k", "classification", ("benign", "malignant")),
    Task(
        "stmus_classification",
        "stmus",
        "classification",
        ("biceps brachii", "gastrocnemius medialis", "tibialis anterior"),
        label_note="The publisher files every image under muscle (BB, GM, TA) and then subject group (Healthy, "
        "Pathological). The muscle is an image property shown in every frame; the group is a per-subject "
        "diagnosis, and with no subject id in the file names a split can only be image-level, so a "
        "Healthy/Pathological classifier could score by recognising subjects seen in training. Muscle it is; "
        "the group is kept in the sample id for anyone who wants the other task.",
    ),
    Task("aul_classification", "aul", "classification", ("normal", "benign", "malignant")),
    Task("busi_classification", "busi", "classification", ("normal", "benign", "malignant")),
    Task(
        "mmotu_classification",
        "mmotu",
        "classification",
        (
            "chocolate cyst",
            "serous cystadenoma",
            "teratoma",
            "theca cell tumor",
            "simple cyst",
            "normal ovary",
            "mucinous cystadenoma",
            "high grade serous cystadenocarcinoma",
        ),
    ),
    Task(
        "fetal_planes_classification",
        "fetal_planes",
        "classification",
        ("fetal abdomen", "fetal brain", "fetal femur", "fetal thorax", "maternal cervix", "other"),
    ),
    Task(
        "luminous_segmentation",
        "luminous",
        "segmentation",
        ("background", "multifidus"),
        label_note="Left and right multifidus masks of an image are united into one class.",
    ),
    Task(
        "kidneyus_segmentation",
        "kidneyus",
        "segmentation",
        ("background", "kidney capsule"),
        label_note="Capsule masks of sonographer 1; the multi-region labels (central echo complex, medulla, "
        "cortex) are not used, as in the publication's benchmark.",
    ),
    Task(
        "gist514_segmentation",
        "gist514",
        "segmentation",
        ("background", "tumour"),
        label_note="GIST and leiomyoma instances are united into one tumour class.",
    ),
    Task("ddti_segmentation", "ddti", "segmentation", ("background", "nodule")),
    Task("busbra_segmentation", "busbra", "segmentation", ("background", "lesion")),
    Task(
        "nerveseg_segmentation",
        "nerveseg",
        "segmentation",
        ("background", "brachial plexus"),
        empty_mask_note="Many frames contain no nerve. Our metrics score an empty prediction on an empty "
        "reference as Dice 1 (MONAI `ignore_empty=False`); the official TinyUSFM code (medpy `dc`) scores it 0. "
        "Both numbers are reported.",
    ),
    Task(
        "luss_segmentation",
        "luss",
        "segmentation",
        ("background", "rib", "pleural line", "A-line", "B-line", "B-line confluence"),
        label_note="The phantom's masks label five structures with values 1-5; all are kept, in the dataset's "
        "order, since no source says UniUS-Bench merged them.",
    ),
    Task("fhpsaop_segmentation", "fhpsaop", "segmentation", ("background", "pubic symphysis", "fetal head")),
    Task(
        "camus_segmentation",
        "camus",
        "segmentation",
        ("background", "left ventricle endocardium", "myocardium", "left atrium"),
    ),
    Task("tn3k_segmentation", "tn3k", "segmentation", ("background", "nodule")),
    Task("busi_segmentation", "busi", "segmentation", ("background", "lesion")),
)

DATASETS: dict[str, Dataset] = {d.key: d for d in _DATASETS}
TASKS: dict[str, Task] = {t.name: t for t in _TASKS}


def get_task(name: str) -> Task:
    """Look a task up by bundle name; the error lists the valid names."""
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}") from None


def get_dataset(key: str) -> Dataset:
    try:
        return DATASETS[key]
    except KeyError:
        raise KeyError(f"unknown dataset {key!r}; known datasets: {', '.join(sorted(DATASETS))}") from None


def tasks_of(dataset_key: str) -> list[Task]:
    return [t for t in _TASKS if t.dataset == dataset_key]
