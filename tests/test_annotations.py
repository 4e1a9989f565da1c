import json
import shutil
from pathlib import Path

import pytest

from tcmgc_cli.data.annotations import load_split, video_id_from_name
from tcmgc_cli.errors import AnnotationError
from tests.helpers import SAMPLE_MSRVTT

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-annotations"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason="shared/data/real-annotations is not beside the checkout")


def test_sample_msrvtt_splits() -> None:
    train = load_split("msrvtt", SAMPLE_MSRVTT, "train")
    test = load_split("msrvtt", SAMPLE_MSRVTT, "test")
    assert len(train.video_ids) == 90 and len(train.captions) == 900
    assert len(test.video_ids) == len(test.captions) == 30 and test.caption_video == list(range(30))
    assert load_split("msrvtt", SAMPLE_MSRVTT, "train", train_list="7k").video_ids == [f"video{i}" for i in range(80)]


@needs_real
def test_real_msrvtt_test_file_and_wild_variants(tmp_path: Path) -> None:
    shutil.copy(REAL / "msrvtt" / "MSRVTT_JSFUSION_test.csv", tmp_path)
    split = load_split("msrvtt", tmp_path, "test")
    assert len(split.video_ids) == 1000 and split.video_ids[:3] == ["video9770", "video9771", "video7020"]
    assert split.captions[1] == "a little girl does gymnastics"
    for variant, rows in (
        ("variant_semicolon_MSRVTT_JSFUSION_test.head5.csv", 5),
        ("variant_header_sentences_MSRVTT_JSFUSION_test.head3.csv", 3),
    ):
        folder = tmp_path / variant
        folder.mkdir()
        shutil.copy(REAL / "msrvtt" / variant, folder / "MSRVTT_JSFUSION_test.csv")
        got = load_split("msrvtt", folder, "test")
        assert got.video_ids == split.video_ids[:rows] and got.captions == split.captions[:rows]


@needs_real
def test_real_didemo_paragraphs(tmp_path: Path) -> None:
    shutil.copy(REAL / "didemo" / "test_data.json", tmp_path)
    anns = json.loads((tmp_path / "test_data.json").read_text())
    names = sorted({a["video"] for a in anns})
    (tmp_path / "test_list.txt").write_text("\n".join(names) + "\n")
    split = load_split("didemo", tmp_path, "test")
    assert len(split.video_ids) == 1037 and len(split.captions) == 1037
    first = names[0]
    want = " ".join(a["description"].strip() for a in anns if a["video"] == first)
    assert split.captions[0] == want
    bare = [n for n in names if n.endswith(".")]
    assert len(bare) > 20 and split.video_files is not None
    assert video_id_from_name(bare[0]) == bare[0][:-1] and video_id_from_name("a.b.m4v") == "a.b"


def test_vatex_every_caption_is_a_query(tmp_path: Path) -> None:
    (tmp_path / "ref_captions.json").write_text(json.dumps({"v1": ["a", "b"], "v2": ["c"], "v3": ["d"]}))
    (tmp_path / "test_list.txt").write_text("v2\nv1\n")
    split = load_split("vatex", tmp_path, "test")
    assert split.video_ids == ["v2", "v1"] and split.captions == ["c", "a", "b"] and split.caption_video == [0, 1, 1]


def test_csv_and_errors(tmp_path: Path) -> None:
    f = tmp_path / "a.csv"
    f.write_text("video_id,caption,split\nx,a dog,train\ny,a cat,test\nz,a cow,\n")
    assert load_split("csv", None, "train", f).video_ids == ["x", "z"]
    f.write_text("video_id,text\nx,a dog\n")
    with pytest.raises(AnnotationError, match="missing column 'caption'"):
        load_split("csv", None, "train", f)
    f.write_text("video_id,caption\nx,a dog\ny,  \n")
    with pytest.raises(AnnotationError, match="1 empty caption"):
        load_split("csv", None, "train", f)
    with pytest.raises(AnnotationError, match="MSRVTT_JSFUSION_test.csv does not exist"):
        load_split("msrvtt", tmp_path, "test")
    with pytest.raises(AnnotationError, match="--data-root"):
        load_split("didemo", tmp_path / "nowhere", "test")
