"""Small pieces every other package uses: atomic file writes, distributed-run helpers."""

from .atomic import TEMP_PREFIX, atomic_path, atomic_write, remove_stale_temporaries
from .dist import is_rank_zero, rank_and_world_size, unwrap

__all__ = [
    "TEMP_PREFIX",
    "atomic_path",
    "atomic_write",
    "is_rank_zero",
    "rank_and_world_size",
    "remove_stale_temporaries",
    "unwrap",
]
