"""The HDF5 feature cache of frame tracks. This package is the only one that imports h5py.

A cache holds one track per video: its frames decoded at the cache's rate (`--fps`), each encoded once by the image
tower. What the model scores are entries derived from the tracks when read (`entries.py`). The files and their
layout are `segments.py`'s; reading is `FeatureCache` (`reader.py`), writing and tiered merges `CacheWriter`
(`writer.py`), upkeep of an existing cache `upkeep.py`.

    cache = FeatureCache("tcmgc-workspace/cache/tcmgc-tiny.h5")
    times, features = cache.track("video7")          # (n,) seconds, (n, D)
    frames, mask = cache.entry_inputs(cache.ids())   # (E, T, D), (E, T)
"""

from tcmgc_cli.cache.entries import PAD, Entry, video_entries
from tcmgc_cli.cache.reader import FeatureCache
from tcmgc_cli.cache.segments import CHUNK_ROWS, CacheSettings, Track
from tcmgc_cli.cache.upkeep import add_tracks, existing_settings, failures_file, read_failures, remove_videos
from tcmgc_cli.cache.writer import FANOUT, CacheWriter

__all__ = [
    "CHUNK_ROWS", "FANOUT", "PAD", "CacheSettings", "CacheWriter", "Entry", "FeatureCache", "Track", "add_tracks",
    "existing_settings", "failures_file", "read_failures", "remove_videos", "video_entries",
]  # fmt: skip
