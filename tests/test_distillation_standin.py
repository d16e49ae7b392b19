"""The stand-in teachers: the `shared` one (labels of other phantom tasks) has seen the probes' concepts, the
`disjoint` one (recipes no evaluated task uses) has not. Tiny teachers (32 px, 64 wide, 4 blocks, 600 steps: ~15 s
each on one thread)."""

from __future__ import annotations

import pytest
import torch

from tinyusfm_monai.data.phantom_tasks import class_recipes
from tinyusfm_monai.data.registry import get_task
from tinyusfm_monai.distillation import standin

torch.set_num_threads(1)

SIZE = 32
# "at chance": a head's zero-shot accuracy (majority mapping fitted on 60 images, scored on 120) at most this much
# above 1 / number of classes (~3 standard errors of a 120-image accuracy near 0.5)
MARGIN = 0.15


def _fit(kind: str):
    definition = standin.small_teacher_def(SIZE, embed_dim=64, depth=4, num_heads=4)
    return standin.fit_standin(SIZE, steps=600, n_train=120, definition=definition, lr=1e-3, kind=kind)


def _excess_over_chance(kind: str) -> dict[str, float]:
    """Per evaluated task, the best of the teacher's heads: zero-shot accuracy minus chance."""
    net, heads = _fit(kind)
    out = {}
    for task in standin.EVALUATED_TASKS:
        chance = 1 / get_task(task).num_classes
        out[task] = max(standin.zero_shot_accuracy(net, h, task, SIZE, 60, 120) for h in heads) - chance
    return out


def test_disjoint_recipes_are_used_by_no_evaluated_task():
    used = {r for t in standin.EVALUATED_TASKS for r in class_recipes(get_task(t).num_classes)}
    assert not used & set(standin.DISJOINT_RECIPES)
    assert all(r.lesion != "none" for r in standin.DISJOINT_RECIPES)  # "lesion or not" is no teacher label either
    # the shared stand-in's tasks draw their classes from the evaluated tasks' recipes: the leak this guards against
    assert used <= {r for t in standin.STANDIN_TASKS for r in class_recipes(get_task(t).num_classes)}
    x, y = standin.disjoint_task_images("tn3k_classification", 8, SIZE, 0)
    assert x.shape == (8, 3, SIZE, SIZE) and x.dtype == torch.uint8 and y.tolist() == [0, 1, 2, 3] * 2
    with pytest.raises(ValueError, match="kind"):
        standin.standin_data("leaky", standin.STANDIN_TASKS, 2, SIZE, 0)


def test_disjoint_standin_heads_are_at_chance_on_every_evaluated_task_and_the_shared_ones_are_not():
    disjoint = _excess_over_chance("disjoint")
    assert all(v <= MARGIN for v in disjoint.values()), disjoint
    shared = _excess_over_chance("shared")  # the check can fail: the shared stand-in knows aul's classes
    assert shared["aul_classification"] > MARGIN, shared
