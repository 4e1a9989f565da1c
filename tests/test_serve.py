"""`tcmgc serve`: the HTTP API against `tcmgc search --json`, bad requests, and the page in a real Chromium."""

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from tcmgc_cli.cli import app
from tests.helpers import ROOT

runner = CliRunner()
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("collection")
    videos = folder / "videos"
    videos.mkdir()
    # encoded in a fresh interpreter: libvpx refuses to open (EINVAL) in a process where some earlier tests ran
    script = "; ".join(f"webm(Path({str(videos / (n + '.webm'))!r}), {c})" for n, c in
                       (("red", (230, 30, 30)), ("green", (30, 200, 30)), ("blue", (30, 30, 230))))  # fmt: skip
    subprocess.run([sys.executable, "-c", f"from pathlib import Path; from tests.helpers import webm; {script}"],
                   check=True, cwd=ROOT)  # fmt: skip
    cache = folder / "c.h5"
    result = runner.invoke(app, ["extract", "--videos", str(videos), "--model", "tcmgc-tiny", "--cache", str(cache),
                                 "--workers", "0", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    return cache


@pytest.fixture(scope="module")
def server(collection: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import uvicorn

    from tcmgc_cli.search import open_search
    from tcmgc_cli.serve.app import create_app
    from tcmgc_cli.serve.media import Thumbnails

    index = open_search(cache=collection, scorer="clip")
    thumbs = Thumbnails([tmp_path_factory.mktemp("thumbs")])
    port = free_port()
    config = uvicorn.Config(create_app(index, thumbs), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def test_api_search_is_one_line_of_search_json(server: str, collection: Path) -> None:
    got = httpx.get(f"{server}/api/search", params={"q": "a red square moves right", "top_k": 3}).json()
    cli = runner.invoke(
        app, ["search", "a red square moves right", "--cache", str(collection), "--top-k", "3", "--json"]
    )
    assert cli.exit_code == 0, cli.output
    assert got == json.loads(cli.stdout.splitlines()[0])
    assert got["scorer"] == "clip" and len(got["results"]) == 3 and "moments" in got["results"][0]


def test_media_by_id_with_ranges(server: str, collection: Path) -> None:
    thumb = httpx.get(f"{server}/media/thumb/red", params={"t": 1.5})
    assert (
        thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg" and thumb.content[:2] == b"\xff\xd8"
    )
    size = (collection.parent / "videos" / "red.webm").stat().st_size
    part = httpx.get(f"{server}/media/video/red", headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == (collection.parent / "videos" / "red.webm").read_bytes()[10:20]
    past = httpx.get(f"{server}/media/video/red", headers={"Range": f"bytes={size + 10}-"})
    assert past.status_code == 416
    assert httpx.get(f"{server}/openapi.json").json()["paths"].keys() >= {"/api/search", "/media/video/{video_id}"}


@pytest.mark.parametrize(
    ("url", "params", "status"),
    [
        ("/api/search", {"q": ""}, 422),
        ("/api/search", {"q": "   "}, 400),
        ("/api/search", {"q": "x" * 1001}, 422),
        ("/api/search", {"q": "a dog", "top_k": 0}, 422),
        ("/api/search", {"q": "a dog", "top_k": 1001}, 422),
        ("/api/search", {"q": "a dog", "top_k": "many"}, 422),
        ("/api/explain", {"q": "a dog", "video_id": "nobody"}, 404),
        ("/media/thumb/nobody", {"t": 1}, 404),
        ("/media/thumb/red", {"t": -1}, 422),
        ("/media/video/nobody", {}, 404),
        ("/media/video/..%2F..%2Fetc%2Fpasswd", {}, 404),
        ("/media/video/%2Fetc%2Fpasswd", {}, 404),
        ("/media/video/../../etc/passwd", {}, 404),
        ("/media/video/%2e%2e%2fc.h5", {}, 404),
        ("/static/../../c.h5", {}, 404),
    ],
)
def test_bad_requests_are_4xx_json_never_a_file(server: str, url: str, params: dict[str, object], status: int) -> None:
    response = httpx.get(server + url, params=params)  # type: ignore[arg-type]
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json" and "detail" in response.json()


def test_serve_refuses_a_taken_port_and_a_missing_cache(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(app, ["serve", "--port", str(port), "--cache", str(tmp_path / "c.h5")])
    assert result.exit_code == 1 and "another --port" in result.output and "Traceback" not in result.output
    missing = runner.invoke(app, ["serve", "--port", str(free_port()), "--cache", str(tmp_path / "none.h5")])
    assert missing.exit_code == 1 and "run `tcmgc extract` first" in missing.output


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (.ci/run installs it)")
def test_the_page_in_a_real_browser(server: str) -> None:
    """Type a query, press Enter, see cards with loaded thumbnails, click one: the video plays its moment."""
    from playwright.sync_api import sync_playwright

    flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", "--autoplay-policy=no-user-gesture-required"]  # fmt: skip
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=flags)
        page = browser.new_page(viewport={"width": 800, "height": 900})
        page.goto(server + "/")
        page.fill("#q", "a green square moves right")
        page.press("#q", "Enter")
        page.wait_for_function("document.querySelectorAll('.card').length > 0")
        assert "q=a+green" in page.url or "q=a%20green" in page.url  # shareable
        page.wait_for_function(
            "[...document.querySelectorAll('.card .thumbs img')].some(i => i.complete && i.naturalWidth > 0)"
        )
        card = page.locator(".card").first
        start, end = float(card.get_attribute("data-start") or 0), float(card.get_attribute("data-end") or 0)
        card.locator(".thumbs").click()
        page.wait_for_function(
            "(() => { const v = document.querySelector('.card video'); return v && !v.paused && v.currentTime > 0; })()",
            timeout=15000,
        )
        now = page.evaluate("document.querySelector('.card video').currentTime")
        assert start - 0.1 <= now <= end + 0.5
        page.wait_for_function("document.querySelector('.card video').paused", timeout=15000)  # stops at the end
        stopped = page.evaluate("document.querySelector('.card video').currentTime")
        assert end - 0.3 <= stopped <= end + 0.6
        shared = browser.new_page()
        shared.goto(server + "/?q=a+blue+square")  # a link opens the page with that query's results
        shared.wait_for_function("document.querySelectorAll('.card').length > 0")
        assert shared.input_value("#q") == "a blue square"
        browser.close()


def test_a_grown_cache_is_served_without_a_restart(collection: Path, tmp_path: Path) -> None:
    """An extract into the served cache: the server finds the new video within seconds, answering throughout."""
    import uvicorn

    from tcmgc_cli.search import open_search
    from tcmgc_cli.serve.app import create_app
    from tcmgc_cli.serve.live import LiveIndex
    from tcmgc_cli.serve.media import Thumbnails
    from tests.helpers import copy_cache, write_video

    cache = copy_cache(collection, tmp_path / "c.h5")
    live = LiveIndex(open_search(cache=cache, scorer="clip"), every_s=0.2)
    srv = uvicorn.Server(uvicorn.Config(create_app(live, Thumbnails([tmp_path / "thumbs"])), host="127.0.0.1",
                                        port=(port := free_port()), log_level="warning"))  # fmt: skip
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    try:
        assert httpx.post(f"{base}/api/reload").json() == {"reloaded": False, "videos": 3, "entries": 3}
        folder = tmp_path / "more"
        folder.mkdir()
        frames = np.full((24, 64, 64, 3), 20, dtype=np.uint8)
        frames[:, 24:40, 24:40] = (230, 230, 30)
        write_video(folder / "yellow.mp4", frames)  # libvpx will not open in this process (see `collection`)
        args = ["extract", "--videos", str(folder), "--model", "tcmgc-tiny", "--cache", str(cache), "--workers", "0"]
        assert runner.invoke(app, args).exit_code == 0
        deadline, found = time.monotonic() + 20, set()
        while "yellow" not in found and time.monotonic() < deadline:
            response = httpx.get(f"{base}/api/search", params={"q": "a yellow square", "top_k": 10})
            assert response.status_code == 200  # answered throughout, from the old index until the new one is ready
            found = {h["video_id"] for h in response.json()["results"]}
            time.sleep(0.1)
        assert found == {"red", "green", "blue", "yellow"}
        assert httpx.get(f"{base}/media/video/yellow").status_code == 200
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


def test_thumbnails_are_named_by_the_frame_shown_and_capped(collection: Path, tmp_path: Path) -> None:
    from tcmgc_cli.serve.media import Thumbnails

    red = collection.parent / "videos" / "red.webm"  # 6 s at 4 fps: 24 frames
    thumbs = Thumbnails([tmp_path / "t"], cap_bytes=10**9)
    past = {thumbs.get("red", red, 6.0 + k) for k in range(100)}  # every time past the end shows the last frame
    assert len(past) == 1 and len(list((tmp_path / "t").glob("*.jpg"))) == 1
    assert thumbs.get("red", red, 0.0) == thumbs.get("red", red, 0.2)  # both show frame 0 (a frame lasts 0.25 s)
    small = Thumbnails([tmp_path / "s"], cap_bytes=1)  # room for none: only the newest stays
    for t in (0.0, 1.0, 2.0):
        newest = small.get("red", red, t)
    assert list((tmp_path / "s").glob("*.jpg")) == [newest]


@pytest.mark.parametrize(("max_batch", "searches"), [(16, 1), (1, "cores")])
def test_a_batching_server_runs_one_search_at_a_time(
    trained_run: tuple[Path, Path],
    sample_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    max_batch: int,
    searches: object,
) -> None:
    """Two searches at once in one process contend for the interpreter lock: batching takes every waiting query
    into one search at a time instead; one query at a time keeps one search per core."""
    import os

    import uvicorn

    from tcmgc_cli.serve import app as app_module
    from tcmgc_cli.serve.server import serve

    made: dict[str, int] = {}
    monkeypatch.setattr(app_module, "create_app", lambda *a, parallel, max_batch: made.update(parallel=parallel))
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    serve("127.0.0.1", 0, cache=sample_cache, checkpoint=trained_run[0], max_batch=max_batch, watch=0,
          on_note=lambda _: None)  # fmt: skip
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert made["parallel"] == (cores if searches == "cores" else searches)
