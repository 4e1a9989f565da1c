"""Opening a search: which checkpoint, cache and scorer, and where its index is kept (the workspace's policy).

index = open_search()                                  # the newest run's checkpoint over its model's cache
index = open_search(cache=Path("c.h5"), scorer="clip") # CLIP's own similarity, no checkpoint
hits, notes = index.search(["a dog runs"], top_k=5)
"""

from collections.abc import Callable
from pathlib import Path

from tcmgc_cli.cache import FeatureCache
from tcmgc_cli.checkpoint import Trained, find_checkpoint, latest_run, open_trained
from tcmgc_cli.defaults import DEVICE, PRECISION, SCORER
from tcmgc_cli.errors import CacheError, CheckpointError, ConfigError
from tcmgc_cli.model.encoder import TextEncoder
from tcmgc_cli.model.registry import get_model_config, resolve_weights
from tcmgc_cli.search.index import SearchIndex
from tcmgc_cli.search.rankers import ClipRanker, Ranker, TcmgcRanker
from tcmgc_cli.search.store import PartsStore, prefetch, prune_indexes, sync_store, writable_folder
from tcmgc_cli.workspace import index_folders, workspace_caches


def ranker_key(ranker: Ranker, checkpoint: Path | None = None) -> str:
    """What an index was built with: the checkpoint file as it is now (its name, size and modification time, which
    survive moving the folder) and its precision, or CLIP's weights."""
    if checkpoint is not None and isinstance(ranker, TcmgcRanker):
        st = checkpoint.stat()
        bf16 = "|bf16" if ranker.trained.precision == "bf16" else ""  # temporal features computed in bf16
        return f"tcmgc|{checkpoint.name}|{st.st_size}|{st.st_mtime_ns}{bf16}"
    assert isinstance(ranker, ClipRanker)
    return f"clip|{ranker.text.fingerprint}"


def open_index(
    ranker: Ranker | Trained, checkpoint: Path | None, cache: FeatureCache,
    on_encoded: Callable[[int], None] | None = None,
) -> SearchIndex:  # fmt: skip
    """The search index of this ranker over this cache, kept on disk by the built-in store (`store.py`) and grown
    with the cache: only tracks that it does not hold yet run through the temporal encoder (`on_encoded(n)` after
    each batch of n entries). Beside the cache when its folder is writable, else in the workspace; each folder
    keeps the KEEP_INDEXES most recently used indexes."""
    ranker = TcmgcRanker(ranker) if isinstance(ranker, Trained) else ranker
    file = find_checkpoint(checkpoint) if checkpoint is not None else None
    folder = writable_folder(index_folders(cache.path, ranker_key(ranker, file)))
    store = PartsStore(folder, cache, ranker)
    sync_store(store, cache, on_encoded)
    collection = store.load()
    prune_indexes(folder.parent)
    index = SearchIndex(ranker, collection, store, cache.path)
    index.checkpoint = file
    return index


SCORERS = ("auto", "tcmgc", "clip")


def open_search(
    checkpoint: Path | None = None, cache: Path | None = None, device: str = DEVICE, scorer: str = SCORER,
    pretrained: str | None = None, on_encoded: Callable[[int], None] | None = None, precision: str = PRECISION,
) -> SearchIndex:  # fmt: skip
    """A search index ready for `search(["a dog runs"])`. scorer "tcmgc": a trained checkpoint (default: the
    newest run) over its cache (default: the workspace's for its model); "clip": the cache's own CLIP embeddings,
    no checkpoint needed (default cache: the workspace's only one); "auto": tcmgc when there is a checkpoint."""
    if scorer not in SCORERS:
        raise ConfigError(f"unknown --scorer {scorer!r}: use {', '.join(SCORERS)}.")
    prefetch([cache] if cache is not None else workspace_caches())
    source = checkpoint or (latest_run() if scorer != "clip" else None)
    if scorer == "tcmgc" and source is None:
        raise CheckpointError("no trained run in the workspace: train one, pass --checkpoint, or use --scorer clip.")
    if source is not None and scorer != "clip":
        trained, features, where = open_trained(source, cache, device, precision)
        _check_not_empty(features, trained.spec.name)
        return open_index(trained, where, features, on_encoded)
    features = FeatureCache(cache or _only_workspace_cache())
    _check_not_empty(features, features.settings.encoder)
    text = _text_encoder(features, pretrained, device)
    if text.fingerprint != features.settings.encoder_fingerprint.removesuffix(":bf16"):
        raise CacheError(
            f"{features.path} was extracted with other {features.settings.encoder} weights than these: pass the "
            "--pretrained you extracted with."
        )
    return open_index(ClipRanker(text), None, features, on_encoded)


def _check_not_empty(cache: FeatureCache, model: str) -> None:
    if not cache.videos():
        raise CacheError(f"{cache.path} holds no videos: run `tcmgc extract --videos DIR --model {model}`.")


def _only_workspace_cache() -> Path:
    found = workspace_caches()
    if not found:
        raise CacheError("no cache in the workspace: run `tcmgc extract --videos DIR` first, or pass --cache FILE.")
    if len(found) > 1:
        raise ConfigError(
            f"the workspace holds {len(found)} caches ({', '.join(p.name for p in found)}): pass --cache."
        )
    return found[0]


def _text_encoder(cache: FeatureCache, pretrained: str | None, device: str) -> TextEncoder:
    entry = get_model_config(cache.settings.encoder)
    weights = resolve_weights(entry, pretrained)
    return TextEncoder.load(entry["clip"], weights, device)
