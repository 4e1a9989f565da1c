"""Opening a search: which checkpoint, cache and scorer, and where its index is kept (the workspace's policy).

index = open_search()                                  # the newest run's checkpoint over its model's cache
index = open_search(cache=Path("c.h5"), scorer="clip") # CLIP's own similarity, no checkpoint
hits, notes = index.search(["a dog runs"], top_k=5)
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tcmgc_cli.cache import FeatureCache
from tcmgc_cli.checkpoint import Trained, find_checkpoint, latest_run, open_trained
from tcmgc_cli.defaults import DEVICE, PRECISION, SCORER
from tcmgc_cli.errors import CacheError, CheckpointError, ConfigError
from tcmgc_cli.model.encoder import TextEncoder
from tcmgc_cli.model.registry import get_model_config, resolve_weights
from tcmgc_cli.options import EngineConfig
from tcmgc_cli.search.collection import Collection
from tcmgc_cli.search.index import SearchIndex
from tcmgc_cli.search.rankers import ClipRanker, Ranker, TcmgcRanker
from tcmgc_cli.search.store import CoarseStore, PartsStore, prefetch, prune_indexes, sync_store, writable_folder
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
    on_encoded: Callable[[int], None] | None = None, engine: EngineConfig | None = None, sync: bool = True,
    read_parts: bool = True,
) -> SearchIndex:  # fmt: skip
    """The search index of this ranker over this cache. Built in (no `engine`): kept on disk by `PartsStore` and
    grown with the cache (only tracks it does not hold yet run through the temporal encoder, `on_encoded(n)` after
    each batch of n entries), beside the cache when its folder is writable, else in the workspace; each folder keeps
    the KEEP_INDEXES most recently used indexes. On an engine: its collection for this cache and ranker, brought up
    to date with the cache when `sync` (else the index says how far it lags, in `notes`); the candidates' frames and
    temporal features are read from the built-in index's parts where they are whole (and `read_parts`), else the
    frames from the cache and the temporal features computed per query."""
    ranker = TcmgcRanker(ranker) if isinstance(ranker, Trained) else ranker
    file = find_checkpoint(checkpoint) if checkpoint is not None else None
    key = ranker_key(ranker, file)
    if engine is not None and engine.uri is not None:
        return _engine_index(ranker, file, cache, key, engine, on_encoded, sync, read_parts)
    folder = writable_folder(index_folders(cache.path, key))
    store = PartsStore(folder, cache, ranker)
    sync_store(store, cache, on_encoded)
    collection = store.load()
    prune_indexes(folder.parent)
    index = SearchIndex(ranker, collection, store, cache.path)
    index.checkpoint = file
    return index


def _engine_index(
    ranker: Ranker, file: Path | None, cache: FeatureCache, key: str, engine: EngineConfig,
    on_encoded: Callable[[int], None] | None, sync: bool, read_parts: bool,
) -> SearchIndex:  # fmt: skip
    from tcmgc_cli.search.milvus import EngineError, MilvusStore

    assert engine.uri is not None
    if ranker.needs_pixels:
        raise EngineError(f"--index {engine.uri}: this checkpoint's image tower was fine-tuned, so its frames are "
                          "encoded again from the cache's stored frames, which only the built-in index keeps: leave "
                          "out --index.")  # fmt: skip
    store = MilvusStore(engine, f"{cache.path.resolve()}|{key}", cache, ranker)
    if sync:
        sync_store(store, cache, on_encoded)
    parts = _built_in_parts(cache, key, ranker) if read_parts else None
    collection = parts or Collection.from_cache(cache, ranker.padding(cache.padding_feature))
    store.attach(collection)
    index = SearchIndex(ranker, collection, store, cache.path)
    index.checkpoint, index.engine = file, engine
    state = engine_state(store, cache)
    if not state["in_sync"]:
        index.notes.append(f"the engine at {engine.uri} lags its cache ({state['entries_engine']} of "
                           f"{state['entries_cache']} entries): it answers from what it holds. Run `tcmgc index sync "
                           f"--index {engine.uri}` to catch up.")  # fmt: skip
    return index


def _built_in_parts(cache: FeatureCache, key: str, ranker: Ranker) -> Collection | None:
    """The candidates' frames and temporal features from the built-in index's parts where they are there and whole
    (read, not computed per query: a fraction of the time), else None."""
    for folder in index_folders(cache.path, key):
        if folder.is_dir():
            parts = PartsStore(folder, cache, ranker)
            if parts.complete():
                return parts.load()
    return None


def engine_state(store: CoarseStore, cache: FeatureCache) -> dict[str, Any]:
    """`tcmgc index status`: entries in the cache and in the store, and whether the store holds exactly the cache's
    tracks."""
    live = {cache.uid(v) for v in cache.videos()}
    entries_engine = store.count()
    return {"entries_cache": len(cache), "entries_engine": entries_engine,
            "in_sync": store.held() == live and entries_engine == len(cache)}  # fmt: skip


SCORERS = ("auto", "tcmgc", "clip")


def open_search(
    checkpoint: Path | None = None, cache: Path | None = None, device: str = DEVICE, scorer: str = SCORER,
    pretrained: str | None = None, on_encoded: Callable[[int], None] | None = None, precision: str = PRECISION,
    engine: EngineConfig | None = None, sync: bool = True, read_parts: bool = True,
) -> SearchIndex:  # fmt: skip
    """A search index ready for `search(["a dog runs"])`. scorer "tcmgc": a trained checkpoint (default: the
    newest run) over its cache (default: the workspace's for its model); "clip": the cache's own CLIP embeddings,
    no checkpoint needed (default cache: the workspace's only one); "auto": tcmgc when there is a checkpoint.
    engine: where the coarse stage runs (default: the built-in index); `sync` brings an engine up to date first."""
    if scorer not in SCORERS:
        raise ConfigError(f"unknown --scorer {scorer!r}: use {', '.join(SCORERS)}.")
    if engine is None or engine.uri is None:
        prefetch([cache] if cache is not None else workspace_caches())
    source = checkpoint or (latest_run() if scorer != "clip" else None)
    if scorer == "tcmgc" and source is None:
        raise CheckpointError("no trained run in the workspace: train one, pass --checkpoint, or use --scorer clip.")
    if source is not None and scorer != "clip":
        trained, features, where = open_trained(source, cache, device, precision)
        _check_not_empty(features, trained.spec.name)
        return open_index(trained, where, features, on_encoded, engine, sync, read_parts)
    features = FeatureCache(cache or _only_workspace_cache())
    _check_not_empty(features, features.settings.encoder)
    text = _text_encoder(features, pretrained, device)
    if text.fingerprint != features.settings.weights_fingerprint:
        raise CacheError(
            f"{features.path} was extracted with other {features.settings.encoder} weights than these: pass the "
            "--pretrained you extracted with."
        )
    return open_index(ClipRanker(text), None, features, on_encoded, engine, sync, read_parts)


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
