"""Inference over a folder where one unreadable file must not stop the others.

A map-style Dataset cannot drop an item: the collated batch would be empty or the DataLoader raises, and
MONAI's error ("applying transform LoadImaged") does not say which file. This iterable dataset applies the
transform per item, logs `<file>: <cause>` for each item that fails and goes on; it has no length, so
the MONAI evaluator learns the epoch length when the data ends (standard ignite behaviour).

Privacy: folders are often named after patients, so files are named in the log by their position in the
datalist and their file name (`skipped #3 IMG0001.dcm: ...`), never by their path; the error text, which
readers fill with the full path, gets the same replacement (`utils.names`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from monai.data import IterableDataset
from monai.transforms import apply_transform
from torch.utils.data import get_worker_info

from tinyusfm_monai.utils.names import display_name, root_cause, scrub

__all__ = ["SkipUnreadableDataset", "display_name", "root_cause", "scrub"]

logger = logging.getLogger(__name__)


class SkipUnreadableDataset(IterableDataset):
    """`monai.data.IterableDataset` that logs and skips items whose transform fails.

    Args:
        data: the datalist (dicts with an "image" path).
        transform: the preprocessing.
        key: the item key named in the error message.
    """

    def __init__(self, data: Iterable[Any], transform: Callable | None = None, key: str = "image") -> None:
        super().__init__(data=data, transform=transform)
        self.key = key

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        loaded = failed = 0
        for i, item in enumerate(self.data):
            if i % workers != worker:
                continue
            try:
                out = apply_transform(self.transform, item) if self.transform is not None else item
            except Exception as error:  # noqa: BLE001 - any unreadable input is reported and skipped
                failed += 1
                name = item.get(self.key, item) if isinstance(item, dict) else item
                logger.error("skipped #%d %s: %s", i + 1, display_name(name), scrub(root_cause(error), name))
                continue
            loaded += 1
            yield out
        if failed and not loaded and workers == 1:
            raise RuntimeError(f"none of the {failed} inputs could be read (causes logged above)")
