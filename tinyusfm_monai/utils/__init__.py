"""Small pieces every other package uses: atomic file writes, distributed-run helpers, peak memory."""

from .atomic import TEMP_PREFIX, atomic_path, atomic_write, remove_stale_temporaries
from .dist import is_rank_zero, rank_and_world_size, unwrap
from .memory import current_rss_mib, peak_rss_mib

__all__ = [
    "TEMP_PREFIX",
    "atomic_path",
    "atomic_write",
    "current_rss_mib",
    "is_rank_zero",
    "peak_rss_mib",
    "rank_and_world_size",
    "remove_stale_temporaries",
    "unwrap",
]
