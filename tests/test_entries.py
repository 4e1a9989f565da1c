"""What an entry is (`cache/entries.py`), against loops written from the method doc's rule (section 2): every reader
of entries (cache, training, the search collection, the built-in index, rankers, moments) builds its inputs with
these two functions, so these tests stand for all of them."""

import math

import numpy as np
import pytest

from tcmgc_cli.cache.entries import PAD, gather, layout, slot_times, video_entries, window_starts
from tcmgc_cli.config import TrackConfig


def oracle_slots(length: int, num: int, padding: str) -> list[int]:
    """Section 2: more frames than slots take round-down(linspace(0, n - 1, T)); else all of them, then padding."""
    if length > num or (padding == "repeat" and length > 0):
        return [math.floor(i * (length - 1) / (num - 1)) if num > 1 else 0 for i in range(num)]
    return list(range(length)) + [PAD] * (num - length)


@pytest.mark.parametrize("padding", ["zero", "repeat"])
@pytest.mark.parametrize("num", [1, 4, 8])
def test_layout_of_many_entries_over_one_table_matches_a_loop(padding: str, num: int) -> None:
    rng = np.random.default_rng(num)
    counts = rng.integers(1, 20, 6)  # six tracks, stacked in one table
    offsets = np.cumsum(counts) - counts
    starts, stops, first = [], [], []
    for count, offset in zip(counts, offsets, strict=True):
        for _ in range(3):
            a = int(rng.integers(0, count))
            b = int(rng.integers(a + 1, count + 1))
            starts.append(a)
            stops.append(b)
            first.append(offset)
    got = layout(np.array(starts), np.array(stops), np.array(first), num, padding)
    for row, a, b, f in zip(got, starts, stops, first, strict=True):
        want = [PAD if s == PAD else s + a + f for s in oracle_slots(b - a, num, padding)]
        assert row.tolist() == want


def test_gather_fills_padded_slots_with_the_padding_feature_and_masks_them() -> None:
    table = np.arange(30, dtype=np.float32).reshape(10, 3)  # (F, D)
    pad = np.array([-1.0, -2.0, -3.0], np.float32)
    rows = np.array([[2, 3, PAD, PAD], [9, 0, 5, 7]])
    frames, mask = gather(table, rows, pad)
    for e in range(2):
        for t in range(4):
            want = pad if rows[e, t] == PAD else table[rows[e, t]]
            np.testing.assert_array_equal(frames[e, t], want)
            assert mask[e, t] == (rows[e, t] != PAD)

    class Rows:  # a table on disk, read by row numbers in float16
        def take(self, r: np.ndarray) -> np.ndarray:
            return table.astype(np.float16)[r]

    half, _ = gather(Rows(), rows, pad, np.float32)  # the padding feature stays exact in float32
    np.testing.assert_array_equal(half[0, 2], pad)
    np.testing.assert_array_equal(half[1], table[[9, 0, 5, 7]].astype(np.float16).astype(np.float32))


def test_slot_times_give_a_padded_slot_the_last_real_frames_time() -> None:
    times = np.array([0.0, 1.0, 2.0, 3.0])
    assert slot_times(times, np.array([1, 2, PAD, PAD])).tolist() == [1.0, 2.0, 2.0, 2.0]


@pytest.mark.parametrize("count", [1, 11, 12, 13, 40])
def test_windows_cover_a_track_and_are_named_in_order(count: int) -> None:
    rule = TrackConfig(num_frames=12, window=12, stride=6)
    entries = video_entries("v", count, rule)
    if count <= 12:
        assert [(e.id, e.start, e.stop) for e in entries] == [("v", 0, count)]
        return
    starts = window_starts(count, 12, 6)
    assert [(e.id, e.start, e.stop) for e in entries] == [(f"v@{n:04d}", s, s + 12) for n, s in enumerate(starts)]
    covered = set().union(*(range(e.start, e.stop) for e in entries))
    assert covered == set(range(count)) and entries[-1].stop == count
