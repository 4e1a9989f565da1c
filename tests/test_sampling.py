import math

import pytest

from tcmgc_cli.cache.entries import PAD, span_of
from tcmgc_cli.cache.entries import slot_rows as entry_rows
from tcmgc_cli.config import TrackConfig
from tcmgc_cli.data.sampling import fps_candidates, spread
from tcmgc_cli.errors import ConfigError


@pytest.mark.parametrize("count,num", [(100, 12), (12, 12), (5, 12), (1, 4), (37, 1), (2, 3)])
def test_spread_matches_linspace_floor(count: int, num: int) -> None:
    import numpy as np

    expected = np.floor(np.linspace(0, count - 1, num)).astype(int).tolist()
    got = spread(count, num)
    assert got == expected
    assert len(got) == num and got[0] == 0 and got[-1] == (count - 1 if num > 1 else 0)


def test_entry_rows_pad_with_zeros_or_by_repetition() -> None:
    assert entry_rows(3, 8).tolist() == [0, 1, 2] + [PAD] * 5  # the reference: real frames first, then padding
    rep = entry_rows(3, 8, "repeat").tolist()
    assert len(rep) == 8 and sorted(set(rep)) == [0, 1, 2] and rep == sorted(rep)
    assert entry_rows(10, 3).tolist() == [0, 4, 9]  # more frames than slots: floor(linspace)
    assert entry_rows(4, 4).tolist() == [0, 1, 2, 3]


def test_spans_run_from_frame_to_frame() -> None:
    times = [0.0, 1.0, 2.0, 3.0]
    assert span_of(times, 3.6, 0, 2) == (0.0, 2.0)
    assert span_of(times, 3.6, 2, 4) == (2.0, 3.6)  # the last frame lasts until the video ends


def test_fps_candidates_first_frame_of_each_second() -> None:
    # 30 fps, 95 frames -> seconds 0,1,2,3 start at frames 0,30,60,90
    assert fps_candidates(95, 30.0, 1.0) == [0, 30, 60, 90]
    # sampling faster than the video: every frame
    assert fps_candidates(5, 4.0, 10.0) == [0, 1, 2, 3, 4]
    # fractional step: 25 fps at 2 fps -> every 12.5 frames, floored
    assert fps_candidates(50, 25.0, 2.0) == [math.floor(k * 12.5) for k in range(4)]


def test_the_reference_input_of_a_long_video() -> None:
    # 10 s at 30 fps: the track is frames 0,30,...,270; an entry of 3 slots takes track rows 0, 4, 9
    track = fps_candidates(300, 30.0, 1.0)
    assert [track[i] for i in entry_rows(len(track), 3)] == [0, 120, 270]


@pytest.mark.parametrize(
    "kwargs", [{"num_frames": 0}, {"padding": "random"}, {"fps": 0.0}, {"window": 4, "stride": 5}, {"window": -1}]
)
def test_bad_track_config(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        TrackConfig(**kwargs)  # type: ignore[arg-type]
