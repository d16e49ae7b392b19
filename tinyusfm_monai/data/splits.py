"""Reproducible training/validation/test assignment.

Every user must get the same split from the same raw data, on any machine and numpy version, and a few
added or removed images must not reshuffle everybody else. So groups (patients, or images when a
publisher gives no patient id) are ordered by a keyed SHA-256 of their id rather than by a random
generator, then cut per class stratum. Publishers' own splits always win; when they only separate
train from test, the validation part is carved out of their training part by the same rule.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

SPLITS = ("training", "validation", "test")
DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)


@dataclass(frozen=True)
class Item:
    """What the split rule needs to know about one sample."""

    id: str
    group: str  # patient id, or the sample id where none exists
    stratum: str | None = None  # class name for classification, None for segmentation
    official: str | None = None  # the publisher's split, if any


def _hash_order(key: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def _cut(n: int, fractions: tuple[float, ...]) -> list[int]:
    """Largest-remainder rounding of n into parts; ties go to the smaller (held-out) parts."""
    raw = [n * f / sum(fractions) for f in fractions]
    counts = [int(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: (counts[i] - raw[i], fractions[i]))[: n - sum(counts)]:
        counts[i] += 1
    return counts


def _group_strata(items: Iterable[Item]) -> dict[str, str]:
    """Each group's stratum: its most frequent class (ties broken by name), so a patient is never cut."""
    per_group: dict[str, Counter] = defaultdict(Counter)
    for it in items:
        per_group[it.group][it.stratum or ""] += 1
    return {g: sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] for g, c in per_group.items()}


def grouped_split(items: list[Item], seed: int, fractions: tuple[float, ...], names: tuple[str, ...]) -> dict[str, str]:
    """Assign each item to one of `names` by group, stratified by the group's class. Returns id -> split."""
    strata = _group_strata(items)
    by_stratum: dict[str, list[str]] = defaultdict(list)
    for group, stratum in strata.items():
        by_stratum[stratum].append(group)
    group_split: dict[str, str] = {}
    for stratum in sorted(by_stratum):
        groups = sorted(by_stratum[stratum], key=lambda g: _hash_order(g, seed))
        counts = _cut(len(groups), fractions)
        # test first, then validation, so tiny strata still reach the held-out sets
        order = sorted(range(len(names)), key=lambda i: {"test": 0, "validation": 1}.get(names[i], 2))
        start = 0
        for i in order:
            for g in groups[start : start + counts[i]]:
                group_split[g] = names[i]
            start += counts[i]
    return {it.id: group_split[it.group] for it in items}


def assign_splits(items: list[Item], seed: int, fractions: tuple[float, ...] = DEFAULT_FRACTIONS) -> tuple[dict, str]:
    """id -> split, and a sentence saying which rule made it (written into the report and the split file)."""
    official = [it for it in items if it.official]
    train_f, val_f, test_f = fractions
    if not official:
        rule = (
            f"{round(train_f * 100)}/{round(val_f * 100)}/{round(test_f * 100)} split by "
            f"{'patient' if any(it.group != it.id for it in items) else 'image'}, stratified by class, "
            f"order = sha256(seed:group), seed {seed}"
        )
        return grouped_split(items, seed, fractions, SPLITS), rule
    assignment = {it.id: it.official for it in official}
    if any(it.official == "validation" for it in official):
        return assignment, "the publisher's official split"
    train_items = [it for it in official if it.official == "training"]
    carved = grouped_split(train_items, seed, (train_f, val_f), ("training", "validation"))
    assignment.update(carved)
    rule = (
        f"the publisher's official training/test split; validation = {val_f / (train_f + val_f):.1%} of the "
        f"official training part by {'patient' if any(it.group != it.id for it in items) else 'image'}, "
        f"stratified by class, order = sha256(seed:group), seed {seed}"
    )
    return assignment, rule


# ---- a reading of the TinyUSFM maintainer's sentence -----------------------------------------------------

MAINTAINER_SEED = 1234
MAINTAINER_RULE = (
    "OUR reading of the TinyUSFM maintainer's sentence (official repository, issue #1: a stratified random split of "
    "7:1:2 with random seed 1234), made by `maintainer_reading_split` (numpy RandomState(1234) permutation per class, "
    "largest-remainder cut; our code, no scikit-learn). The function the maintainer used is unknown: this is not the "
    "paper's split"
)


def maintainer_reading_split(
    items: list[Item], seed: int = MAINTAINER_SEED, fractions: tuple[float, ...] = DEFAULT_FRACTIONS
) -> tuple[dict[str, str], str]:
    """id -> split by a stratified random 7:1:2 split of images with seed 1234, and the sentence saying what it is.

    Per class (items sorted by id first, so the input order does not matter): a `numpy.random.RandomState(seed)`
    permutation (one generator, classes in sorted order), cut 70/10/20 by largest remainder. Images, not patients:
    the maintainer's sentence names no grouping. Offered for users who want to follow that sentence; it is ours.
    """
    import numpy as np

    rng = np.random.RandomState(seed)
    by_class: dict[str, list[str]] = defaultdict(list)
    for it in sorted(items, key=lambda i: i.id):
        by_class[it.stratum or ""].append(it.id)
    out: dict[str, str] = {}
    for stratum in sorted(by_class):
        ids = by_class[stratum]
        order = [ids[i] for i in rng.permutation(len(ids))]
        start = 0
        for name, count in zip(SPLITS, _cut(len(ids), fractions)):
            for sample_id in order[start : start + count]:
                out[sample_id] = name
            start += count
    return out, MAINTAINER_RULE


# ---- committed split files --------------------------------------------------------------------------


def split_file_path(splits_dir: Path, dataset_key: str, task_name: str) -> Path:
    return Path(splits_dir) / dataset_key / "splits" / f"{task_name}.json"


def write_split_file(path: Path, dataset_key: str, task_name: str, assignment: Mapping[str, str], rule: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict = {"dataset": dataset_key, "task": task_name, "rule": rule}
    for split in SPLITS:
        payload[split] = sorted((i for i, s in assignment.items() if s == split))
    path.write_text(json.dumps(payload, indent=1) + "\n")


def read_split_file(path: Path) -> tuple[dict[str, str], str]:
    payload = json.loads(Path(path).read_text())
    assignment: dict[str, str] = {}
    for split in SPLITS:
        for sample_id in payload.get(split, []):
            if sample_id in assignment:
                raise ValueError(f"{path}: id {sample_id!r} is listed in two splits")
            assignment[sample_id] = split
    return assignment, f"committed split file {path.name} ({payload.get('rule', 'rule not recorded')})"
