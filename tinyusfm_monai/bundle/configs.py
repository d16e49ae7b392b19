"""The bundle configs of a task, as plain dicts: one definition for all 19 task bundles.

Everything a bundle says about its task (classes, labels, organ, licence, citation) comes from the
registry; everything it says about training (schedule, augmentation, loss) is written once here.
The JSON reads like a model-zoo bundle: standard IDs, MONAI components, and `tinyusfm_monai`
components by full dotted path.
"""

from __future__ import annotations

import math
from typing import Any

from tinyusfm_monai.data.registry import DATASETS, Task
from tinyusfm_monai.data.transforms import ANY_FORMAT, load_config, normalise_config, preprocessing_config, resize_config

SCHEMA_URL = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
BUNDLE_VERSION = "0.1.0"
CHANGELOG = {"0.1.0": "first release: TinyUSFM fine-tuning, evaluation and inference, generated from the task registry"}

# Official fine-tuning recipe (TinyUSFM repo): AdamW lr 1e-4, 5 warm-up epochs, batch 8, 224², seed 42.
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
# Official segmentation augmentation flips only for lesion ("tumor") tasks: anatomy with a fixed layout
# (heart apex up, pubic symphysis left of the head, muscle under skin) would be mislabelled by flips.
ROTATION_RADIANS = round(math.pi / 6, 6)  # ±30°




def _augment(task: Task) -> list[dict[str, Any]]:
    """The official augmentations: flips, rotation ±30°; for segmentation also zoom, gamma and contrast."""
    seg = task.task_type == "segmentation"
    keys: Any = ["image", "label"] if seg else "image"
    modes: Any = ["bilinear", "nearest"] if seg else "bilinear"
    aug: list[dict[str, Any]] = []
    if task.flip_augment:
        aug += [
            {"_target_": "RandFlipd", "keys": keys, "prob": 0.5, "spatial_axis": 1},
            {"_target_": "RandFlipd", "keys": keys, "prob": 0.5, "spatial_axis": 0},
        ]
    aug.append(
        {
            "_target_": "RandRotated",
            "keys": keys,
            "range_x": ROTATION_RADIANS,
            "prob": 0.5 if seg else 1.0,
            "mode": modes,
            "padding_mode": "zeros",
            "keep_size": True,
        }
    )
    if seg:
        aug += [
            {"_target_": "RandZoomd", "keys": keys, "prob": 0.5, "min_zoom": 1.0, "max_zoom": 1.3, "mode": modes},
            {"_target_": "RandAdjustContrastd", "keys": "image", "prob": 0.5, "gamma": [0.5, 2.0]},
            {"_target_": "RandScaleIntensityFixedMeand", "keys": "image", "prob": 0.5, "factors": [-0.5, 1.0]},
        ]
    return aug


def _network_def(task: Task) -> dict[str, Any]:
    if task.task_type == "segmentation":
        return {
            "_target_": "tinyusfm_monai.networks.ViTSegmenter",
            "backbone": "@backbone",
            "num_classes": task.num_classes,
            "img_size": "@image_size",
            "drop_path_rate": 0.1,
        }
    return {
        "_target_": "tinyusfm_monai.networks.build_backbone",
        "name": "@backbone",
        "num_classes": task.num_classes,
        "img_size": "@image_size",
        "drop_path_rate": 0.1,
    }


def _datalist(split: str) -> dict[str, Any]:
    return {
        "_target_": "tinyusfm_monai.data.datalist.task_datalist",
        "task": "@task",
        "dataset_dir": "@dataset_dir",
        "split": split,
    }


def _common(task: Task) -> dict[str, Any]:
    return {
        "imports": ["$import torch"],
        "bundle_root": {"_target_": "tinyusfm_monai.bundle.components.default_bundle_root"},
        "task": task.name,
        "dataset_dir": "",
        "output_dir": "$@bundle_root + '/eval'",
        "image_size": DEFAULTS["image_size"],
        "backbone": "tinyusfm",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": _network_def(task),
        "network": "$@network_def.to(@device)",
    }


def _val_postprocessing(task: Task) -> dict[str, Any]:
    if task.task_type == "segmentation":
        return {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "AsDiscreted", "keys": ["pred", "label"], "argmax": [True, False], "to_onehot": task.num_classes},
            ],
        }
    return {"_target_": "Compose", "transforms": [{"_target_": "Activationsd", "keys": "pred", "softmax": True}]}


def _key_metric(task: Task, name: str) -> dict[str, Any]:
    if task.task_type == "segmentation":
        metric = {
            "_target_": "MeanDice",
            "include_background": False,
            "output_transform": "$monai.handlers.from_engine(['pred', 'label'])",
        }
    else:
        metric = {"_target_": "ignite.metrics.Accuracy", "output_transform": "$monai.handlers.from_engine(['pred', 'label'])"}
    return {name: metric}


def train_config(task: Task) -> dict[str, Any]:
    seg = task.task_type == "segmentation"
    keys = ["image", "label"] if seg else ["image"]
    loss = (
        {"_target_": "DiceCELoss", "to_onehot_y": True, "softmax": True, "include_background": False}
        if seg
        else {"_target_": "torch.nn.CrossEntropyLoss"}
    )
    val_metric = "val_mean_dice" if seg else "val_accuracy"
    cfg = _common(task)
    cfg.update(
        {
            "ckpt_dir": "$@bundle_root + '/models'",
            "pretrained": "",
            "resume": True,
            "seed": DEFAULTS["seed"],
            "max_epochs": DEFAULTS["max_epochs"],
            "warmup_epochs": DEFAULTS["warmup_epochs"],
            "val_interval": DEFAULTS["val_interval"],
            "batch_size": DEFAULTS["batch_size"],
            "num_workers": DEFAULTS["num_workers"],
            "learning_rate": DEFAULTS["learning_rate"],
            "weight_decay": DEFAULTS["weight_decay"],
            "layer_decay": DEFAULTS["layer_decay"],
            "loss": loss,
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
            "train": {
                "deterministic_transforms": load_config(keys) + [resize_config("@image_size", with_label=seg)],
                "random_transforms": _augment(task),
                "final_transforms": normalise_config(),
                "preprocessing": {
                    "_target_": "Compose",
                    "transforms": "$@train#deterministic_transforms + @train#random_transforms + @train#final_transforms",
                },
                "dataset": {"_target_": "Dataset", "data": _datalist("training"), "transform": "@train#preprocessing"},
                "dataloader": {
                    "_target_": "DataLoader",
                    "dataset": "@train#dataset",
                    "batch_size": "@batch_size",
                    "shuffle": True,
                    "num_workers": "@num_workers",
                },
                "inferer": {"_target_": "SimpleInferer"},
                "postprocessing": _val_postprocessing(task),
                "handlers": [
                    {"_target_": "LrScheduleHandler", "lr_scheduler": "@lr_scheduler", "print_lr": True},
                    {
                        "_target_": "ValidationHandler",
                        "validator": "@validate#evaluator",
                        "epoch_level": True,
                        "interval": "@val_interval",
                    },
                    {
                        "_target_": "tinyusfm_monai.bundle.handlers.ResumeHandler",
                        "path": "$@ckpt_dir + '/last.pt'",
                        "save_dict": {
                            "model": "@network",
                            "optimizer": "@optimizer",
                            "lr_scheduler": "@lr_scheduler",
                            "best_model": "@validate#best_model",
                        },
                        "enabled": "@resume",
                    },
                    {"_target_": "ignite.handlers.ProgressBar", "persist": False},
                    {"_target_": "StatsHandler", "tag_name": "train_loss", "output_transform": "$monai.handlers.from_engine(['loss'], first=True)"},
                    {
                        "_target_": "TensorBoardStatsHandler",
                        "log_dir": "@output_dir",
                        "tag_name": "train_loss",
                        "output_transform": "$monai.handlers.from_engine(['loss'], first=True)",
                    },
                ],
                "key_metric": _key_metric(task, "train_mean_dice" if seg else "train_accuracy"),
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
                    "train_handlers": "@train#handlers",
                    "amp": "$torch.cuda.is_available()",
                },
            },
            "validate": {
                "preprocessing": {
                    "_target_": "Compose",
                    "transforms": "$@train#deterministic_transforms + @train#final_transforms",
                },
                "dataset": {"_target_": "Dataset", "data": _datalist("validation"), "transform": "@validate#preprocessing"},
                "dataloader": {
                    "_target_": "DataLoader",
                    "dataset": "@validate#dataset",
                    "batch_size": "@batch_size",
                    "shuffle": False,
                    "num_workers": "@num_workers",
                },
                "inferer": {"_target_": "SimpleInferer"},
                "postprocessing": _val_postprocessing(task),
                "best_model": {
                    "_target_": "tinyusfm_monai.bundle.handlers.BestModelSaver",
                    "network": "@network",
                    "path": "$@ckpt_dir + '/model.pt'",
                    "metric_name": val_metric,
                },
                "handlers": [
                    "@validate#best_model",
                    {"_target_": "StatsHandler", "iteration_log": False},
                    {"_target_": "TensorBoardStatsHandler", "log_dir": "@output_dir", "iteration_log": False},
                ],
                "key_metric": _key_metric(task, val_metric),
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
            },
            "initialize": ["$monai.utils.set_determinism(seed=@seed)", "$@load_pretrained"],
            "run": ["$@train#trainer.run()"],
        }
    )
    return cfg


def evaluate_config(task: Task) -> dict[str, Any]:
    """Merged over train.json: the test split, the trained weights, the full metric report."""
    seg = task.task_type == "segmentation"
    report = (
        {
            "_target_": "tinyusfm_monai.evaluation.reports.SegmentationReport",
            "output_dir": "@output_dir",
            "label_names": list(task.labels),
        }
        if seg
        else {
            "_target_": "tinyusfm_monai.evaluation.reports.ClassificationReport",
            "output_dir": "@output_dir",
            "class_names": list(task.labels),
        }
    )
    return {
        "validate#dataset#data": _datalist("test"),
        "validate#handlers": [
            {
                "_target_": "tinyusfm_monai.bundle.handlers.TrainedWeightsLoader",
                "load_path": "$@ckpt_dir + '/model.pt'",
                "network": "@network",
                "bundle_root": "@bundle_root",
            },
            {"_target_": "StatsHandler", "iteration_log": False},
            report,
        ],
        "initialize": ["$monai.utils.set_determinism(seed=@seed)"],
        "run": ["$@validate#evaluator.run()"],
    }


def inference_config(task: Task) -> dict[str, Any]:
    seg = task.task_type == "segmentation"
    cfg = _common(task)
    preprocessing = preprocessing_config("@image_size", ANY_FORMAT)
    if seg:
        post = [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {
                "_target_": "Invertd",
                "keys": "pred",
                "transform": "@preprocessing",
                "orig_keys": "image",
                "nearest_interp": False,
                "to_tensor": True,
            },
            {"_target_": "tinyusfm_monai.data.argmax.ChannelArgmaxd", "keys": "pred"},
            {"_target_": "CastToTyped", "keys": "pred", "dtype": "$torch.uint8"},
            {
                "_target_": "SaveImaged",
                "keys": "pred",
                "output_dir": "@output_dir",
                "output_postfix": "seg",
                "output_ext": ".png",
                "output_dtype": "$numpy.uint8",
                "separate_folder": False,
                "writer": "tinyusfm_monai.data.writers.LabelPNGWriter",
                "print_log": False,
            },
        ]
    else:
        post = [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {
                "_target_": "tinyusfm_monai.data.writers.SaveProbabilitiesd",
                "keys": "pred",
                "class_names": list(task.labels),
                "output_dir": "@output_dir",
            },
        ]
    cfg["imports"] = cfg["imports"] + ["$import numpy"]
    cfg.update(
        {
            "ckpt_dir": "$@bundle_root + '/models'",
            "batch_size": 1,
            "num_workers": 0,
            # CPU threads; 0 = one per physical core idle at start-up (or $TINYUSFM_NUM_THREADS)
            "num_threads": 0,
            "datalist": {
                "_target_": "tinyusfm_monai.data.datalist.inference_datalist",
                "task": "@task",
                "dataset_dir": "@dataset_dir",
            },
            "preprocessing": {"_target_": "Compose", "transforms": preprocessing},
            # an unreadable file is logged (file: cause) and skipped; the others are still processed
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
            "inferer": {"_target_": "tinyusfm_monai.deploy.inferer.PlainTensorInferer"},
            "postprocessing": {"_target_": "Compose", "transforms": post},
            "handlers": [
                {
                    "_target_": "tinyusfm_monai.bundle.handlers.TrainedWeightsLoader",
                    "load_path": "$@ckpt_dir + '/model.pt'",
                    "network": "@network",
                    "bundle_root": "@bundle_root",
                },
                {"_target_": "StatsHandler", "iteration_log": False},
            ],
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
            "run": ["$@evaluator.run()"],
        }
    )
    return cfg


def inference_onnx_config(task: Task) -> dict[str, Any]:
    """Merged over inference.json: the same pipeline, with the network run by ONNX Runtime."""
    return {
        "onnx_file": "$@bundle_root + '/models/model.onnx'",
        "inferer": {
            "_target_": "tinyusfm_monai.deploy.inferer.OnnxInferer",
            "onnx_file": "@onnx_file",
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
        "train#sampler": {"_target_": "DistributedSampler", "dataset": "@train#dataset", "even_divisible": True, "shuffle": True},
        "train#dataloader#sampler": "@train#sampler",
        "train#dataloader#shuffle": False,
        "train#trainer#train_handlers": "$@train#handlers[: -3 if dist.get_rank() > 0 else None]",
        "validate#sampler": {"_target_": "DistributedSampler", "dataset": "@validate#dataset", "even_divisible": False, "shuffle": False},
        "validate#dataloader#sampler": "@validate#sampler",
        "validate#evaluator#val_handlers": "$None if dist.get_rank() > 0 else @validate#handlers",
        "initialize": [
            "$dist.is_initialized() or dist.init_process_group(backend='nccl' if torch.cuda.is_available() else 'gloo')",
            "$torch.cuda.set_device(@device) if torch.cuda.is_available() else None",
            "$monai.utils.set_determinism(seed=@seed)",
            "$@load_pretrained",
        ],
        "run": ["$@train#trainer.run()"],
        "finalize": ["$dist.is_initialized() and dist.destroy_process_group()"],
    }


def metadata(task: Task, versions: dict[str, str]) -> dict[str, Any]:
    ds = DATASETS[task.dataset]
    seg = task.task_type == "segmentation"
    channel_def = {str(i): name for i, name in enumerate(task.labels)}
    pred = (
        {
            "type": "image",
            "format": "segmentation",
            "num_channels": task.num_classes,
            "spatial_shape": [DEFAULTS["image_size"], DEFAULTS["image_size"]],
            "dtype": "float32",
            "value_range": [],
            "is_patch_data": False,
            "channel_def": channel_def,
        }
        if seg
        else {
            "type": "probabilities",
            "format": "classes",
            "num_channels": task.num_classes,
            "spatial_shape": [1, task.num_classes],
            "dtype": "float32",
            "value_range": [0, 1],
            "is_patch_data": False,
            "channel_def": channel_def,
        }
    )
    kind = "segmentation of " + ", ".join(task.labels[1:]) if seg else "classification (" + " / ".join(task.labels) + ")"
    return {
        "schema": SCHEMA_URL,
        "version": BUNDLE_VERSION,
        "changelog": CHANGELOG,
        "monai_version": versions["monai"],
        "pytorch_version": versions["torch"],
        "numpy_version": versions["numpy"],
        # MONAI 1.6 treats "optional_packages_version" as a deprecated alias and overwrites the required list
        # with it, so every package is listed here.
        "required_packages_version": {
            "tinyusfm-monai": versions["tinyusfm-monai"],
            "pytorch-ignite": versions["ignite"],
            "tensorboard": versions["tensorboard"],
            "matplotlib": versions["matplotlib"],
        },
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
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "magnitude",
                    "modality": "US",
                    "num_channels": 3,
                    "spatial_shape": [DEFAULTS["image_size"], DEFAULTS["image_size"]],
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": False,
                    "channel_def": {"0": "R", "1": "G", "2": "B"},
                }
            },
            "outputs": {"pred": pred},
        },
    }
