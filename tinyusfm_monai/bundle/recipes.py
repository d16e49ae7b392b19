"""What a task bundle's configs say because of its task type: one recipe per type, no branches elsewhere.

The config builders (`configs.py`), the bundle docs (`docs.py`) and the metadata ask the task's recipe for
everything that differs between classification and segmentation (network, loss, augmentation, metrics,
postprocessing, report, output description), so a third task type would be one more recipe, not another
`if` in a dozen places.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

from tinyusfm_monai.data.registry import Task

# Official fine-tuning recipe (TinyUSFM repo): rotation ±30°.
ROTATION_RADIANS = round(math.pi / 6, 6)
FROM_ENGINE = "$monai.handlers.from_engine(['pred', 'label'])"


class TaskRecipe(ABC):
    """The task-type-specific parts of a bundle. Subclasses fill in the class attributes and methods."""

    task_type: str
    keys: list[str]  # dictionary keys that are images (transformed together)
    interpolation: Any  # resampling mode(s) of `keys`
    val_metric: str
    train_metric: str
    loss_name: str  # in the docs
    metric_name: str  # in the docs
    output_name: str  # in the docs
    head_name: str  # in the docs
    labels_header: str  # first column of the docs' label table
    rotation_prob: float  # probability of the ±30° rotation (official: always for classification)

    @abstractmethod
    def network_def(self, task: Task) -> dict[str, Any]: ...

    @abstractmethod
    def loss(self) -> dict[str, Any]: ...

    def extra_augmentations(self) -> list[dict[str, Any]]:
        """Augmentations beyond the flips and rotation every task gets."""
        return []

    @abstractmethod
    def key_metric(self, name: str) -> dict[str, Any]: ...

    @abstractmethod
    def val_postprocessing(self, task: Task) -> list[dict[str, Any]]: ...

    @abstractmethod
    def report(self, task: Task) -> dict[str, Any]: ...

    @abstractmethod
    def infer_postprocessing(self, task: Task) -> list[dict[str, Any]]: ...

    @abstractmethod
    def pred_format(self, task: Task, image_size: int) -> dict[str, Any]: ...

    @abstractmethod
    def describe(self, task: Task) -> str: ...

    def augmentations(self, task: Task) -> list[dict[str, Any]]:
        """The official augmentations: flips (where valid for the task), rotation ±30°, then the type's extras."""
        aug: list[dict[str, Any]] = []
        if task.flip_augment:
            aug += [{"_target_": "RandFlipd", "keys": self.keys, "prob": 0.5, "spatial_axis": axis} for axis in (1, 0)]
        aug.append(
            {
                "_target_": "RandRotated",
                "keys": self.keys,
                "range_x": ROTATION_RADIANS,
                "prob": self.rotation_prob,
                "mode": self.interpolation,
                "padding_mode": "zeros",
                "keep_size": True,
            }
        )
        return aug + self.extra_augmentations()

    def augmentation_text(self, task: Task) -> str:
        return ("flips (h/v), " if task.flip_augment else "") + "rotation ±30°"


class ClassificationRecipe(TaskRecipe):
    task_type = "classification"
    keys = ["image"]
    interpolation = "bilinear"
    val_metric = "val_accuracy"
    train_metric = "train_accuracy"
    loss_name = "cross-entropy"
    metric_name = "accuracy"
    output_name = "class probabilities (softmax), one CSV row per image"
    head_name = "mean-pooled patch tokens → `fc_norm` → linear head"
    labels_header = "| index | class |"
    rotation_prob = 1.0

    def network_def(self, task: Task) -> dict[str, Any]:
        return {
            "_target_": "tinyusfm_monai.networks.build_backbone",
            "name": "@backbone",
            "num_classes": task.num_classes,
            "img_size": "@image_size",
            "drop_path_rate": 0.1,
        }

    def loss(self) -> dict[str, Any]:
        return {"_target_": "torch.nn.CrossEntropyLoss"}

    def key_metric(self, name: str) -> dict[str, Any]:
        return {name: {"_target_": "ignite.metrics.Accuracy", "output_transform": FROM_ENGINE}}

    def val_postprocessing(self, task: Task) -> list[dict[str, Any]]:
        return [{"_target_": "Activationsd", "keys": "pred", "softmax": True}]

    def report(self, task: Task) -> dict[str, Any]:
        return {
            "_target_": "tinyusfm_monai.evaluation.reports.ClassificationReport",
            "output_dir": "@output_dir",
            "class_names": list(task.labels),
        }

    def infer_postprocessing(self, task: Task) -> list[dict[str, Any]]:
        return [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {
                "_target_": "tinyusfm_monai.transforms.io.SaveProbabilitiesd",
                "keys": "pred",
                "class_names": list(task.labels),
                "output_dir": "@output_dir",
            },
        ]

    def pred_format(self, task: Task, image_size: int) -> dict[str, Any]:
        return {
            "type": "probabilities",
            "format": "classes",
            "num_channels": task.num_classes,
            "spatial_shape": [1, task.num_classes],
            "dtype": "float32",
            "value_range": [0, 1],
            "is_patch_data": False,
            "channel_def": {str(i): name for i, name in enumerate(task.labels)},
        }

    def describe(self, task: Task) -> str:
        return "classification (" + " / ".join(task.labels) + ")"


class SegmentationRecipe(TaskRecipe):
    task_type = "segmentation"
    keys = ["image", "label"]
    interpolation = ["bilinear", "nearest"]
    val_metric = "val_mean_dice"
    train_metric = "train_mean_dice"
    loss_name = "Dice + cross-entropy (MONAI `DiceCELoss`)"
    metric_name = "mean Dice (foreground)"
    output_name = "a label map (PNG, uint8, the registry's values) at the original image size"
    head_name = "a ViT → multi-scale pyramid (blocks 4/6/8/12) → FPN decoder"
    labels_header = "| value | label |"
    rotation_prob = 0.5

    def network_def(self, task: Task) -> dict[str, Any]:
        return {
            "_target_": "tinyusfm_monai.networks.ViTSegmenter",
            "backbone": "@backbone",
            "num_classes": task.num_classes,
            "img_size": "@image_size",
            "drop_path_rate": 0.1,
        }

    def loss(self) -> dict[str, Any]:
        return {"_target_": "DiceCELoss", "to_onehot_y": True, "softmax": True, "include_background": False}

    def extra_augmentations(self) -> list[dict[str, Any]]:
        return [
            {
                "_target_": "RandZoomd",
                "keys": self.keys,
                "prob": 0.5,
                "min_zoom": 1.0,
                "max_zoom": 1.3,
                "mode": self.interpolation,
            },
            {"_target_": "RandAdjustContrastd", "keys": "image", "prob": 0.5, "gamma": [0.5, 2.0]},
            {"_target_": "RandScaleIntensityFixedMeand", "keys": "image", "prob": 0.5, "factors": [-0.5, 1.0]},
        ]

    def augmentation_text(self, task: Task) -> str:
        return super().augmentation_text(task) + ", zoom 1–1.3, gamma 0.5–2, contrast 0.5–2 (each p=0.5)"

    def key_metric(self, name: str) -> dict[str, Any]:
        return {name: {"_target_": "MeanDice", "include_background": False, "output_transform": FROM_ENGINE}}

    def val_postprocessing(self, task: Task) -> list[dict[str, Any]]:
        return [
            {
                "_target_": "AsDiscreted",
                "keys": ["pred", "label"],
                "argmax": [True, False],
                "to_onehot": task.num_classes,
            },
        ]

    def report(self, task: Task) -> dict[str, Any]:
        return {
            "_target_": "tinyusfm_monai.evaluation.reports.SegmentationReport",
            "output_dir": "@output_dir",
            "label_names": list(task.labels),
        }

    def infer_postprocessing(self, task: Task) -> list[dict[str, Any]]:
        return [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {
                "_target_": "Invertd",
                "keys": "pred",
                "transform": "@preprocessing",
                "orig_keys": "image",
                "nearest_interp": False,
                "to_tensor": True,
            },
            {"_target_": "tinyusfm_monai.transforms.post.ChannelArgmaxd", "keys": "pred"},
            {"_target_": "CastToTyped", "keys": "pred", "dtype": "$torch.uint8"},
            {
                "_target_": "SaveImaged",
                "keys": "pred",
                "output_dir": "@output_dir",
                "output_postfix": "seg",
                "output_ext": ".png",
                "output_dtype": "$numpy.uint8",
                "separate_folder": False,
                "data_root_dir": {
                    "_target_": "tinyusfm_monai.data.datalist.inference_root",
                    "dataset_dir": "@dataset_dir",
                },
                "output_name_formatter": {
                    "_target_": "tinyusfm_monai.transforms.io.unique_output_name",
                    "_mode_": "callable",
                },
                "writer": "tinyusfm_monai.transforms.io.LabelPNGWriter",
                "print_log": False,
            },
        ]

    def pred_format(self, task: Task, image_size: int) -> dict[str, Any]:
        return {
            "type": "image",
            "format": "segmentation",
            "num_channels": task.num_classes,
            "spatial_shape": [image_size, image_size],
            "dtype": "float32",
            "value_range": [],
            "is_patch_data": False,
            "channel_def": {str(i): name for i, name in enumerate(task.labels)},
        }

    def describe(self, task: Task) -> str:
        return "segmentation of " + ", ".join(task.labels[1:])


RECIPES: dict[str, TaskRecipe] = {r.task_type: r for r in (ClassificationRecipe(), SegmentationRecipe())}


def recipe_for(task: Task) -> TaskRecipe:
    """The recipe of the task's type."""
    return RECIPES[task.task_type]
