"""The reference's inputs, end to end from a video file to scores (method doc, sections 2-4): a short video (fewer
frames than Nf) decoded at 1 fps, zero-padded, masked in the temporal encoder and not in LVA."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tcmgc_cli.cache import FeatureCache
from tcmgc_cli.cli import app
from tests.helpers import random_frames, write_video

runner = CliRunner()


@pytest.fixture
def short_video(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """5 seconds at 4 fps: 20 frames, so 5 at 1 fps, fewer than tcmgc-tiny's 8."""
    frames = random_frames(20, size=48, seed=3)
    folder = tmp_path / "videos"
    folder.mkdir()
    write_video(folder / "short.mp4", frames, fps=4)
    return folder, frames


def test_short_video_from_file_to_scores_as_the_reference(short_video: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    from tcmgc_cli.data.transforms import normalize, resize_crop
    from tcmgc_cli.model.factory import create_model, resolve_spec
    from tcmgc_cli.model.tcmgc import TextFeatures

    folder, frames = short_video
    cache_path = tmp_path / "c.h5"
    args = ["extract", "--videos", str(folder), "--model", "tcmgc-tiny", "--cache", str(cache_path), "--workers", "0",
            "--json"]  # fmt: skip
    assert runner.invoke(app, args).exit_code == 0
    cache = FeatureCache(cache_path)
    # 1. frames chosen: the first frame of each second (the video is 4 fps), then padding slots
    entry = cache.entry("short")
    times, track = cache.track("short")
    assert times.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert cache.entry_inputs(["short"])[1][0].tolist() == [True] * 5 + [False] * 3 and (entry.start, entry.stop) == (
        0,
        5,
    )
    embeddings_of_short = cache.entry_inputs(["short"])[0][0]
    # 2. zero padding: real slots are the image tower on those frames, padded ones on an all-zero normalized frame
    model = create_model(resolve_spec("tcmgc-tiny")).eval()
    with torch.no_grad():
        x = normalize(torch.from_numpy(resize_crop(frames[[0, 4, 8, 12, 16]], model.preprocess)), model.preprocess)
        real = model.clip.visual(x)  # (5, D)
        zero = model.clip.visual(torch.zeros(1, *x.shape[1:]))  # (1, D)
    torch.testing.assert_close(torch.from_numpy(track), real, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.from_numpy(embeddings_of_short[:5]), real, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.from_numpy(embeddings_of_short[5:]), zero.expand(3, -1), rtol=1e-4, atol=1e-5)
    # 3. the mask marks the real frames
    mask = torch.from_numpy(cache.entry_inputs(["short"])[1])
    assert mask is not None and mask.tolist() == [[True] * 5 + [False] * 3]
    # 4. scores: the factorized retrieval path with the mask equals the direct path (method doc's equations) ...
    embeddings = torch.from_numpy(cache.entry_inputs(["short"])[0])
    tokens = torch.randint(1, 400, (3, model.cfg.max_words), generator=torch.Generator().manual_seed(1))
    tokens[:, -1] = 49407
    with torch.no_grad():
        text = model.encode_text(tokens)
        fast = model.score_chunked(text, model.encode_video(embeddings, mask, factorized=True))["logits"]
        direct = model(TextFeatures(text.words, text.sentence), model.encode_video(embeddings, mask))["logits"]
        unmasked = model(TextFeatures(text.words, text.sentence), model.encode_video(embeddings))["logits"]
        # ... and the temporal encoder really masks: padded keys change nothing for the real frames' outputs
        alone = model.encode_video(embeddings[:, :5]).temporal
    torch.testing.assert_close(fast, direct, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(direct, unmasked, atol=1e-4)  # the mask matters
    torch.testing.assert_close(model.encode_video(embeddings, mask).temporal[:, :5], alone, rtol=1e-4, atol=1e-5)


def test_dataset_runs_use_the_reference_inputs_and_name_them(
    sample_cache: Path, trained_run: tuple[Path, Path]
) -> None:
    from tcmgc_cli.checkpoint import RunFolder

    sampling = FeatureCache(sample_cache).settings.track
    assert sampling == {"num_frames": 8, "fps": 1.0, "padding": "zero", "window": 0, "stride": 0}
    assert json.loads(RunFolder(trained_run[0]).config_file.read_text())["inputs"] == sampling
