"""Text-to-video search: the collection a search reads (`collection.py`), its coarse store (`store.py`, the built-in
parts of `parts.py` read by `rows.py`), the rankers (`rankers.py`), the index that answers queries (`index.py`),
moments (`moments.py`), explanations (`explain.py`), and opening a search (`opening.py`).

    index = open_search()                                  # the newest run's checkpoint over its model's cache
    index = open_search(cache=Path("c.h5"), scorer="clip") # CLIP's own similarity, no checkpoint
    hits, notes = index.search(["a dog runs"], top_k=5)
"""

from tcmgc_cli.search.index import Hit, SearchIndex
from tcmgc_cli.search.opening import open_index, open_search, ranker_key

__all__ = ["Hit", "SearchIndex", "open_index", "open_search", "ranker_key"]
