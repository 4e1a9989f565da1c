"""A library that grows: files gone from a folder leave the cache (--prune, refused when the folder looks unmounted),
and an index part whose build was killed is cleaned up and built again."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from typer.testing import CliRunner

from tcmgc_cli.cache import FeatureCache
from tcmgc_cli.cli import app

runner = CliRunner()


def extract(folder: Path, cache: Path, *extra: str) -> tuple[int, dict[str, object], str]:
    result = runner.invoke(app, ["extract", "--videos", str(folder), "--model", "tcmgc-tiny", "--cache", str(cache),
                                 "--workers", "0", "--json", *extra])  # fmt: skip
    payload = json.loads(result.stdout) if result.stdout.strip().startswith("{") else {}
    return result.exit_code, payload, result.output


def test_prune_removes_the_videos_whose_files_are_gone(video_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "c.h5"
    assert extract(video_dir, cache)[0] == 0
    (video_dir / "video1.mp4").unlink()
    code, out, _ = extract(video_dir, cache, "--prune")
    assert code == 0 and out["pruned"] == ["video1"] and out["extracted"] == []
    assert sorted(FeatureCache(cache).videos()) == ["video0", "video2", "video3"]
    code, out, _ = extract(video_dir, cache, "--prune")  # nothing more to remove
    assert code == 0 and out["pruned"] == []


def test_prune_refuses_a_folder_that_looks_unmounted(video_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "c.h5"
    assert extract(video_dir, cache)[0] == 0
    before = sorted(FeatureCache(cache).videos())
    moved = tmp_path / "elsewhere"
    shutil.move(video_dir, moved)
    code, _, output = extract(video_dir, cache, "--prune")  # the folder is gone
    assert code == 2 and "is missing; nothing was removed" in output and "Traceback" not in output
    video_dir.mkdir()
    (video_dir / "other.mp4").write_bytes((moved / "video0.mp4").read_bytes())  # none of the cache's videos
    code, _, output = extract(video_dir, cache, "--prune")
    assert code == 2 and "holds none of the 4 videos" in output and "nothing was removed" in output
    assert sorted(FeatureCache(cache).videos()) == before  # nothing removed, nothing added


def test_a_killed_index_build_is_cleaned_up_and_built_again(video_dir: Path, tmp_path: Path) -> None:
    from tcmgc_cli.search import SearchIndex, open_search, ranker_key
    from tcmgc_cli.workspace import index_folders

    cache = tmp_path / "c.h5"
    assert extract(video_dir, cache)[0] == 0
    first = open_search(cache=cache, scorer="clip")
    folder = index_folders(cache, ranker_key(first.ranker))[0]
    part = next(folder.glob("part-*"))
    shutil.rmtree(part)  # as if the build had been killed before its rename: half-written files under a temp name
    dead = 2**22 + 12345  # no such process
    stale = folder / f".tmp-{part.name}-{dead}"
    stale.mkdir()
    (stale / "frames.npy").write_bytes(b"half")
    assert not os.path.exists(f"/proc/{dead}")
    again = open_search(cache=cache, scorer="clip")
    assert not stale.exists() and (part / "meta.json").is_file()
    scratch = SearchIndex.from_cache(first.ranker, FeatureCache(cache))
    text, _ = again.encode_queries(["a red circle"])
    idx = torch.arange(len(again))
    np.testing.assert_allclose(again.full_scores(text, idx), scratch.full_scores(text, idx), rtol=1e-6)
