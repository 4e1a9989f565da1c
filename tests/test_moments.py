"""Moment retrieval metrics against hand-computed cases, and `tcmgc evaluate --moments` on real decoded video."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tcmgc_cli.cli import app
from tcmgc_cli.metrics import MOMENT_KEYS, average_precision, moment_metrics, temporal_iou
from tests.helpers import ROOT

runner = CliRunner()
LONG = ROOT / "sample_data" / "long"


def test_temporal_iou() -> None:
    assert temporal_iou([0, 2], [1, 3]) == pytest.approx(1 / 3)
    assert temporal_iou([0, 1], [1, 2]) == 0.0  # touching ends do not overlap
    assert temporal_iou([2, 4], [2, 4]) == 1.0 and temporal_iou([0, 1], [5, 6]) == 0.0


def test_r1_counts_an_iou_exactly_at_the_threshold_and_takes_the_best_true_window() -> None:
    truth = [[[0.0, 4.0]], [[0.0, 10.0]], [[0.0, 2.0], [10.0, 12.0]], [[0.0, 4.0]]]
    preds = [[[0.0, 2.0, 1.0]], [[0.0, 7.0, 1.0]], [[10.0, 12.0, 1.0]], [[3.0, 9.0, 2.0], [0.0, 4.0, 1.0]]]
    m = moment_metrics(preds, truth)
    # IoU 0.5 (counts at 0.5), 0.7 (counts at both), 1.0 with the second true window, 1/9 (the top one only counts)
    assert m["R1@0.5"] == pytest.approx(75.0) and m["R1@0.7"] == pytest.approx(50.0) and m["num_queries"] == 4


def test_average_precision_by_hand() -> None:
    truth = [[0.0, 2.0], [4.0, 6.0]]
    # TP (first window), FP (the first window is taken, the other does not overlap), TP: precision 1, 1/2, 2/3 at
    # recall 1/2, 1/2, 1: the envelope gives 1/2 * 1 + 1/2 * 2/3
    preds = [[0.0, 2.0, 0.9], [0.0, 2.0, 0.8], [4.0, 6.0, 0.7]]
    assert average_precision(preds, truth, 0.5) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # ties keep the order given: a miss first halves the precision of the hit after it
    assert average_precision([[5.0, 6.0, 0.5], [0.0, 2.0, 0.5]], [[0.0, 2.0]], 0.5) == pytest.approx(0.5)
    assert average_precision([[0.0, 2.0, 0.5], [5.0, 6.0, 0.5]], [[0.0, 2.0]], 0.5) == pytest.approx(1.0)
    assert average_precision([], [[0.0, 2.0]], 0.5) == 0.0


def test_map_averages_the_ten_thresholds() -> None:
    # IoU 0.8 = 8/10: a hit at thresholds 0.5 ... 0.8 (seven of ten), a miss above
    m = moment_metrics([[[0.0, 8.0, 1.0]]], [[[0.0, 10.0]]])
    assert m["mAP@0.5"] == 100.0 and m["mAP@0.75"] == 100.0 and m["mAP"] == pytest.approx(70.0)
    # only the ten best-scored predictions count
    many = [[float(k), float(k) + 1, 1.0] for k in range(10, 20)] + [[0.0, 1.0, 0.5]]
    assert moment_metrics([many], [[[0.0, 1.0]]])["mAP"] == 0.0


def test_corpus_metrics_need_the_right_video_first_or_in_the_first_ten() -> None:
    truth = [[[0.0, 2.0]], [[0.0, 2.0]], [[4.0, 8.0]]]
    corpus = [[("a", 0.0, 2.0)], [("b", 0.0, 2.0), ("a", 0.0, 2.0)], [("c", 4.0, 6.0)] + [("x", 0.0, 1.0)] * 10]
    m = moment_metrics([[[0.0, 1.0, 1.0]]] * 3, truth, corpus, ["a", "a", "c"])
    assert m["corpus_R1@0.5"] == pytest.approx(200 / 3)  # a right; b wrong video first; c's IoU exactly 0.5
    assert m["corpus_R1@0.7"] == pytest.approx(100 / 3)
    assert m["corpus_R10@0.5"] == 100.0


@pytest.fixture(scope="module")
def long_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("long") / "long.h5"
    result = runner.invoke(app, ["extract", "--videos", str(LONG / "videos"), "--model", "tcmgc-tiny", "--cache",
                                 str(cache), "--workers", "0", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    return cache


def test_evaluate_moments_on_the_sample_long_videos(long_cache: Path, tmp_path: Path) -> None:
    preds = tmp_path / "preds.jsonl"
    args = ["evaluate", "--moments", str(LONG / "moments.jsonl"), "--cache", str(long_cache), "--scorer", "clip"]
    result = runner.invoke(app, [*args, "--save-predictions", str(preds), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert set(MOMENT_KEYS) <= set(metrics) and metrics["num_queries"] == 30
    assert all(0 <= metrics[k] <= 100 for k in MOMENT_KEYS)
    lines = [json.loads(line) for line in preds.read_text().splitlines()]
    truth = {q["qid"]: q for q in map(json.loads, (LONG / "moments.jsonl").read_text().splitlines())}
    assert [line["qid"] for line in lines] == list(truth)
    for line in lines:
        windows = line["pred_relevant_windows"]
        assert 1 <= len(windows) <= 10 and all(0 <= a < b <= truth[line["qid"]]["duration"] for a, b, _ in windows)
        assert all(len(w) == 3 for w in line["pred_corpus_windows"])
    # the saved predictions give the printed figures
    again = moment_metrics([line["pred_relevant_windows"] for line in lines],
                           [truth[line["qid"]]["relevant_windows"] for line in lines],
                           [[tuple(w) for w in line["pred_corpus_windows"]] for line in lines],
                           [truth[line["qid"]]["vid"] for line in lines])  # fmt: skip
    for key in MOMENT_KEYS:
        assert again[key] == pytest.approx(metrics[key])
    table = runner.invoke(app, args)
    assert table.exit_code == 0 and "R1@0.5" in table.output


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"qid": 1, "query": "a dog", "vid": "long0", "relevant_windows": [[20, 40]]}', "lies outside video 'long0'"),
        ('{"qid": 1, "query": "a dog", "vid": "nope", "relevant_windows": [[0, 2]]}', "'nope' is not in the cache"),
        ('{"qid": 1, "query": "  ", "vid": "long0", "relevant_windows": [[0, 2]]}', "the query is empty"),
        ('{"qid": 1, "query": "a dog", "vid": "long0"', "line 2 is not JSON"),
        ('{"qid": 1, "vid": "long0", "relevant_windows": [[0, 2]]}', "line 2 has no query"),
        ('{"qid": 1, "query": "a dog", "vid": "long0", "relevant_windows": [[3, 1]]}', "start < end"),
    ],
)
def test_bad_moment_files_are_one_line_naming_the_line(
    long_cache: Path, tmp_path: Path, line: str, message: str
) -> None:
    path = tmp_path / "bad.jsonl"
    good = '{"qid": 0, "query": "a red circle", "vid": "long1", "relevant_windows": [[0, 2]]}'
    path.write_text(f"{good}\n{line}\n")
    result = runner.invoke(app, ["evaluate", "--moments", str(path), "--cache", str(long_cache), "--scorer", "clip"])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
    assert "line 2" in result.output or "bad.jsonl" in result.output


def test_evaluate_computes_in_fp32_whatever_the_host_prefers(
    long_cache: Path, trained_run: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host where `auto` means bf16 (pinned here) gets the fp32 numbers by default, as every other host does."""
    monkeypatch.setenv("TCMGC_PRECISION", "bf16")
    args = ["evaluate", "--moments", str(LONG / "moments.jsonl"), "--cache", str(long_cache), "--checkpoint",
            str(trained_run[0]), "--json"]  # fmt: skip
    runs = {p: runner.invoke(app, [*args, *(["--precision", p] if p else [])]) for p in ("", "fp32", "auto")}
    assert all(r.exit_code == 0 for r in runs.values()), [r.output for r in runs.values()]
    default, fp32, auto = (json.loads(runs[p].stdout) for p in ("", "fp32", "auto"))
    assert default == fp32 and default["precision"] == "fp32"
    assert auto["precision"] == "bf16"  # the host's preference is real: only the default ignores it


def test_a_moments_file_that_is_not_utf8_names_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(
        '{"qid": 0, "query": "un caf\xe9", "vid": "long0", "relevant_windows": [[0, 2]]}\n'.encode("latin-1")
    )
    result = runner.invoke(app, ["evaluate", "--moments", str(path), "--scorer", "clip"])
    assert result.exit_code == 1 and "save it as UTF-8" in result.output and "Traceback" not in result.output


def test_attention_check_against_its_definition(long_cache: Path, trained_run: tuple[Path, Path]) -> None:
    """Per query, by loops: the entry holding the most seconds of the true window, LVA's attention of the sentence
    and of each word over its frames (section 4's softmax), the sentence's mass inside the window over the mass on
    real frames, and the words whose most-attended real frame is inside."""
    from tcmgc_cli.evaluation.attention import query_attention
    from tcmgc_cli.evaluation.moment_retrieval import read_moment_queries
    from tcmgc_cli.search import open_search
    from tests import oracle

    index = open_search(trained_run[0], long_cache, sync=False)
    c, model = index.collection, index.trained.model
    for q in read_moment_queries(LONG / "moments.jsonl")[:4]:
        text, _ = index.encode_queries([q.query])
        got = query_attention(index, text, q.qid, q.query, q.vid, q.windows)
        video = c.videos.index(q.vid)
        best, most = -1, -1.0
        for e in range(len(c)):
            if c.entry_video[e] == video:
                a, b = c.span(video, int(c.entry_start[e]), int(c.entry_stop[e]))
                seconds = sum(max(0.0, min(b, w1) - max(a, w0)) for w0, w1 in q.windows)
                best, most = (e, seconds) if seconds > most else (best, most)
        _, temporal, mask = index.inputs_of(torch.tensor([best]))
        real = [i for i in range(c.num_frames) if mask[0, i]]
        times = [float(c.entry_times(best)[i]) for i in real]
        inside = [any(w0 <= t < w1 for w0, w1 in q.windows) for t in times]
        sentence = oracle.lva_weights(model, text.sentence[0], temporal[0])
        mass = sum(sentence[i] for i in real)
        assert got.times.tolist() == times and got.inside.tolist() == inside
        assert got.in_span == pytest.approx(sum(sentence[i] for i, ok in zip(real, inside, strict=True) if ok) / mass,
                                            rel=1e-4)  # fmt: skip
        assert got.padding_mass == pytest.approx(1 - mass, abs=1e-5)
        ids = index.ranker.tokenizer([q.query])[0]
        pointing = 0
        for j in range(1, int(ids.argmax())):  # the caption's words, start and end left out
            row = oracle.lva_weights(model, text.words[0, j], temporal[0])
            pointing += inside[max(range(len(real)), key=lambda k: row[real[k]])]
        assert got.pointing == pointing and len(got.words) == int(ids.argmax()) - 1


def test_evaluate_attention_prints_the_check_and_draws_the_true_windows(
    long_cache: Path, trained_run: tuple[Path, Path], tmp_path: Path
) -> None:
    from PIL import Image

    png = tmp_path / "attention.png"
    args = ["evaluate", "--moments", str(LONG / "moments.jsonl"), "--cache", str(long_cache), "--checkpoint",
            str(trained_run[0]), "--attention-png", str(png), "--json"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    m = json.loads(result.stdout)
    assert m["attention_source"] == "lva" and m["attention_queries"] + m["attention_skipped"] == 30
    for key in ("attention_in_span", "attention_uniform", "word_pointing", "word_pointing_chance"):
        assert 0 < m[key] < 1, key
    assert m["attention_ratio"] == pytest.approx(m["attention_in_span"] / m["attention_uniform"])
    assert set(MOMENT_KEYS) <= set(m) and "attention_examples" not in m
    pixels = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3)
    assert ((pixels == (0, 160, 0)).all(1)).sum() > 100  # the true windows' green boxes
    table = runner.invoke(app, args[:-3])
    assert table.exit_code == 0 and "mass in span" not in table.output  # no --attention: no check
    table = runner.invoke(app, [*args[:-3], "--attention"])
    assert table.exit_code == 0 and "word pointing" in table.output and "mass in span" in table.output
    alone = runner.invoke(app, ["evaluate", "--attention", "--cache", str(long_cache)])
    assert alone.exit_code == 2 and "--moments" in alone.output
    nowhere = runner.invoke(app, [*args[:-3], "--attention-png", str(tmp_path / "no" / "a.png")])
    assert nowhere.exit_code == 2 and "create it first" in nowhere.output and "Traceback" not in nowhere.output
