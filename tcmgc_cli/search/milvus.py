"""The coarse stage on Milvus: Milvus Lite (a local `.db` file), a standalone server or a cluster, one client API
(`pymilvus.MilvusClient`). This is the only module that imports pymilvus.

A collection per index key (cache, checkpoint, scorer) holds one row per entry: `id` (int64, from the track's uid
and the entry's number in its video, so that writing it again replaces it), `uid`, `video` (the partition key),
`start_sec`, `end_sec` and the coarse `vector`. A second collection lists the tracks whose entries are all in
(written after them): `held` reads it, so a sync killed at any moment and run again ends with exactly the cache's
entries, none twice (rows are upserted by id), none missing. What the same code met on a real server and never on
Lite: deletes stay visible at the default consistency level (writes, counts and the first search after opening or
after a write ask for Strong, which waits ~0.4 s a call there for the engine's clock; later searches ask for
Bounded, ~14 ms, and keep only the entries of the cache they opened, so a row deleted since is never a result);
under an HNSW or IVF index, rows written are answered from a coarse interim index (recall@500 0.25 on our 512-d
features) until they are sealed, indexed and the indexed segments loaded, 12-17 s after a flush on a standalone
server (so `add` flushes and waits for all three there, and a search process checks once; under FLAT every row is
searched exactly as soon as it is written); 2.3 wants an explicit efConstruction and has no float16 vectors.
"""

import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from tcmgc_cli.cache import FeatureCache
from tcmgc_cli.errors import TcmgcError
from tcmgc_cli.options import EngineConfig
from tcmgc_cli.search.collection import Collection
from tcmgc_cli.search.rankers import EncodedTrack, Ranker, encode_entries

KEY_PROPERTY = "tcmgc.key"  # the collection's index key (cache, checkpoint, scorer), kept in its properties
BATCH_ROWS = 2048  # rows written a call
MAX_LIMIT = 16384  # the largest `limit` Milvus takes: rows a query page, hits a search
STRONG = {"consistency_level": "Strong"}  # waits for the engine's clock to pass the call: ~0.4 s on a server
BOUNDED = {"consistency_level": "Bounded"}  # what the engine holds now (at most 5 s behind the clock): ~14 ms
_INDEX_PARAMS = {  # index type -> Milvus index type and build params; searches use SEARCH_PARAMS
    "flat": ("FLAT", {}),
    "ivf_sq8": ("IVF_SQ8", {"nlist": 1024}),
    "hnsw": ("HNSW", {"M": 16, "efConstruction": 200}),
}
SEARCH_PARAMS = {"flat": {}, "ivf_sq8": {"nprobe": 64}, "hnsw": {"ef": 600}}
SMALL_SEGMENT_ROWS = 1024  # Milvus's minSegmentSizeToEnableIndex: a segment this small gets no index (searched exactly)


class EngineError(TcmgcError):
    """A vector engine that does not answer, refuses us, or holds a collection we cannot use."""


def entry_key(uid: str, number: int) -> int:
    """The int64 id of a track's `number`-th entry: the same for the same track, whatever the engine holds."""
    return int.from_bytes(hashlib.blake2b(f"{uid}#{number}".encode(), digest_size=8).digest(), "big") >> 1


def collection_name(key: str) -> str:
    return "tcmgc_" + hashlib.sha1(key.encode()).hexdigest()[:16]


class MilvusStore:
    """A `CoarseStore` on Milvus, for the collection of `key` (created where missing)."""

    def __init__(self, engine: EngineConfig, key: str, cache: FeatureCache, ranker: Ranker) -> None:
        assert engine.uri is not None
        self.uri, self.key, self.cache, self.ranker = engine.uri, key, cache, ranker
        self.index_type, self.batch = engine.index_type, engine.batch
        self.name = collection_name(key)
        self.tracks_name = f"{self.name}_tracks"
        self.dim = len(cache.padding_feature)
        self.client = _connect(engine.uri, engine.token)
        self._ids = np.zeros(0, dtype=np.int64)
        self._positions = np.zeros(0, dtype=np.int64)
        self._settled = False
        self._strong = True  # the next search sees every write made before it (then: see `topk`)
        self._ensure()

    # -- the collections --
    def _ensure(self) -> None:
        """Create what is missing (a run killed between the two creations goes on), check what is there."""
        if self._call(self.client.has_collection, self.name):
            self._check_own()
            self.index_type = self._index_type()
        else:
            self._create_entries()
        if not self._call(self.client.has_collection, self.tracks_name):
            self._create_tracks()
        self._call(self.client.load_collection, self.name)
        self._call(self.client.load_collection, self.tracks_name)

    def _create_entries(self) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False, description=self.key)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("uid", DataType.VARCHAR, max_length=512)
        schema.add_field("video", DataType.VARCHAR, max_length=4096, is_partition_key=True)
        schema.add_field("start_sec", DataType.FLOAT)
        schema.add_field("end_sec", DataType.FLOAT)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        milvus_type, build = _INDEX_PARAMS[self.index_type]
        index = self.client.prepare_index_params()
        index.add_index(field_name="vector", index_type=milvus_type, metric_type="IP", params=build)
        self._call(self.client.create_collection, self.name, schema=schema, index_params=index, **STRONG)
        self._call(self.client.alter_collection_properties, self.name, properties={KEY_PROPERTY: self.key})

    def _create_tracks(self) -> None:
        from pymilvus import DataType, MilvusClient

        tracks = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False, description=self.key)
        tracks.add_field("id", DataType.INT64, is_primary=True)
        tracks.add_field("uid", DataType.VARCHAR, max_length=512)
        tracks.add_field("entries", DataType.INT64)
        tracks.add_field("marker", DataType.FLOAT_VECTOR, dim=2)  # Milvus wants a vector in every collection
        marker = self.client.prepare_index_params()
        marker.add_index(field_name="marker", index_type="FLAT", metric_type="L2")
        self._call(self.client.create_collection, self.tracks_name, schema=tracks, index_params=marker, **STRONG)

    def _check_own(self) -> None:
        found = self._call(self.client.describe_collection, self.name)
        dims = [f.get("params", {}).get("dim") for f in found.get("fields", []) if f.get("name") == "vector"]
        key = (found.get("properties") or {}).get(KEY_PROPERTY) or found.get("description")
        if (key and key != self.key) or [int(d) for d in dims if d] != [self.dim]:
            raise EngineError(
                f"{self.uri}: collection {self.name} was made for another cache or model "
                f"({found.get('description')!r}): drop it, or point --index at another engine or database."
            )

    def _index_type(self) -> str:
        """The index type the collection was made with (whatever --index-type says now)."""
        found = self._call(self.client.describe_index, self.name, "vector").get("index_type")
        names = {milvus_type: name for name, (milvus_type, _) in _INDEX_PARAMS.items()}
        return names.get(str(found).upper(), self.index_type)

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One engine call; what fails is one line naming the URI and the fix."""
        try:
            return fn(*args, **kwargs)
        except TcmgcError:
            raise
        except Exception as err:
            raise EngineError(f"{self.uri}: {_first_line(err)}. {_fix(err)}") from None

    # -- the CoarseStore --
    def held(self) -> set[str]:
        return {row["uid"] for row in self._query(self.tracks_name, ["uid"])}

    def add(self, videos: list[str], on_encoded: Callable[[int], None] | None = None) -> None:
        self._strong = True
        for start in range(0, len(videos), self.batch):
            chunk = videos[start : start + self.batch]
            tracks = list(encode_entries(self.ranker, self.cache, chunk))
            rows = [row for track in tracks for row in self._rows(track)]
            for i in range(0, len(rows), BATCH_ROWS):
                self._call(self.client.upsert, self.name, rows[i : i + BATCH_ROWS])
            marks = [{"id": entry_key(self.cache.uid(t.video), -1), "uid": self.cache.uid(t.video),
                      "entries": len(t.coarse), "marker": [0.0, 0.0]} for t in tracks]  # fmt: skip
            self._call(self.client.upsert, self.tracks_name, marks)  # after the rows: the track is whole
            if on_encoded:
                on_encoded(len(rows))
        if videos and self.index_type != "flat":
            self._settled = False
            self.settle()

    def _rows(self, track: EncodedTrack) -> Iterator[dict[str, Any]]:
        uid = self.cache.uid(track.video)
        duration = self.cache.duration(track.video)
        entries = self.cache.entries(self.cache.window_ids(track.video))
        for n, (entry, vector) in enumerate(zip(entries, track.coarse, strict=True)):
            begin = 0.0 if entry.start == 0 else float(track.times[entry.start])
            end = float(track.times[entry.stop]) if entry.stop < len(track.times) else duration
            yield {"id": entry_key(uid, n), "uid": uid, "video": track.video, "start_sec": begin, "end_sec": end,
                   "vector": np.asarray(vector, np.float32).tolist()}  # fmt: skip

    def drop(self, uids: set[str]) -> None:
        self._strong = True
        for i in range(0, len(uids), 256):
            chunk = sorted(uids)[i : i + 256]
            quoted = ", ".join(_quote(u) for u in chunk)
            self._call(self.client.delete, self.name, filter=f"uid in [{quoted}]", **STRONG)
            self._call(self.client.delete, self.tracks_name, filter=f"uid in [{quoted}]", **STRONG)

    def count(self) -> int:
        got = self._call(self.client.query, self.name, filter="", output_fields=["count(*)"], **STRONG)
        return int(got[0]["count(*)"])

    def attach(self, collection: Collection) -> None:
        """Map the engine's ids to `collection`'s entry positions (rows the collection lacks are left out). A video's
        entries are consecutive in a collection, numbered from 0 in time order, as `_rows` numbers them."""
        videos = collection.entry_video
        present, first = np.unique(videos, return_index=True)
        first_of = np.zeros(len(collection.videos), dtype=np.int64)
        first_of[present] = first
        numbers = np.arange(len(videos)) - first_of[videos]  # (E,) each entry's number within its video
        ids = np.array([entry_key(collection.uids[v], n) for v, n in zip(videos.tolist(), numbers.tolist(), strict=True)],
                       dtype=np.int64)  # fmt: skip
        order = np.argsort(ids)
        self._ids, self._positions = ids[order], order  # (E,) sorted ids, and each one's entry position: 16 B an entry
        self._strong = True

    def topk(self, sentences: torch.Tensor, k: int) -> torch.Tensor:
        """The k best entries of each sentence (Q, D), as positions in the attached collection (Q, <= k)."""
        self.settle()
        vectors = sentences.float().cpu().numpy().tolist()
        found = self._call(self.client.search, self.name, data=vectors, limit=min(k, MAX_LIMIT), anns_field="vector",
                           search_params={"metric_type": "IP", "params": SEARCH_PARAMS[self.index_type]},
                           output_fields=["id"], **(STRONG if self._strong else BOUNDED))  # fmt: skip
        self._strong = False
        rows = [self._position_of([int(h["id"]) for h in hits]) for hits in found]
        width = min(len(r) for r in rows) if rows else 0
        return torch.tensor([r[:width] for r in rows], dtype=torch.long).reshape(len(rows), width)

    def _position_of(self, ids: list[int]) -> list[int]:
        """The collection positions of engine ids, in their order; ids the collection lacks are left out."""
        found = np.asarray(ids, dtype=np.int64)
        at = np.minimum(np.searchsorted(self._ids, found), max(len(self._ids) - 1, 0))
        hit = (self._ids[at] == found) if len(self._ids) else np.zeros(len(found), dtype=bool)
        return [int(p) for p in self._positions[at[hit]]]

    def settle(self, timeout_s: float = 600.0) -> None:
        """Until every row is answered from the collection's own index (once a store, and after each `add`)."""
        deadline = time.monotonic() + timeout_s
        self._settled = self._settled or self.index_type == "flat" or self._served()
        if not self._settled:
            self._call(self.client.flush, self.name)  # seals the rows written, so that they get indexed
        while not self._settled:
            self._settled = self._served()
            if not self._settled and time.monotonic() > deadline:
                raise EngineError(f"{self.uri}: the index of {self.name} is still building after {timeout_s:.0f} s. "
                                  "Search again later, or look at the engine's log")  # fmt: skip
            if not self._settled:
                time.sleep(0.5)

    def _served(self) -> bool:
        """Whether the index covers every row and the engine has loaded it (Lite searches every row as it is). The
        index's own row counts cover flushed rows only: the rows are counted by a query."""
        info = self._call(self.client.describe_index, self.name, "vector")
        if int(info.get("pending_index_rows", 0) or 0):
            return False
        if self.uri.endswith(".db"):  # Milvus Lite: no segments to wait for
            return True
        try:
            segments = self.client.list_loaded_segments(self.name)
        except Exception:  # an engine that does not implement it
            return True
        indexed = [s for s in segments if s.state_name == "Sealed" and (s.index_id or s.num_rows < SMALL_SEGMENT_ROWS)]
        return len(indexed) == len(segments) and sum(s.num_rows for s in indexed) >= self.count()

    def _query(self, name: str, fields: list[str]) -> Iterator[dict[str, Any]]:
        """Every row of a collection, `fields` of each, page by page."""
        last = -1  # ids are never negative (`entry_key`)
        while True:
            page = self._call(self.client.query, name, filter=f"id > {last}", output_fields=["id", *fields],
                              limit=MAX_LIMIT, **STRONG)  # fmt: skip
            yield from page
            if len(page) < MAX_LIMIT:
                return
            last = max(int(row["id"]) for row in page)


def _connect(uri: str, token: str) -> Any:
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # gRPC's own log lines (keepalive notices) on stderr
    from pymilvus import MilvusClient

    for name in ("pymilvus", "grpc._server"):  # their RPC errors (and Milvus Lite's in-process server's): ours say
        logging.getLogger(name).setLevel(logging.CRITICAL)  # what matters, in one line
    try:
        return MilvusClient(uri=uri, token=token, timeout=10)
    except Exception as err:
        raise EngineError(f"{uri}: {_first_line(err)}. {_fix(err)}") from None


def _fix(err: BaseException) -> str:
    text = str(err).lower()
    if "auth" in text or "token" in text or "permission" in text or "denied" in text:
        return "Set TCMGC_INDEX_TOKEN to a token the engine accepts (user:password, or an API key)"
    if "connect" in text or "unavailable" in text or "timeout" in text or "deadline" in text:
        return "Start the engine, or check the host and port of --index"
    return "Check the engine at --index (its log says more)"


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
