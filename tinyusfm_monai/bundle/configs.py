"""The configs of a task bundle, as plain dicts: one definition for all 19 task bundles.

Everything a bundle says about its task (classes, labels, organ, licence, citation) comes from the registry;
what differs by task type comes from the task's recipe (`recipes.py`); everything it says about training
(schedule, optimiser, handlers) is written once here. The JSON reads like a model-zoo bundle: standard IDs, MONAI
components, and `tinyusfm_monai` components by full dotted path.
"""

from __future__ import annotations

from typing import Any

from tinyusfm_monai import __version__
from tinyusfm_monai.data.registry import DATASETS, Task
from tinyusfm_monai.transforms.pipelines import (
    ANY_FORMAT,
    load_config,
    normalise_config,
    preprocessing_config,
    resize_config,
    rgb_unit_config,
)

from .recipes import recipe_for

SCHEMA_URL = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
# The bundles' version moves with the package's: every bundle names `tinyusfm-monai` at this version in
# `required_packages_version`, so the wheel built from this tree satisfies its own bundles.
BUNDLE_VERSION = __version__
CHANGELOG = {
    "0.2.0": "one training-state checkpoint (models/last.pt: model, optimiser, scheduler, every RNG, best score), "
    "standalone bundles (wheel-installable package), official weight links",
    "0.1.0": "first release: TinyUSFM fine-tuning, evaluation and inference, generated from the task registry",
}

# Our defaults. Shared with the official fine-tuning scripts: AdamW lr 1e-4, 5 warm-up epochs, batch 8, 224²,
# seed 42. Ours: weight decay 0.05, layer decay 0.75, 100 epochs, a cosine schedule, 2 workers (the `paper` preset,
# `train_paper.json`, has the official values; the bundle README lists every difference).
DEFAULTS = {
    "image_size": 224,
    "batch_size": 8,
    "learning_rate": 1e-4,
    "weight_decay": 0.05,
    "layer_decay": 0.75,
    "warmup_epochs": 5,
    "max_epochs": 100,
    "val_interval": 1,
    "num_workers": 2,
    "seed": 42,
}
LOSS_OUTPUT = "$monai.handlers.from_engine(['loss'], first=True)"


def _datalist(split: str) -> dict[str, Any]:
    return {
        "_target_": "tinyusfm_monai.data.datalist.task_datalist",
        "task": "@task",
        "dataset_dir": "@dataset_dir",
        "split": split,
    }


def _dataloader(section: str, shuffle: bool) -> dict[str, Any]:
    return {
        "_target_": "DataLoader",
        "dataset": f"@{section}#dataset",
        "batch_size": "@batch_size",
        "shuffle": shuffle,
        "num_workers": "@num_workers",
    }


def _common(task: Task) -> dict[str, Any]:
    """The IDs every config of a task bundle shares."""
    return {
        "imports": ["$import torch"],
        "bundle_root": {"_target_": "tinyusfm_monai.bundle.components.default_bundle_root"},
        "task": task.name,
        "dataset_dir": "",
        "output_dir": "$@bundle_root + '/eval'",
        "ckpt_dir": "$@bundle_root + '/models'",
        "image_size": DEFAULTS["image_size"],
        "backbone": "tinyusfm",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": recipe_for(task).network_def(task),
        "network": "$@network_def.to(@device)",
    }


def _optimisation() -> dict[str, Any]:
    """AdamW with layer-wise lr decay, warm-up then cosine, optional pretrained backbone."""
    return {
        "optimizer": {
            "_target_": "torch.optim.AdamW",
            "params": {
                "_target_": "tinyusfm_monai.bundle.components.layer_decay_param_groups",
                "model": "@network",
                "lr": "@learning_rate",
                "weight_decay": "@weight_decay",
                "layer_decay": "@layer_decay",
            },
            "lr": "@learning_rate",
        },
        "lr_scheduler": {
            "_target_": "monai.optimizers.WarmupCosineSchedule",
            "optimizer": "@optimizer",
            "warmup_steps": "@warmup_epochs",
            "t_total": "@max_epochs",
        },
        "load_pretrained": {
            "_target_": "tinyusfm_monai.bundle.components.maybe_load_pretrained",
            "network": "@network",
            "path": "@pretrained",
        },
    }


def _train_section(task: Task) -> dict[str, Any]:
    recipe = recipe_for(task)
    return {
        "deterministic_transforms": load_config(recipe.keys)
        + [resize_config("@image_size", with_label=len(recipe.keys) > 1)]
        + rgb_unit_config(),
        "random_transforms": recipe.augmentations(task),
        "final_transforms": normalise_config(),
        "preprocessing": {
            "_target_": "Compose",
            "transforms": "$@train#deterministic_transforms + @train#random_transforms + @train#final_transforms",
        },
        "dataset": {"_target_": "Dataset", "data": _datalist("training"), "transform": "@train#preprocessing"},
        "dataloader": _dataloader("train", shuffle=True),
        "inferer": {"_target_": "SimpleInferer"},
        "postprocessing": {"_target_": "Compose", "transforms": recipe.val_postprocessing(task)},
        # on every rank: the schedule, validation, and the checkpoint (every rank resumes; rank 0 writes)
        "handlers": [
            {"_target_": "LrScheduleHandler", "lr_scheduler": "@lr_scheduler", "print_lr": True},
            {
                "_target_": "ValidationHandler",
                "validator": "@validate#evaluator",
                "epoch_level": True,
                "interval": "@val_interval",
            },
            {
                "_target_": "tinyusfm_monai.handlers.training_state.TrainingCheckpoint",
                "path": "$@ckpt_dir + '/last.pt'",
                "save_dict": {
                    "model": "@network",
                    "optimizer": "@optimizer",
                    "lr_scheduler": "@lr_scheduler",
                    "best_model": "@validate#best_model",
                },
                "resume": "@resume",
            },
        ],
        # on rank 0 only: what prints and logs (multi_gpu_train.json leaves these out on the other ranks)
        "rank0_handlers": [
            {"_target_": "tinyusfm_monai.handlers.progress.ProgressBar"},
            {"_target_": "StatsHandler", "tag_name": "train_loss", "output_transform": LOSS_OUTPUT},
            {
                "_target_": "TensorBoardStatsHandler",
                "log_dir": "@output_dir",
                "tag_name": "train_loss",
                "output_transform": LOSS_OUTPUT,
            },
        ],
        "key_metric": recipe.key_metric(recipe.train_metric),
        "trainer": {
            "_target_": "SupervisedTrainer",
            "max_epochs": "@max_epochs",
            "device": "@device",
            "train_data_loader": "@train#dataloader",
            "network": "@network",
            "loss_function": "@loss",
            "optimizer": "@optimizer",
            "inferer": "@train#inferer",
            "postprocessing": "@train#postprocessing",
            "key_train_metric": "@train#key_metric",
            "train_handlers": "$@train#handlers + @train#rank0_handlers",
            "amp": "$torch.cuda.is_available()",
        },
    }


def _validate_section(task: Task) -> dict[str, Any]:
    recipe = recipe_for(task)
    return {
        "preprocessing": {
            "_target_": "Compose",
            "transforms": "$@train#deterministic_transforms + @train#final_transforms",
        },
        "dataset": {"_target_": "Dataset", "data": _datalist("validation"), "transform": "@validate#preprocessing"},
        "dataloader": _dataloader("validate", shuffle=False),
        "inferer": {"_target_": "SimpleInferer"},
        "postprocessing": {"_target_": "Compose", "transforms": recipe.val_postprocessing(task)},
        "best_model": {
            "_target_": "tinyusfm_monai.handlers.training_state.BestModelSaver",
            "network": "@network",
            "path": "$@ckpt_dir + '/model.pt'",
            "metric_name": recipe.val_metric,
        },
        "handlers": [
            "@validate#best_model",
            {"_target_": "StatsHandler", "iteration_log": False},
            {"_target_": "TensorBoardStatsHandler", "log_dir": "@output_dir", "iteration_log": False},
        ],
        "key_metric": recipe.key_metric(recipe.val_metric),
        "evaluator": {
            "_target_": "SupervisedEvaluator",
            "device": "@device",
            "val_data_loader": "@validate#dataloader",
            "network": "@network",
            "inferer": "@validate#inferer",
            "postprocessing": "@validate#postprocessing",
            "key_val_metric": "@validate#key_metric",
            "val_handlers": "@validate#handlers",
            "amp": "$torch.cuda.is_available()",
        },
    }


def train_config(task: Task) -> dict[str, Any]:
    """configs/train.json: fine-tune with validation, best model to models/model.pt, resumable."""
    settings = {
        k: DEFAULTS[k]
        for k in (
            "seed",
            "max_epochs",
            "warmup_epochs",
            "val_interval",
            "batch_size",
            "num_workers",
            "learning_rate",
            "weight_decay",
            "layer_decay",
        )
    }
    return {
        **_common(task),
        "pretrained": "",
        "resume": True,
        **settings,
        "loss": recipe_for(task).loss(),
        **_optimisation(),
        "train": _train_section(task),
        "validate": _validate_section(task),
        "initialize": ["$monai.utils.set_determinism(seed=@seed)", "$@load_pretrained"],
        "run": ["$@train#trainer.run()"],
    }


# The `paper` preset: the official scripts' settings where they differ from DEFAULTS.
PAPER_SETTINGS = {"weight_decay": 0.0, "layer_decay": 1.0, "num_workers": 8, "seed": 42}
PAPER_MODULE = "tinyusfm_monai.handlers.paper"


def train_paper_config(task: Task) -> dict[str, Any]:
    """configs/train_paper.json, merged over train.json: the official fine-tuning protocol, quirks included.

    `--config_file "['configs/train.json','configs/train_paper.json']"`. Everything it changes is listed, with the
    official value and ours, by `paper_differences` (the bundle README's table).
    """
    recipe = recipe_for(task)
    keys = recipe.keys
    handlers = _train_section(task)["handlers"]
    if task.task_type == "segmentation":  # the official validation-loss pass in train mode, before the evaluation
        handlers.insert(
            1,
            {
                "_target_": f"{PAPER_MODULE}.TrainModeValidationPass",
                "data_loader": "@validate#dataloader",
                "network": "@network",
                "loss_function": "@loss",
                "device": "@device",
                "interval": "@val_interval",
            },
        )
    if task.task_type == "classification":  # the official order: augment the original image, then resize
        load, resize = load_config(keys), [resize_config("@image_size")] + rgb_unit_config()
        final = normalise_config()
    else:  # resize, augment on 0-255 values (RGB), then scale to [0, 1]
        load = load_config(keys)
        resize = [resize_config("@image_size", with_label=True), rgb_unit_config()[0]]
        final = rgb_unit_config()[1:] + normalise_config()
    cfg: dict[str, Any] = {
        "max_epochs": recipe.paper_max_epochs,
        **PAPER_SETTINGS,
        **recipe.paper_network_overrides(task),
        "loss": recipe.paper_loss(task),
        "optimizer": {"_target_": f"{PAPER_MODULE}.build_paper_optimizer", "model": "@network", "lr": "@learning_rate"},
        "lr_scheduler": {
            "_target_": f"{PAPER_MODULE}.PaperLRSchedule",
            "optimizer": "@optimizer",
            "base_lr": "@learning_rate",
            "warmup_epochs": "@warmup_epochs",
            "max_epochs": "@max_epochs",
        },
        "train#load_transforms": load,
        "train#resize_transforms": resize,
        "train#deterministic_transforms": "$@train#load_transforms + @train#resize_transforms",
        "train#random_transforms": recipe.paper_augmentations(task),
        "train#final_transforms": final,
        "train#preprocessing#transforms": (
            "$@train#load_transforms + @train#random_transforms + @train#resize_transforms + @train#final_transforms"
            if task.task_type == "classification"
            else "$@train#deterministic_transforms + @train#random_transforms + @train#final_transforms"
        ),
        "train#dataloader#worker_init_fn": {"_target_": f"{PAPER_MODULE}.paper_worker_init_fn", "_mode_": "callable"},
        "train#handlers": handlers,
        "train#postprocessing#transforms": recipe.paper_val_postprocessing(task),
        "train#key_metric": recipe.paper_key_metric(recipe.train_metric, task),
        "train#trainer#amp": False,
        "validate#postprocessing#transforms": recipe.paper_val_postprocessing(task),
        "validate#key_metric": recipe.paper_key_metric(recipe.val_metric, task),
        "validate#evaluator#amp": False,
    }
    return cfg


def inference_paper_config(task: Task) -> dict[str, Any]:
    """configs/inference_paper.json (segmentation), merged over inference.json: the official network (decoder,
    one sigmoid channel for a binary task) and its output rule, for weights trained with the paper preset."""
    recipe = recipe_for(task)
    return {
        **recipe.paper_network_overrides(task),
        "postprocessing#transforms": recipe.paper_infer_postprocessing(task),  # type: ignore[attr-defined]
    }


def paper_differences(task: Task) -> list[tuple[str, str, str]]:
    """(item, our default, the paper preset = the official scripts) for every setting the two differ in."""
    recipe = recipe_for(task)
    seg = task.task_type == "segmentation"
    rows = [
        ("epochs", str(DEFAULTS["max_epochs"]), str(recipe.paper_max_epochs)),
        (
            "optimiser",
            f"AdamW, weight decay {DEFAULTS['weight_decay']}, layer decay {DEFAULTS['layer_decay']} "
            "(a group per layer, no decay on norms/biases)",
            "AdamW betas (0.9, 0.999), weight decay 0, ONE learning rate for every parameter (the official layer-decay "
            "groups are built but never take effect: quirk *layer decay off*)",
        ),
        (
            "schedule",
            f"MONAI `WarmupCosineSchedule`, {DEFAULTS['warmup_epochs']} warm-up epochs (epoch 0 trains at LR 0)",
            "LR·(e+1)/5 for epochs 0-4, then a warm-up-then-linear scheduler stepped from epoch 5 that warms up a "
            "second time (multipliers 1, 1, 0.6, 0.8, 1, 1 for epochs 4-9: quirk *double warm-up*), linear decay "
            "towards 1e-6, last epoch at " + ("1.5e-6" if seg else "2.25e-6"),
        ),
        ("drop path", "0.1", f"{recipe.paper_drop_path}"),
        ("precision", "AMP on CUDA", "fp32"),
        (
            "seed / workers",
            f"MONAI `set_determinism({DEFAULTS['seed']})`, {DEFAULTS['num_workers']} workers",
            "seed 42 (the maintainer says the paper's experiments used 1234: pass `--seed 1234`), cuDNN "
            "deterministic, 8 workers reseeded to 42 + worker id at every epoch (quirk *worker reseeding*: each "
            "epoch replays the same augmentation stream per worker)",
        ),
        (
            "split",
            "`tinyusfm-monai prepare`: the publisher's split, else 70/10/20 by sha256 of the patient (or image) id, "
            "stratified, seed 20251022",
            "no split code: ready-made train/val/test folders (`tinyusfm-monai prepare_official`, or your lists with "
            "`prepare --split_file`); `prepare --split_rule maintainer-reading` is OUR reading of the maintainer's "
            "'stratified 7:1:2, seed 1234', not the paper's split",
        ),
        *recipe.paper_rows(task),
    ]
    return rows


def evaluate_config(task: Task) -> dict[str, Any]:
    """Merged over train.json: the test split, the trained weights, the full metric report."""
    return {
        "validate#dataset#data": _datalist("test"),
        "validate#handlers": [
            {
                "_target_": "tinyusfm_monai.handlers.weights.TrainedWeightsLoader",
                "load_path": "$@ckpt_dir + '/model.pt'",
                "network": "@network",
                "bundle_root": "@bundle_root",
            },
            {"_target_": "StatsHandler", "iteration_log": False},
            recipe_for(task).report(task),
        ],
        "initialize": ["$monai.utils.set_determinism(seed=@seed)"],
        "run": ["$@validate#evaluator.run()"],
    }


def inference_config(task: Task) -> dict[str, Any]:
    """configs/inference.json: a folder (or datalist) of images in, probabilities CSV or label PNGs out."""
    cfg = _common(task)
    cfg["imports"] = cfg["imports"] + ["$import numpy"]
    return {
        **cfg,
        "batch_size": 1,
        "num_workers": 0,
        # CPU threads; 0 = one per physical core idle at start-up (or $TINYUSFM_NUM_THREADS)
        "num_threads": 0,
        "datalist": {
            "_target_": "tinyusfm_monai.data.datalist.inference_datalist",
            "task": "@task",
            "dataset_dir": "@dataset_dir",
        },
        "preprocessing": {"_target_": "Compose", "transforms": preprocessing_config("@image_size", ANY_FORMAT)},
        # an unreadable file is logged (position, file name: cause) and skipped; the others are still processed
        "dataset": {
            "_target_": "tinyusfm_monai.data.skipping_dataset.SkipUnreadableDataset",
            "data": "@datalist",
            "transform": "@preprocessing",
        },
        "dataloader": {
            "_target_": "DataLoader",
            "dataset": "@dataset",
            "batch_size": "@batch_size",
            "num_workers": "@num_workers",
        },
        # SimpleInferer without MetaTensor dispatch inside the network (much faster on CPU, same outputs)
        "inferer": {"_target_": "tinyusfm_monai.inferers.inferer.PlainTensorInferer"},
        # a step that fails on one item (e.g. an image its writer cannot write) is logged and skipped per item
        "postprocessing": {
            "_target_": "tinyusfm_monai.transforms.utility.SkipOnErrorCompose",
            "transforms": recipe_for(task).infer_postprocessing(task),
        },
        "handlers": [
            {
                "_target_": "tinyusfm_monai.handlers.weights.TrainedWeightsLoader",
                "load_path": "$@ckpt_dir + '/model.pt'",
                "network": "@network",
                "bundle_root": "@bundle_root",
            },
            {"_target_": "StatsHandler", "iteration_log": False},
            "@progress",
        ],
        # a progress line every 10 s; the run exits 3 when inputs were skipped, 4 when results were not written
        "progress": {
            "_target_": "tinyusfm_monai.handlers.progress.InferenceProgress",
            "total": "$len(@datalist)",
            "postprocessing": "@postprocessing",
        },
        "evaluator": {
            "_target_": "SupervisedEvaluator",
            "device": "@device",
            "val_data_loader": "@dataloader",
            "network": "@network",
            "inferer": "@inferer",
            "postprocessing": "@postprocessing",
            "val_handlers": "@handlers",
            "amp": False,
        },
        # oversubscribed OpenMP threads are many times slower (benchmarks/threads.py)
        "initialize": ["$monai.utils.set_determinism(seed=0)", "$@configure_threads"],
        "configure_threads": {
            "_target_": "tinyusfm_monai.deploy.threads.configure_inference_threads",
            "threads": "@num_threads",
        },
        "run": ["$@evaluator.run()", "$@progress.finish()"],
    }


def inference_onnx_config(task: Task) -> dict[str, Any]:
    """Merged over inference.json: the same pipeline, with the network run by ONNX Runtime."""
    return {
        "onnx_file": "$@bundle_root + '/models/model.onnx'",
        # torch only runs the pre/postprocessing here: one thread (ONNX Runtime gets the cores, and torch's OpenMP
        # barriers cannot stall when another process takes a core: 4x slower per image under load, RESULTS.md)
        "configure_threads#torch_threads": 1,
        "inferer": {
            "_target_": "tinyusfm_monai.inferers.inferer.OnnxInferer",
            "onnx_file": "@onnx_file",
            "threads": "@configure_threads",  # the count inference.json chose at start-up
        },
    }


def inference_openvino_config(task: Task) -> dict[str, Any]:
    """Merged over inference.json: the same pipeline, with the network run by OpenVINO (PyTorch without it)."""
    return {
        # written by `tinyusfm-monai export --format openvino`; models/model_int8.xml for the INT8 model. Used when
        # it matches models/model.pt, else the loaded network is converted in memory.
        "openvino_file": "$@bundle_root + '/models/model.xml'",
        # "f32" or "bf16", always explicit: OpenVINO's own default on CPUs with AVX-512 BF16 is bf16
        "openvino_precision": "f32",
        # torch only runs the pre/postprocessing here: one thread (OpenVINO gets the cores, and torch's OpenMP
        # barriers cannot stall when another process takes a core: 4x slower per image under load, RESULTS.md)
        "configure_threads#torch_threads": 1,
        # decode and resize the next image in a thread while OpenVINO runs this one: per image 19.9 -> 15.0 ms
        # (classification) and 32.4 -> 28.6 ms (segmentation) on the idle 2-core machine (RESULTS.md, table 4)
        "dataloader#_target_": "ThreadDataLoader",
        "inferer": {
            "_target_": "tinyusfm_monai.inferers.inferer.OpenVinoInferer",
            "model_file": "@openvino_file",
            "precision": "@openvino_precision",
            "threads": "@configure_threads",  # the count inference.json chose at start-up
        },
    }


def multi_gpu_config(task: Task) -> dict[str, Any]:
    """Merged over train.json for `torchrun`: DDP network, distributed samplers, rank-0 side effects."""
    return {
        "imports": ["$import torch", "$import os", "$import torch.distributed as dist"],
        "device": "$torch.device('cuda:' + os.environ['LOCAL_RANK'] if torch.cuda.is_available() else 'cpu')",
        "network": {
            "_target_": "torch.nn.parallel.DistributedDataParallel",
            "module": "$@network_def.to(@device)",
            "device_ids": "$[@device] if torch.cuda.is_available() else None",
        },
        "optimizer#params#model": "@network_def",
        "train#sampler": {
            "_target_": "DistributedSampler",
            "dataset": "@train#dataset",
            "even_divisible": True,
            "shuffle": True,
        },
        "train#dataloader#sampler": "@train#sampler",
        "train#dataloader#shuffle": False,
        "train#trainer#train_handlers": "$@train#handlers + (@train#rank0_handlers if dist.get_rank() == 0 else [])",
        "validate#sampler": {
            "_target_": "DistributedSampler",
            "dataset": "@validate#dataset",
            "even_divisible": False,
            "shuffle": False,
        },
        "validate#dataloader#sampler": "@validate#sampler",
        "validate#evaluator#val_handlers": "$None if dist.get_rank() > 0 else @validate#handlers",
        "initialize": [
            "$dist.is_initialized() or "
            "dist.init_process_group(backend='nccl' if torch.cuda.is_available() else 'gloo')",
            "$torch.cuda.set_device(@device) if torch.cuda.is_available() else None",
            "$monai.utils.set_determinism(seed=@seed)",
            "$@load_pretrained",
        ],
        "run": ["$@train#trainer.run()"],
        "finalize": ["$dist.is_initialized() and dist.destroy_process_group()"],
    }


def metadata(task: Task, versions: dict[str, str]) -> dict[str, Any]:
    """configs/metadata.json (20240725 schema), every field from the registry and the recipe."""
    ds = DATASETS[task.dataset]
    recipe = recipe_for(task)
    kind = recipe.describe(task)
    size = DEFAULTS["image_size"]
    return {
        "schema": SCHEMA_URL,
        "version": BUNDLE_VERSION,
        "changelog": CHANGELOG,
        "monai_version": versions["monai"],
        "pytorch_version": versions["torch"],
        "numpy_version": versions["numpy"],
        # MONAI 1.6 treats "optional_packages_version" as a deprecated alias and overwrites the required list
        # with it, so every package is listed here.
        "required_packages_version": required_packages(versions),
        "supported_apps": {"monai-label": "0.8.5"},
        "name": f"TinyUSFM {ds.title.split(':')[0]} {task.task_type}",
        "task": f"{ds.organ.capitalize()} ultrasound {kind}",
        "description": (
            f"TinyUSFM (5.5M-parameter ViT-Tiny/16 ultrasound foundation model) fine-tuned for {ds.organ} ultrasound "
            f"{kind} on {ds.title}. UniUS-Bench task '{task.name}'. Generated by tinyusfm-monai from its task registry."
        ),
        "authors": "tinyusfm-monai contributors",
        "copyright": "Copyright (c) tinyusfm-monai contributors",
        "data_source": ds.url,
        "data_type": "png",
        "image_classes": "RGB (grayscale B-mode replicated to 3 channels), resized to 224x224, ImageNet mean/std",
        "label_classes": ", ".join(f"{i}: {n}" for i, n in enumerate(task.labels)),
        "pred_classes": ", ".join(f"{i}: {n}" for i, n in enumerate(task.labels)),
        "intended_use": (
            "Research use only. Not a medical device; not validated for clinical decisions. Trained weights are only "
            "as good as the data they were fine-tuned on; the embedded phantom is for smoke tests, not for diagnosis."
        ),
        "references": [
            "Ma C, et al. TinyUSFM: towards compact and efficient ultrasound foundation models. arXiv:2510.19239; "
            "IEEE JBHI 2026, doi:10.1109/JBHI.2026.3678309.",
            "Jiao J, et al. USFM: a universal ultrasound foundation model generalized to tasks and organs towards "
            "label efficient image analysis. Medical Image Analysis 2024.",
            ds.citation,
        ],
        "network_data_format": {
            "inputs": {"image": input_format(size)},
            "outputs": {"pred": recipe.pred_format(task, size)},
        },
    }


def required_packages(versions: dict[str, str]) -> dict[str, str]:
    """What `monai.bundle` / model-zoo CI pip-install before running a bundle: this project's package at the
    version of the wheel built from this tree, and the public packages its configs use."""
    return {
        "tinyusfm-monai": versions["tinyusfm-monai"],
        "pytorch-ignite": versions["ignite"],
        "tensorboard": versions["tensorboard"],
        "matplotlib": versions["matplotlib"],
    }


def input_format(size: int, value_range: list[float] | None = None, note: str = "") -> dict[str, Any]:
    """The `image` input of every bundle: 3 x size x size, RGB, ImageNet-normalised."""
    return {
        "type": "image",
        "format": "magnitude",
        "modality": "US",
        "num_channels": 3,
        "spatial_shape": [size, size],
        "dtype": "float32",
        "value_range": value_range or [],
        "is_patch_data": False,
        "channel_def": {str(i): c + note for i, c in enumerate("RGB")},
    }
