"""The index a server answers from, kept up to date with its cache while the server runs.

A watcher thread looks at the cache's live segments every few seconds (and `reload()` does at once, for
`POST /api/reload`); when they changed, the index is opened again, which builds parts only for the new segments
(`search/store.py`), and swapped in when ready. Queries are answered from the old index until then.
"""

import threading
from collections.abc import Callable

from tcmgc_cli.cache import FeatureCache
from tcmgc_cli.search import SearchIndex, open_index


def reopen(index: SearchIndex) -> SearchIndex:
    """The index of the same ranker over its cache as it is now (parts built only for what is new)."""
    assert index.cache_path is not None, "an index made from arrays has no cache to follow"
    return open_index(index.ranker, index.checkpoint, FeatureCache(index.cache_path), engine=index.engine)


def cache_state(index: SearchIndex) -> tuple[str, ...]:
    """What identifies the cache's content: its live segments (immutable files)."""
    assert index.cache_path is not None
    cache = FeatureCache(index.cache_path)
    try:
        return tuple(p.name for p in cache.segments())
    finally:
        cache.close()


class LiveIndex:
    """`current`: the newest index; `reload()` opens a new one if the cache changed; `every_s` > 0 watches."""

    def __init__(self, index: SearchIndex, every_s: float = 2.0, on_error: Callable[[Exception], None] | None = None):
        self.current = index
        self._state: tuple[str, ...] | None = None if index.notes else cache_state(index)  # lagging: sync at once
        self._lock = threading.Lock()  # one reload at a time
        self._stop = threading.Event()
        self._on_error = on_error or (lambda err: None)
        self._thread: threading.Thread | None = None
        if every_s > 0:
            self._thread = threading.Thread(target=self._watch, args=(every_s,), daemon=True, name="tcmgc-watch")
            self._thread.start()

    def reload(self) -> bool:
        """Open the index again if the cache changed since; True when a new index was swapped in."""
        with self._lock:
            state = cache_state(self.current)
            if state == self._state:
                return False
            self.current = reopen(self.current)
            self._state = state
            return True

    def _watch(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            try:
                self.reload()
            except Exception as err:  # a cache caught mid-write, say: the old index keeps answering
                self._on_error(err)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
