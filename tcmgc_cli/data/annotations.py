"""Annotation files as the reference code reads them. The only module that imports pandas for datasets."""

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tcmgc_cli.data.video import VIDEO_EXTENSIONS
from tcmgc_cli.errors import AnnotationError

MSRVTT_VIDEO_DIRS = ("videos", "MSRVTT_Videos", "all")
VIDEO_DIRS = ("videos", "all")  # DiDeMo's and VATEX's videos folder under --data-root
MSRVTT_ID_FILES = ("MSRVTT_train.9k.csv", "MSRVTT_train.7k.csv", "MSRVTT_JSFUSION_test.csv")


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise AnnotationError(
            f"{path} is not UTF-8 text ({err.reason} at byte {err.start}): save it as UTF-8."
        ) from None


def read_csv_checked(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    """Read a comma-separated file with a header, insisting on `required` columns; names the problem if not."""
    if not path.is_file():
        raise AnnotationError(f"{path} does not exist: check --data-root / --annotations.")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise AnnotationError(f"{path} is empty: it needs a header row ({', '.join(required)}, ...).") from None
    except UnicodeDecodeError as err:
        raise AnnotationError(
            f"{path} is not UTF-8 text ({err.reason} at byte {err.start}): save it as UTF-8."
        ) from None
    except pd.errors.ParserError as err:
        raise AnnotationError(f"{path} is not a readable CSV file ({str(err).strip()}).") from err
    missing = [c for c in required if c not in df.columns]
    if missing:
        found = ", ".join(map(str, df.columns))
        hint = " It looks semicolon-separated: save it with commas." if len(df.columns) == 1 and ";" in found else ""
        raise AnnotationError(f"{path.name} is missing column {', '.join(map(repr, missing))} (found: {found}).{hint}")
    return df


def read_id_list(path: Path) -> list[str]:
    """Video ids listed in a CSV with a `video_id` column (MSR-VTT split lists, the 1k-A test file, custom CSVs)."""
    ids = read_csv_checked(path, ("video_id",))["video_id"].str.strip()
    return list(dict.fromkeys(i for i in ids if i))


@dataclass(frozen=True)
class DatasetVideos:
    """The videos a dataset's annotation files name: their folder, their ids, and the exact file names where the
    dataset gives them (DiDeMo; elsewhere a video is `<id>.<a video extension>` in the folder)."""

    folder: Path
    ids: list[str]
    files: dict[str, str]  # id -> exact file name


def dataset_videos(dataset: str, root: Path) -> DatasetVideos:
    """The videos of a dataset laid out as the reference code reads it (`tcmgc extract --dataset`)."""
    if not root.is_dir():
        raise AnnotationError(f"--data-root {root} is not a folder.")
    dirs = MSRVTT_VIDEO_DIRS if dataset == "msrvtt" else VIDEO_DIRS
    folder = next((root / d for d in dirs if (root / d).is_dir()), None)
    if folder is None:
        raise AnnotationError(f"{root} has no videos folder: expected one of {', '.join(dirs)}/.")
    if dataset == "msrvtt":
        return DatasetVideos(folder, msrvtt_ids(root), {})
    lists = [root / f"{split}_list.txt" for split in SPLITS if (root / f"{split}_list.txt").is_file()]
    if dataset not in ("didemo", "vatex") or not lists:
        raise AnnotationError(f"{root} has none of train_list.txt, val_list.txt, test_list.txt ({dataset} layout).")
    names = list(dict.fromkeys(n for p in lists for n in _read_list(p)))
    if dataset == "vatex":
        return DatasetVideos(folder, names, {})
    files = {video_id_from_name(n): n for n in names}  # DiDeMo names its files exactly, extension and all
    return DatasetVideos(folder, list(files), files)


def msrvtt_ids(root: Path) -> list[str]:
    """Every video id an MSR-VTT data root's annotation files name."""
    data_json = root / "MSRVTT_data.json"
    if data_json.is_file():
        try:
            videos = json.loads(_text(data_json))["videos"]
            return list(dict.fromkeys(str(v["video_id"]) for v in videos))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise AnnotationError(f"{data_json} is not an MSR-VTT data file (need videos[].video_id): {err}") from err
    lists = [root / name for name in MSRVTT_ID_FILES if (root / name).is_file()]
    if not lists:
        raise AnnotationError(f"{root} has neither MSRVTT_data.json nor any of {', '.join(MSRVTT_ID_FILES)}.")
    return list(dict.fromkeys(i for p in lists for i in read_id_list(p)))


SPLITS = ("train", "val", "test")


@dataclass
class Split:
    """Captions of one split and the videos they belong to."""

    dataset: str
    name: str  # train | val | test
    video_ids: list[str]  # cache ids (file names without extension), in the dataset's order
    captions: list[str]
    caption_video: list[int]  # index into video_ids of each caption
    video_files: list[str] | None = None  # exact file names where the dataset names them (DiDeMo)

    def __post_init__(self) -> None:
        empty = [i for i, c in enumerate(self.captions) if not c.strip()]
        if empty:
            raise AnnotationError(
                f"{self.dataset} {self.name}: {len(empty)} empty caption(s) (first at rows {empty[:5]}): fill or remove them."
            )

    def restrict(self, keep: set[str]) -> "Split":
        """The split without the videos not in `keep` (and their captions)."""
        new_index: dict[int, int] = {}
        for i, vid in enumerate(self.video_ids):
            if vid in keep:
                new_index[i] = len(new_index)
        pairs = [(c, new_index[v]) for c, v in zip(self.captions, self.caption_video, strict=True) if v in new_index]
        files = None if self.video_files is None else [self.video_files[i] for i in new_index]
        ids = [self.video_ids[i] for i in new_index]
        return Split(self.dataset, self.name, ids, [c for c, _ in pairs], [v for _, v in pairs], files)

    def summary(self) -> str:
        return f"{self.dataset} {self.name}: {len(self.video_ids)} videos, {len(self.captions)} captions"


def video_id_from_name(name: str) -> str:
    """A file name without its video extension; DiDeMo's bare trailing '.' goes too."""
    path = Path(name)
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return path.stem
    return name[:-1] if name.endswith(".") else name


def _from_pairs(dataset: str, split: str, pairs: list[tuple[str, str]], order: list[str] | None = None) -> Split:
    """Split from (video_id, caption) pairs; videos in `order` (or first appearance), each once."""
    ids = list(dict.fromkeys(order if order is not None else (v for v, _ in pairs)))
    index = {v: i for i, v in enumerate(ids)}
    kept = [(v, c) for v, c in pairs if v in index]
    return Split(dataset, split, ids, [c for _, c in kept], [index[v] for v, _ in kept])


def read_msrvtt_test(path: Path) -> pd.DataFrame:
    """MSRVTT_JSFUSION_test.csv; also accepts the copies seen in the wild (';'-separated, 'sentences' header)."""
    if not path.is_file():
        raise AnnotationError(f"{path} does not exist: check --data-root.")
    head = path.read_text(encoding="utf-8", errors="replace").split("\n", 1)[0]
    sep = ";" if ";" in head and "," not in head else ","
    try:
        df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except pd.errors.ParserError as err:
        raise AnnotationError(f"{path.name}: {err}. Captions must not contain the separator.") from err
    except pd.errors.EmptyDataError:
        raise AnnotationError(
            f"{path} is empty: it needs a header (video_id,sentence) and one row per test caption."
        ) from None
    except UnicodeDecodeError as err:
        raise AnnotationError(
            f"{path} is not UTF-8 text ({err.reason} at byte {err.start}): save it as UTF-8."
        ) from None
    df = df.rename(columns={"sentences": "sentence"})
    missing = [c for c in ("video_id", "sentence") if c not in df.columns]
    if missing:
        raise AnnotationError(f"{path.name} is missing column(s) {missing} (found: {', '.join(df.columns)}).")
    return df


def msrvtt_split(root: Path, split: str, train_list: str = "9k") -> Split:
    """Training: every caption of the 9k (or 7k) videos from MSRVTT_data.json; val/test: the 1k-A file."""
    if split in ("val", "test"):
        df = read_msrvtt_test(root / "MSRVTT_JSFUSION_test.csv")
        return _from_pairs(
            "msrvtt", split, list(zip(df["video_id"], df["sentence"], strict=True)), list(df["video_id"])
        )
    if train_list not in ("9k", "7k"):
        raise AnnotationError(f"unknown MSR-VTT training list {train_list!r}: use 9k or 7k.")
    ids = read_id_list(root / f"MSRVTT_train.{train_list}.csv")
    data_json = root / "MSRVTT_data.json"
    if not data_json.is_file():
        raise AnnotationError(f"{data_json} does not exist: MSR-VTT training captions come from it.")
    try:
        sentences = json.loads(_text(data_json))["sentences"]
        pairs = [(str(s["video_id"]), str(s["caption"])) for s in sentences]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise AnnotationError(f"{data_json} has no sentences[].video_id/caption: {err}") from err
    return _from_pairs("msrvtt", split, pairs, ids)


def _read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise AnnotationError(f"{path} does not exist: check --data-root.")
    return [line.strip() for line in _text(path).splitlines() if line.strip()]


def didemo_split(root: Path, split: str) -> Split:
    """Paragraph-to-video: all descriptions of a video joined with spaces, one query per video."""
    names = _read_list(root / f"{split}_list.txt")
    path = root / f"{split}_data.json"
    if not path.is_file():
        raise AnnotationError(f"{path} does not exist: check --data-root.")
    try:
        paragraphs: dict[str, list[str]] = {}
        for ann in json.loads(_text(path)):
            paragraphs.setdefault(ann["video"], []).append(ann["description"].strip())
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise AnnotationError(f"{path} is not a DiDeMo annotation file (need video, description): {err}") from err
    kept = [n for n in names if n in paragraphs]
    out = Split("didemo", split, [video_id_from_name(n) for n in kept], [" ".join(paragraphs[n]) for n in kept],
                list(range(len(kept))), kept)  # fmt: skip
    return out


def vatex_split(root: Path, split: str) -> Split:
    ids = _read_list(root / f"{split}_list.txt")
    path = root / "ref_captions.json"
    if not path.is_file():
        raise AnnotationError(f"{path} does not exist: check --data-root.")
    try:
        captions = json.loads(_text(path))
        pairs = [(vid, str(c)) for vid in ids for c in captions.get(vid, [])]
    except (json.JSONDecodeError, AttributeError) as err:
        raise AnnotationError(f"{path} is not {{video_id: [captions]}}: {err}") from err
    return _from_pairs("vatex", split, pairs, [v for v in ids if v in captions])


def csv_split(path: Path, split: str) -> Split:
    df = read_csv_checked(path, ("video_id", "caption"))
    splits = df["split"].replace("", "train") if "split" in df.columns else pd.Series(["train"] * len(df))
    bad = sorted(set(splits) - set(SPLITS))
    if bad:
        raise AnnotationError(f"{path.name}: unknown split value(s) {bad}; use train, val or test.")
    rows = df[splits.to_numpy() == split]
    return _from_pairs("csv", split, list(zip(rows["video_id"].str.strip(), rows["caption"], strict=True)))


def load_split(
    dataset: str, root: Path | None, split: str, annotations: Path | None = None, train_list: str = "9k"
) -> Split:
    """One split of a dataset laid out as the reference code reads it (or a custom CSV)."""
    if split not in SPLITS:
        raise AnnotationError(f"unknown split {split!r}: use train, val or test.")
    if dataset == "csv":
        if annotations is None:
            raise AnnotationError("--dataset csv needs --annotations FILE (columns video_id,caption[,split]).")
        return csv_split(annotations, split)
    if root is None or not root.is_dir():
        raise AnnotationError(f"--data-root {root} is not a folder: point it at the {dataset} annotations.")
    loaders = {"msrvtt": lambda: msrvtt_split(root, split, train_list), "didemo": lambda: didemo_split(root, split),
               "vatex": lambda: vatex_split(root, split)}  # fmt: skip
    if dataset not in loaders:
        raise AnnotationError(f"unknown dataset {dataset!r}: use msrvtt, didemo, vatex or csv.")
    return loaders[dataset]()
