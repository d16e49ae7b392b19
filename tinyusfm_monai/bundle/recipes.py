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

# ±30° rotation, as in the official fine-tuning scripts (both presets).
ROTATION_RADIANS = round(math.pi / 6, 6)
PAPER = "tinyusfm_monai.handlers.paper"
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
    rotation_prob: float  # probability of the ±30° rotation in our defaults
    paper_max_epochs: int  # the official script's --num_epochs
    paper_drop_path: float  # the official model's drop path rate

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

    # ---- the `paper` preset: the official scripts' behaviour (configs/train_paper.json) ----

    @abstractmethod
    def paper_network_overrides(self, task: Task) -> dict[str, Any]:
        """`network_def#...` keys that turn our network into the official one."""

    @abstractmethod
    def paper_loss(self, task: Task) -> dict[str, Any]: ...

    @abstractmethod
    def paper_augmentations(self, task: Task) -> list[dict[str, Any]]:
        """The official training augmentations, in the official order."""

    def paper_key_metric(self, name: str, task: Task) -> dict[str, Any]:
        return self.key_metric(name)

    def paper_val_postprocessing(self, task: Task) -> list[dict[str, Any]]:
        return self.val_postprocessing(task)

    def paper_rows(self, task: Task) -> list[tuple[str, str, str]]:
        """Difference-table rows specific to the task type: (item, our default, the paper preset)."""
        return []

    def augmentations(self, task: Task) -> list[dict[str, Any]]:
        """Our default augmentations: flips (where valid for the task), rotation ±30°, then the type's extras."""
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
    paper_max_epochs = 400
    paper_drop_path = 0.0

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

    def paper_network_overrides(self, task: Task) -> dict[str, Any]:
        return {"network_def#drop_path_rate": self.paper_drop_path}

    def paper_loss(self, task: Task) -> dict[str, Any]:
        return self.loss()

    def paper_augmentations(self, task: Task) -> list[dict[str, Any]]:
        """On the original-size image (the resize comes after): h-flip 0.5, v-flip 0.5, rotation ±30° always with
        nearest interpolation (torchvision `RandomRotation`'s default)."""
        flips = [{"_target_": "RandFlipd", "keys": self.keys, "prob": 0.5, "spatial_axis": axis} for axis in (1, 0)]
        rotate = {
            "_target_": "RandRotated",
            "keys": self.keys,
            "range_x": ROTATION_RADIANS,
            "prob": 1.0,
            "mode": "nearest",
            "padding_mode": "zeros",
            "keep_size": True,
        }
        return flips + [rotate]

    def paper_rows(self, task: Task) -> list[tuple[str, str, str]]:
        return [
            (
                "augmentation",
                "resize first; flips 0.5 each, rotation ±30° always (bilinear)",
                "on the original-size image: h-flip 0.5, v-flip 0.5, rotation ±30° always (nearest), then resize",
            )
        ]

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
    paper_max_epochs = 1000
    paper_drop_path = 0.1

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

    def paper_network_overrides(self, task: Task) -> dict[str, Any]:
        return {
            "network_def#drop_path_rate": self.paper_drop_path,
            "network_def#decoder": "official",
        }

    def paper_loss(self, task: Task) -> dict[str, Any]:
        return {"_target_": f"{PAPER}.PaperSegLoss", "num_classes": task.num_classes}

    def paper_augmentations(self, task: Task) -> list[dict[str, Any]]:
        """After the resize, on 0-255 values, in the official order: flips (lesion tasks only), rotation ±30°
        (p 0.5, nearest), gamma (p 0.5), scale 1-1.3 then random crop (p 0.5), contrast jitter (p 0.5)."""
        aug: list[dict[str, Any]] = []
        if task.flip_augment:
            aug += [{"_target_": "RandFlipd", "keys": self.keys, "prob": 0.5, "spatial_axis": axis} for axis in (1, 0)]
        aug.append(
            {
                "_target_": "RandRotated",
                "keys": self.keys,
                "range_x": ROTATION_RADIANS,
                "prob": 0.5,
                "mode": "nearest",
                "padding_mode": "zeros",
                "keep_size": True,
            }
        )
        return aug + [
            {"_target_": "tinyusfm_monai.transforms.paper.RandGammaUint8d", "keys": "image", "prob": 0.5},
            {
                "_target_": "tinyusfm_monai.transforms.paper.RandScaleCropd",
                "keys": self.keys,
                "prob": 0.5,
                "scale": [1.0, 1.3],
                "mode": self.interpolation,
            },
            {"_target_": "tinyusfm_monai.transforms.paper.RandContrastJitterd", "keys": "image", "prob": 0.5},
        ]

    def paper_key_metric(self, name: str, task: Task) -> dict[str, Any]:
        return {
            name: {
                "_target_": "tinyusfm_monai.evaluation.reports.OfficialDice",
                "num_classes": task.num_classes,
                "output_transform": FROM_ENGINE,
            }
        }

    def paper_val_postprocessing(self, task: Task) -> list[dict[str, Any]]:
        if task.num_classes == 2:
            return [
                {"_target_": "Activationsd", "keys": "pred", "sigmoid": True},
                {"_target_": "AsDiscreted", "keys": "pred", "threshold": 0.5},
            ]
        return [{"_target_": "AsDiscreted", "keys": "pred", "argmax": True}]

    def paper_infer_postprocessing(self, task: Task) -> list[dict[str, Any]]:
        """Binary: sigmoid, back to the original size, > 0.5 (the official rule); more classes: as ours."""
        ours = self.infer_postprocessing(task)
        if task.num_classes != 2:
            return ours
        return [
            {"_target_": "Activationsd", "keys": "pred", "sigmoid": True},
            ours[1],  # Invertd
            {"_target_": "AsDiscreted", "keys": "pred", "threshold": 0.5},
            *ours[3:],  # cast, save
        ]

    def paper_rows(self, task: Task) -> list[tuple[str, str, str]]:
        binary = task.num_classes == 2
        return [
            (
                "decoder",
                "ours: transposed conv / max-pool pyramid, MONAI FPN (nearest, no BN): 7.21 M parameters",
                "official: 1×1 conv 192→48 + bilinear ×4/×2/×1/×0.5, FPN 128 ch (conv+BN+ReLU, bilinear), "
                "Dropout2d 0.1: 6.18 M parameters (`decoder='official'`)",
            ),
            (
                "loss / output",
                "Dice + cross-entropy, softmax over " + str(task.num_classes) + " channels",
                "1 channel, BCE-with-logits, sigmoid > 0.5" if binary else "cross-entropy, argmax",
            ),
            (
                "augmentation",
                self.augmentation_text(task) + " (zoom crops the centre; gamma on the min-max range; contrast "
                "unclipped)",
                ("flips (h/v) p 0.5, " if task.flip_augment else "")
                + "rotation ±30° p 0.5 (nearest), gamma 0.5-1.9 on 0-255 values p 0.5, scale 1-1.3 then random "
                "crop p 0.5, contrast 0.5-2 clipped p 0.5, in this order, after the resize",
            ),
            (
                "model selection",
                "MONAI mean Dice (both-empty images: Dice 1)",
                "per-image Dice by the official rules"
                + (" (both empty: Dice 0, medpy)" if binary else " (class absent from both: Dice 1)"),
            ),
            (
                "HD95 with empty masks",
                "both empty: 0; one empty: the image side",
                "one empty: 224; " + ("both empty: 0" if binary else "class absent from both: NaN, skipped"),
            ),
            (
                "validation pass",
                "eval mode",
                "a loss pass in TRAIN mode first (BatchNorm statistics move, dropout on), then the evaluation",
            ),
        ]

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
