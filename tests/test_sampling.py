import math

import pytest

from tcmgc_cli.config import SamplingConfig
from tcmgc_cli.data.sampling import fps_candidates, sample_frame_indices, spread
from tcmgc_cli.errors import ConfigError


@pytest.mark.parametrize("count,num", [(100, 12), (12, 12), (5, 12), (1, 4), (37, 1), (2, 3)])
def test_spread_matches_linspace_floor(count: int, num: int) -> None:
    import numpy as np

    expected = np.floor(np.linspace(0, count - 1, num)).astype(int).tolist()
    got = spread(count, num)
    assert got == expected
    assert len(got) == num and got[0] == 0 and got[-1] == (count - 1 if num > 1 else 0)


def test_short_video_pads_by_repetition() -> None:
    idx = sample_frame_indices(3, 4.0, SamplingConfig(num_frames=8))
    assert len(idx) == 8 and sorted(set(idx)) == [0, 1, 2] and idx == sorted(idx)


def test_fps_candidates_first_frame_of_each_second() -> None:
    # 30 fps, 95 frames -> seconds 0,1,2,3 start at frames 0,30,60,90
    assert fps_candidates(95, 30.0, 1.0) == [0, 30, 60, 90]
    # sampling faster than the video: every frame
    assert fps_candidates(5, 4.0, 10.0) == [0, 1, 2, 3, 4]
    # fractional step: 25 fps at 2 fps -> every 12.5 frames, floored
    assert fps_candidates(50, 25.0, 2.0) == [math.floor(k * 12.5) for k in range(4)]


def test_fps_strategy_spreads_over_candidates() -> None:
    cfg = SamplingConfig(num_frames=3, strategy="fps", fps=1.0)
    # 10 s at 30 fps: candidates 0,30,...,270; spread 3 of 10 -> positions 0,4,9
    assert sample_frame_indices(300, 30.0, cfg) == [0, 120, 270]


@pytest.mark.parametrize("kwargs", [{"num_frames": 0}, {"strategy": "random"}, {"fps": 0.0}])
def test_bad_sampling_config(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        SamplingConfig(**kwargs)  # type: ignore[arg-type]
