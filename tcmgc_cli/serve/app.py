"""`tcmgc serve`: the search page and its HTTP API, over one search index loaded once. The only module importing FastAPI.

    GET /api/search?q=...&top_k=10&per_video=1   one line of `tcmgc search --json`: {"query", "scorer", "results"}
    GET /api/explain?q=...&video_id=...          word-to-frame attention of that video's best clip (as --explain)
    GET /media/thumb/{video_id}?t=12.5           a small JPEG of the frame shown at t seconds (cached on disk)
    GET /media/video/{video_id}                  the video file itself, with HTTP range requests (seeking)
    POST /api/reload                             look at the cache now: a grown or changed one is indexed and used
    GET /                                        the search page; OpenAPI docs at /docs

Files are reached by video id only, through the index's own table of paths: no path from a request is ever opened.
"""

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

from tcmgc_cli.errors import TcmgcError
from tcmgc_cli.search import SearchIndex
from tcmgc_cli.search.explain import word_attention
from tcmgc_cli.serve.batching import SearchBatcher
from tcmgc_cli.serve.live import LiveIndex
from tcmgc_cli.serve.media import Thumbnails

STATIC = Path(__file__).parent / "static"
MAX_QUERY = 1000  # characters


def create_app(
    index: SearchIndex | LiveIndex, thumbnails: Thumbnails, parallel: int = 1, max_batch: int = 16
) -> FastAPI:
    """The application over a loaded index (a LiveIndex follows its cache). At most `parallel` searches run at once
    (the index is read-only; torch releases the GIL), and queries that arrive while they run are answered together,
    up to `max_batch` at once: `tcmgc serve` runs one worker per core, each on one thread."""
    lock = threading.BoundedSemaphore(parallel)
    batcher = SearchBatcher(index, lock, workers=parallel, max_batch=max_batch)

    def current() -> SearchIndex:
        return index.current if isinstance(index, LiveIndex) else index

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        batcher.close()
        if isinstance(index, LiveIndex):
            index.close()

    app = FastAPI(title="tcmgc", description="Text-to-video search with TC-MGC.", version="1", lifespan=lifespan)

    def video_path(video_id: str) -> Path:
        paths = current().video_paths  # video id -> file, from the cache
        if video_id not in paths:
            raise HTTPException(404, f"no video {video_id!r} in the collection")
        path = Path(paths[video_id])
        if not path.is_file():
            raise HTTPException(404, f"the file of video {video_id!r} is no longer where it was extracted from")
        return path

    @app.get("/api/search")
    async def search(
        q: Annotated[str, Query(min_length=1, max_length=MAX_QUERY, description="What happens in the video.")],
        top_k: Annotated[int, Query(ge=1, le=1000, description="Results.")] = 10,
        per_video: Annotated[int, Query(ge=1, le=1000, description="Results one video may take.")] = 1,
    ) -> dict[str, Any]:
        if not q.strip():
            raise HTTPException(400, "the query is empty: write a few words, e.g. a dog runs")
        try:
            hits = await asyncio.wrap_future(batcher.submit(q, top_k, per_video))
        except TcmgcError as err:
            raise HTTPException(400, str(err)) from None
        return {"query": q, "scorer": current().scorer, "results": [h.to_dict() for h in hits]}

    @app.get("/api/explain")
    def explain(
        q: Annotated[str, Query(min_length=1, max_length=MAX_QUERY)],
        video_id: Annotated[str, Query(min_length=1, max_length=1000)],
    ) -> dict[str, Any]:
        searched = current()
        if video_id not in searched.video_paths:
            raise HTTPException(404, f"no video {video_id!r} in the collection")
        if not q.strip():
            raise HTTPException(400, "the query is empty")
        with lock:
            words, weights, times = word_attention(searched, q, video_id)
        return {"words": words, "times": [round(float(t), 3) for t in times],
                "weights": [[round(float(w), 4) for w in row] for row in weights]}  # fmt: skip

    @app.get("/media/thumb/{video_id}", response_class=Response)
    def thumb(
        video_id: str, t: Annotated[float, Query(ge=0, le=1e7, description="Seconds from the start.")] = 0.0
    ) -> Response:
        path = video_path(video_id)
        try:
            jpeg = thumbnails.get(video_id, path, t)
        except TcmgcError as err:
            raise HTTPException(422, str(err)) from None
        return FileResponse(jpeg, media_type="image/jpeg", headers={"Cache-Control": "max-age=86400"})

    @app.get("/media/video/{video_id}", response_class=Response)
    def video(video_id: str) -> Response:
        return FileResponse(video_path(video_id))  # Starlette answers Range requests (206, 416 past the end)

    @app.post("/api/reload")
    def reload() -> dict[str, Any]:
        changed = index.reload() if isinstance(index, LiveIndex) else False
        now = current()
        return {"reloaded": changed, "videos": len(now.collection.videos), "entries": len(now)}

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
