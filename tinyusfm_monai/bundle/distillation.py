"""The distillation bundle (`bundles/tinyusfm_distillation`), generated like the task bundles.

Its open choices are the typed settings of `tinyusfm_monai.distillation` (`settings.py`, the mask and consistency
dataclasses, `CoresetSettings`) and the run-level values in `RUN_SETTINGS` below; the configs take their defaults
from there and the docs' defaults table lists the same fields, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from tinyusfm_monai.distillation.consistency import ConsistencyWeighting
from tinyusfm_monai.distillation.coreset import CoresetSettings
from tinyusfm_monai.distillation.masks import FrequencyMask, SpatialMask
from tinyusfm_monai.distillation.pretrain import PretrainSettings
from tinyusfm_monai.distillation.quality import QualitySettings
from tinyusfm_monai.distillation.settings import (
    MAE_LITE,
    OURS,
    DistillSettings,
    MaskSettings,
    defaults,
    documented_fields,
)

from .configs import SCHEMA_URL, input_format

NAME = "tinyusfm_distillation"
BUNDLE_VERSION = "0.3.0"
CHANGELOG = {
    "0.3.0": "coreset strategy 'dual' renamed 'composite' (ours, the default: with near-duplicate suppression); new "
    "'paper' strategy: the paper's distance and quality ranks with nothing of ours added",
    "0.2.0": "generated with the task bundles; one resumable checkpoint models/last.pt (shared training-state "
    "handlers); settings passed to components as whole config sections",
    "0.1.0": "initial distillation bundle: feature-gradient coreset selection and domain-separated masked "
    "distillation from USFM into TinyUSFM",
}

# (config id, default, source, meaning) of the run-level values; the method's choices are the settings classes.
RUN_SETTINGS: list[tuple[str, Any, str, str]] = [
    ("image_size", 224, MAE_LITE, "input size of teacher and student"),
    ("phantom_pool_size", 16, OURS, "size of the embedded phantom pool (0: `dataset_dir` is a real pool)"),
    (
        "phantom_junk",
        False,
        OURS,
        "archive junk in the phantom pool: false | true (default rates, ~36 %) | {type: share} (`data.phantom_junk`)",
    ),
    ("max_epochs", 2, OURS, "epochs (phantom demo; MAE-Lite: 400)"),
    ("batch_size", 8, OURS, "clean images per step (each gives 2 masked views; MAE-Lite: 4096)"),
    ("base_lr", 1.5e-4, MAE_LITE, "learning rate per 256 images (lr = base_lr × batch / 256)"),
    ("weight_decay", 0.05, MAE_LITE, "AdamW (0.9, 0.95) weight decay, all parameters"),
    ("warmup_fraction", 0.1, MAE_LITE, "per-iteration warm-up (10 % of steps), then cosine (MAE-Lite: 40 of 400)"),
    ("num_workers", 0, OURS, "DataLoader workers (also decode the pool once into uint8 shards)"),
    ("amp_dtype", "bfloat16", OURS, "mixed precision of the student when `amp` (CUDA); float16 adds a grad scaler"),
    ("compile", False, OURS, "torch.compile the teacher and the student (pays off on GPUs for long runs)"),
    ("seed", 0, OURS, "seed of every random generator"),
]


# pretrain.json's own run-level values (the teacher's masked-image-model pretraining; same keys as train.json's).
PRETRAIN_SETTINGS: list[tuple[str, Any, str, str]] = [
    ("max_epochs", 2, OURS, "pretraining epochs over the pool (phantom demo; the evidence run: 600 steps)"),
    ("batch_size", 8, OURS, "images per step"),
    ("base_lr", 4e-3, OURS, "learning rate per 256 images (1e-3 at batch 64 worked on the phantom)"),
    ("weight_decay", 0.05, MAE_LITE, "AdamW (0.9, 0.95) weight decay (none on norms, biases, tokens, rel-pos tables)"),
    ("warmup_fraction", 0.08, OURS, "per-iteration warm-up, then cosine"),
    (
        "masks#frequency#ratio",
        0.5,
        OURS,
        "share of the stoppable frequency rings stopped (pretraining: harder than 0.25)",
    ),
]


def _run_values(settings: list[tuple[str, Any, str, str]] | None = None) -> dict[str, Any]:
    return {key: value for key, value, _, _ in (RUN_SETTINGS if settings is None else settings)}


def _common() -> dict[str, Any]:
    """IDs shared by coreset.json and train.json: paths, pool, teacher, student."""
    values = _run_values()
    return {
        "imports": ["$import torch"],
        "bundle_root": {"_target_": "tinyusfm_monai.bundle.components.default_bundle_root"},
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "amp": "$torch.cuda.is_available()",
        "seed": values["seed"],
        "image_size": values["image_size"],
        "output_dir": "$@bundle_root + '/eval'",
        "ckpt_dir": "$@bundle_root + '/models'",
        "dataset_dir": "$@bundle_root + '/eval/phantom_pool'",
        "phantom_pool_size": values["phantom_pool_size"],
        "phantom_junk": values["phantom_junk"],
        "num_workers": values["num_workers"],
        "manifest": "$@output_dir + '/pool_manifest.json'",
        "teacher_weights": "",
        "network_def": {"_target_": "tinyusfm_monai.networks.TinyUSFM", "img_size": "@image_size"},
        "teacher_def": {"_target_": "tinyusfm_monai.networks.USFM", "img_size": "@image_size", "drop_path_rate": 0.0},
        "pool": {
            "_target_": "tinyusfm_monai.distillation.pool.prepare_pool",
            "dataset_dir": "@dataset_dir",
            "manifest_path": "@manifest",
            "phantom_pool_size": "@phantom_pool_size",
            "phantom_image_size": "@image_size",
            "seed": "@seed",
            "phantom_junk": "@phantom_junk",
        },
        # the pool decoded once to uint8 shards at the training size; normalisation runs on the device
        "pool_images": {
            "_target_": "tinyusfm_monai.distillation.shards.ensure_pool_images",
            "manifest_path": "@pool",
            "out_dir": "$@output_dir + '/pool_images'",
            "image_size": "@image_size",
            "num_workers": "@num_workers",
        },
        "teacher_dtype": "$'bfloat16' if @amp else 'float32'",
        "compile": values["compile"],
    }


def _teacher(feature_layers: Any, attn_layers: Any) -> dict[str, Any]:
    return {
        "_target_": "tinyusfm_monai.distillation.model.FrozenTeacher",
        "network": "@teacher_def",
        "weights": "@teacher_weights",
        "feature_layers": feature_layers,
        "attn_layers": attn_layers,
        "device": "@device",
        "dtype": "@teacher_dtype",
        "compile": "@compile",
    }


def coreset_config() -> dict[str, Any]:
    """configs/coreset.json: teacher features, Quality Rank on them, near-duplicate groups, selection, diagnostics."""
    return {
        **_common(),
        "teacher": _teacher([], []),
        "coreset": {**defaults(CoresetSettings), "quality": defaults(QualitySettings)},
        "coreset_dir": "$@output_dir + '/coreset'",
        "coreset_selector": {
            "_target_": "tinyusfm_monai.distillation.coreset.CoresetPipeline",
            "manifest": "@pool",
            "output_dir": "@coreset_dir",
            "teacher": "@teacher",
            "images": "@pool_images",
            "settings": "@coreset",
            "device": "@device",
            "amp": "@amp",
            "seed": "@seed",
        },
        "initialize": ["$monai.utils.set_determinism(seed=@seed)"],
        "run": ["$@coreset_selector.run()"],
    }


def _loss_terms() -> dict[str, Any]:
    return {"_target_": "tinyusfm_monai.distillation.engine.loss_terms", "_mode_": "callable"}


def _warmup_cosine() -> dict[str, Any]:
    """The LR schedule of train.json and pretrain.json: linear warm-up over a fraction of the steps, then cosine."""
    return {
        "_target_": "monai.optimizers.WarmupCosineSchedule",
        "optimizer": "@optimizer",
        "warmup_steps": "$int(@warmup_fraction * @max_epochs * len(@train#dataloader))",
        "t_total": "$@max_epochs * len(@train#dataloader)",
    }


def _pool_training_data(datalist: str, **loader: Any) -> dict[str, Any]:
    """`train#dataset` and `train#dataloader` over the decoded pool rows that `datalist` names (all when empty)."""
    return {
        "dataset": {
            "_target_": "tinyusfm_monai.distillation.shards.PoolImageDataset",
            "store": "@pool_images",
            "indices": {
                "_target_": "tinyusfm_monai.distillation.pool.pool_indices",
                "manifest_path": "@pool",
                "datalist": datalist,
            },
        },
        "dataloader": {
            "_target_": "torch.utils.data.DataLoader",
            "dataset": "@train#dataset",
            "batch_size": "@batch_size",
            "shuffle": True,
            "num_workers": "@num_workers",
            "pin_memory": "$torch.cuda.is_available()",
            **loader,
        },
    }


def train_config() -> dict[str, Any]:
    """configs/train.json: masked distillation with consistency weighting, resumable, student exported."""
    values = _run_values()
    return {
        **_common(),
        "log_dir": "$@bundle_root + '/runs'",
        "coreset_datalist": "",
        "student_path": "$@ckpt_dir + '/model.pt'",
        "resume": True,
        **{k: values[k] for k in ("max_epochs", "batch_size", "base_lr", "amp_dtype")},
        "lr": "$@base_lr * @batch_size / 256",
        **{k: values[k] for k in ("weight_decay", "warmup_fraction")},
        "network": "$@network_def.to(@device)",
        "teacher": _teacher("@distill#teacher_layers", "@distill#teacher_attn_layers"),
        "distill": defaults(DistillSettings),
        "masks": {**defaults(MaskSettings), "spatial": defaults(SpatialMask), "frequency": defaults(FrequencyMask)},
        "consistency": defaults(ConsistencyWeighting),
        "optimizer": {
            "_target_": "torch.optim.AdamW",
            "params": "$@train#distiller.parameters()",
            "lr": "@lr",
            "betas": [0.9, 0.95],
            "weight_decay": "@weight_decay",
            "fused": "$torch.cuda.is_available()",
        },
        "lr_scheduler": _warmup_cosine(),
        "train": {
            **_pool_training_data("@coreset_datalist"),
            "inferer": {"_target_": "SimpleInferer"},
            "distiller": {
                "_target_": "tinyusfm_monai.distillation.model.DistillationModel.from_settings",
                "student": "@network",
                "teacher": "@teacher",
                "settings": "@distill",
            },
            "network": "$torch.compile(@train#distiller.to(@device)) if @compile else @train#distiller.to(@device)",
            "masker": {
                "_target_": "tinyusfm_monai.distillation.masks.DomainMasker.from_settings",
                "settings": "@masks",
                "device": "@device",
                "seed": "@seed",
            },
            "consistency": {
                "_target_": "tinyusfm_monai.distillation.consistency.ConsistencyWeighting.from_settings",
                "settings": "@consistency",
            },
            "loss": {
                "_target_": "tinyusfm_monai.distillation.losses.DistillationLoss.from_settings",
                "settings": "@distill",
                "patch_size": "$@network_def.patch_size",
            },
            "grad_scaler": {
                "_target_": "torch.amp.GradScaler",
                "device": "cuda",
                "enabled": "$@amp and @amp_dtype == 'float16'",
            },
            "iteration": {
                "_target_": "tinyusfm_monai.distillation.engine.DistillationIteration",
                "teacher": "@teacher",
                "masker": "@train#masker",
                "loss": "@train#loss",
                "consistency": "@train#consistency",
                "grad_scaler": "@train#grad_scaler",
                "clip_grad_norm": "@distill#clip_grad_norm",
            },
            # on every rank: the checkpoint (every rank resumes; rank 0 writes) and the schedule
            "handlers": [
                {
                    "_target_": "tinyusfm_monai.handlers.training_state.TrainingCheckpoint",
                    "path": "$@ckpt_dir + '/last.pt'",
                    "save_dict": {
                        "distiller": "@train#distiller",
                        "optimizer": "@optimizer",
                        "lr_scheduler": "@lr_scheduler",
                        "grad_scaler": "@train#grad_scaler",
                    },
                    "resume": "@resume",
                    "generators": "$[@train#masker.generator]",
                },
                {
                    "_target_": "LrScheduleHandler",
                    "lr_scheduler": "@lr_scheduler",
                    "epoch_level": False,
                    "print_lr": False,
                },
            ],
            # on rank 0 only (multi_gpu_train.json leaves these out on the other ranks)
            "rank0_handlers": [
                {"_target_": "StatsHandler", "tag_name": "train", "output_transform": _loss_terms()},
                {
                    "_target_": "tinyusfm_monai.handlers.weights.ExportBackbone",
                    "backbone": "@network",
                    "path": "@student_path",
                },
                {"_target_": "tinyusfm_monai.distillation.diagnostics.ConsistencyDiagnostics", "manifest": "@pool"},
                {
                    "_target_": "TensorBoardStatsHandler",
                    "log_dir": "@log_dir",
                    "tag_name": "train",
                    "output_transform": _loss_terms(),
                },
                {"_target_": "tinyusfm_monai.handlers.progress.ProgressBar", "output_transform": _loss_terms()},
            ],
            "trainer": {
                "_target_": "SupervisedTrainer",
                "device": "@device",
                "max_epochs": "@max_epochs",
                "train_data_loader": "@train#dataloader",
                "network": "@train#network",
                "optimizer": "@optimizer",
                "loss_function": "@train#loss",
                "inferer": "@train#inferer",
                "iteration_update": "@train#iteration",
                "train_handlers": "$@train#handlers + @train#rank0_handlers",
                "amp": "@amp",
                "amp_kwargs": {"dtype": "$getattr(torch, @amp_dtype)"},
                "non_blocking": True,
                "decollate": False,
            },
        },
        "initialize": ["$monai.utils.set_determinism(seed=@seed)"],
        "run": ["$@train#trainer.run()"],
    }


def multi_gpu_config(module: str = "@train#distiller", unused_parameters: bool = True) -> dict[str, Any]:
    """Merged over train.json (or pretrain.json) for `torchrun`: DDP around `module`, distributed sampler, rank-0
    side effects."""
    return {
        "+imports": ["$import os", "$import torch.distributed as dist"],
        "device": "$torch.device('cuda:' + os.environ['LOCAL_RANK'] if torch.cuda.is_available() else 'cpu')",
        "dist_backend": "$'nccl' if torch.cuda.is_available() else 'gloo'",
        "train#network": {
            "_target_": "torch.nn.parallel.DistributedDataParallel",
            "module": f"${module}.to(@device)",
            "device_ids": "$[@device] if torch.cuda.is_available() else None",
            "find_unused_parameters": unused_parameters,
        },
        "train#sampler": {
            "_target_": "DistributedSampler",
            "dataset": "@train#dataset",
            "even_divisible": True,
            "shuffle": True,
        },
        "train#dataloader#sampler": "@train#sampler",
        "train#dataloader#shuffle": False,
        "train#trainer#train_handlers": "$@train#handlers + (@train#rank0_handlers if dist.get_rank() == 0 else [])",
        "initialize": [
            "$dist.is_initialized() or dist.init_process_group(backend=@dist_backend)",
            "$torch.cuda.set_device(@device) if torch.cuda.is_available() else None",
            "$monai.utils.set_determinism(seed=@seed + dist.get_rank())",
        ],
        "run": ["$@train#trainer.run()"],
        "finalize": ["$dist.is_initialized() and dist.destroy_process_group()"],
    }


def pretrain_config() -> dict[str, Any]:
    """configs/pretrain.json: USFM-style masked-image-model pretraining of the teacher (`distillation.pretrain`),
    resumable, the encoder exported in the official USFM layout for `--teacher_weights`."""
    values = _run_values(PRETRAIN_SETTINGS)
    run = _run_values()
    return {
        **_common(),
        "log_dir": "$@bundle_root + '/runs/pretrain'",
        "pretrain_datalist": "",
        "teacher_export": "$@ckpt_dir + '/teacher_pretrained.pth'",
        "resume": True,
        **{k: values[k] for k in ("max_epochs", "batch_size", "base_lr", "weight_decay", "warmup_fraction")},
        "amp_dtype": run["amp_dtype"],
        "lr": "$@base_lr * @batch_size / 256",
        "pretrain": defaults(PretrainSettings),
        "masks": {
            **defaults(MaskSettings),
            "spatial": defaults(SpatialMask),
            "frequency": {**defaults(FrequencyMask), "ratio": values["masks#frequency#ratio"]},
        },
        "optimizer": {
            "_target_": "torch.optim.AdamW",
            "params": {
                "_target_": "tinyusfm_monai.distillation.pretrain.weight_decay_groups",
                "model": "@train#model",
                "weight_decay": "@weight_decay",
            },
            "lr": "@lr",
            "betas": [0.9, 0.95],
            "fused": "$torch.cuda.is_available()",
        },
        "lr_scheduler": _warmup_cosine(),
        "train": {
            **_pool_training_data("@pretrain_datalist", drop_last="$len(@train#dataset) > @batch_size"),
            "model": {
                "_target_": "tinyusfm_monai.distillation.pretrain.MaskedImageModel.from_settings",
                "encoder": "@teacher_def",
                "settings": "@pretrain",
            },
            "network": "$torch.compile(@train#model.to(@device)) if @compile else @train#model.to(@device)",
            "masker": {
                "_target_": "tinyusfm_monai.distillation.masks.DomainMasker.from_settings",
                "settings": "@masks",
                "device": "@device",
                "seed": "@seed",
            },
            "grad_scaler": {
                "_target_": "torch.amp.GradScaler",
                "device": "cuda",
                "enabled": "$@amp and @amp_dtype == 'float16'",
            },
            "iteration": {
                "_target_": "tinyusfm_monai.distillation.pretrain.PretrainIteration",
                "masker": "@train#masker",
                "settings": "@pretrain",
                "grad_scaler": "@train#grad_scaler",
            },
            "handlers": [
                {
                    "_target_": "tinyusfm_monai.handlers.training_state.TrainingCheckpoint",
                    "path": "$@ckpt_dir + '/pretrain_last.pt'",
                    "save_dict": {
                        "model": "@train#model",
                        "optimizer": "@optimizer",
                        "lr_scheduler": "@lr_scheduler",
                        "grad_scaler": "@train#grad_scaler",
                    },
                    "resume": "@resume",
                    "generators": "$[@train#masker.generator]",
                },
                {
                    "_target_": "LrScheduleHandler",
                    "lr_scheduler": "@lr_scheduler",
                    "epoch_level": False,
                    "print_lr": False,
                },
            ],
            "rank0_handlers": [
                {"_target_": "StatsHandler", "tag_name": "pretrain", "output_transform": _loss_terms()},
                {
                    "_target_": "tinyusfm_monai.handlers.weights.ExportBackbone",
                    "backbone": "@train#model",
                    "path": "@teacher_export",
                },
                {
                    "_target_": "TensorBoardStatsHandler",
                    "log_dir": "@log_dir",
                    "tag_name": "pretrain",
                    "output_transform": _loss_terms(),
                },
                {"_target_": "tinyusfm_monai.handlers.progress.ProgressBar", "output_transform": _loss_terms()},
            ],
            "trainer": {
                "_target_": "SupervisedTrainer",
                "device": "@device",
                "max_epochs": "@max_epochs",
                "train_data_loader": "@train#dataloader",
                "network": "@train#network",
                "optimizer": "@optimizer",
                "loss_function": "$torch.nn.MSELoss()",
                "inferer": {"_target_": "SimpleInferer"},
                "iteration_update": "@train#iteration",
                "train_handlers": "$@train#handlers + @train#rank0_handlers",
                "amp": "@amp",
                "amp_kwargs": {"dtype": "$getattr(torch, @amp_dtype)"},
                "non_blocking": True,
                "decollate": False,
            },
        },
        "initialize": ["$monai.utils.set_determinism(seed=@seed)"],
        "run": ["$@train#trainer.run()"],
    }


def multi_gpu_pretrain_config() -> dict[str, Any]:
    """Merged over pretrain.json for `torchrun` (every parameter is used: no unused-parameter search)."""
    return multi_gpu_config("@train#model", unused_parameters=False)


def metadata(versions: dict[str, str]) -> dict[str, Any]:
    from .configs import required_packages

    return {
        "schema": SCHEMA_URL,
        "version": BUNDLE_VERSION,
        "changelog": CHANGELOG,
        "monai_version": versions["monai"],
        "pytorch_version": versions["torch"],
        "numpy_version": versions["numpy"],
        "required_packages_version": required_packages(versions),
        "supported_apps": {},
        "name": "TinyUSFM distillation",
        "task": "Self-supervised knowledge distillation of an ultrasound foundation model (USFM teacher, "
        "TinyUSFM student)",
        "description": "Turns a frozen USFM teacher and an unlabelled ultrasound image pool into a 5.5M-parameter "
        "TinyUSFM student: feature-gradient coreset selection (Distance Rank, Quality Rank, our near-duplicate "
        "suppression) in configs/coreset.json, then domain-separated (spatial + frequency mask) "
        "masked-image-modelling distillation with consistency-driven dynamic weighting in configs/train.json. "
        "The deployable network (network_def) is the student backbone; its output is the 192-d pooled "
        "feature. Runs end to end on an embedded ultrasound phantom pool with no arguments.",
        "authors": "tinyusfm-monai contributors (method: Chen Ma et al., TinyUSFM, arXiv 2510.19239)",
        "copyright": "Copyright (c) tinyusfm-monai contributors",
        "data_source": "Any unlabelled ultrasound pool (PNG/JPG folders, ultrasound DICOM incl. cine, datalists); "
        "embedded phantom pool by default",
        "data_type": "png, jpg, dicom",
        "intended_use": "Research: pretraining compact ultrasound backbones. Not for clinical use.",
        "references": [
            "Ma C. et al. TinyUSFM: Towards Compact and Efficient Ultrasound Foundation Models. arXiv:2510.19239 "
            "(2025); IEEE JBHI (2026)",
            "Jiao J. et al. USFM: A universal ultrasound foundation model generalized to tasks and organs towards "
            "label efficient image analysis. arXiv:2401.00153",
            "Wang S. et al. A Closer Look at Self-Supervised Lightweight Vision Transformers (MAE-Lite). ICML 2023",
        ],
        "network_data_format": {
            "inputs": {"image": input_format(224, [-2.2, 2.7], " (ImageNet-normalised)")},
            "outputs": {
                "pred": {
                    "type": "tuples",
                    "format": "embedding",
                    "num_channels": 192,
                    "spatial_shape": [1],
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": False,
                    "channel_def": {"0": "pooled feature fc_norm(mean of patch tokens), 192 values"},
                }
            },
        },
    }


def settings_table() -> str:
    """The docs' defaults table: every config value of the method, its default and where it comes from."""
    rows = (
        RUN_SETTINGS
        + documented_fields(CoresetSettings, "coreset#")
        + documented_fields(QualitySettings, "coreset#quality#")
        + documented_fields(MaskSettings, "masks#")
        + documented_fields(SpatialMask, "masks#spatial#")
        + documented_fields(FrequencyMask, "masks#frequency#")
        + documented_fields(ConsistencyWeighting, "consistency#")
        + documented_fields(DistillSettings, "distill#")
    )
    return _table(rows)


def pretrain_table() -> str:
    """The docs' table of pretrain.json: its run-level values and the `pretrain` section."""
    return _table(PRETRAIN_SETTINGS + documented_fields(PretrainSettings, "pretrain#"))


def _table(rows: list[tuple[str, Any, str, str]]) -> str:
    lines = ["| config id | default | source | meaning |", "|---|---|---|---|"]
    for key, value, source, doc in rows:
        lines.append(f"| `{key}` | `{_show(value)}` | {source} | {doc} |")
    return "\n".join(lines)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    return str(value).replace("'", '"')


def readme() -> str:
    """docs/README.md: the hand-written text of `templates/distillation_README.md` with the generated table."""
    from importlib.resources import files

    template = files("tinyusfm_monai.bundle").joinpath("templates/distillation_README.md").read_text()
    return template.replace("{table}", settings_table()).replace("{pretrain_table}", pretrain_table())


DATA_LICENSE = """Data used by this bundle

1. Embedded ultrasound phantom pool (default). Generated on the fly by tinyusfm_monai.data.phantom (synthetic
   speckle/physics simulation, no patient data). Same licence as this project (Apache-2.0).

2. Your own pool (--phantom_pool_size 0 --dataset_dir ...). You are responsible for the licence and the ethics
   approval of any clinical images you distil on. The paper's 3M-US database (2.2M images, used for USFM and
   TinyUSFM) is not public.

3. Teacher weights (large_files.yml): USFM (openmedlab/USFM, CC BY-NC 4.0) and TinyUSFM (MacDunno/TinyUSFM) are
   distributed by their authors under the terms stated in those repositories; check them before redistributing a
   student distilled from them.
"""
