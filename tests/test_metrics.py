import numpy as np
import pytest

from tcmgc_cli.metrics import dual_softmax, retrieval_metrics


def loop_ranks(scores: np.ndarray, gt: list[int]) -> list[int]:
    ranks = []
    for row, g in zip(scores, gt, strict=True):
        ranks.append(sum(1 for s in row if s > row[g]))
    return ranks


def oracle(ranks: list[int], prefix: str) -> dict[str, float]:
    n = len(ranks)
    out = {f"{prefix}_R@{k}": 100.0 * sum(r < k for r in ranks) / n for k in (1, 5, 10)}
    s = sorted(ranks)
    median = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    out[f"{prefix}_MdR"] = median + 1
    out[f"{prefix}_MnR"] = sum(ranks) / n + 1
    return out


def test_one_caption_per_video_against_loops() -> None:
    scores = np.random.default_rng(0).standard_normal((40, 40))
    got = retrieval_metrics(scores, np.arange(40))
    want = {
        **oracle(loop_ranks(scores, list(range(40))), "t2v"),
        **oracle(loop_ranks(scores.T, list(range(40))), "v2t"),
    }
    for key, value in want.items():
        assert got[key] == pytest.approx(value)
    assert got["num_queries"] == got["num_videos"] == 40


def test_hand_computed_with_ties() -> None:
    scores = np.array(
        [
            [0.9, 0.1, 0.2],  # gt 0: rank 0
            [0.5, 0.5, 0.1],  # gt 1: tied with video 0 -> strict rank 0, counted as tied
            [0.8, 0.9, 0.3],  # gt 2: rank 2
        ]
    )
    m = retrieval_metrics(scores, np.arange(3))
    assert m["t2v_R@1"] == pytest.approx(200 / 3) and m["t2v_MdR"] == 1 and m["t2v_MnR"] == pytest.approx(5 / 3)
    assert m["t2v_tied"] == 1
    # v2t: column 0 (0.9, 0.5, 0.8) gt 0 rank 0; column 1 (0.1, 0.5, 0.9) gt 1 rank 1; column 2 gt 2 rank 0
    assert m["v2t_R@1"] == pytest.approx(200 / 3) and m["v2t_MnR"] == pytest.approx(4 / 3) and m["v2t_tied"] == 0


def test_several_captions_per_video() -> None:
    # 4 captions, 2 videos: captions 0,1 -> video 0; captions 2,3 -> video 1
    scores = np.array([[0.9, 0.2], [0.1, 0.3], [0.4, 0.6], [0.7, 0.5]])
    m = retrieval_metrics(scores, np.array([0, 0, 1, 1]))
    assert m["t2v_R@1"] == 50.0 and m["num_queries"] == 4  # captions 0 and 2 right
    # v2t: video v vs group g = max over g's captions: [[0.9, 0.7], [0.3, 0.6]] -> both diagonals win
    assert m["v2t_R@1"] == 100.0


def test_dual_softmax_rescales_by_the_other_direction() -> None:
    s = np.array([[1.0, 2.0], [3.0, 0.5]])
    out = dual_softmax(s, axis=0)
    prior = np.exp(s) / np.exp(s).sum(0, keepdims=True)
    np.testing.assert_allclose(out, s * prior)
