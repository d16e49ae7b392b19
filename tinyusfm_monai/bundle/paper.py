"""The `paper` preset's training parts outside a bundle run: for step-by-step comparisons with the official scripts.

`paper_training_parts` parses the same two configs a user runs (`train.json` merged with `train_paper.json`, as the
generator writes them) and hands back the network, optimiser, LR scheduler and loss, so a test can feed them chosen
batches one step at a time without data loaders, handlers or the trainer.
"""

from __future__ import annotations

from typing import Any

from monai.bundle import ConfigParser

from tinyusfm_monai.data.registry import TASKS

from .configs import train_config, train_paper_config


def paper_parser(task_name: str, overrides: dict[str, Any] | None = None) -> ConfigParser:
    """A `ConfigParser` holding the task's train.json with train_paper.json merged over it (and `overrides`,
    config IDs such as `"image_size"` or `"network_def#img_size"`)."""
    if task_name not in TASKS:
        raise ValueError(f"unknown task {task_name!r}; known: {sorted(TASKS)}")
    task = TASKS[task_name]
    parser = ConfigParser(train_config(task))
    parser.update(train_paper_config(task))
    parser.update({"bundle_root": "."})
    if overrides:
        parser.update(overrides)
    return parser


def paper_training_parts(
    task_name: str,
    pretrained: str | None = None,
    device: str = "cpu",
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Network, optimiser, LR scheduler and loss of the paper preset of `task_name`, built from its configs.

    One training step is `optimizer.zero_grad(); loss(network(x), y).backward(); optimizer.step()` with the network
    in train mode; `lr_scheduler.step()` at the end of each epoch (the LR of epoch e is `paper_lr(e, ...)`). The
    network is built after whatever seeding the caller did (the official scripts seed 42 first); `pretrained`
    loads a backbone checkpoint as the bundle does. Returns {"network", "optimizer", "lr_scheduler", "loss",
    "parser"}.
    """
    parser = paper_parser(task_name, {"device": f"$torch.device('{device}')", **(overrides or {})})
    network = parser.get_parsed_content("network")
    if pretrained:
        from tinyusfm_monai.networks import load_pretrained

        load_pretrained(network, pretrained)
    return {
        "network": network,
        "optimizer": parser.get_parsed_content("optimizer"),
        "lr_scheduler": parser.get_parsed_content("lr_scheduler"),
        "loss": parser.get_parsed_content("loss"),
        "parser": parser,
    }
